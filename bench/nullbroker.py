# Copied unchanged (below this header) from ../shared/bench/nullbroker.py, the reference
# floor for issue 6; edit the original, not this copy, and re-copy.
"""A Kafka 0.8 'null broker': Twisted framing and request parsing, no storage.

It answers Metadata v0 (every asked topic exists, PARTITIONS partitions),
Produce v0 (acks=0: silence; else offset 0, no error) and Fetch v0 / ListOffsets v0
(empty), so it measures what a Twisted broker costs before it does any work:
the floor under which no Twisted broker can go on this machine.

With --modern it also answers ApiVersions (Produce 0-7, Fetch 0-11, ListOffsets 0,
Metadata 0, ApiVersions 0-2), so librdkafka with default settings sends Kafka 0.11
record batches (v2) in Produce v3+; it acks them without looking inside: the floor
for a broker that stores v2 batches.

    python nullbroker.py PORT [PARTITIONS] [--modern]
"""
import struct
import sys

from twisted.internet import protocol, reactor
from twisted.protocols.basic import Int32StringReceiver

MODERN = "--modern" in sys.argv
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
PARTS = int(ARGS[1]) if len(ARGS) > 1 else 1
PORT = int(ARGS[0]) if ARGS else 9092
# (api key, min, max) listed in --modern mode
VERSIONS = [(0, 0, 7), (1, 0, 11), (2, 0, 0), (3, 0, 0), (18, 0, 2)]


class R:
    def __init__(self, b, i=0):
        self.b, self.i = b, i

    def i16(self):
        v, = struct.unpack_from(">h", self.b, self.i); self.i += 2; return v

    def i32(self):
        v, = struct.unpack_from(">i", self.b, self.i); self.i += 4; return v

    def i64(self):
        v, = struct.unpack_from(">q", self.b, self.i); self.i += 8; return v

    def s(self):
        n = self.i16()
        if n < 0:
            return None
        v = self.b[self.i:self.i + n]; self.i += n; return v

    def skip_bytes(self):
        n = self.i32()
        if n > 0:
            self.i += n


def s(b):
    return struct.pack(">h", len(b)) + b


class Null(Int32StringReceiver):
    MAX_LENGTH = 1 << 30

    def stringReceived(self, frame):
        r = R(frame)
        key, ver, corr = r.i16(), r.i16(), r.i32()
        r.s()
        out = [struct.pack(">i", corr)]
        if MODERN and key == 18:
            err = 35 if ver > 2 else 0
            out.append(struct.pack(">hi", err, len(VERSIONS)))
            out += [struct.pack(">hhh", *v) for v in VERSIONS]
            if 1 <= ver <= 2:
                out.append(struct.pack(">i", 0))
        elif key == 0:
            if ver >= 3:
                r.s()  # transactional id
            acks = r.i16(); r.i32()
            topics = []
            for _ in range(r.i32()):
                t = r.s(); ps = []
                for _ in range(r.i32()):
                    ps.append(r.i32()); r.skip_bytes()
                topics.append((t, ps))
            if acks == 0:
                return
            out.append(struct.pack(">i", len(topics)))
            for t, ps in topics:
                out.append(s(t) + struct.pack(">i", len(ps)))
                for p in ps:
                    out.append(struct.pack(">ihq", p, 0, 0))
                    if ver >= 2:
                        out.append(struct.pack(">q", -1))  # log append time
                    if ver >= 5:
                        out.append(struct.pack(">q", 0))  # log start offset
            if ver >= 1:
                out.append(struct.pack(">i", 0))  # throttle time
        elif key == 3:
            names = [r.s() for _ in range(r.i32())]
            host = b"127.0.0.1"
            out.append(struct.pack(">i", 1) + struct.pack(">i", 0) + s(host) + struct.pack(">i", PORT))
            out.append(struct.pack(">i", len(names)))
            for n in names:
                out.append(struct.pack(">h", 0) + s(n) + struct.pack(">i", PARTS))
                for p in range(PARTS):
                    out.append(struct.pack(">hiiiiii", 0, p, 0, 1, 0, 1, 0))
        elif key == 1:
            r.i32(); r.i32(); r.i32()
            topics = []
            for _ in range(r.i32()):
                t = r.s(); ps = []
                for _ in range(r.i32()):
                    ps.append(r.i32()); r.i64(); r.i32()
                topics.append((t, ps))
            out.append(struct.pack(">i", len(topics)))
            for t, ps in topics:
                out.append(s(t) + struct.pack(">i", len(ps)))
                for p in ps:
                    out.append(struct.pack(">ihqi", p, 0, 0, 0))
        elif key == 2:
            r.i32()
            topics = []
            for _ in range(r.i32()):
                t = r.s(); ps = []
                for _ in range(r.i32()):
                    ps.append(r.i32()); r.i64(); r.i32()
                topics.append((t, ps))
            out.append(struct.pack(">i", len(topics)))
            for t, ps in topics:
                out.append(s(t) + struct.pack(">i", len(ps)))
                for p in ps:
                    out.append(struct.pack(">ihiq", p, 0, 1, 0))
        else:
            self.transport.loseConnection()
            return
        self.sendString(b"".join(out))


f = protocol.Factory.forProtocol(Null)
reactor.listenTCP(PORT, f, interface="127.0.0.1")
reactor.run()
