"""Pure-Python packing and validated parsing of the header and the tensor table (no numpy)."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from mle.bitpack import packed_nbytes
from mle.errors import (
    AlignmentError,
    BoundsError,
    ChecksumError,
    HeaderError,
    LimitError,
    MagicError,
    MetadataError,
    TableError,
    TruncatedError,
    VersionError,
)
from mle.spec import (
    ALIGNMENT,
    DTYPE_BY_CODE,
    ENC_FIELD,
    ENC_FIELD_PACKED,
    ENC_INT8,
    ENC_INT8_CHANNEL,
    ENC_RAW,
    ENC_SPARSE,
    ENCODING_NAMES,
    FLOAT_DTYPES,
    HEADER_SIZE,
    KNOWN_FLAGS,
    MAGIC,
    MAX_DIM,
    MAX_ELEMENTS,
    MAX_METADATA_BYTES,
    MAX_NAME_BYTES,
    MAX_PARAMS_BYTES,
    MAX_RANK,
    MAX_SEGMENTS,
    MAX_TABLE_BYTES,
    MAX_TENSORS,
    ROLE_DATA,
    ROLE_INDICES,
    ROLE_NAMES,
    ROLE_Q,
    ROLE_SCALE,
    ROLE_VALUES,
    ROLE_ZERO_POINT,
    VERSION,
    DType,
)

_HEADER = struct.Struct("<4sHHII6Q3I")  # without the trailing header CRC
_CRC = struct.Struct("<I")
_SEGMENT = struct.Struct("<BBHIQQ")
assert _HEADER.size + _CRC.size == HEADER_SIZE
assert _SEGMENT.size == 24


@dataclass(frozen=True)
class Header:
    version: int
    header_size: int
    flags: int
    tensor_count: int
    metadata_offset: int
    metadata_length: int
    data_offset: int
    data_length: int
    table_offset: int
    table_length: int
    metadata_crc: int
    table_crc: int

    @property
    def body_length(self) -> int:
        """Bytes covered by a signature: everything up to the end of the table."""
        return self.table_offset + self.table_length


@dataclass(slots=True)
class Segment:
    role: int
    dtype: DType
    crc32: int
    offset: int  # absolute, from the start of the file
    length: int

    @property
    def count(self) -> int:
        return self.length // self.dtype.itemsize

    @property
    def role_name(self) -> str:
        return ROLE_NAMES[self.role]


@dataclass(slots=True)
class Entry:
    """One tensor-table entry: a logical tensor and the segments that store it."""

    name: str
    dtype: DType
    encoding: int
    shape: tuple[int, ...]
    params: dict[str, Any]
    segments: tuple[Segment, ...]
    numel: int = -1

    def __post_init__(self) -> None:
        if self.numel < 0:
            n = 1
            for d in self.shape:
                n *= d
            self.numel = n

    @property
    def encoding_name(self) -> str:
        return ENCODING_NAMES[self.encoding]

    @property
    def nbytes(self) -> int:
        return sum(s.length for s in self.segments)

    def segment(self, role: int) -> Segment:
        for s in self.segments:
            if s.role == role:
                return s
        raise TableError(f"tensor {self.name!r}: no {ROLE_NAMES.get(role, role)} segment")


# ── header ─────────────────────────────────────────────────────────────────────────────────────────────
def pack_header(h: Header) -> bytes:
    body = _HEADER.pack(
        MAGIC, h.version, h.header_size, h.flags, h.tensor_count,
        h.metadata_offset, h.metadata_length, h.data_offset, h.data_length,
        h.table_offset, h.table_length,
        h.metadata_crc, h.table_crc, 0,
    )
    return body + _CRC.pack(zlib.crc32(body))


def parse_header(buf: Any, size: int) -> Header:
    """Parse and check the fixed header of a buffer of ``size`` bytes."""
    if size < 4:
        raise TruncatedError(f"file is {size} bytes, shorter than the 4-byte magic")
    magic = bytes(buf[0:4])
    if magic != MAGIC:
        raise MagicError(f"bad magic {magic!r} at offset 0 (expected {MAGIC!r})")
    if size < 8:
        raise TruncatedError(f"file is {size} bytes, shorter than the version field")
    version, header_size = struct.unpack_from("<HH", buf, 4)
    if version in (1, 2):
        raise VersionError(f"format version {version} is the older, incompatible MLE Runtime format; "
                           f"this reader implements version {VERSION}")
    if version != VERSION:
        raise VersionError(f"unsupported format version {version} (this reader implements {VERSION})")
    if header_size < HEADER_SIZE or header_size % 8:
        raise HeaderError(f"header_size {header_size} at offset 6 is invalid (>= {HEADER_SIZE}, multiple of 8)")
    if size < header_size:
        raise TruncatedError(f"file is {size} bytes, shorter than its {header_size}-byte header")
    raw = bytes(buf[0:header_size])
    (_m, _v, _hs, flags, tensor_count, md_off, md_len, data_off, data_len, tab_off, tab_len,
     md_crc, tab_crc, reserved) = _HEADER.unpack_from(raw, 0)
    (stored_crc,) = _CRC.unpack_from(raw, _HEADER.size)
    crc = zlib.crc32(raw[HEADER_SIZE:], zlib.crc32(raw[: _HEADER.size]))
    if crc != stored_crc:
        raise ChecksumError(f"header CRC32 mismatch (stored {stored_crc:#010x}, computed {crc:#010x})")
    if flags & ~KNOWN_FLAGS:
        raise HeaderError(f"unknown flag bits {flags & ~KNOWN_FLAGS:#x} at offset 8")
    if reserved:
        raise HeaderError(f"reserved header field at offset 72 must be zero, is {reserved:#x}")
    if tensor_count > MAX_TENSORS:
        raise LimitError(f"tensor_count {tensor_count} exceeds the limit {MAX_TENSORS}")
    if md_len > MAX_METADATA_BYTES:
        raise LimitError(f"metadata_length {md_len} exceeds the limit {MAX_METADATA_BYTES}")
    if tab_len > MAX_TABLE_BYTES:
        raise LimitError(f"table_length {tab_len} exceeds the limit {MAX_TABLE_BYTES}")
    # Sections must follow each other in order: header ≤ metadata ≤ data ≤ table.
    if md_off != header_size:
        raise BoundsError(f"metadata_offset {md_off} must equal header_size {header_size}")
    if data_off % ALIGNMENT:
        raise AlignmentError(f"data_offset {data_off} is not a multiple of {ALIGNMENT}")
    if data_off < md_off + md_len or data_off - (md_off + md_len) >= ALIGNMENT:
        raise BoundsError(f"data_offset {data_off} must be the first multiple of {ALIGNMENT} after the metadata "
                          f"(which ends at {md_off + md_len})")
    if tab_off != data_off + data_len:
        raise BoundsError(f"table_offset {tab_off} must equal data_offset + data_length = {data_off + data_len}")
    if tab_off + tab_len > size:
        raise TruncatedError(f"table ends at byte {tab_off + tab_len}, beyond the end of the file ({size})")
    return Header(version, header_size, flags, tensor_count, md_off, md_len, data_off, data_len,
                  tab_off, tab_len, md_crc, tab_crc)


def parse_metadata(buf: Any, h: Header) -> dict[str, Any]:
    raw = bytes(buf[h.metadata_offset: h.metadata_offset + h.metadata_length])
    if zlib.crc32(raw) != h.metadata_crc:
        raise ChecksumError(f"metadata CRC32 mismatch (bytes {h.metadata_offset}..{h.metadata_offset + h.metadata_length})")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MetadataError(f"metadata at offset {h.metadata_offset} is not UTF-8 JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise MetadataError(f"metadata must be a JSON object, got {type(meta).__name__}")
    return meta


# ── table ──────────────────────────────────────────────────────────────────────────────────────────────
def pack_entry(e: Entry) -> bytes:
    name = e.name.encode("utf-8")
    params = json.dumps(e.params, sort_keys=True, separators=(",", ":")).encode("utf-8") if e.params else b""
    out = [struct.pack("<H", len(name)), name,
           struct.pack("<BBBB", e.dtype.code, e.encoding, len(e.shape), len(e.segments)),
           struct.pack(f"<{len(e.shape)}Q", *e.shape), struct.pack("<I", len(params)), params]
    for s in e.segments:
        out.append(_SEGMENT.pack(s.role, s.dtype.code, 0, s.crc32, s.offset, s.length))
    return b"".join(out)


_CODES = struct.Struct("<BBBB")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


def parse_table(buf: Any, h: Header) -> list[Entry]:
    """Parse every entry and check it against the format's rules and the data section's bounds."""
    raw = bytes(buf[h.table_offset: h.table_offset + h.table_length])
    if zlib.crc32(raw) != h.table_crc:
        raise ChecksumError(f"tensor table CRC32 mismatch (bytes {h.table_offset}..{h.body_length})")
    entries: list[Entry] = []
    names: set[str] = set()
    pos = 0
    for index in range(h.tensor_count):
        e, pos = _parse_entry(raw, pos, index, h)
        if e.name in names:
            raise TableError(f"duplicate tensor name {e.name!r} (entry {index})")
        names.add(e.name)
        entries.append(e)
    if pos != len(raw):
        raise TableError(f"{len(raw) - pos} trailing bytes after the last table entry")
    _check_no_overlap(entries, h)
    return entries


def _need(raw: bytes, pos: int, n: int, index: int, what: str) -> None:
    if pos + n > len(raw):
        raise TruncatedError(f"tensor table ends inside {what} of entry {index} (at table byte {pos})")


def _parse_entry(raw: bytes, pos: int, index: int, h: Header) -> tuple[Entry, int]:
    """Parse entry ``index`` starting at table byte ``pos``; return it and the position after it.

    Hot path (opening a file is dominated by this): error messages are only built on failure."""
    _need(raw, pos, 2, index, "the name length")
    (name_len,) = _U16.unpack_from(raw, pos)
    pos += 2
    if name_len == 0 or name_len > MAX_NAME_BYTES:
        raise TableError(f"table entry {index}: name length {name_len} not in 1..{MAX_NAME_BYTES}")
    _need(raw, pos, name_len + 4, index, "the name and codes")
    try:
        name = raw[pos: pos + name_len].decode("utf-8")
    except UnicodeDecodeError:
        raise TableError(f"table entry {index}: name is not UTF-8") from None
    pos += name_len
    dtype_code, encoding, rank, nseg = _CODES.unpack_from(raw, pos)
    pos += 4
    dtype = DTYPE_BY_CODE.get(dtype_code)
    if dtype is None:
        raise TableError(f"tensor {name!r} (entry {index}): unknown dtype code {dtype_code}")
    if encoding not in ENCODING_NAMES:
        raise TableError(f"tensor {name!r} (entry {index}): unknown encoding code {encoding}")
    if rank > MAX_RANK:
        raise LimitError(f"tensor {name!r} (entry {index}): rank {rank} exceeds the limit {MAX_RANK}")
    if not 1 <= nseg <= MAX_SEGMENTS:
        raise TableError(f"tensor {name!r} (entry {index}): segment count {nseg} not in 1..{MAX_SEGMENTS}")
    _need(raw, pos, 8 * rank + 4, index, "the shape")
    shape = struct.unpack_from(f"<{rank}Q", raw, pos)
    pos += 8 * rank
    numel = 1
    for d in shape:
        if d > MAX_DIM:
            raise LimitError(f"tensor {name!r} (entry {index}): dimension {d} exceeds the limit {MAX_DIM}")
        numel *= d
        if numel > MAX_ELEMENTS:
            raise LimitError(f"tensor {name!r} (entry {index}): element count exceeds the limit {MAX_ELEMENTS}")
    (plen,) = _U32.unpack_from(raw, pos)
    pos += 4
    if plen > MAX_PARAMS_BYTES:
        raise LimitError(f"tensor {name!r} (entry {index}): params length {plen} exceeds {MAX_PARAMS_BYTES}")
    _need(raw, pos, plen + _SEGMENT.size * nseg, index, "the params and segments")
    params: dict[str, Any] = {}
    if plen:
        try:
            params = json.loads(raw[pos: pos + plen].decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise TableError(f"tensor {name!r} (entry {index}): params are not UTF-8 JSON") from None
        if not isinstance(params, dict):
            raise TableError(f"tensor {name!r} (entry {index}): params must be a JSON object")
        pos += plen
    segments = []
    lo, hi = h.data_offset, h.data_offset + h.data_length
    for k in range(nseg):
        role, sdtype_code, reserved, crc, off, length = _SEGMENT.unpack_from(raw, pos)
        pos += _SEGMENT.size
        sdtype = DTYPE_BY_CODE.get(sdtype_code)
        if role not in ROLE_NAMES or sdtype is None or reserved:
            raise TableError(f"tensor {name!r} (entry {index}): segment {k} has role {role}, "
                             f"dtype code {sdtype_code}, reserved {reserved}")
        if off % ALIGNMENT:
            raise AlignmentError(f"tensor {name!r}: segment {ROLE_NAMES[role]} offset {off} is not "
                                 f"{ALIGNMENT}-byte aligned")
        if off < lo or off + length > hi:
            raise BoundsError(f"tensor {name!r}: segment {ROLE_NAMES[role]} bytes {off}..{off + length} lie "
                              f"outside the data section {lo}..{hi}")
        if length % sdtype.itemsize:
            raise BoundsError(f"tensor {name!r}: segment {ROLE_NAMES[role]} length {length} is not a multiple "
                              f"of {sdtype.name}'s {sdtype.itemsize} bytes")
        segments.append(Segment(role, sdtype, crc, off, length))
    entry = Entry(name, dtype, encoding, shape, params, tuple(segments), numel)
    if encoding == ENC_RAW and nseg == 1 and not params:  # fast path for the common case
        s = segments[0]
        if s.role != ROLE_DATA or s.dtype is not dtype or s.length != numel * dtype.itemsize:
            _check_encoding(entry, f"tensor {name!r} (entry {index})")
    else:
        _check_encoding(entry, f"tensor {name!r} (entry {index})")
    return entry, pos


def _expect(entry: Entry, where: str, layout: list[tuple[int, set[str], int]]) -> None:
    """Check the entry's segments are exactly ``layout``: (role, allowed storage dtypes, element count)."""
    got = [(s.role, s.dtype.name, s.count) for s in entry.segments]
    if len(got) != len(layout):
        raise TableError(f"{where}: encoding {entry.encoding_name} needs {len(layout)} segments, has {len(got)}")
    for (role, dname, count), (erole, edtypes, ecount) in zip(got, layout, strict=True):
        if role != erole or dname not in edtypes:
            raise TableError(f"{where}: segment {ROLE_NAMES[role]}:{dname} where {ROLE_NAMES[erole]}:"
                             f"{'/'.join(sorted(edtypes))} is required")
        if count != ecount:
            raise BoundsError(f"{where}: segment {ROLE_NAMES[role]} holds {count} elements, {ecount} required")


def _check_encoding(e: Entry, where: str) -> None:
    n = e.numel
    if e.encoding == ENC_RAW:
        if e.params:
            raise TableError(f"{where}: raw encoding takes no params")
        _expect(e, where, [(ROLE_DATA, {e.dtype.name}, n)])
    elif e.encoding in (ENC_INT8, ENC_INT8_CHANNEL):
        if e.dtype.name not in FLOAT_DTYPES:
            raise TableError(f"{where}: int8 quantization decodes to a float dtype, not {e.dtype.name}")
        if e.encoding == ENC_INT8:
            if e.params:
                raise TableError(f"{where}: int8 encoding takes no params")
            channels = 1
        else:
            axis = e.params.get("axis")
            if set(e.params) != {"axis"} or not isinstance(axis, int) or isinstance(axis, bool) \
                    or not 0 <= axis < len(e.shape):
                raise TableError(f"{where}: int8_channel params must be {{'axis': 0..{len(e.shape) - 1}}}, "
                                 f"got {e.params}")
            channels = e.shape[axis]
        _expect(e, where, [(ROLE_Q, {"i8"}, n), (ROLE_SCALE, {"f32"}, channels),
                           (ROLE_ZERO_POINT, {"i8"}, channels)])
    elif e.encoding == ENC_SPARSE:
        if e.dtype.name not in FLOAT_DTYPES:
            raise TableError(f"{where}: sparse encoding decodes to a float dtype, not {e.dtype.name}")
        if e.params:
            raise TableError(f"{where}: sparse encoding takes no params")
        if n > 0xFFFFFFFF:
            raise LimitError(f"{where}: sparse tensors are limited to 2^32 elements")
        k = e.segments[0].count if e.segments else 0
        if k > n:
            raise BoundsError(f"{where}: {k} sparse entries for a tensor of {n} elements")
        _expect(e, where, [(ROLE_INDICES, {"u32"}, k), (ROLE_VALUES, {"f16", "f32"}, k)])
    elif e.encoding in (ENC_FIELD, ENC_FIELD_PACKED):
        m = _modulus_bits(e, where)
        if e.encoding == ENC_FIELD:
            _expect(e, where, [(ROLE_DATA, {e.dtype.name}, n)])
        else:  # n elements of m bits, LSB first: ceil(n·m/8) bytes
            _expect(e, where, [(ROLE_DATA, {"u8"}, packed_nbytes(n, m))])


def _modulus_bits(e: Entry, where: str) -> int:
    """The checked ``modulus_bits`` of a field / field_packed entry: params exactly ``{"modulus_bits": m}``,
    1 ≤ m ≤ 16 for a u16 logical dtype, ≤ 32 for u32."""
    m = e.params.get("modulus_bits")
    limit = {"u16": 16, "u32": 32}.get(e.dtype.name)
    if limit is None:
        raise TableError(f"{where}: field elements are stored as u16 or u32, not {e.dtype.name}")
    if set(e.params) != {"modulus_bits"} or not isinstance(m, int) or isinstance(m, bool) \
            or not 1 <= m <= limit:
        raise TableError(f"{where}: {e.encoding_name} params must be {{'modulus_bits': 1..{limit}}}, "
                         f"got {e.params}")
    return m


def _check_no_overlap(entries: list[Entry], h: Header) -> None:
    spans = sorted((s.offset, s.offset + s.length, e.name) for e in entries for s in e.segments)
    prev_end, prev_name = h.data_offset, None
    for start, end, name in spans:
        if start < prev_end:
            raise BoundsError(f"tensor {name!r} bytes {start}..{end} overlap tensor {prev_name!r}")
        prev_end, prev_name = max(prev_end, end), name


