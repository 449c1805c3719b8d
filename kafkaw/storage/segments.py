"""Segment files: where the LevelDB store keeps large batches, outside LevelDB.

LevelDB writes every value twice (its log, then a table file) and its
compactions rewrite it again: for batches of hundreds of kilobytes that is
most of the broker's CPU per message. So, as Kafka does, a batch of
C{inlineBytes} or more is appended to its partition's current segment file,
and LevelDB keeps, in the same atomic write as before, a 21-byte pointer to it
(L{encodePointer}) instead of the bytes. Smaller batches stay in LevelDB.

    <segments dir>/<topic id>-<partition>/<first offset, 20 digits>.log

A segment is named by the first offset of the first batch written to it; it
is closed for writing once the next batch would take it past
C{segmentBytes}. Retention deletes a whole segment once every batch in it is
below the log start (L{LevelDBPartitionLog._deleteStep}).
"""

import collections
import contextlib
import os
import re
import struct
import threading

# The first byte of a pointer value: a stored message set starts with its
# int64 base offset, which is never negative, so its first byte is below 0x80.
_POINTER_TAG = 0xFF
_POINTER = struct.Struct(">Bqqi")  # tag, segment's first offset, position, length
POINTER_SIZE = _POINTER.size

_SEGMENT_NAME = re.compile(r"^(\d{20})\.log$")
_PARTITION_DIR = re.compile(r"^(\d+)-(\d+)$")


def encodePointer(segment, position, length):
    return _POINTER.pack(_POINTER_TAG, segment, position, length)


def isPointer(value):
    return len(value) == POINTER_SIZE and value[0] == _POINTER_TAG


def decodePointer(value):
    """(segment, position, length) of a pointer value."""
    return _POINTER.unpack(value)[1:]


def storedSize(value):
    """Bytes of the message set a stored value holds or points to."""
    if isPointer(value):
        return _POINTER.unpack(value)[3]
    return len(value)


def partitionDir(root, topicId, partition):
    return os.path.join(root, f"{topicId}-{partition}")


def segmentPath(directory, segment):
    return os.path.join(directory, f"{segment:020d}.log")


def listSegments(root):
    """{(topic id, partition): sorted first offsets of its segment files} under C{root}."""
    found = {}
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return found
    for entry in entries:
        match = _PARTITION_DIR.match(entry.name)
        if not match or not entry.is_dir():
            continue
        bases = sorted(int(m.group(1)) for m in map(_SEGMENT_NAME.match, os.listdir(entry.path)) if m)
        found[(int(match.group(1)), int(match.group(2)))] = bases
    return found


def syncDirectory(path):
    """fsync a directory, so the files created in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writeAll(fd, data, position):
    """os.pwrite all of C{data} at C{position} (raises OSError, e.g. ENOSPC)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        view = view[written:]
        position += written


def readExactly(fd, length, position):
    """C{length} bytes at C{position}, or fewer if the file ends first."""
    pieces = []
    while length > 0:
        piece = os.pread(fd, length, position)
        if not piece:
            break
        pieces.append(piece)
        length -= len(piece)
        position += len(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class _OpenFile:
    __slots__ = ("fd", "users", "forgotten")

    def __init__(self, fd):
        self.fd = fd
        self.users = 0
        self.forgotten = False


class SegmentFiles:
    """Segment files kept open, at most C{limit} (least recently used closed first).

    Shared by the writer thread and the reader threads: a file is closed only
    once no thread uses it, so dropping one from the cache (or unlinking it)
    never pulls a descriptor from under a read.
    """

    def __init__(self, limit=256):
        self._limit = limit
        self._files = collections.OrderedDict()  # path -> _OpenFile
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def open(self, path, create=False):
        """The file's descriptor (O_RDWR) for the duration of the block.

        C{create}: create it empty (truncating what an unfinished write may
        have left under that name).
        """
        entry = self._take(path, create)
        try:
            yield entry.fd
        finally:
            self._release(entry)

    def _take(self, path, create):
        with self._lock:
            entry = None if create else self._files.get(path)
            if entry is not None:
                self._files.move_to_end(path)
                entry.users += 1
                return entry
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        entry = _OpenFile(os.open(path, flags, 0o644))
        with self._lock:
            old = self._files.pop(path, None)
            if old is not None:
                self._drop(old)
            self._files[path] = entry
            entry.users += 1
            while len(self._files) > self._limit:
                self._drop(self._files.popitem(last=False)[1])
        return entry

    def _release(self, entry):
        with self._lock:
            entry.users -= 1
            if entry.forgotten and not entry.users:
                os.close(entry.fd)

    def _drop(self, entry):
        # With the lock held.
        entry.forgotten = True
        if not entry.users:
            os.close(entry.fd)

    def forget(self, path):
        """Close C{path} once unused (before it is deleted or truncated)."""
        with self._lock:
            entry = self._files.pop(path, None)
            if entry is not None:
                self._drop(entry)

    def closeAll(self):
        with self._lock:
            while self._files:
                self._drop(self._files.popitem()[1])
