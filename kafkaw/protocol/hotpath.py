"""Hand-tuned codecs for the requests every producer sends most.

Byte for byte what the generic codec of L{kafkaw.protocol.schema} writes
(tests compare the two over every version), at a fraction of its cost: a
small Produce pays its response's encoding once per request, and the generic
encoder walks dicts field by field.
"""

import struct

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_NO_THROTTLE = _INT32.pack(0)

# A Produce response's partition: index, error code, base offset, then
# log append time (v2+) and log start offset (v5+).
_PRODUCE_PARTITION = [struct.Struct(">ihq"), struct.Struct(">ihqq"), struct.Struct(">ihqqq")]
PRODUCE_RESPONSE_VERSIONS = range(0, 8)


def encodeProduceResponse(version, correlationId, topics):
    """A Produce response (versions 0-7) as a list of one bytes chunk, no size prefix.

    C{topics}: [(topic name, [[partition index, error code, base offset,
    log append time, log start offset]])]; the fields a version does not
    carry are left out.
    """
    pack = _PRODUCE_PARTITION[(version >= 2) + (version >= 5)].pack
    fields = 3 + (version >= 2) + (version >= 5)
    out = [_INT32.pack(correlationId), _INT32.pack(len(topics))]
    for name, partitions in topics:
        encoded = name.encode("utf-8")
        out.append(_INT16.pack(len(encoded)))
        out.append(encoded)
        out.append(_INT32.pack(len(partitions)))
        for partition in partitions:
            out.append(pack(*partition[:fields]))
    if version >= 1:
        out.append(_NO_THROTTLE)
    return [b"".join(out)]
