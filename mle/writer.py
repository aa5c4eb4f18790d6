"""Streaming writer: header placeholder → metadata → each tensor's segments (64-byte aligned, CRC computed while
writing) → tensor table → final header → optional signature trailer. One encoded tensor is in memory at a time;
raw tensors are written straight from the caller's buffer (no second copy of the model)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO

from mle.errors import FormatError, MetadataError
from mle.layout import Entry, Header, Segment, pack_entry, pack_header
from mle.spec import (
    DTYPE_BY_NAME,
    FLAG_SIGNED,
    HEADER_SIZE,
    MAX_METADATA_BYTES,
    MAX_NAME_BYTES,
    MAX_TENSORS,
    SIG_ALG_ED25519_BLAKE2B512,
    SIG_CONTEXT,
    SIG_MAGIC,
    VERSION,
    align,
)
from mle.tensors import to_encoded

_CHUNK = 1 << 22


def _metadata_bytes(metadata: Mapping[str, Any] | None) -> bytes:
    try:
        raw = json.dumps(dict(metadata or {}), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                         allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"metadata is not JSON-serializable: {exc}") from None
    if len(raw) > MAX_METADATA_BYTES:
        raise MetadataError(f"metadata is {len(raw)} bytes, over the limit {MAX_METADATA_BYTES}")
    return raw


def _items(tensors: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Iterable[tuple[str, Any]]:
    return tensors.items() if isinstance(tensors, Mapping) else tensors


def write_stream(out: BinaryIO, tensors: Mapping[str, Any] | Iterable[tuple[str, Any]],
                 metadata: Mapping[str, Any] | None = None, signing_key: bytes | None = None) -> int:
    """Write a complete .mle file to a seekable binary stream positioned at 0. Returns the file length."""
    meta = _metadata_bytes(metadata)
    out.write(bytes(HEADER_SIZE))
    out.write(meta)
    pos = HEADER_SIZE + len(meta)
    data_offset = align(pos)
    out.write(bytes(data_offset - pos))
    pos = data_offset
    entries: list[Entry] = []
    names: set[str] = set()
    for name, value in _items(tensors):
        if not isinstance(name, str) or not name or len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise FormatError(f"tensor name {name!r} must be a non-empty string of at most {MAX_NAME_BYTES} bytes")
        if name in names:
            raise FormatError(f"duplicate tensor name {name!r}")
        names.add(name)
        if len(entries) >= MAX_TENSORS:
            raise FormatError(f"more than {MAX_TENSORS} tensors")
        enc = to_encoded(name, value)
        segments = []
        for role, dname, buf in enc.segments:
            start = align(pos)
            out.write(bytes(start - pos))
            mv = memoryview(buf).cast("B") if not isinstance(buf, bytes) else memoryview(buf)
            crc = 0
            for i in range(0, mv.nbytes, _CHUNK):
                chunk = mv[i: i + _CHUNK]
                crc = zlib.crc32(chunk, crc)
                out.write(chunk)
            pos = start + mv.nbytes
            segments.append(Segment(role, DTYPE_BY_NAME[dname], crc, start, mv.nbytes))
        entries.append(Entry(name, DTYPE_BY_NAME[enc.dtype], enc.encoding, enc.shape, dict(enc.params),
                             tuple(segments)))
        del enc
    # A zero-length data section still keeps the table after data_offset.
    table_offset = pos
    table = b"".join(pack_entry(e) for e in entries)
    out.write(table)
    header = Header(VERSION, HEADER_SIZE, FLAG_SIGNED if signing_key is not None else 0, len(entries),
                    HEADER_SIZE, len(meta), data_offset, table_offset - data_offset, table_offset, len(table),
                    zlib.crc32(meta), zlib.crc32(table))
    end = out.tell()
    out.seek(0)
    out.write(pack_header(header))
    out.seek(end)
    if signing_key is None:
        return end
    out.seek(0)
    digest = _digest_stream(out, end)
    out.seek(end)
    out.write(_trailer(digest, signing_key))
    return out.tell()


def _digest_stream(f: BinaryIO, length: int) -> bytes:
    h = hashlib.blake2b(digest_size=64)
    remaining = length
    while remaining:
        chunk = f.read(min(_CHUNK, remaining))
        if not chunk:
            raise FormatError("stream ended while hashing for the signature")
        h.update(chunk)
        remaining -= len(chunk)
    return h.digest()


def _trailer(body_digest: bytes, signing_key: bytes) -> bytes:
    from flcrypto import default_crypto

    sig = default_crypto().ed25519_sign(bytes(signing_key), SIG_CONTEXT + body_digest)
    return SIG_MAGIC + SIG_ALG_ED25519_BLAKE2B512.to_bytes(4, "little") + sig


def save(path: str | os.PathLike[str], tensors: Mapping[str, Any] | Iterable[tuple[str, Any]],
         metadata: Mapping[str, Any] | None = None, signing_key: bytes | None = None) -> int:
    """Write a .mle file atomically (temp file, fsync, rename). Returns its size in bytes."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w+b") as f:
            n = write_stream(f, tensors, metadata, signing_key)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return n


def dumps(tensors: Mapping[str, Any] | Iterable[tuple[str, Any]], metadata: Mapping[str, Any] | None = None,
          signing_key: bytes | None = None) -> bytes:
    """The bytes of a .mle file."""
    buf = io.BytesIO()
    write_stream(buf, tensors, metadata, signing_key)
    return buf.getvalue()
