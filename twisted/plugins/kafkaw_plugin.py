"""twistd plugin for kafkaw; the real code is in kafkaw.tap."""

from twisted.application.service import ServiceMaker

kafkaw = ServiceMaker("kafkaw", "kafkaw.tap", "A Kafka 0.8 broker on Twisted and LevelDB", "kafkaw")
