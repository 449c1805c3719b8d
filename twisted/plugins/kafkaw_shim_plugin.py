"""twistd plugin for the kafkaw TCP-to-WebSocket shim; the real code is in kafkaw.shim."""

from twisted.application.service import ServiceMaker

kafkawShim = ServiceMaker(
    "kafkaw-shim", "kafkaw.shim", "Stock Kafka clients on TCP, piped over WebSocket to a kafkaw broker", "kafkaw-shim"
)
