"""ApiVersions (key 18): how a 0.8 broker tells modern clients what it serves.

Kafka 0.8.0 closes the connection on ApiVersions; clients with default
settings then retry forever (librdkafka) or give up (kafkajs). Answering it
with the list of what is really served lets them fall back to the v0 APIs on
their own. Pure codec, no I/O:

- L{decodeRequest} reads a request body of B{any} version tolerantly. Versions
  0-2 have an empty body. Version 3+ use the flexible request header v2: the
  classic header (whose client_id is still an int16 string) followed by a
  tagged-fields section, then a body of two compact strings
  (client_software_name, client_software_version) and tagged fields. Nothing
  after the classic header is needed to answer, so nothing there is an error.
- L{encodeResponse} answers a served version (0-2) in its own format: error
  int16, then [api_key int16, min_version int16, max_version int16], then
  (v1+) throttle_time_ms int32; the response header is never flexible (just
  the correlation id). A version not served gets the v0 format with error 35
  (UNSUPPORTED_VERSION), as Kafka does, so the client retries with a version
  from the list.
- L{servedVersions} derives that list from the gateway's dispatch table
  {(apiKey, version): ...}, so the answer can never claim more than is served.
"""

from typing import NamedTuple

from kafkaw.protocol.errors import CodecError
from kafkaw.protocol.primitives import INT16, INT32

API_VERSIONS = 18
UNSUPPORTED_VERSION = 35
FIRST_FLEXIBLE_VERSION = 3

# Names of the API keys clients commonly send, for log lines about unserved requests.
API_NAMES = {
    0: "Produce",
    1: "Fetch",
    2: "ListOffsets",
    3: "Metadata",
    4: "LeaderAndIsr",
    5: "StopReplica",
    6: "UpdateMetadata",
    7: "ControlledShutdown",
    8: "OffsetCommit",
    9: "OffsetFetch",
    10: "FindCoordinator",
    11: "JoinGroup",
    12: "Heartbeat",
    13: "LeaveGroup",
    14: "SyncGroup",
    15: "DescribeGroups",
    16: "ListGroups",
    17: "SaslHandshake",
    18: "ApiVersions",
    19: "CreateTopics",
    20: "DeleteTopics",
    21: "DeleteRecords",
    22: "InitProducerId",
    23: "OffsetForLeaderEpoch",
    32: "DescribeConfigs",
    36: "SaslAuthenticate",
    37: "CreatePartitions",
    42: "DeleteGroups",
    50: "DescribeUserScramCredentials",
    51: "AlterUserScramCredentials",
    60: "DescribeCluster",
}


def apiName(apiKey):
    """A readable name for an API key ("FindCoordinator"), or "unknown"."""
    return API_NAMES.get(apiKey, "unknown")


class ApiVersionsRequest(NamedTuple):
    """What a v3+ client says about itself; all None for v0-2 or an unreadable body."""

    clientSoftwareName: str | None
    clientSoftwareVersion: str | None


class ApiVersion(NamedTuple):
    apiKey: int
    minVersion: int
    maxVersion: int


def readUnsignedVarint(reader):
    """Kafka's unsigned varint: 7 bits a byte, low bits first, high bit = more follows."""
    value = 0
    for shift in range(0, 35, 7):
        byte = reader.int8() & 0xFF
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
    raise CodecError("unsigned varint longer than 5 bytes")


def skipTaggedFields(reader):
    """Skip a tagged-fields section: count, then (tag, size, data) per field."""
    for _ in range(readUnsignedVarint(reader)):
        readUnsignedVarint(reader)  # tag
        reader.raw(readUnsignedVarint(reader))


def readCompactString(reader):
    """uvarint (length + 1) then UTF-8 bytes; 0 is null."""
    size = readUnsignedVarint(reader)
    if size == 0:
        return None
    try:
        return reader.raw(size - 1).decode("utf-8")
    except UnicodeDecodeError as e:
        raise CodecError(f"compact string is not UTF-8: {e}") from None


def decodeRequest(reader):
    """Read what follows the classic request header, for any version; never raises.

    Versions 0-2 have nothing there. Version 3+ have the header's tagged fields,
    then client_software_name and client_software_version (compact strings),
    then tagged fields. Only the header is needed to answer, so a body that
    does not parse yields Nones (and a future version's extra fields are ignored).
    """
    if not reader.remaining:
        return ApiVersionsRequest(None, None)
    try:
        skipTaggedFields(reader)
        return ApiVersionsRequest(readCompactString(reader), readCompactString(reader))
    except CodecError:
        return ApiVersionsRequest(None, None)


def servedVersions(handlers):
    """[ApiVersion] sorted by key, from a dispatch table keyed by (apiKey, version).

    Each key's versions must be contiguous (ApiVersions can only say min..max).
    """
    versions = {}
    for apiKey, version in handlers:
        versions.setdefault(int(apiKey), set()).add(int(version))
    served = []
    for apiKey in sorted(versions):
        low, high = min(versions[apiKey]), max(versions[apiKey])
        if len(versions[apiKey]) != high - low + 1:
            raise ValueError(f"api key {apiKey} serves versions {sorted(versions[apiKey])}, not a range")
        served.append(ApiVersion(apiKey, low, high))
    return served


def errorFor(requestedVersion, handlers):
    """0 when ApiVersions at C{requestedVersion} is in C{handlers}, else 35 (UNSUPPORTED_VERSION)."""
    return 0 if (API_VERSIONS, requestedVersion) in handlers else UNSUPPORTED_VERSION


def encodeResponse(correlationId, requestedVersion, handlers):
    """The answer to an ApiVersions request of version C{requestedVersion}.

    Error 0 in that version's format when (18, requestedVersion) is in
    C{handlers}, else error 35 (UNSUPPORTED_VERSION) in the v0 format; the
    served list either way. Returns byte chunks without the size prefix,
    like the encoders of L{kafkaw.protocol.schema}.
    """
    served = servedVersions(handlers)
    error = errorFor(requestedVersion, handlers)
    out = [INT32.pack(correlationId), INT16.pack(error), INT32.pack(len(served))]
    out.extend(INT16.pack(v.apiKey) + INT16.pack(v.minVersion) + INT16.pack(v.maxVersion) for v in served)
    if not error and requestedVersion >= 1:
        out.append(INT32.pack(0))  # v1+: throttle_time_ms
    return out
