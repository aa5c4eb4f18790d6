""":class:`WasmBackend`: the :class:`privacy.backends.Backend` of the browser, with the heavy vector math in the
WASM kernel and results bit-identical to :class:`privacy.backends.PureBackend` (it is a subclass: whatever it
does not override is the pure-Python reference itself).

In the kernel: addition/subtraction mod 2^m (SecAgg+ masking), reduction of integers mod 2^m, m-bit packing
of field elements (.mle ``field_packed``; ``runtime.install`` registers it with ``mle.bitpack``), stochastic
rounding (binary64, same operations in the same order as the pure backend), scaling, the finiteness check.
The discrete-Gaussian sampler (:meth:`WasmBackend.sample_discrete_gaussian`, which
``privacy.dp.discrete_gaussian`` uses when a backend has it) consumes the RandomStream exactly as the pure loop
does, with the kernel's own ``log``/``exp`` (see docs/browser-kernel.md for what that means for bit-identity).
Kept in Python on purpose: ``l2_norm`` (``math.fsum`` is exactly rounded; a faster float sum would change the
clipping factor in the last bit) and the server-side decoding helpers.

Vectors are ``array.array``: field elements 'H' (m ≤ 16) / 'I', integers 'i', floats 'd'.
"""

from __future__ import annotations

import array
import math
from typing import Any

from client_pyodide.kernel import Kernel
from privacy.backends import PureBackend, _storage


def _typed(v: Any, code: str) -> array.array:
    if isinstance(v, array.array) and v.typecode == code:
        return v
    if isinstance(v, array.array) and v.itemsize == array.array(code).itemsize and code in "HI" and v.typecode in "HI":
        return array.array(code, v.tobytes())
    return array.array(code, v)


class WasmBackend(PureBackend):
    name = "wasm"

    def __init__(self, kernel: Kernel) -> None:
        self.k = kernel

    # ── field elements ──────────────────────────────────────────────────────────────────────────────
    def _field_op(self, acc: array.array, b: Any, m: int, op: str) -> array.array:
        code = _storage(m)
        bb = _typed(b, code)
        if len(bb) != len(acc):
            raise ValueError(f"length mismatch: {len(acc)} vs {len(bb)}")
        fn = getattr(self.k.x, f"fl_{op}_mod_{'u16' if code == 'H' else 'u32'}")
        with self.k.scratch():
            pa, pb = self.k.put(acc), self.k.put(bb)
            fn(pa, pb, len(acc), (1 << m) - 1)
            self.k.read_into(pa, acc)
        return acc

    def field_from_bytes(self, data: bytes, d: int, modulus_bits: int) -> array.array:
        """Little-endian u16/u32 words reduced mod 2^m (the mask reduction runs in the kernel)."""
        code = _storage(modulus_bits)
        a = super().field_from_bytes(data, d, 16 if code == "H" else 32)
        if modulus_bits in (16, 32) or not d:
            return a
        mask = (1 << modulus_bits) - 1
        with self.k.scratch():
            p = self.k.put(a)
            if code == "I":
                self.k.x.fl_ints_to_field_u32(p, d, mask)
            else:  # a + 0 mod 2^m
                z = self.k.alloc(2 * d)
                self.k.x.fl_zero(z, 2 * d)
                self.k.x.fl_add_mod_u16(p, z, d, mask)
            return self.k.read_into(p, a)

    def add_mod(self, a: Any, b: Any, modulus_bits: int) -> array.array:
        return self._field_op(array.array(_storage(modulus_bits), _typed(a, _storage(modulus_bits))), b,
                              modulus_bits, "add")

    def sub_mod(self, a: Any, b: Any, modulus_bits: int) -> array.array:
        return self._field_op(array.array(_storage(modulus_bits), _typed(a, _storage(modulus_bits))), b,
                              modulus_bits, "sub")

    def iadd_mod(self, acc: Any, b: Any, modulus_bits: int) -> array.array:
        """``acc + b mod 2^m``, in place when ``acc`` is an ``array.array`` of the field's type code."""
        code = _storage(modulus_bits)
        if not (isinstance(acc, array.array) and acc.typecode == code):
            return self.add_mod(acc, b, modulus_bits)
        return self._field_op(acc, b, modulus_bits, "add")

    def isub_mod(self, acc: Any, b: Any, modulus_bits: int) -> array.array:
        code = _storage(modulus_bits)
        if not (isinstance(acc, array.array) and acc.typecode == code):
            return self.sub_mod(acc, b, modulus_bits)
        return self._field_op(acc, b, modulus_bits, "sub")

    def ints_to_field(self, q: Any, modulus_bits: int) -> array.array:
        code = _storage(modulus_bits)
        try:
            qa = _typed(q, "i")
        except OverflowError:  # integers beyond int32 (huge noise): the exact pure-Python path
            return super().ints_to_field(q, modulus_bits)
        mask = (1 << modulus_bits) - 1
        n = len(qa)
        with self.k.scratch():
            pq = self.k.put(qa)
            if code == "I":
                self.k.x.fl_ints_to_field_u32(pq, n, mask)
                return self.k.read_into(pq, array.array("I", bytes(4 * n)))
            out = self.k.alloc(2 * n)
            self.k.x.fl_ints_to_field_u16(pq, n, mask, out)
            return self.k.read_into(out, array.array("H", bytes(2 * n)))

    # ── m-bit packing (.mle field_packed) ───────────────────────────────────────────────────────────
    def pack_bits(self, values: Any, modulus_bits: int) -> bytes:
        """Field elements (u16 storage when m ≤ 16, else u32) packed in m bits each, ``ceil(n·m/8)`` bytes, in the
        kernel (``fl_pack_bits``); bit-identical to ``mle.bitpack.pack_pure``. The low m bits of each value."""
        from mle.bitpack import packed_nbytes

        code = _storage(modulus_bits)
        va = _typed(values, code)
        n, nbytes = len(va), packed_nbytes(len(va), modulus_bits)
        if not n:
            return b""
        with self.k.scratch():
            pv, out = self.k.put(va), self.k.alloc(nbytes)
            self.k.x.fl_pack_bits(pv, n, modulus_bits, out)
            return self.k.read(out, nbytes)

    def unpack_bits(self, data: Any, n: int, modulus_bits: int) -> array.array:
        """The inverse of :meth:`pack_bits` (``fl_unpack_bits``): ``array.array('H')`` (m ≤ 16) or ``'I'``."""
        from mle.bitpack import packed_nbytes

        code = _storage(modulus_bits)
        mv = memoryview(data).cast("B")
        if mv.nbytes != packed_nbytes(n, modulus_bits):
            raise ValueError(f"{n} elements of {modulus_bits} bits need {packed_nbytes(n, modulus_bits)} bytes, "
                             f"got {mv.nbytes}")
        out = array.array(code, bytes(n * array.array(code).itemsize))
        if not n:
            return out
        with self.k.scratch():
            pin, pout = self.k.put(mv), self.k.alloc(n * out.itemsize)
            self.k.x.fl_unpack_bits(pin, n, modulus_bits, pout)
            return self.k.read_into(pout, out)

    # ── floats ──────────────────────────────────────────────────────────────────────────────────────
    def from_floats(self, xs: Any) -> array.array:
        return array.array("d", xs)

    def first_nonfinite(self, x: Any) -> int | None:
        xa = _typed(x, "d")
        with self.k.scratch():
            i = self.k.x.fl_first_nonfinite(self.k.put(xa), len(xa))
        return None if i < 0 else int(i)

    def scale(self, x: Any, c: float) -> array.array:
        xa = _typed(x, "d")
        n = len(xa)
        with self.k.scratch():
            p = self.k.put(xa)
            self.k.x.fl_scale_f64(p, n, float(c), p)
            return self.k.read_into(p, array.array("d", bytes(8 * n)))

    def stochastic_round(self, x: Any, clip: float, scale: float, uniforms: Any) -> array.array:
        xa, ua = _typed(x, "d"), _typed(uniforms, "d")
        if len(xa) != len(ua):
            raise ValueError(f"{len(xa)} values but {len(ua)} uniforms")
        if float(clip) * float(scale) >= 2**31 - 1:  # cannot happen for bits <= 31; stay exact regardless
            return array.array("q", super().stochastic_round(x, clip, scale, uniforms))
        n = len(xa)
        with self.k.scratch():
            px, pu, out = self.k.put(xa), self.k.put(ua), self.k.alloc(4 * n)
            self.k.x.fl_stochastic_round(px, pu, n, float(clip), float(scale), out)
            return self.k.read_into(out, array.array("i", bytes(4 * n)))

    # ── DP noise ────────────────────────────────────────────────────────────────────────────────────
    def sample_discrete_gaussian(self, n: int, sigma: float, stream: Any) -> array.array:
        """``n`` samples of N_Z(0, σ²) as int32, drawing ``stream.bytes(24·r)`` per round over the r still-rejected
        coordinates – the very bytes ``stream.uniforms_open(3r)`` consumes in the pure-Python sampler – and
        accepting/rejecting with the same binary64 operations (kernel ``fl_dgauss_round``)."""
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a positive finite number, got {sigma}")
        if n < 0:
            raise ValueError("n must be >= 0")
        t = math.floor(sigma) + 1
        if 40 * t >= 2**31:  # |y| < 37.5·t for 53-bit uniforms; int32 output would not hold it
            return array.array("q", _pure_dgauss(n, sigma, stream))
        out = array.array("i", bytes(4 * n))
        with self.k.scratch():
            pout, ptodo = self.k.alloc(4 * n), self.k.put(array.array("i", range(n)))
            r = n
            while r:
                with self.k.scratch():
                    pw = self.k.put(stream.bytes(24 * r))
                    r = self.k.x.fl_dgauss_round(pw, r, float(t), sigma * sigma, ptodo, pout)
            self.k.read_into(pout, out)
        return out


def _pure_dgauss(n: int, sigma: float, stream: Any) -> list[int]:
    from privacy.dp.discrete_gaussian import sample_discrete_gaussian

    return sample_discrete_gaussian(n, sigma, stream, PureBackend())
