"""Reading RGB + thermal bags without ROS: open (or salvage) a bag, check its topics.

Shared by every bag tool (``ssvif-bag extract``, ``eval``, ``play``): the pure-Python ``rosbags``
library reads ROS 2 bags (a folder with ``metadata.yaml``, sqlite3 or mcap, or a single
``.db3`` / ``.mcap`` file) and ROS 1 ``.bag`` files; an MCAP file cut short (no footer or index)
is read record by record up to the cut (:class:`SalvageMcapReader`). :class:`BagError` is the
one error of the bag tools: one line naming the thing at fault, exit status 2 (:func:`guarded`).
"""
from __future__ import annotations

import errno
from pathlib import Path
import sys
from typing import Any, Dict, List, Optional, Tuple

from ssvif_ros.frames import ALLOWED_TYPES, COMPRESSED_TYPE, RGB, STREAM_NAMES, THERMAL


# Errors of writing output: said as "cannot write <path>" by guarded().
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                 errno.EPERM)


class BagError(Exception):
    """Unusable input or output: printed as one line naming the thing at fault, exit status 2."""


def guarded(prog: str, run, *args) -> int:
    """Run ``run(*args)`` as a command and return its exit status.

    BagError is printed as ``<prog>: error: ...`` with status
    2, Ctrl-C as ``<prog>: interrupted`` with 130. An OSError left over (a full disk, a
    read-only or unwritable output) is one line naming the file, or the command's ``--out``
    when the library that wrote gave no file name, with status 2.
    """
    try:
        return run(*args)
    except BagError as exc:
        print(f'{prog}: error: {exc}', file=sys.stderr)
        return 2
    except OSError as exc:
        outs = [a.out for a in args if getattr(a, 'out', None)]
        where = exc.filename or (outs[0] if outs else '(unknown file)')
        verb = 'cannot write' if exc.errno in _WRITE_ERRNOS else 'cannot use'
        print(f'{prog}: error: {verb} {where}: {exc.strerror or exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        return 130


def _topic_listing(topics: Dict[str, Any]) -> str:
    if not topics:
        return '(the bag has no topics)'
    return ', '.join(f'{name} ({info.msgtype or "several types"}, {info.msgcount} msgs)'
                     for name, info in sorted(topics.items()))


def open_bag(path: str):
    """Open ``path`` with rosbags' AnyReader (entered); raises BagError naming the bag."""
    try:
        from rosbags.highlevel import AnyReader, AnyReaderError
        from rosbags.typesys import get_typestore, Stores
    except ImportError as exc:
        raise BagError(f'the rosbags library is needed to read bags ({exc}); install it with '
                       '"pip install rosbags==0.11.9"') from None
    p = Path(path)
    if not p.exists():
        raise BagError(f'bag not found: {path}')
    if p.is_dir() and not (p / 'metadata.yaml').exists():
        raise BagError(f'{path} is a folder without metadata.yaml: not a ROS 2 bag (give the '
                       'bag folder, or its .db3 / .mcap file)')
    try:
        reader = AnyReader([p], default_typestore=get_typestore(Stores.LATEST))
        reader.open()
    except (AnyReaderError, OSError, ValueError, KeyError) as exc:
        mcaps = sorted(p.glob('*.mcap')) if p.is_dir() else [p] if p.suffix == '.mcap' else []
        if len(mcaps) == 1:
            # An MCAP file cut short (recorder killed, disk full) has no footer and no index,
            # which rosbags needs; its records up to the cut are still readable in order.
            salvage = SalvageMcapReader(mcaps[0], get_typestore(Stores.LATEST))
            if salvage.connections:
                return salvage
        raise BagError(f'cannot read bag {path}: {exc}') from None
    return reader


class _Topic:
    def __init__(self, msgtype: str):
        self.msgtype = msgtype
        self.msgcount = 0


class _Conn:
    def __init__(self, cid: int, topic: str, msgtype: str):
        self.id, self.topic, self.msgtype = cid, topic, msgtype


class SalvageMcapReader:
    """Reads an MCAP file record by record up to where it is cut off (AnyReader's interface).

    ``stopped`` is None when the file was read to its end, else ``(byte offset, reason)``.
    Only uncompressed and zstd/lz4 chunks (when those modules are present) are read.
    """

    MAGIC = b'\x89MCAP0\r\n'

    def __init__(self, path: Path, typestore):
        import struct
        self.path = path
        self.typestore = typestore
        self.stopped: Optional[Tuple[int, str]] = None
        self._schemas: Dict[int, str] = {}
        self.connections: List[_Conn] = []
        self.topics: Dict[str, _Topic] = {}
        self._messages: List[Tuple[_Conn, int, bytes]] = []
        data = path.read_bytes()
        if not data.startswith(self.MAGIC):
            return
        pos = len(self.MAGIC)
        u64 = struct.Struct('<Q')
        while True:
            if pos == len(data):
                self.stopped = (pos, 'the file ends without a footer')
                break
            if pos + 9 > len(data):
                self.stopped = (pos, 'the file is cut inside a record header')
                break
            op = data[pos]
            (length,) = u64.unpack_from(data, pos + 1)
            if pos + 9 + length > len(data):
                self.stopped = (len(data), f'cut inside a record of {length} bytes that '
                                           f'starts at byte {pos}')
                if op == 0x06:  # a cut chunk: its complete records are still readable
                    try:
                        self._record(op, data[pos + 9:], partial=True)
                    except (struct.error, ValueError, KeyError, UnicodeDecodeError):
                        pass
                break
            body = data[pos + 9:pos + 9 + length]
            pos += 9 + length
            if op == 0x02:  # footer: the end
                break
            try:
                self._record(op, body)
            except (struct.error, ValueError, KeyError, UnicodeDecodeError) as exc:
                self.stopped = (pos - 9 - length, f'damaged record: {exc}')
                break
        self._messages.sort(key=lambda m: m[1])
        self.start_time = self._messages[0][1] if self._messages else 0

    def _record(self, op: int, body: bytes, partial: bool = False) -> None:
        import struct

        def string(off):
            (n,) = struct.unpack_from('<I', body, off)
            return body[off + 4:off + 4 + n].decode(), off + 4 + n
        if op == 0x03:  # schema
            sid, = struct.unpack_from('<H', body, 0)
            name, _ = string(2)
            self._schemas[sid] = name
        elif op == 0x04:  # channel
            cid, sid = struct.unpack_from('<HH', body, 0)
            topic, _ = string(4)
            msgtype = self._schemas.get(sid, '')
            conn = _Conn(cid, topic, msgtype)
            self.connections.append(conn)
            self.topics.setdefault(topic, _Topic(msgtype))
        elif op == 0x05:  # message
            cid, _, log_time = struct.unpack_from('<HIQ', body, 0)
            conn = next(c for c in self.connections if c.id == cid)
            self.topics[conn.topic].msgcount += 1
            self._messages.append((conn, log_time, body[22:]))
        elif op == 0x06:  # chunk: records inside, possibly compressed
            off = 8 + 8 + 8 + 4
            compression, off = string(off)
            (n,) = struct.unpack_from('<Q', body, off)
            records = body[off + 8:off + 8 + n]
            if compression == 'zstd':
                import zstandard
                records = zstandard.ZstdDecompressor().decompress(records)
            elif compression == 'lz4':
                import lz4.frame
                records = lz4.frame.decompress(records)
            elif compression:
                raise ValueError(f'unsupported chunk compression {compression!r}')
            i = 0
            while i + 9 <= len(records):
                (length,) = struct.unpack_from('<Q', records, i + 1)
                if i + 9 + length > len(records):
                    if partial:
                        break
                    raise ValueError('a record runs past the end of its chunk')
                self._record(records[i], records[i + 9:i + 9 + length])
                i += 9 + length

    def messages(self, connections=None, start=None, stop=None):
        """(connection, log time ns, raw CDR) in log-time order, as AnyReader.messages."""
        ids = None if connections is None else {c.id for c in connections}
        for conn, t, raw in self._messages:
            if ((ids is None or conn.id in ids) and (start is None or t >= start)
                    and (stop is None or t < stop)):
                yield conn, t, raw

    def deserialize(self, raw: bytes, msgtype: str):
        """CDR bytes -> message object."""
        return self.typestore.deserialize_cdr(raw, msgtype)

    def close(self) -> None:
        """Nothing to release (the file was read at open)."""


def select_connections(reader, rgb_topic: str, thermal_topic: str):
    """Check both topics and their types; return (connections, msgtypes, topic infos)."""
    if rgb_topic == thermal_topic:
        raise BagError(f'--rgb-topic and --thermal-topic are the same topic {rgb_topic!r}')
    topics = reader.topics
    infos = []
    for stream, topic in ((RGB, rgb_topic), (THERMAL, thermal_topic)):
        name = STREAM_NAMES[stream]
        if topic not in topics:
            raise BagError(f'{name} topic {topic!r} is not in the bag; its topics are: '
                           f'{_topic_listing(topics)}')
        info = topics[topic]
        if info.msgtype not in ALLOWED_TYPES[stream]:
            hint = ''
            if stream == THERMAL and info.msgtype == COMPRESSED_TYPE:
                hint = (' (compressed thermal images lose the measured values; record the raw '
                        'topic)')
            raise BagError(
                f'{name} topic {topic!r} has type {info.msgtype or "(several types)"}, expected '
                f'{" or ".join(ALLOWED_TYPES[stream])}{hint}')
        infos.append(info)
    conns = [c for c in reader.connections if c.topic in (rgb_topic, thermal_topic)]
    return conns, (infos[0].msgtype, infos[1].msgtype), infos


def read_messages(reader, conns, lo: Optional[int], hi: Optional[int], bag: str):
    """reader.messages(), with storage errors (a truncated or corrupt file) as BagError."""
    it = reader.messages(connections=conns, start=lo, stop=hi)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - sqlite/mcap/rosbags errors alike
            raise BagError(f'cannot read bag {bag}: {type(exc).__name__}: {exc}') from None
        yield item
