"""Readers: :func:`load` (memory-mapped, zero-copy numpy views) and :func:`loads` (any buffer).

Opening parses and checks the header, metadata and tensor table only (O(table), independent of tensor sizes).
Tensor bytes are checked (CRC32, and encoding-specific rules) the first time a tensor is accessed, so a
corrupted tensor raises instead of returning garbage; ``verify_all()`` checks every tensor up front.
With numpy absent (Pyodide), or ``backend="pure"``, tensors come back as ``memoryview``/``array.array``.
"""

from __future__ import annotations

import array
import contextlib
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from mle import bitpack
from mle.errors import ChecksumError, EncodingError, FormatError, SignatureError
from mle.layout import Entry, Header, Segment, parse_header, parse_metadata, parse_table
from mle.signing import body_digest, verify_body
from mle.spec import (
    ENC_FIELD,
    ENC_FIELD_PACKED,
    ENC_INT8,
    ENC_INT8_CHANNEL,
    ENC_RAW,
    ENC_SPARSE,
    FLAG_SIGNED,
    ROLE_DATA,
    ROLE_INDICES,
    ROLE_Q,
    ROLE_SCALE,
    ROLE_VALUES,
    ROLE_ZERO_POINT,
    SIG_TRAILER_SIZE,
)


def _numpy_or_none() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy


class MleFile:
    """A parsed .mle file over a buffer (bytes, bytearray, memoryview or mmap)."""

    def __init__(self, buf: Any, *, trusted_keys: Iterable[bytes] | None = None, require_signature: bool = False,
                 backend: str = "auto", verify_crc: bool = True, _mmap: Any = None, _file: Any = None) -> None:
        if backend not in ("auto", "numpy", "pure"):
            raise ValueError(f"backend must be 'auto', 'numpy' or 'pure', got {backend!r}")
        self._mmap, self._file = _mmap, _file
        self._buf = memoryview(buf).cast("B") if not isinstance(buf, memoryview) or buf.format != "B" else buf
        size = len(self._buf)
        self.header: Header = parse_header(self._buf, size)
        self.signed = bool(self.header.flags & FLAG_SIGNED)
        expected = self.header.body_length + (SIG_TRAILER_SIZE if self.signed else 0)
        if size != expected:
            raise FormatError(f"file is {size} bytes; header and table say {expected}"
                              f"{' (incl. signature trailer)' if self.signed else ''}")
        self.metadata: dict[str, Any] = parse_metadata(self._buf, self.header)
        self.entries: list[Entry] = parse_table(self._buf, self.header)
        self._by_name = {e.name: e for e in self.entries}
        self._checked: set[str] = set()
        self.signer: bytes | None = None
        if require_signature and not self.signed:
            raise SignatureError("file is not signed but a signature is required")
        # A verified signature already covers every byte of the body: per-tensor CRCs add nothing then.
        self._verify_crc = verify_crc
        if trusted_keys is not None and self.signed:
            self.signer = verify_body(self._buf, self.header.body_length, trusted_keys)
            self._verify_crc = False
        elif require_signature:
            raise SignatureError("a signature is required but no trusted keys were given")
        np = _numpy_or_none() if backend != "pure" else None
        if backend == "numpy" and np is None:
            raise ImportError("backend='numpy' but numpy is not importable")
        self._np = np

    # ── mapping-like access ──────────────────────────────────────────────────────────────────────────────
    @property
    def tensor_names(self) -> list[str]:
        return [e.name for e in self.entries]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensor_names)

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, name: str) -> Entry:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} (have {len(self.entries)} tensors)") from None

    def __getitem__(self, name: str) -> Any:
        return self.tensor(name)

    def items(self) -> Iterator[tuple[str, Any]]:
        for name in self.tensor_names:
            yield name, self.tensor(name)

    @property
    def body(self) -> memoryview:
        """The signed-over bytes (everything before the signature trailer)."""
        return self._buf[: self.header.body_length]

    def sha256(self) -> str:
        """Hex SHA-256 of the body: the model's identity, which deltas name as their base."""
        import hashlib

        return hashlib.sha256(self.body).hexdigest()

    def blake2b(self) -> bytes:
        return body_digest(self._buf, self.header.body_length)

    # ── raw bytes ──────────────────────────────────────────────────────────────────────────────────────
    def _segment_bytes(self, e: Entry, s: Segment) -> memoryview:
        return self._buf[s.offset: s.offset + s.length]

    def check(self, name: str) -> None:
        """Check a tensor's CRC32s and encoding invariants (done once, on first access)."""
        if name in self._checked:
            return
        e = self.entry(name)
        for s in e.segments if self._verify_crc else ():
            if zlib.crc32(self._segment_bytes(e, s)) != s.crc32:
                raise ChecksumError(f"tensor {name!r}: CRC32 mismatch in segment {s.role_name} "
                                    f"(bytes {s.offset}..{s.offset + s.length})")
        self._check_encoding_data(e)
        self._checked.add(name)

    def verify_all(self) -> None:
        """Check every tensor's CRC32 and encoding now (a full read of the data section), even when the
        reader was opened with ``verify_crc=False``."""
        saved, self._verify_crc = self._verify_crc, True
        self._checked.clear()
        try:
            for name in self.tensor_names:
                self.check(name)
        finally:
            self._verify_crc = saved

    def raw(self, name: str, role: str = "data") -> memoryview:
        """The stored bytes of one segment of a tensor (zero-copy), after checking the tensor."""
        from mle.spec import ROLE_CODES

        self.check(name)
        e = self.entry(name)
        return self._segment_bytes(e, e.segment(ROLE_CODES[role]))

    def _check_encoding_data(self, e: Entry) -> None:
        if e.encoding == ENC_SPARSE:
            idx = self._segment_bytes(e, e.segment(ROLE_INDICES)).cast("I")
            n, prev = e.numel, -1
            if self._np is not None and len(idx):
                a = self._np.frombuffer(idx, dtype="<u4")
                if (a.size > 1 and not bool(self._np.all(a[1:] > a[:-1]))) or int(a[-1]) >= n:
                    raise EncodingError(f"tensor {e.name!r}: sparse indices must be strictly increasing and < {n}")
            else:
                for i in idx:
                    if i <= prev or i >= n:
                        raise EncodingError(f"tensor {e.name!r}: sparse index {i} out of order or >= {n}")
                    prev = i
        elif e.encoding == ENC_FIELD:
            m = e.params["modulus_bits"]
            limit = 1 << m
            seg = self._segment_bytes(e, e.segment(ROLE_DATA))
            vals = seg.cast("H" if e.dtype.name == "u16" else "I")
            if (e.dtype.name == "u16" and m == 16) or (e.dtype.name == "u32" and m == 32):
                return
            if self._np is not None:
                a = self._np.frombuffer(seg, dtype="<u2" if e.dtype.name == "u16" else "<u4")
                bad = a.size and int(a.max()) >= limit
            else:
                bad = any(v >= limit for v in vals)
            if bad:
                raise EncodingError(f"tensor {e.name!r}: field element >= 2^{m}")
        elif e.encoding == ENC_FIELD_PACKED:
            s = e.segment(ROLE_DATA)
            if not bitpack.padding_is_zero(self._segment_bytes(e, s), e.numel, e.params["modulus_bits"]):
                raise EncodingError(f"tensor {e.name!r}: nonzero padding bits after the last packed element "
                                    f"(byte {s.offset + s.length - 1})")

    # ── decoding ─────────────────────────────────────────────────────────────────────────────────────────
    def tensor(self, name: str) -> Any:
        """The decoded tensor: a numpy array (zero-copy view for raw tensors other than bf16) or, with no
        numpy, a flat ``memoryview`` (raw numeric) / ``array.array`` (decoded) — see ``entry(name).shape``."""
        self.check(name)
        e = self.entry(name)
        return self._decode_numpy(e) if self._np is not None else self._decode_pure(e)

    def _decode_numpy(self, e: Entry) -> Any:
        np = self._np
        shape = e.shape
        if e.encoding in (ENC_RAW, ENC_FIELD):
            seg = self._segment_bytes(e, e.segments[0])
            if e.dtype.name == "bf16":
                u = np.frombuffer(seg, dtype="<u2").astype(np.uint32) << 16
                return u.view(np.float32).reshape(shape)
            return np.frombuffer(seg, dtype=e.dtype.numpy).reshape(shape)
        if e.encoding == ENC_FIELD_PACKED:
            seg = self._segment_bytes(e, e.segments[0])
            return bitpack.unpack_numpy(seg, e.numel, e.params["modulus_bits"]).reshape(shape)
        out_dtype = np.float64 if e.dtype.name == "f64" else np.float32
        if e.encoding in (ENC_INT8, ENC_INT8_CHANNEL):
            q = np.frombuffer(self._segment_bytes(e, e.segment(ROLE_Q)), dtype=np.int8).reshape(shape)
            scale = np.frombuffer(self._segment_bytes(e, e.segment(ROLE_SCALE)), dtype="<f4").astype(np.float64)
            zp = np.frombuffer(self._segment_bytes(e, e.segment(ROLE_ZERO_POINT)), dtype=np.int8).astype(np.float64)
            if e.encoding == ENC_INT8_CHANNEL:
                b = [1] * len(shape)
                b[e.params["axis"]] = -1
                scale, zp = scale.reshape(b), zp.reshape(b)
            out = (q.astype(np.float64) - zp) * scale
            return out.astype(out_dtype) if e.dtype.name != "f16" else out.astype(np.float16)
        if e.encoding == ENC_SPARSE:
            idx = np.frombuffer(self._segment_bytes(e, e.segment(ROLE_INDICES)), dtype="<u4")
            vseg = e.segment(ROLE_VALUES)
            vals = np.frombuffer(self._segment_bytes(e, vseg), dtype=vseg.dtype.numpy)
            dense = np.zeros(e.numel, dtype=np.float16 if e.dtype.name == "f16" else out_dtype)
            dense[idx] = vals
            return dense.reshape(shape)
        raise EncodingError(f"tensor {e.name!r}: unknown encoding {e.encoding}")  # pragma: no cover

    def _decode_pure(self, e: Entry) -> Any:
        n = e.numel
        if e.encoding in (ENC_RAW, ENC_FIELD):
            seg = self._segment_bytes(e, e.segments[0])
            if e.dtype.name == "f16":
                return array.array("f", struct.unpack(f"<{n}e", seg))
            if e.dtype.name == "bf16":
                u = seg.cast("H")
                return array.array("f", struct.unpack(f"<{n}f", struct.pack(f"<{n}I", *(x << 16 for x in u))))
            return seg.cast(e.dtype.fmt)
        if e.encoding == ENC_FIELD_PACKED:  # a memoryview, as for the unpacked field encoding
            seg = self._segment_bytes(e, e.segments[0])
            return memoryview(bitpack.unpack(seg, n, e.params["modulus_bits"], use_numpy=False))
        code = "d" if e.dtype.name == "f64" else "f"
        if e.encoding in (ENC_INT8, ENC_INT8_CHANNEL):
            q = self._segment_bytes(e, e.segment(ROLE_Q)).cast("b")
            scale = self._segment_bytes(e, e.segment(ROLE_SCALE)).cast("f")
            zp = self._segment_bytes(e, e.segment(ROLE_ZERO_POINT)).cast("b")
            if e.encoding == ENC_INT8:
                s, z = scale[0], zp[0]
                return array.array(code, ((v - z) * s for v in q))
            axis = e.params["axis"]
            inner = 1
            for d in e.shape[axis + 1:]:
                inner *= d
            c = e.shape[axis]
            return array.array(code, ((q[i] - zp[(i // inner) % c]) * scale[(i // inner) % c] for i in range(n)))
        if e.encoding == ENC_SPARSE:
            idx = self._segment_bytes(e, e.segment(ROLE_INDICES)).cast("I")
            vseg = e.segment(ROLE_VALUES)
            raw = self._segment_bytes(e, vseg)
            vals = struct.unpack(f"<{len(idx)}{'e' if vseg.dtype.name == 'f16' else 'f'}", raw)
            dense = array.array(code, bytes(n * (8 if code == "d" else 4)))
            for i, v in zip(idx, vals, strict=True):
                dense[i] = v
            return dense
        raise EncodingError(f"tensor {e.name!r}: unknown encoding {e.encoding}")  # pragma: no cover

    def field_values(self, name: str) -> tuple[int, Any]:
        """``(modulus_bits, values)`` of a field-element tensor, ``field`` or ``field_packed`` alike: a numpy
        u16/u32 array (a view for ``field``, unpacked for ``field_packed``), or a memoryview of format
        ``'H'``/``'I'``."""
        e = self.entry(name)
        if e.encoding not in (ENC_FIELD, ENC_FIELD_PACKED):
            raise EncodingError(f"tensor {name!r} is {e.encoding_name}, not field elements")
        return e.params["modulus_bits"], self.tensor(name)

    # ── lifetime ─────────────────────────────────────────────────────────────────────────────────────────
    def close(self) -> None:
        """Release the memory map (only possible once no tensor view is alive; otherwise the map is released
        when the last view is garbage-collected)."""
        if self._mmap is not None:
            try:
                self._buf.release()
                self._mmap.close()
            except BufferError:
                pass
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MleFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MleFile {len(self.entries)} tensors, {self.header.body_length} bytes, signed={self.signed}>"


def loads(buf: Any, trusted_keys: Iterable[bytes] | None = None, require_signature: bool = False,
          backend: str = "auto", verify_crc: bool = True) -> MleFile:
    """Parse a .mle file held in memory. Tensors are views into ``buf`` (keep it alive and unmodified).

    ``verify_crc=False`` skips the per-tensor CRC32 on access (for bytes whose integrity is established
    otherwise); all structural and encoding checks still run."""
    if isinstance(buf, str):
        raise TypeError("loads() takes bytes; use load(path) for a file name")
    return MleFile(buf, trusted_keys=trusted_keys, require_signature=require_signature, backend=backend,
                   verify_crc=verify_crc)


def load(path: str | os.PathLike[str], trusted_keys: Iterable[bytes] | None = None,
         require_signature: bool = False, backend: str = "auto", verify_crc: bool = True) -> MleFile:
    """Memory-map a .mle file read-only and parse it; tensors are zero-copy views into the map."""
    import mmap  # imported here: the browser (Pyodide) uses loads() only

    f = open(os.fspath(path), "rb")  # noqa: SIM115 - kept open for the map's lifetime, closed by close()
    try:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            from mle.errors import TruncatedError

            raise TruncatedError(f"{os.fspath(path)}: empty file")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except BaseException:
        f.close()
        raise
    try:
        return MleFile(mm, trusted_keys=trusted_keys, require_signature=require_signature, backend=backend,
                       verify_crc=verify_crc, _mmap=mm, _file=f)
    except BaseException:
        f.close()
        with contextlib.suppress(BufferError):  # a view still referenced from the traceback keeps the map
            mm.close()
        raise
