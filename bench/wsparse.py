"""What receiving one WebSocket message costs: Autobahn (kafkaw's WebSocket
transport) against websockets' sans-IO protocol, the alternative (issue 14).

    python bench/wsparse.py

Parses 3,000 masked binary messages of 12,400 bytes (a Produce of 100 × 100 B),
five per read as a client with 10 requests in flight sends them: Autobahn fed
whole reads (collecting each message, its default API), the same through
Autobahn's frame-level hooks without collecting messages (what kafkaw's
transport does), Autobahn fed 16 KB at a time, and websockets' ServerProtocol
(the `test` extra installs websockets). Time per
message, the best of 7 rounds each, no sockets: the framing cost alone, which the raw WebSocket row of
bench/run.py (wsraw) pays on top of TCP's.
"""
import os
import struct
import time

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.testing import StringTransport
from websockets.server import ServerProtocol

MESSAGES = 3000
PER_READ = 5
ROUNDS = 7
HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def maskedFrame(payload, mask):
    """A client's binary frame (2 <= len < 2**16 bytes), masked with C{mask}."""
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return struct.pack(">BBH", 0x82, 0x80 | 126, n) + mask + (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


class Counting(WebSocketServerProtocol):
    messages = 0

    def onMessage(self, payload, isBinary):
        Counting.messages += 1


class Streaming(Counting):
    """Autobahn's frame-level hooks, as kafkaw's transport overrides them: payload pieces as read, no message collected."""

    def onMessageBegin(self, isBinary):
        pass

    def onMessageFrameBegin(self, length):
        pass

    def onMessageFrameData(self, payload):
        self.received = payload

    def onMessageFrameEnd(self):
        pass

    def onMessageEnd(self):
        Counting.messages += 1


def autobahn(reads, feedBytes=None, protocolClass=Counting):
    factory = WebSocketServerFactory()
    factory.protocol = protocolClass
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(HANDSHAKE)
    Counting.messages = 0
    started = time.perf_counter()
    for read in reads:
        if feedBytes is None:
            protocol._dataReceived(read)
        else:
            with memoryview(read) as view:
                for start in range(0, len(read), feedBytes):
                    protocol._dataReceived(bytes(view[start : start + feedBytes]))
    return (time.perf_counter() - started) / Counting.messages


def websockets(reads):
    protocol = ServerProtocol()
    protocol.receive_data(HANDSHAKE)
    protocol.send_response(protocol.accept(protocol.events_received()[0]))
    protocol.data_to_send()
    messages = 0
    started = time.perf_counter()
    for read in reads:
        protocol.receive_data(read)
        messages += len(protocol.events_received())
    return (time.perf_counter() - started) / messages


def main():
    read = maskedFrame(os.urandom(12400), os.urandom(4)) * PER_READ
    reads = [read] * (MESSAGES // PER_READ)
    ways = {
        "Autobahn, whole reads:        ": lambda: autobahn(reads),
        "Autobahn, frame-level hooks:  ": lambda: autobahn(reads, protocolClass=Streaming),  # kafkaw's transport
        "Autobahn, fed 16 KB at a time:": lambda: autobahn(reads, 16384),  # tried in kafkaw: slower
        "websockets (sans-IO):         ": lambda: websockets(reads),
    }
    best = {name: min(way() for _ in range(ROUNDS)) for name, way in ways.items()}  # the least disturbed of the rounds
    for name, seconds in best.items():
        print(f"{name} {seconds * 1e6:5.1f} µs per message (best of {ROUNDS})")


if __name__ == "__main__":
    main()
