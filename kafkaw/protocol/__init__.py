"""The Kafka 0.8 wire codec: bytes in, plain data out, and back. No I/O, no reactor."""
