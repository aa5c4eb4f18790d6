"""Bit packing of field elements for the ``field_packed`` encoding (docs/mle-format.md).

n elements of m bits (1 ≤ m ≤ 32) become ``ceil(n·m/8)`` bytes: element i occupies bits [i·m, (i+1)·m) of the
byte string read as one little-endian integer (LSB first); the padding bits of the last byte are zero.

Three implementations give identical bytes:

- **numpy** (:func:`pack_numpy` / :func:`unpack_numpy`): elements in groups of 8 (8 elements of m bits are
  exactly m bytes), each group built in four u64 words with one shift per column, then the low m bytes of each
  group's 32 are kept.
- **pure Python** (:func:`pack_pure` / :func:`unpack_pure`, stdlib only, the reference): the same groups of 8
  with big-int arithmetic over chunks – the chunk's u16/u32 words read as one integer (``int.from_bytes``),
  three halving steps merge neighbouring slots (``(X & even) | (X & odd) >> (W − v)``), then strided byte
  slices keep the low m bytes of each group. No per-element or per-bit Python loop.
- an **accelerator** registered with :func:`set_accelerator` (the browser registers the WASM kernel's
  ``fl_pack_bits``/``fl_unpack_bits``): :func:`pack` and :func:`unpack` use it for non-numpy inputs.

Values given to the packers must lie in [0, 2^m); every packer keeps only the low m bits of each value, so an
out-of-range value can never spill into its neighbours (the writer refuses such values before packing unless
told not to check).
"""

from __future__ import annotations

import array
import sys
from collections.abc import Callable
from typing import Any

_accelerator: tuple[Callable[[Any, int], bytes], Callable[[Any, int, int], Any]] | None = None

# Elements per big-int chunk in the pure path (a multiple of 8): ~32 KiB integers stay in cache.
_CHUNK = 8192


def packed_nbytes(n: int, m: int) -> int:
    """The byte length of n packed m-bit elements: ``ceil(n·m/8)``."""
    return (n * m + 7) // 8


def storage_code(m: int) -> str:
    """The ``array`` typecode of decoded elements: ``'H'`` (u16) when m ≤ 16, else ``'I'`` (u32)."""
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 32:
        raise ValueError(f"modulus_bits must be 1..32, got {m!r}")
    return "H" if m <= 16 else "I"


def padding_is_zero(data: Any, n: int, m: int) -> bool:
    """True if the bits after the last element (in the last byte) are zero, as the format requires."""
    used = (n * m) % 8
    if not used:
        return True
    mv = memoryview(data).cast("B")
    return not (mv[len(mv) - 1] >> used)


# ── dispatch ───────────────────────────────────────────────────────────────────────────────────────────
def set_accelerator(pack_fn: Callable[[Any, int], bytes] | None,
                    unpack_fn: Callable[[Any, int, int], Any] | None) -> None:
    """Register (or, with ``None``, remove) a faster packer for non-numpy vectors: ``pack_fn(values, m) →
    bytes`` and ``unpack_fn(data, n, m) → array.array('H'/'I')``, bit-identical to the pure functions. The
    browser registers the WASM kernel's (client_pyodide.runtime.install)."""
    global _accelerator
    _accelerator = None if pack_fn is None or unpack_fn is None else (pack_fn, unpack_fn)


def _is_numpy(x: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.ndarray)


def pack(values: Any, m: int) -> Any:
    """Pack a vector of m-bit values: numpy array → :func:`pack_numpy` (a u8 array); anything else → the
    registered accelerator if any, else :func:`pack_pure` (bytes)."""
    if _is_numpy(values):
        return pack_numpy(values, m)
    if _accelerator is not None:
        return _accelerator[0](values, m)
    return pack_pure(values, m)


def unpack(data: Any, n: int, m: int, use_numpy: bool) -> Any:
    """Unpack n m-bit elements: a numpy u16/u32 array (``use_numpy``), else ``array.array('H'/'I')`` from the
    accelerator if one is registered, else from :func:`unpack_pure`."""
    if use_numpy:
        return unpack_numpy(data, n, m)
    if _accelerator is not None:
        return _accelerator[1](data, n, m)
    return unpack_pure(data, n, m)


# ── numpy ──────────────────────────────────────────────────────────────────────────────────────────────
def _columns(m: int) -> list[tuple[int, int, int]]:
    """For element j (0..7) of a group: (u64 word, bit shift in it, bits that spill into the next word)."""
    out = []
    for j in range(8):
        bit = j * m
        word, shift = bit >> 6, bit & 63
        out.append((word, shift, max(0, shift + m - 64)))
    return out


def pack_numpy(values: Any, m: int) -> Any:
    """Pack a numpy integer vector (values in [0, 2^m)) into a u8 array of ``ceil(n·m/8)`` bytes."""
    import numpy as np

    storage_code(m)
    v = np.asarray(values).reshape(-1)
    n = int(v.size)
    groups = (n + 7) // 8
    lanes = np.zeros((groups, 8), np.uint64)
    lanes.reshape(-1)[:n] = v
    lanes &= np.uint64((1 << m) - 1)
    words = np.zeros((groups, 4), np.uint64)  # 8 elements × ≤ 32 bits ≤ 256 bits
    for j, (w, shift, spill) in enumerate(_columns(m)):
        col = lanes[:, j]
        if shift:
            words[:, w] |= col << np.uint64(shift)
        else:
            words[:, w] |= col
        if spill:
            words[:, w + 1] |= col >> np.uint64(64 - shift)
    out = words.view(np.uint8)[:, :m].reshape(-1)  # the low m bytes of each little-endian group
    return out[: packed_nbytes(n, m)].copy()


def unpack_numpy(data: Any, n: int, m: int) -> Any:
    """``n`` m-bit elements from ``ceil(n·m/8)`` packed bytes: a new numpy u16 (m ≤ 16) or u32 array."""
    import numpy as np

    code = storage_code(m)
    groups = (n + 7) // 8
    raw = np.frombuffer(data, np.uint8)
    need = packed_nbytes(n, m)
    if raw.size != need:
        raise ValueError(f"{n} elements of {m} bits need {need} bytes, got {raw.size}")
    buf = np.zeros((groups, 32), np.uint8)
    flat = np.zeros(groups * m, np.uint8)
    flat[:need] = raw
    buf[:, :m] = flat.reshape(groups, m)
    words = buf.view(np.uint64)
    mask = np.uint64((1 << m) - 1)
    lanes = np.empty((groups, 8), np.uint64)
    for j, (w, shift, spill) in enumerate(_columns(m)):
        col = words[:, w] >> np.uint64(shift) if shift else words[:, w].copy()
        if spill:
            col |= words[:, w + 1] << np.uint64(64 - shift)
        lanes[:, j] = col & mask
    return lanes.reshape(-1)[:n].astype(np.uint16 if code == "H" else np.uint32)


# ── pure Python (the reference) ────────────────────────────────────────────────────────────────────────
def _pattern(period_bytes: int, ones: int, shift: int, nbytes: int) -> int:
    """An integer of ``nbytes`` bytes repeating, every ``period_bytes``, ``ones`` set bits starting at bit
    ``shift`` of the period."""
    unit = (((1 << ones) - 1) << shift).to_bytes(period_bytes, "little")
    return int.from_bytes(unit * (nbytes // period_bytes), "little")


class _Plan:
    """Masks for one (m, word width, chunk size): built once per call, shared by every chunk."""

    def __init__(self, m: int, width: int, chunk: int) -> None:
        self.m, self.width = m, width  # width: bits per input slot (16 or 32)
        nbytes = chunk * width // 8
        self.nbytes = nbytes
        self.low = _pattern(width // 8, m, 0, nbytes)  # the low m bits of every input slot
        # step k merges slot pairs of width W = width·2^k holding v = m·2^k value bits
        self.odd = [_pattern(2 * (width << k) // 8, width << k, width << k, nbytes) for k in range(3)]
        self.value = [_pattern(2 * (width << k) // 8, m << k, 0, nbytes) for k in range(3)]


def _as_words(values: Any, code: str) -> array.array:
    if isinstance(values, array.array) and values.typecode == code:
        return values
    if isinstance(values, memoryview) and values.format == code:
        return array.array(code, values.tobytes())
    return array.array(code, values)


def pack_pure(values: Any, m: int) -> bytes:
    """Pack a sequence of ints in [0, 2^m) (``array.array``, memoryview, list …) into ``ceil(n·m/8)`` bytes."""
    code = storage_code(m)
    words = _as_words(values, code)
    n = len(words)
    if not n:
        return b""
    width = 16 if code == "H" else 32
    slot = width  # bytes per group of 8 input slots (8 × width bits)
    raw = memoryview(words).cast("B")
    chunk = min(_CHUNK, (n + 7) // 8 * 8)
    plan = _Plan(m, width, chunk)
    step = chunk * width // 8
    merged = []
    for start in range(0, len(raw), step):
        piece = raw[start: start + step]
        x = int.from_bytes(piece, "little") & plan.low
        for k in range(3):
            w, v = width << k, m << k
            odd = x & plan.odd[k]
            x = (x ^ odd) | (odd >> (w - v))
        merged.append(x.to_bytes(plan.nbytes, "little"))
    groups = (n + 7) // 8
    src = b"".join(merged)
    out = bytearray(groups * m)
    for j in range(m):  # the low m bytes of every group of `slot` bytes
        out[j::m] = src[j: groups * slot: slot]
    del out[packed_nbytes(n, m):]
    return bytes(out)


def unpack_pure(data: Any, n: int, m: int) -> array.array:
    """``n`` m-bit elements from ``ceil(n·m/8)`` packed bytes, as ``array.array('H')`` (m ≤ 16) or ``'I'``."""
    code = storage_code(m)
    src = memoryview(data).cast("B")
    need = packed_nbytes(n, m)
    if len(src) != need:
        raise ValueError(f"{n} elements of {m} bits need {need} bytes, got {len(src)}")
    if not n:
        return array.array(code)
    width = 16 if code == "H" else 32
    slot = width
    groups = (n + 7) // 8
    padded = bytearray(groups * m)
    padded[:need] = src
    spread = bytearray(groups * slot)
    for j in range(m):
        spread[j::slot] = padded[j::m]
    chunk = min(_CHUNK, groups * 8)
    plan = _Plan(m, width, chunk)
    step = chunk * width // 8
    out = array.array(code)
    for start in range(0, len(spread), step):
        x = int.from_bytes(spread[start: start + step], "little")
        for k in (2, 1, 0):
            w, v = width << k, m << k
            low = x & plan.value[k]
            x = low | ((x >> v) & plan.value[k]) << w
        out.frombytes(x.to_bytes(plan.nbytes, "little"))
    del out[n:]
    return out
