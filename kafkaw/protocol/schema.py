"""Kafka messages described as data, read and written by one generic codec.

Kafka 2.3.0 describes every request and response in JSON: fields with a type,
the versions that have them and the versions where they may be null. kafkaw
keeps the same description as Python (L{kafkaw.protocol.definitions}) and
compiles, once per (struct, version) and on first use, a decoder and an
encoder from it: straight-line generated code with no schema lookups at run
time, so that one reader and one writer serve ~22 APIs x all their versions at
the speed of hand-written code.

The classic encodings (all of Kafka 2.3.0): int8, int16, int32, int64,
bool, string (int16 length, -1 null), bytes (int32 length, -1 null) and
arrays (int32 count, -1 null) of structs or primitives.

Flexible versions (KIP-482, an API's C{flexibleVersions}, from Kafka 2.4):
strings, bytes and arrays are compact (an unsigned varint of length + 1, 0
null) and every struct ends with a tagged-fields section (an unsigned varint
count, then per field an unsigned varint tag and size and its bytes). Tagged
fields read are skipped (none of the definitions declares one), and none are
written (a count of 0). The request header is v2 (header v1, then a tagged
fields section) and the response header v1 (correlation id, then a tagged
fields section) for a flexible version.

Values
======
Decoding gives one namedtuple per struct (C{Struct.type}), every field in
schema order whatever the version; a field the version lacks holds the
field's default (L{Field.default}). Field names are Kafka's JSON names with
the first letter lowercased (C{PartitionIndex} -> C{partitionIndex}).

Encoding takes, at every level, that namedtuple, any object with the
attributes, or a dict keyed by field name; a missing field takes its default,
and a field the version lacks is not written. C{bytes} fields (record sets)
accept any bytes-like object and go out as chunks of their own, never copied.
"""

import keyword
import struct as _struct
from collections import namedtuple

from kafkaw.protocol.errors import CodecError
from kafkaw.protocol.primitives import INT16, INT32

MAX_VERSION = 0x7FFF

# Fixed-width types: struct format character and width.
_FIXED = {"int8": ("b", 1), "int16": ("h", 2), "int32": ("i", 4), "int64": ("q", 8), "bool": ("?", 1)}
_PRIMITIVES = set(_FIXED) | {"string", "bytes"}
# What each type costs at least on the wire: arrays check their count against it.
_MIN_SIZE = {**{name: width for name, (_, width) in _FIXED.items()}, "string": 2, "bytes": 4}
_MIN_COMPACT_SIZE = {**_MIN_SIZE, "string": 1, "bytes": 1}
_MISSING = object()


class Versions:
    """A version range in Kafka's notation: "3+", "2-4", "1"; C{None} is no version."""

    __slots__ = ("text", "low", "high")

    def __init__(self, text):
        self.text = text
        if text is None:
            self.low, self.high = 1, 0
        elif text.endswith("+"):
            self.low, self.high = int(text[:-1]), MAX_VERSION
        elif "-" in text:
            low, high = text.split("-")
            self.low, self.high = int(low), int(high)
        else:
            self.low = self.high = int(text)

    def __contains__(self, version):
        return self.low <= version <= self.high

    def covers(self, other):
        """True when every version of C{other} is one of these."""
        return other.low > other.high or (self.low <= other.low and other.high <= self.high)

    def __repr__(self):
        return f"Versions({self.text!r})"


def lowerFirst(name):
    return name[:1].lower() + name[1:]


class Field:
    """One field of a struct, as Kafka's JSON has it (C{name} is the JSON name).

    C{type} is Kafka's type string: a primitive, C{"[]int32"}, C{"[]string"},
    or C{"[]StructName"} with C{fields}. C{default} is the JSON "default" as a
    Python value (C{None} for "null"), or absent.
    """

    def __init__(self, name, type, versions="0+", nullable=None, default=_MISSING, fields=None):
        self.jsonName = name
        self.name = lowerFirst(name)
        if not self.name.isidentifier() or keyword.iskeyword(self.name) or self.name.startswith("_"):
            raise ValueError(f"field name {name!r} cannot be a Python attribute")
        self.type = type
        self.versions = Versions(versions)
        self.nullableVersions = Versions(nullable)
        self.givenDefault = default
        self.isArray = type.startswith("[]")
        self.element = type[2:] if self.isArray else type
        self.struct = None
        if self.element in _PRIMITIVES:
            if fields is not None:
                raise ValueError(f"{name}: a {type} field has no fields")
        elif not self.isArray:
            raise ValueError(f"{name}: unknown type {type!r}")
        else:
            if fields is None:
                raise ValueError(f"{name}: {type} needs its fields")
            self.struct = Struct(self.element, fields)
        self.default = self._default()

    def _default(self):
        """The JSON default if given; else [] for arrays, b"" for bytes, 0 / False,
        and for strings None when null is allowed wherever the field exists, else ""."""
        if self.givenDefault is not _MISSING:
            return self.givenDefault
        if self.isArray:
            return []
        if self.type == "bytes":
            return b""
        if self.type == "string":
            return None if self.nullableVersions.covers(self.versions) else ""
        return False if self.type == "bool" else 0

    @property
    def hasDefault(self):
        """True when Kafka's JSON gives this field a "default"."""
        return self.givenDefault is not _MISSING

    def nullableIn(self, version):
        return version in self.nullableVersions

    def __repr__(self):
        return f"Field({self.jsonName!r}, {self.type!r}, {self.versions.text!r})"


class Struct:
    """A named list of fields; C{type} is the namedtuple its values decode to.

    C{struct[fieldName]} is the Struct of an array-of-structs field, so nested
    classes are reachable: C{PRODUCE.response["responses"]["partitions"].type}.
    """

    def __init__(self, name, fields):
        self.name = name
        self.fields = list(fields)
        self.byName = {f.name: f for f in self.fields}
        if len(self.byName) != len(self.fields):
            raise ValueError(f"{name}: duplicate field names")
        defaults = [f.default for f in self.fields]
        self.type = namedtuple(name, [f.name for f in self.fields], defaults=defaults)
        self._decoders = {}
        self._encoders = {}

    def __getitem__(self, fieldName):
        struct = self.byName[fieldName].struct
        if struct is None:
            raise KeyError(f"{self.name}.{fieldName} is not an array of structs")
        return struct

    def minSize(self, version, flexible=False):
        """The fewest bytes a value of this struct takes at C{version}."""
        if flexible:  # compact lengths of 1 byte, and the tagged fields' count
            return 1 + sum(_MIN_COMPACT_SIZE.get(f.type, 1) for f in self.fields if version in f.versions)
        return sum(_MIN_SIZE.get(f.type, 4) for f in self.fields if version in f.versions)

    def decoder(self, version, flexible=False):
        """decode(data: bytes, position) -> (value, position); compiled once.
        C{flexible}: the version's compact encodings and tagged fields."""
        decode = self._decoders.get((version, flexible))
        if decode is None:
            decode = self._decoders[version, flexible] = _compileDecoder(self, version, flexible)
        return decode

    def encoder(self, version, flexible=False):
        """encode(value, out, chunks); compiled once. See L{encodeStruct}."""
        encode = self._encoders.get((version, flexible))
        if encode is None:
            encode = self._encoders[version, flexible] = _compileEncoder(self, version, flexible)
        return encode

    def __repr__(self):
        return f"Struct({self.name!r})"


class Api:
    """One API: its key, name, version range and request / response Structs."""

    def __init__(self, key, name, minVersion, maxVersion, request, response, flexibleVersions=None):
        self.key = key
        self.name = name
        self.minVersion = minVersion
        self.maxVersion = maxVersion
        self.request = request
        self.response = response
        self.flexibleVersions = Versions(flexibleVersions)  # Kafka's "flexibleVersions"; None: none

    def hasVersion(self, version):
        return self.minVersion <= version <= self.maxVersion

    def isFlexible(self, version):
        """Whether C{version} uses compact encodings, tagged fields and the flexible headers."""
        return version in self.flexibleVersions

    def __repr__(self):
        return f"Api({self.key}, {self.name!r}, {self.minVersion}-{self.maxVersion})"


# --- code generation --------------------------------------------------------


class _Source:
    """Lines of a generated function, plus the constants it refers to."""

    def __init__(self):
        self.lines = []
        self.namespace = {
            "_CodecError": CodecError, "_new": tuple.__new__, "_unpack": _struct.unpack_from,
            "_uvarint": readUvarint, "_skipTags": skipTaggedFields, "_varint": uvarint,
        }
        self.count = 0

    def var(self, prefix="v"):
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value, prefix="k"):
        name = self.var(prefix)
        self.namespace[name] = value
        return name

    def emit(self, indent, line):
        self.lines.append("    " * indent + line)

    def compile(self, name):
        text = "\n".join(self.lines) + "\n"
        exec(compile(text, f"<kafkaw.schema {name}>", "exec"), self.namespace)
        return self.namespace[name]


def _defaultExpression(source, field):
    if field.default == [] and field.isArray:
        return "[]"  # a fresh list each time
    if field.default is None or isinstance(field.default, (bool, int, str, bytes)):
        return repr(field.default)
    return source.const(field.default)


def _compileDecoder(struct, version, flexible):
    source = _Source()
    source.emit(0, "def decode(data, pos):")
    source.emit(1, "size = len(data)")
    result = _decodeStruct(source, struct, version, flexible, 1, struct.name)
    source.emit(1, f"return {result}, pos")
    return source.compile("decode")


def _flushReads(source, run, indent):
    """Read a run of fixed-width values (names, format characters) with one unpack."""
    if not run:
        return
    codec = _struct.Struct(">" + "".join(fmt for _, fmt in run))
    name = source.const(codec, "S")
    targets = ", ".join(var for var, _ in run) + ("," if len(run) == 1 else "")
    source.emit(indent, f"{targets} = {name}.unpack_from(data, pos)")
    source.emit(indent, f"pos += {codec.size}")
    run.clear()


def _readLength(source, run, indent, length, code, flexible):
    """Emit the read of a length or count into C{length}: classic (struct C{code},
    batched into C{run}) or compact (an unsigned varint of length + 1)."""
    if not flexible:
        run.append((length, code))
        _flushReads(source, run, indent)
        return
    _flushReads(source, run, indent)
    source.emit(indent, f"{length}, pos = _uvarint(data, pos)")
    source.emit(indent, f"{length} -= 1")


def _decodeStruct(source, struct, version, flexible, indent, path):
    """Emit code reading one value of C{struct}; return the variable holding it."""
    values = []
    run = []
    for field in struct.fields:
        if version not in field.versions:
            values.append(_defaultExpression(source, field))
            continue
        var = source.var()
        values.append(var)
        where = f"{path}.{field.name}"
        if field.type in _FIXED:
            run.append((var, _FIXED[field.type][0]))
            continue
        length = source.var("n")
        _readLength(source, run, indent, length, "h" if field.type == "string" else "i", flexible)
        _decodeNull(source, field, version, var, length, indent, where)
        source.emit(indent, "else:")
        if field.isArray:
            _decodeArray(source, field, version, flexible, var, length, indent + 1, where)
        else:
            _decodeBlob(source, field.type, var, length, indent + 1, where)
    _flushReads(source, run, indent)
    if flexible:
        source.emit(indent, "pos = _skipTags(data, pos)")
    result = source.var("t")
    cls = source.const(struct.type, "T")
    items = "".join(f"{value}, " for value in values)
    source.emit(indent, f"{result} = _new({cls}, ({items}))")
    return result


def _decodeNull(source, field, version, var, length, indent, where):
    """Emit the branch for a negative length: null where allowed, else an error."""
    what = "count" if field.isArray else "length"
    negative = source.const(f"{where}: negative {what} %d")
    if field.nullableIn(version):
        source.emit(indent, f"if {length} == -1:")
        source.emit(indent + 1, f"{var} = None")
        source.emit(indent, f"elif {length} < 0:")
        source.emit(indent + 1, f"raise _CodecError({negative} % {length})")
    else:
        _rejectNegative(source, length, indent, where, negative)


def _rejectNegative(source, length, indent, where, negative):
    null = source.const(f"{where}: null (-1), which is not allowed here")
    source.emit(indent, f"if {length} < 0:")
    source.emit(indent + 1, f"raise _CodecError({null} if {length} == -1 else {negative} % {length})")


def _decodeBlob(source, type, var, length, indent, where):
    """A string or bytes body of C{length} bytes (length known non-negative)."""
    end = source.var("e")
    source.emit(indent, f"{end} = pos + {length}")
    source.emit(indent, f"if {end} > size:")
    message = source.const(f"{where}: truncated: {type} of %d bytes, %d left")
    source.emit(indent + 1, f"raise _CodecError({message} % ({length}, size - pos))")
    if type == "string":
        source.emit(indent, f"{var} = data[pos:{end}].decode('utf-8')")
    else:
        source.emit(indent, f"{var} = data[pos:{end}]")
    source.emit(indent, f"pos = {end}")


def _decodeArray(source, field, version, flexible, var, count, indent, where):
    element = field.element
    if field.struct:
        minSize = field.struct.minSize(version, flexible)
    else:
        minSize = (_MIN_COMPACT_SIZE if flexible else _MIN_SIZE)[element]
    if minSize <= 0:
        raise ValueError(f"{where}: array items of no size at version {version}")
    source.emit(indent, f"if {count} * {minSize} > size - pos:")
    message = source.const(f"{where}: array of %d items cannot fit in %d bytes")
    source.emit(indent + 1, f"raise _CodecError({message} % ({count}, size - pos))")
    if element in _FIXED:
        fmt, width = _FIXED[element]
        source.emit(indent, f"{var} = list(_unpack('>%d{fmt}' % {count}, data, pos))")
        source.emit(indent, f"pos += {count} * {width}")
        return
    source.emit(indent, f"{var} = []")
    append = source.var("a")
    source.emit(indent, f"{append} = {var}.append")
    source.emit(indent, f"for _ in range({count}):")
    if field.struct is not None:
        item = _decodeStruct(source, field.struct, version, flexible, indent + 1, where + "[]")
    else:
        item = source.var()
        length = source.var("n")
        _readLength(source, [], indent + 1, length, "h" if element == "string" else "i", flexible)
        negative = source.const(f"{where}[]: negative length %d")
        _rejectNegative(source, length, indent + 1, where + "[]", negative)
        _decodeBlob(source, element, item, length, indent + 1, where + "[]")
    source.emit(indent + 1, f"{append}({item})")


def _compileEncoder(struct, version, flexible):
    source = _Source()
    source.namespace.update(_pack=_struct.pack, _blob=_blobSize, _text=_textBytes, _join=b"".join)
    source.emit(0, "def encode(value, out, chunks):")
    _encodeStruct(source, struct, version, flexible, 1, "value", struct.name)
    source.emit(1, "return None")
    return source.compile("encode")


def _flushWrites(source, run, indent):
    if not run:
        return
    codec = _struct.Struct(">" + "".join(fmt for _, fmt in run))
    name = source.const(codec, "S")
    source.emit(indent, f"out.append({name}.pack({', '.join(expr for expr, _ in run)}))")
    run.clear()


def _encodeStruct(source, struct, version, flexible, indent, value, path):
    """Emit code writing the struct value held in variable C{value}."""
    present = [f for f in struct.fields if version in f.versions]
    if not present:
        if flexible:
            source.emit(indent, "out.append(b'\\x00')  # no tagged fields")
        return
    names = {f.name: source.var() for f in present}
    defaults = {f.name: _defaultExpression(source, f) for f in present}
    cls = source.const(struct.type, "T")
    targets = ", ".join(names.get(f.name, "_") for f in struct.fields) + ","
    source.emit(indent, f"if type({value}) is {cls}:")
    source.emit(indent + 1, f"{targets} = {value}")
    source.emit(indent, f"elif isinstance({value}, dict):")
    get = source.var("g")
    source.emit(indent + 1, f"{get} = {value}.get")
    for f in present:
        source.emit(indent + 1, f"{names[f.name]} = {get}({f.name!r}, {defaults[f.name]})")
    source.emit(indent, "else:")
    for f in present:
        source.emit(indent + 1, f"{names[f.name]} = getattr({value}, {f.name!r}, {defaults[f.name]})")
    run = []
    for field in present:
        var = names[field.name]
        where = f"{path}.{field.name}"
        if field.type in _FIXED:
            run.append((var, _FIXED[field.type][0]))
            continue
        nullable = field.nullableIn(version)
        length = source.var("n")
        notNull = source.const(f"{where} is None, which version {version} does not allow")
        code = "q" if flexible else None  # compact: an unsigned varint, written by _encodeLength
        if field.isArray:
            _encodeLength(source, run, indent, var, length, code or "i", nullable, notNull, f"{length} = len({var})")
            _encodeItems(source, field, version, flexible, indent + 1, var, length, where)
        elif field.type == "string":
            body = source.var("b")
            _encodeLength(
                source, run, indent, var, length, code or "h", nullable, notNull,
                f"{body} = {var}.encode('utf-8') if type({var}) is str else _text({var})",
                f"{length} = len({body})",
            )
            source.emit(indent + 1, f"out.append({body})")
        else:  # bytes: its own chunk, never copied
            _encodeLength(
                source, run, indent, var, length, code or "i", nullable, notNull,
                f"{length} = len({var}) if type({var}) is bytes else _blob({var})",
            )
            source.emit(indent + 1, "chunks.append(_join(out))")
            source.emit(indent + 1, "out.clear()")
            source.emit(indent + 1, f"chunks.append({var})")
    _flushWrites(source, run, indent)
    if flexible:
        source.emit(indent, "out.append(b'\\x00')  # no tagged fields")


def _encodeLength(source, run, indent, var, length, code, nullable, notNull, *measure):
    """Emit the length of array, string or bytes C{var} into C{length} (written as
    struct C{code}; "q" here: compact, an unsigned varint of length + 1), then
    C{if length > 0:} for the caller to emit the contents under.

    C{None} is length -1 if C{nullable}, else raises ValueError(C{notNull});
    other values are measured by the C{measure} lines."""
    source.emit(indent, f"if {var} is None:")
    if nullable:
        source.emit(indent + 1, f"{length} = -1")
    else:
        source.emit(indent + 1, f"raise ValueError({notNull})")
    source.emit(indent, "else:")
    for line in measure:
        source.emit(indent + 1, line)
    if code == "q":
        _flushWrites(source, run, indent)
        source.emit(indent, f"out.append(_varint({length} + 1))")
    else:
        run.append((length, code))
        _flushWrites(source, run, indent)
    source.emit(indent, f"if {length} > 0:")


def _encodeItems(source, field, version, flexible, indent, items, count, where):
    element = field.element
    if element in _FIXED:
        fmt = _FIXED[element][0]
        source.emit(indent, f"out.append(_pack('>%d{fmt}' % {count}, *{items}))")
        return
    item = source.var("i")
    source.emit(indent, f"for {item} in {items}:")
    if field.struct is not None:
        _encodeStruct(source, field.struct, version, flexible, indent + 1, item, where + "[]")
        return
    body = source.var("b")
    notNull = source.const(f"{where}[] is None, which is not allowed")
    source.emit(indent + 1, f"if {item} is None:")
    source.emit(indent + 2, f"raise ValueError({notNull})")
    if element == "string":
        source.emit(indent + 1, f"{body} = {item}.encode('utf-8') if type({item}) is str else _text({item})")
        if flexible:
            source.emit(indent + 1, f"out.append(_varint(len({body}) + 1))")
        else:
            codec = source.const(INT16, "S")
            source.emit(indent + 1, f"out.append({codec}.pack(len({body})))")
        source.emit(indent + 1, f"out.append({body})")
    else:
        if flexible:
            source.emit(indent + 1, f"out.append(_varint(_blob({item}) + 1))")
        else:
            codec = source.const(INT32, "S")
            source.emit(indent + 1, f"out.append({codec}.pack(_blob({item})))")
        source.emit(indent + 1, f"out.append({item})")


def _blobSize(value):
    """The length of a bytes-like value; a str or int is a TypeError, not a silent copy."""
    return memoryview(value).nbytes


def _textBytes(value):
    """A string field given as bytes-like is taken as already encoded."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"a string field needs str, not {type(value).__name__}")


def uvarint(value):
    """Kafka's unsigned varint of C{value} (0 <= value < 2**32): 7 bits a byte, low bits first."""
    if not 0 <= value < 1 << 32:
        raise ValueError(f"{value} does not fit an unsigned varint")
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def readUvarint(data, pos):
    """(value, position after it) of the unsigned varint at C{pos}; at most 5 bytes."""
    value = 0
    for shift in range(0, 35, 7):
        if pos >= len(data):
            raise CodecError("truncated unsigned varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >= 1 << 32:
                raise CodecError("unsigned varint above 2**32")
            return value, pos
    raise CodecError("unsigned varint longer than 5 bytes")


def skipTaggedFields(data, pos):
    """The position after the tagged-fields section at C{pos} (its fields skipped)."""
    count, pos = readUvarint(data, pos)
    if count * 2 > len(data) - pos:
        raise CodecError(f"{count} tagged fields cannot fit in {len(data) - pos} bytes")
    for _ in range(count):
        _, pos = readUvarint(data, pos)  # tag
        size, pos = readUvarint(data, pos)
        pos += size
        if pos > len(data):
            raise CodecError(f"truncated tagged field of {size} bytes")
    return pos


# --- entry points -------------------------------------------------------------

_REQUEST_DECODERS = {}
_RESPONSE_DECODERS = {}
_REQUEST_ENCODERS = {}
_RESPONSE_ENCODERS = {}


def _api(apiKey, version, error):
    from kafkaw.protocol.definitions import APIS  # definitions imports this module

    api = APIS.get(apiKey)
    if api is None or not api.hasVersion(version):
        raise error(f"no schema for api key {apiKey} version {version}")
    return api


def _requestDecoder(apiKey, version):
    api = _api(apiKey, version, CodecError)
    flexible = api.isFlexible(version)
    body = api.request.decoder(version, flexible)
    if flexible:  # request header v2: the header's tagged fields come first
        def decode(data, pos):
            value, pos = body(data, skipTaggedFields(data, pos))
            # librdkafka (2.16, AlterUserScramCredentials) ends its request with a
            # second empty tagged-fields section, which Kafka (no check for
            # trailing bytes) accepts: so are empty sections here, nothing else.
            while pos < len(data) and data[pos] == 0:
                pos += 1
            return value, pos
    else:
        decode = body
    _REQUEST_DECODERS[apiKey, version] = decode
    return decode


def _decode(decode, data, position, name):
    """Run a compiled decoder; a short frame or bad UTF-8 becomes a CodecError."""
    try:
        return decode(data, position)
    except _struct.error:
        raise CodecError(f"{name}: truncated frame") from None
    except UnicodeDecodeError as e:
        raise CodecError(f"{name}: string is not UTF-8: {e}") from None


def decodeRequestBody(apiKey, version, reader):
    """Decode a request body from C{reader}, positioned just after the request header.

    Returns the request Struct's namedtuple. Raises L{CodecError} when the
    body is malformed, when bytes are left over, or when there is no schema
    for (apiKey, version).
    """
    decode = _REQUEST_DECODERS.get((apiKey, version)) or _requestDecoder(apiKey, version)
    data = reader._data
    if type(data) is not bytes:
        data = bytes(data)
    value, reader.position = _decode(decode, data, reader.position, "request")
    reader.expectEnd()
    return value


def decodeResponse(apiKey, version, frame):
    """A response frame without its size prefix -> (correlationId, value).

    Raises L{CodecError} when it is malformed or has bytes left over.
    """
    decode = _RESPONSE_DECODERS.get((apiKey, version))
    if decode is None:
        api = _api(apiKey, version, CodecError)
        decode = _RESPONSE_DECODERS[apiKey, version] = (api.response.decoder(version, api.isFlexible(version)), api.isFlexible(version))
    decode, flexible = decode
    data = frame if type(frame) is bytes else bytes(frame)
    if len(data) < 4:
        raise CodecError("response: truncated correlation id")
    (correlationId,) = INT32.unpack_from(data, 0)
    start = skipTaggedFields(data, 4) if flexible else 4  # response header v1
    value, position = _decode(decode, data, start, "response")
    if position != len(data):
        raise CodecError(f"{len(data) - position} unexpected bytes after the response body")
    return correlationId, value


def _encode(encode, value, out, name):
    chunks = []
    try:
        encode(value, out, chunks)
    except _struct.error as e:
        raise ValueError(f"{name}: a value does not fit its field: {e}") from None
    if out:
        chunks.append(b"".join(out))
    return chunks


def encodeResponse(apiKey, version, correlationId, value):
    """A response as a list of bytes chunks: int32 correlation id, then the body.

    No size prefix. C{bytes} fields are chunks of their own (not copied).
    Raises ValueError for a null where the version does not allow one or a
    number out of range.
    """
    encode = _RESPONSE_ENCODERS.get((apiKey, version))
    if encode is None:
        api = _api(apiKey, version, ValueError)
        flexible = api.isFlexible(version)
        encode = _RESPONSE_ENCODERS[apiKey, version] = (api.response.encoder(version, flexible), _FLEXIBLE_RESPONSE_HEADER_END if flexible else b"")
    encode, headerEnd = encode
    return _encode(encode, value, [INT32.pack(correlationId) + headerEnd], "response")


_FLEXIBLE_RESPONSE_HEADER_END = b"\x00"  # response header v1: no tagged fields


def encodeRequestHeader(apiKey, version, correlationId, clientId):
    """Request header v1: api key, api version, correlation id, client id (nullable string)."""
    if clientId is None:
        client = INT16.pack(-1)
    else:
        client = clientId.encode("utf-8")
        client = INT16.pack(len(client)) + client
    return _HEADER.pack(apiKey, version, correlationId) + client


_HEADER = _struct.Struct(">hhi")


def encodeRequest(apiKey, version, correlationId, clientId, value):
    """A whole request (header v1 + body) as bytes, without size prefix: for clients."""
    encode = _REQUEST_ENCODERS.get((apiKey, version))
    if encode is None:
        api = _api(apiKey, version, ValueError)
        flexible = api.isFlexible(version)
        encode = _REQUEST_ENCODERS[apiKey, version] = (api.request.encoder(version, flexible), b"\x00" if flexible else b"")
    encode, headerEnd = encode
    header = encodeRequestHeader(apiKey, version, correlationId, clientId) + headerEnd  # v2: no tagged fields
    return b"".join(_encode(encode, value, [header], "request"))
