"""Vector backends for field arithmetic mod 2^m and the fixed-point/DP math the clients run.

``numpy_backend()`` on CPython, ``pure_backend()`` (stdlib only) for the browser and as the reference; both give
identical results (tested). Vectors are ``numpy.ndarray`` or ``array.array``/``list``.
"""

from __future__ import annotations

import array
import math
from typing import Any, Protocol


class Backend(Protocol):
    """Vector math the clients and the server need. Field vectors hold integers mod 2^m (u16 storage when m <= 16,
    else u32); ``i*`` methods may update their first argument in place and return the result (always use the
    return value). Float helpers serve fixed-point encoding and DP."""

    name: str

    # field elements mod 2^m
    def field_from_bytes(self, data: bytes, d: int, modulus_bits: int) -> Any: ...
    def zeros_field(self, d: int, modulus_bits: int) -> Any: ...
    def add_mod(self, a: Any, b: Any, modulus_bits: int) -> Any: ...
    def sub_mod(self, a: Any, b: Any, modulus_bits: int) -> Any: ...
    def iadd_mod(self, acc: Any, b: Any, modulus_bits: int) -> Any: ...
    def isub_mod(self, acc: Any, b: Any, modulus_bits: int) -> Any: ...
    def ints_to_field(self, q: Any, modulus_bits: int) -> Any: ...
    def field_to_signed(self, f: Any, modulus_bits: int) -> Any: ...
    def to_list(self, v: Any) -> list: ...

    # floats and signed integers
    def from_floats(self, xs: Any) -> Any: ...
    def first_nonfinite(self, x: Any) -> int | None: ...
    def l2_norm(self, x: Any) -> float: ...
    def scale(self, x: Any, c: float) -> Any: ...
    def concat_floats(self, x: Any, tail: list[float]) -> Any: ...
    def stochastic_round(self, x: Any, clip: float, scale: float, uniforms: Any) -> Any: ...
    def add_ints(self, a: Any, b: Any) -> Any: ...
    def ints_to_floats(self, q: Any, inv_scale: float) -> Any: ...


def _storage(m: int) -> str:
    if not 1 <= m <= 32:
        raise ValueError(f"modulus_bits must be in 1..32, got {m}")
    return "H" if m <= 16 else "I"


def bytes_per_element(m: int) -> int:
    return 2 if _storage(m) == "H" else 4


class PureBackend:
    name = "pure"

    def field_from_bytes(self, data: bytes, d: int, modulus_bits: int) -> array.array:
        code = _storage(modulus_bits)
        need = d * bytes_per_element(modulus_bits)
        if len(data) < need:
            raise ValueError(f"need {need} bytes for {d} elements, got {len(data)}")
        a = array.array(code, data[:need])
        mask = (1 << modulus_bits) - 1
        if modulus_bits not in (16, 32):
            a = array.array(code, (v & mask for v in a))
        return a

    def zeros_field(self, d: int, modulus_bits: int) -> array.array:
        return array.array(_storage(modulus_bits), bytes(d * bytes_per_element(modulus_bits)))

    def add_mod(self, a: Any, b: Any, modulus_bits: int) -> array.array:
        mask = (1 << modulus_bits) - 1
        return array.array(_storage(modulus_bits), ((x + y) & mask for x, y in zip(a, b, strict=True)))

    def sub_mod(self, a: Any, b: Any, modulus_bits: int) -> array.array:
        mask = (1 << modulus_bits) - 1
        return array.array(_storage(modulus_bits), ((x - y) & mask for x, y in zip(a, b, strict=True)))

    def iadd_mod(self, acc: Any, b: Any, modulus_bits: int) -> array.array:
        """``acc + b mod 2^m``; may reuse ``acc`` (an accumulator the caller owns). Use the return value."""
        return self.add_mod(acc, b, modulus_bits)

    def isub_mod(self, acc: Any, b: Any, modulus_bits: int) -> array.array:
        """``acc − b mod 2^m``; may reuse ``acc``. Use the return value."""
        return self.sub_mod(acc, b, modulus_bits)

    def ints_to_field(self, q: Any, modulus_bits: int) -> array.array:
        mask = (1 << modulus_bits) - 1
        return array.array(_storage(modulus_bits), (int(v) & mask for v in q))

    def field_to_signed(self, f: Any, modulus_bits: int) -> list[int]:
        half, full = 1 << (modulus_bits - 1), 1 << modulus_bits
        return [v - full if v >= half else v for v in f]

    def to_list(self, v: Any) -> list:
        return list(v)

    # float helpers used by fixed point / DP
    def from_floats(self, xs: Any) -> list[float]:
        return [float(v) for v in xs]

    def first_nonfinite(self, x: Any) -> int | None:
        """Index of the first NaN/±inf, or ``None``."""
        for i, v in enumerate(x):
            if not math.isfinite(v):
                return i
        return None

    def l2_norm(self, x: Any) -> float:
        return math.sqrt(math.fsum(float(v) * float(v) for v in x))

    def scale(self, x: Any, c: float) -> list[float]:
        return [float(v) * c for v in x]

    def concat_floats(self, x: Any, tail: list[float]) -> Any:
        """``x`` followed by ``tail`` (a new vector; an ``array.array`` stays one, of the same type code)."""
        if isinstance(x, array.array):
            out = array.array(x.typecode, x)
            out.extend(float(v) for v in tail)
            return out
        return [float(v) for v in x] + [float(v) for v in tail]

    def stochastic_round(self, x: Any, clip: float, scale: float, uniforms: Any) -> list[int]:
        out = []
        for v, u in zip(x, uniforms, strict=True):
            y = min(max(float(v), -clip), clip) * scale
            lo = math.floor(y)
            out.append(lo + (1 if u < y - lo else 0))
        return out

    def add_ints(self, a: Any, b: Any) -> list[int]:
        return [int(x) + int(y) for x, y in zip(a, b, strict=True)]

    def ints_to_floats(self, q: Any, inv_scale: float) -> list[float]:
        return [int(v) * inv_scale for v in q]


class NumpyBackend:
    name = "numpy"

    def __init__(self) -> None:
        import numpy as np

        self.np = np

    def _dtype(self, m: int) -> Any:
        return self.np.uint16 if _storage(m) == "H" else self.np.uint32

    def field_from_bytes(self, data: bytes, d: int, modulus_bits: int) -> Any:
        """A read-only little-endian view of ``data`` (no copy) when m is 16 or 32, else a masked copy."""
        need = d * bytes_per_element(modulus_bits)
        if len(data) < need:
            raise ValueError(f"need {need} bytes for {d} elements, got {len(data)}")
        a = self.np.frombuffer(data, dtype="<u2" if modulus_bits <= 16 else "<u4", count=d)
        if modulus_bits not in (16, 32):
            a = a & a.dtype.type((1 << modulus_bits) - 1)
        return a

    def zeros_field(self, d: int, modulus_bits: int) -> Any:
        return self.np.zeros(d, dtype=self._dtype(modulus_bits))

    def add_mod(self, a: Any, b: Any, modulus_bits: int) -> Any:
        out = self.np.add(a, b, dtype=self._dtype(modulus_bits))  # wraps mod 2^16 / 2^32
        if modulus_bits not in (16, 32):
            out &= out.dtype.type((1 << modulus_bits) - 1)
        return out

    def sub_mod(self, a: Any, b: Any, modulus_bits: int) -> Any:
        out = self.np.subtract(a, b, dtype=self._dtype(modulus_bits))
        if modulus_bits not in (16, 32):
            out &= out.dtype.type((1 << modulus_bits) - 1)
        return out

    def iadd_mod(self, acc: Any, b: Any, modulus_bits: int) -> Any:
        """``acc + b mod 2^m`` computed in place when ``acc`` is a writable array of the field's dtype (an
        accumulator the caller owns); returns the result."""
        dt = self._dtype(modulus_bits)
        if not (isinstance(acc, self.np.ndarray) and acc.dtype == dt and acc.flags.writeable):
            return self.add_mod(acc, b, modulus_bits)
        self.np.add(acc, b, out=acc, dtype=dt, casting="unsafe")
        if modulus_bits not in (16, 32):
            acc &= dt((1 << modulus_bits) - 1)
        return acc

    def isub_mod(self, acc: Any, b: Any, modulus_bits: int) -> Any:
        """``acc − b mod 2^m``, in place like :meth:`iadd_mod`."""
        dt = self._dtype(modulus_bits)
        if not (isinstance(acc, self.np.ndarray) and acc.dtype == dt and acc.flags.writeable):
            return self.sub_mod(acc, b, modulus_bits)
        self.np.subtract(acc, b, out=acc, dtype=dt, casting="unsafe")
        if modulus_bits not in (16, 32):
            acc &= dt((1 << modulus_bits) - 1)
        return acc

    def ints_to_field(self, q: Any, modulus_bits: int) -> Any:
        q64 = self.np.asarray(q, dtype=self.np.int64)
        return (q64 & ((1 << modulus_bits) - 1)).astype(self._dtype(modulus_bits))

    def field_to_signed(self, f: Any, modulus_bits: int) -> Any:
        v = self.np.asarray(f, dtype=self.np.int64)
        half = 1 << (modulus_bits - 1)
        return self.np.where(v >= half, v - (1 << modulus_bits), v)

    def to_list(self, v: Any) -> list:
        return self.np.asarray(v).tolist()

    def from_floats(self, xs: Any) -> Any:
        return self.np.asarray(xs, dtype=self.np.float64)

    def first_nonfinite(self, x: Any) -> int | None:
        bad = self.np.flatnonzero(~self.np.isfinite(self.np.asarray(x, dtype=self.np.float64)))
        return int(bad[0]) if bad.size else None

    def l2_norm(self, x: Any) -> float:
        a = self.np.asarray(x, dtype=self.np.float64)
        return float(self.np.sqrt(self.np.dot(a, a)))

    def scale(self, x: Any, c: float) -> Any:
        return self.np.asarray(x, dtype=self.np.float64) * c

    def concat_floats(self, x: Any, tail: list[float]) -> Any:
        return self.np.concatenate([self.np.asarray(x, dtype=self.np.float64),
                                    self.np.asarray(tail, dtype=self.np.float64)])

    def stochastic_round(self, x: Any, clip: float, scale: float, uniforms: Any) -> Any:
        y = self.np.clip(self.np.asarray(x, dtype=self.np.float64), -clip, clip) * scale
        lo = self.np.floor(y)
        return (lo + (self.np.asarray(uniforms) < (y - lo))).astype(self.np.int64)

    def add_ints(self, a: Any, b: Any) -> Any:
        return self.np.asarray(a, dtype=self.np.int64) + self.np.asarray(b, dtype=self.np.int64)

    def ints_to_floats(self, q: Any, inv_scale: float) -> Any:
        return self.np.asarray(q, dtype=self.np.float64) * inv_scale


def pure_backend() -> PureBackend:
    return PureBackend()


def numpy_backend() -> NumpyBackend:
    return NumpyBackend()


def default_backend() -> Any:
    """numpy when importable (CPython), else pure Python (Pyodide)."""
    try:
        return NumpyBackend()
    except ImportError:
        return PureBackend()
