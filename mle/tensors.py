"""What the writer accepts and what the encoders produce: :class:`Encoded` (segments ready to write).

Everything here works with numpy absent; numpy arrays are handled when numpy is importable.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mle import bitpack
from mle.errors import FormatError, TableError
from mle.spec import (
    DTYPE_BY_NAME,
    ENC_FIELD,
    ENC_FIELD_PACKED,
    ENC_RAW,
    ROLE_DATA,
)

_NUMPY_TO_MLE = {"float32": "f32", "float16": "f16", "float64": "f64", "int8": "i8", "uint8": "u8",
                 "int16": "i16", "uint16": "u16", "int32": "i32", "uint32": "u32", "int64": "i64"}
_ARRAY_TYPECODES = {"f": "f32", "d": "f64", "b": "i8", "B": "u8", "h": "i16", "H": "u16", "i": "i32", "I": "u32",
                    "q": "i64"}

if sys.byteorder != "little":  # pragma: no cover - every target we run on (x86, ARM, wasm32) is little-endian
    raise ImportError("mle requires a little-endian host")


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass(frozen=True)
class Encoded:
    """A tensor ready to be written: logical dtype/shape, encoding, params and its segments' bytes.

    ``segments`` holds ``(role, storage dtype name, buffer)``; buffers are any bytes-like object (numpy arrays,
    ``array.array``, ``memoryview``) in little-endian order; the writer streams them without copying."""

    dtype: str
    encoding: int
    shape: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)
    segments: tuple[tuple[int, str, Any], ...] = ()


@dataclass(frozen=True)
class Tensor:
    """A raw tensor given as a flat buffer plus dtype and shape (the numpy-free way to write, and bf16)."""

    data: Any  # bytes-like, array.array or a list of numbers
    dtype: str
    shape: tuple[int, ...]


def _as_bytes_view(data: Any, dtype: str, count: int, what: str) -> Any:
    """A byte view of ``data`` holding exactly ``count`` elements of ``dtype``."""
    d = DTYPE_BY_NAME[dtype]
    if isinstance(data, list | tuple):
        if dtype == "f16":
            data = _pack_f16(data)
        elif not d.fmt:
            raise TableError(f"{what}: a list can't be stored as {dtype}; pass the raw 16-bit patterns as bytes")
        else:
            data = array.array(d.fmt, data)
    mv = memoryview(data).cast("B") if not isinstance(data, bytes | bytearray) else memoryview(data)
    if mv.nbytes != count * d.itemsize:
        raise TableError(f"{what}: {mv.nbytes} bytes given, {count} × {dtype} = {count * d.itemsize} needed")
    return mv


def _pack_f16(values: Sequence[float]) -> bytes:
    import struct

    return struct.pack(f"<{len(values)}e", *values)


def to_encoded(name: str, value: Any) -> Encoded:
    """Normalize anything the writer accepts into :class:`Encoded`."""
    if isinstance(value, Encoded):
        return value
    if isinstance(value, Tensor):
        if value.dtype not in DTYPE_BY_NAME:
            raise TableError(f"tensor {name!r}: unknown dtype {value.dtype!r}")
        shape = tuple(int(s) for s in value.shape)
        if any(s < 0 for s in shape):
            raise TableError(f"tensor {name!r}: negative dimension in shape {shape}")
        buf = _as_bytes_view(value.data, value.dtype, _numel(shape), f"tensor {name!r}")
        return Encoded(value.dtype, ENC_RAW, shape, {}, ((ROLE_DATA, value.dtype, buf),))
    if isinstance(value, FieldElements):
        return value.encoded(name)
    if isinstance(value, array.array):
        dtype = _ARRAY_TYPECODES.get(value.typecode)
        if dtype is None:
            raise TableError(f"tensor {name!r}: array typecode {value.typecode!r} has no .mle dtype")
        return Encoded(dtype, ENC_RAW, (len(value),), {}, ((ROLE_DATA, dtype, memoryview(value).cast("B")),))
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        dtype = _NUMPY_TO_MLE.get(value.dtype.name)
        if dtype is None:
            raise TableError(f"tensor {name!r}: numpy dtype {value.dtype} has no .mle dtype")
        arr = value if value.flags.c_contiguous and value.dtype.isnative else np.ascontiguousarray(value)
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        return Encoded(dtype, ENC_RAW, tuple(int(s) for s in arr.shape), {},
                       ((ROLE_DATA, dtype, arr.reshape(-1).view(np.uint8) if arr.size else b""),))
    raise TableError(f"tensor {name!r}: can't store a {type(value).__name__} "
                     f"(use a numpy array, array.array, mle.Tensor or an encoder's output)")


@dataclass(frozen=True)
class FieldElements:
    """A vector of integers mod 2^m (masked secure-aggregation input).

    Stored as u16 when m <= 16, else u32 (encoding ``field``: zero-copy on both sides), or with
    ``packed=True`` in exactly m bits per element (encoding ``field_packed``: ``ceil(n·m/8)`` bytes, packed by
    :mod:`mle.bitpack`; decodes to the same u16/u32 values). ``values``: numpy integer array,
    ``array.array('H'/'I')`` or a list of ints, each in [0, 2^m). ``check=False`` skips the range check (the
    caller guarantees it); the packer then keeps the low m bits of each value."""

    values: Any
    modulus_bits: int
    check: bool = True
    packed: bool = False

    def encoded(self, name: str = "field") -> Encoded:
        m = self.modulus_bits
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 32:
            raise FormatError(f"field tensor {name!r}: modulus_bits must be 1..32, got {m!r}")
        dtype = "u16" if m <= 16 else "u32"
        v = self.values
        np = sys.modules.get("numpy")
        if np is not None and isinstance(v, np.ndarray):
            if v.ndim != 1:
                raise FormatError(f"field tensor {name!r}: must be a vector, got shape {v.shape}")
            if self.check and v.size and (v.min() < 0 or int(v.max()) >= 1 << m):
                raise FormatError(f"field tensor {name!r}: values must lie in [0, 2^{m})")
            if self.packed:
                return _packed(dtype, m, int(v.size), bitpack.pack_numpy(v, m))
            arr = np.ascontiguousarray(v, dtype="<u2" if dtype == "u16" else "<u4")
            buf: Any = arr.view(np.uint8) if arr.size else b""
            n = int(arr.size)
        else:
            code = "H" if dtype == "u16" else "I"
            if isinstance(v, array.array) and v.typecode == code:
                arr2 = v
            else:
                if self.check and any(x < 0 or x >= 1 << m for x in v):
                    raise FormatError(f"field tensor {name!r}: values must lie in [0, 2^{m})")
                arr2 = array.array(code, v)
            if self.check and len(arr2) and max(arr2) >= 1 << m:
                raise FormatError(f"field tensor {name!r}: values must lie in [0, 2^{m})")
            if self.packed:
                return _packed(dtype, m, len(arr2), bitpack.pack(arr2, m))
            buf, n = memoryview(arr2).cast("B"), len(arr2)
        return Encoded(dtype, ENC_FIELD, (n,), {"modulus_bits": m}, ((ROLE_DATA, dtype, buf),))


def _packed(dtype: str, m: int, n: int, data: Any) -> Encoded:
    return Encoded(dtype, ENC_FIELD_PACKED, (n,), {"modulus_bits": m}, ((ROLE_DATA, "u8", data),))
