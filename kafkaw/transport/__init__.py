"""Transports: they only turn a byte stream or messages into request frames and back."""
