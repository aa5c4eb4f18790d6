"""Fixed-point encoding for secure aggregation: clip to ±c, unbiased stochastic rounding onto an integer grid
with B bits, then reduction mod 2^m (field elements). Sums of up to s inputs decode exactly as long as
m ≥ B + ⌈log2 s⌉ (plus headroom for DP noise, see docs/secagg.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from privacy.randomness import RandomStream


@dataclass(frozen=True)
class FixedPointConfig:
    clip: float  # c: coordinates clipped to [-c, c]
    bits: int  # B: quantized values lie in [-(2^(B-1)-1), 2^(B-1)-1]
    modulus_bits: int  # m: arithmetic mod 2^m (u16 storage for m <= 16, else u32)

    def __post_init__(self) -> None:
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if not 2 <= self.bits <= 31:
            raise ValueError(f"bits must be in 2..31, got {self.bits}")
        if not self.bits <= self.modulus_bits <= 32:
            raise ValueError(f"modulus_bits must be in bits..32 = {self.bits}..32, got {self.modulus_bits}")

    def scale(self) -> float:
        return ((1 << (self.bits - 1)) - 1) / self.clip

    def validate(self, group_size: int, headroom_bits: int = 0) -> None:
        """``ValueError`` unless m ≥ B + ⌈log2(group size)⌉ + headroom (a sum of the group fits)."""
        need = self.bits + math.ceil(math.log2(max(1, group_size))) + headroom_bits
        if self.modulus_bits < need:
            raise ValueError(f"modulus 2^{self.modulus_bits} is too small: B={self.bits} bits × group of "
                             f"{group_size} (+{headroom_bits} headroom bits) needs m >= {need}")


def quantize(x: Any, cfg: FixedPointConfig, stream: RandomStream, backend: Any) -> Any:
    """Clip each coordinate to ±c and round ``x·scale`` to a neighbouring integer, up with probability equal to
    the fractional part (unbiased: E[q] = clip(x)·scale)."""
    bad = backend.first_nonfinite(x)
    if bad is not None:
        raise ValueError(f"quantize: coordinate {bad} is not finite ({x[bad]})")
    n = len(x)
    return backend.stochastic_round(x, cfg.clip, cfg.scale(), stream.uniforms(n, backend))


def encode(x: Any, cfg: FixedPointConfig, stream: RandomStream, backend: Any) -> Any:
    """:func:`quantize` then reduce mod 2^m: the field elements a client feeds to SecAgg+. (Distributed DP adds its
    integer noise between the two steps: ``backend.ints_to_field(quantize(...) + noise, m)``.)"""
    return backend.ints_to_field(quantize(x, cfg, stream, backend), cfg.modulus_bits)


def decode_sum(field_sum: Any, cfg: FixedPointConfig, count: int, backend: Any) -> Any:
    """Centered lift of a sum of ``count`` encodings mod 2^m, divided by the scale: the float sum.

    Exact when the integer sum lies in (−2^(m−1), 2^(m−1)), which ``count`` quantized inputs guarantee when
    m ≥ B + ⌈log2 count⌉; raises ``ValueError`` otherwise (the sum may have wrapped around)."""
    if count < 1:
        raise ValueError("count must be >= 1")
    cfg.validate(count)
    return backend.ints_to_floats(backend.field_to_signed(field_sum, cfg.modulus_bits), 1.0 / cfg.scale())
