"""Storage backends: where partition logs and topic definitions live."""
