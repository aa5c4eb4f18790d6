"""Compact encodings for deltas: affine int8 quantization (per tensor / per output channel) and top-k sparse.

Quantization (affine, asymmetric; cf. Jacob et al., CVPR'18 "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference"): the range is widened to contain 0, ``scale = (hi - lo) / 254``
(one code of headroom, so rounding can never push a code outside [-128, 127]), ``zero_point = -128 -
round(lo / scale)``, ``q = round_half_even(x / scale) + zero_point``. Decoding ``(q - zero_point) * scale`` is
within ``scale / 2`` of ``x`` for every element. An all-zero tensor (or channel) gets ``scale = 1``,
``zero_point = 0``. The scale is rounded to float32 *before* quantizing, so the bound holds for the stored scale.

Both a numpy path and a pure-Python path (for the browser) are provided; quantization gives identical bytes
on both, top-k too unless magnitudes tie at the k-th place (then which tied entry is kept may differ).
"""

from __future__ import annotations

import array
import math
import struct
import sys
from collections.abc import Sequence
from typing import Any

from mle.errors import FormatError
from mle.spec import (
    ENC_INT8,
    ENC_INT8_CHANNEL,
    ENC_SPARSE,
    ROLE_INDICES,
    ROLE_Q,
    ROLE_SCALE,
    ROLE_VALUES,
    ROLE_ZERO_POINT,
)
from mle.tensors import Encoded

_F32 = struct.Struct("<f")


def _f32(x: float) -> float:
    """Round a Python float to the nearest float32."""
    return _F32.unpack(_F32.pack(x))[0]


def _scale_zero_point(lo: float, hi: float) -> tuple[float, int]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:
        return 1.0, 0
    scale = _f32((hi - lo) / 254.0)
    if scale == 0.0:  # range below float32's smallest subnormal step
        scale = _f32(math.ulp(0.0)) or 1e-45
    zp = -128 - round(lo / scale)
    return scale, max(-128, min(127, zp))


def _is_numpy(x: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.ndarray)


def quantize_int8(x: Any, axis: int | None = None, shape: Sequence[int] | None = None) -> Encoded:
    """Affine int8 quantization of a float tensor, per tensor (``axis=None``) or per slice along ``axis``.

    ``x`` is a numpy float array, or (numpy-free) a flat sequence of floats with ``shape`` given."""
    if _is_numpy(x):
        return _quantize_numpy(x, axis)
    if shape is None:
        shape = (len(x),)
    return _quantize_pure(list(x), tuple(int(s) for s in shape), axis)


def _check_finite_pure(values: Sequence[float]) -> None:
    for v in values:
        if not math.isfinite(v):
            raise FormatError("cannot quantize a tensor containing NaN or Inf")


def _quantize_numpy(x: Any, axis: int | None) -> Encoded:
    import numpy as np

    if x.dtype.kind != "f":
        raise FormatError(f"int8 quantization needs a float tensor, got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise FormatError("cannot quantize a tensor containing NaN or Inf")
    dtype = {"float32": "f32", "float16": "f16", "float64": "f64"}[x.dtype.name]
    shape = tuple(int(s) for s in x.shape)
    if axis is None:
        lo = float(x.min()) if x.size else 0.0
        hi = float(x.max()) if x.size else 0.0
        s, z = _scale_zero_point(lo, hi)
        scales, zps = np.array([s], "<f4"), np.array([z], "i1")
        q = np.clip(np.rint(x.astype(np.float64) / s) + z, -128, 127).astype(np.int8)
        enc, params = ENC_INT8, {}
    else:
        if not 0 <= axis < x.ndim:
            raise FormatError(f"axis {axis} out of range for a rank-{x.ndim} tensor")
        moved = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1).astype(np.float64)
        if moved.shape[1]:
            lo, hi = moved.min(axis=1), moved.max(axis=1)
        else:
            lo = hi = np.zeros(moved.shape[0])
        pairs = [_scale_zero_point(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]
        scales = np.array([p[0] for p in pairs], "<f4")
        zps = np.array([p[1] for p in pairs], "i1")
        bshape = [1] * x.ndim
        bshape[axis] = -1
        q = np.clip(np.rint(x.astype(np.float64) / scales.astype(np.float64).reshape(bshape))
                    + zps.astype(np.float64).reshape(bshape), -128, 127).astype(np.int8)
        enc, params = ENC_INT8_CHANNEL, {"axis": axis}
    q = np.ascontiguousarray(q)
    return Encoded(dtype, enc, shape, params, (
        (ROLE_Q, "i8", q.reshape(-1).view(np.uint8) if q.size else b""),
        (ROLE_SCALE, "f32", scales.view(np.uint8)),
        (ROLE_ZERO_POINT, "i8", zps.view(np.uint8)),
    ))


def _quantize_pure(values: list[float], shape: tuple[int, ...], axis: int | None) -> Encoded:
    n = 1
    for d in shape:
        n *= d
    if n != len(values):
        raise FormatError(f"{len(values)} values given for shape {shape}")
    _check_finite_pure(values)
    if axis is None:
        groups = [range(n)]
        params: dict[str, Any] = {}
        enc = ENC_INT8
        channel_of = None
    else:
        if not 0 <= axis < len(shape):
            raise FormatError(f"axis {axis} out of range for a rank-{len(shape)} tensor")
        inner = 1
        for d in shape[axis + 1:]:
            inner *= d
        c = shape[axis]
        channel_of = [(i // inner) % c for i in range(n)]
        groups = [[i for i in range(n) if channel_of[i] == ch] for ch in range(c)]
        params, enc = {"axis": axis}, ENC_INT8_CHANNEL
    scales, zps = array.array("f"), array.array("b")
    for g in groups:
        vals = [values[i] for i in g]
        s, z = _scale_zero_point(min(vals) if vals else 0.0, max(vals) if vals else 0.0)
        scales.append(s)
        zps.append(z)
    q = array.array("b", bytes(n))
    for i, v in enumerate(values):
        ch = 0 if channel_of is None else channel_of[i]
        s, z = scales[ch], zps[ch]
        q[i] = max(-128, min(127, round(v / s) + z))
    return Encoded("f32", enc, shape, params, (
        (ROLE_Q, "i8", memoryview(q).cast("B")),
        (ROLE_SCALE, "f32", memoryview(scales).cast("B")),
        (ROLE_ZERO_POINT, "i8", memoryview(zps).cast("B")),
    ))


def sparse_topk(x: Any, fraction: float | None = None, k: int | None = None, value_dtype: str = "f16",
                shape: Sequence[int] | None = None) -> Encoded:
    """Keep the ``k`` (or ``ceil(fraction · numel)``) entries of largest magnitude: u32 indices in increasing
    order + f16/f32 values (Aji & Heafield, EMNLP'17 "Sparse Communication for Distributed Gradient Descent")."""
    if value_dtype not in ("f16", "f32"):
        raise FormatError(f"sparse values are f16 or f32, not {value_dtype!r}")
    numpy_in = _is_numpy(x)
    n = int(x.size) if numpy_in else len(x)
    if (fraction is None) == (k is None):
        raise FormatError("give exactly one of fraction or k")
    if fraction is not None:
        if not 0.0 <= fraction <= 1.0:
            raise FormatError(f"fraction must be in [0, 1], got {fraction}")
        k = math.ceil(fraction * n)
    assert k is not None
    if not 0 <= k <= n:
        raise FormatError(f"k must be in [0, {n}], got {k}")
    if n > 0xFFFFFFFF:
        raise FormatError("sparse tensors are limited to 2^32 elements")
    if numpy_in:
        import numpy as np

        if x.dtype.kind != "f":
            raise FormatError(f"sparse encoding needs a float tensor, got {x.dtype}")
        flat = x.reshape(-1)
        if not np.all(np.isfinite(flat)):
            raise FormatError("cannot sparsify a tensor containing NaN or Inf")
        dtype = {"float32": "f32", "float16": "f16", "float64": "f64"}[x.dtype.name]
        if k == n:
            idx = np.arange(n, dtype="<u4")
        elif k == 0:
            idx = np.zeros(0, "<u4")
        else:
            idx = np.sort(np.argpartition(np.abs(flat), n - k)[n - k:]).astype("<u4")
        vals = flat[idx].astype("<f2" if value_dtype == "f16" else "<f4")
        shape_t = tuple(int(s) for s in x.shape)
        return Encoded(dtype, ENC_SPARSE, shape_t, {}, (
            (ROLE_INDICES, "u32", idx.view(np.uint8) if k else b""),
            (ROLE_VALUES, value_dtype, vals.view(np.uint8) if k else b""),
        ))
    values = list(x)
    _check_finite_pure(values)
    order = sorted(range(n), key=lambda i: (-abs(values[i]), i))[:k]
    order.sort()
    idx_arr = array.array("I", order)
    vbytes = struct.pack(f"<{k}{'e' if value_dtype == 'f16' else 'f'}", *(values[i] for i in order))
    shape_t = tuple(int(s) for s in (shape if shape is not None else (n,)))
    return Encoded("f32", ENC_SPARSE, shape_t, {}, (
        (ROLE_INDICES, "u32", memoryview(idx_arr).cast("B")),
        (ROLE_VALUES, value_dtype, vbytes),
    ))
