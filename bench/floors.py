"""The per-request floors issue 14 runs into, measured in isolation (timeit, best of 5).

    python bench/floors.py

- numbering a small Produce v0's ten magic-0 messages: kafkaw's
  C{messages.assignOffsets} next to the least any CPython loop can do for
  the same check (per message: one unpack of the head, a CRC-32 of the
  message, one pack of the new offset) and the CRC-32 call alone;
- unmasking one 12 KB WebSocket frame: Autobahn's masker as its frame parser
  uses it (a masker made per frame, then C{process}), and the one pure-Python
  alternative (XOR of the payload and the mask as big integers).
"""

import os
import struct
import sys
import timeit
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kafkaw.protocol.messages import assignOffsets, encodeMessageSet  # noqa: E402

_HEAD = struct.Struct(">qiI")  # offset, size, crc
_OFFSET = struct.Struct(">q")


def best(function, number):
    """Seconds per call, best of 5 repeats."""
    return min(timeit.repeat(function, number=number, repeat=5)) / number


def strippedWalk(data):
    """Check every message's CRC and write its offset, nothing else."""
    out = bytearray(data)
    view = memoryview(out)
    position, end, offset = 0, len(out), 0
    unpack, pack, crc32 = _HEAD.unpack_from, _OFFSET.pack_into, zlib.crc32
    while position < end:
        _, size, crc = unpack(view, position)
        messageEnd = position + 12 + size
        if crc != crc32(view[position + 16 : messageEnd]):
            raise ValueError("CRC")
        pack(view, position, offset)
        offset += 1
        position = messageEnd
    return out


def main():
    messages = encodeMessageSet([(None, os.urandom(100)) for _ in range(10)])
    one = messages[16 : 12 + _HEAD.unpack_from(messages)[1]]  # the first message, magic to value
    rows = [
        ("assignOffsets, 10 x 100 B magic-0 messages", best(lambda: assignOffsets(messages, 0, 1 << 20, 1 << 24), 20000) / 10,
         "per message"),
        ("stripped loop: unpack, CRC-32, pack", best(lambda: strippedWalk(messages), 20000) / 10, "per message"),
        (f"zlib.crc32 of one message ({len(one)} B)", best(lambda: zlib.crc32(one), 200000), "per call"),
    ]
    try:
        from autobahn.websocket.xormasker import create_xor_masker
    except ImportError:
        create_xor_masker = None
    payload, mask = os.urandom(12400), os.urandom(4)
    if create_xor_masker is not None:
        rows.append(("Autobahn: a masker per frame, then process", best(lambda: create_xor_masker(mask, len(payload)).process(payload), 5000),
                     "per 12.4 KB frame"))
    repeated = int.from_bytes((mask * (len(payload) // 4 + 1))[: len(payload)], "little")
    rows.append(("pure Python: XOR as big integers (mask prepared)",
                 best(lambda: (int.from_bytes(payload, "little") ^ repeated).to_bytes(len(payload), "little"), 5000),
                 "per 12.4 KB frame"))
    width = max(len(name) for name, _, _ in rows)
    for name, seconds, unit in rows:
        print(f"{name:{width}}  {seconds * 1e6:7.2f} µs {unit}")


if __name__ == "__main__":
    main()
