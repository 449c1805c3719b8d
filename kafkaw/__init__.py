"""kafkaw: a Kafka 0.8 broker on Twisted."""

__version__ = "0.1.0"
