"""What a client does to its update before secure aggregation, and how the server decodes a group sum.

prepare_update: L2-clip the whole update to C → stochastic rounding onto the integer grid (fixed point, B bits,
scale (2^(B−1)−1)/C) → add this client's discrete-Gaussian noise share → reduce mod 2^m (field elements).

Distributed DP (Kairouz, Liu & Steinke, ICML'21, "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation"): each client adds N_Z(0, σ_c²) with σ_c = σ / √t, so any released sum of at
least t inputs (SecAgg+'s threshold – fewer and nothing is released) carries noise of variance ≥ σ². In grid
units the L2 sensitivity is Δ = C·scale + √d (stochastic rounding moves each coordinate by < 1), and the
effective noise multiplier for accounting follows Kairouz et al.'s Theorem on sums of discrete Gaussians:
1/z² = Δ²/(t·σ_c²) + τ·d/2 with their τ (negligible for σ_c ≥ 2). Pure Python + backend: runs in the browser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from privacy.dp.clipping import l2_clip
from privacy.dp.discrete_gaussian import sample_discrete_gaussian, sum_divergence_tau
from privacy.fixedpoint import FixedPointConfig, quantize
from privacy.randomness import RandomStream


@dataclass(frozen=True)
class DistributedDPConfig:
    l2_clip: float  # C
    noise_multiplier: float  # z: target σ/Δ of every released sum (0: no noise)
    bits: int  # B
    modulus_bits: int  # m
    min_contributors: int  # t: fewest inputs in a released sum (SecAgg+ threshold; 1 without secure aggregation)
    dimension: int  # d

    def __post_init__(self) -> None:
        if not (self.l2_clip > 0 and math.isfinite(self.l2_clip)):
            raise ValueError(f"l2_clip must be > 0, got {self.l2_clip}")
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if self.min_contributors < 1 or self.dimension < 1:
            raise ValueError("min_contributors and dimension must be >= 1")
        self.fixed_point()  # validates bits / modulus

    def fixed_point(self) -> FixedPointConfig:
        return FixedPointConfig(clip=self.l2_clip, bits=self.bits, modulus_bits=self.modulus_bits)

    def sensitivity(self) -> float:
        """L2 sensitivity of one client's quantized update, in grid units."""
        return self.l2_clip * self.fixed_point().scale() + math.sqrt(self.dimension)

    def sigma_client(self) -> float:
        """Each client's noise share (grid units)."""
        return self.noise_multiplier * self.sensitivity() / math.sqrt(self.min_contributors)

    def effective_noise_multiplier(self) -> float:
        """z for the accountant (0 if no noise): 1/z² = Δ²/(t σ_c²) + τ d / 2."""
        return self.noise_multiplier_with(self.min_contributors)

    def noise_multiplier_with(self, contributors: int) -> float:
        """The effective z of a released sum that holds the noise shares of ``contributors`` inputs (each
        σ_c, calibrated for ``min_contributors``): 1/z² = Δ²/(n σ_c²) + τ(σ_c, n) d / 2 (Kairouz et al. 2021).
        ``contributors`` = 1 is one client's own share alone: its guarantee if secure aggregation is broken."""
        if self.noise_multiplier == 0:
            return 0.0
        if contributors < 1:
            raise ValueError("contributors must be >= 1")
        sc, d = self.sigma_client(), self.dimension
        inv = self.sensitivity() ** 2 / (contributors * sc * sc) + sum_divergence_tau(sc, contributors) * d / 2
        return 1.0 / math.sqrt(inv)

    def validate(self, group_size: int) -> None:
        """``ValueError`` unless a sum of ``group_size`` inputs plus noise fits in (−2^(m−1), 2^(m−1)) with
        overwhelming probability (noise bounded by 10 standard deviations of the group's total)."""
        max_q = (1 << (self.bits - 1)) - 1
        bound = group_size * max_q + 10 * self.sigma_client() * math.sqrt(group_size)
        if bound >= 1 << (self.modulus_bits - 1):
            raise ValueError(f"modulus 2^{self.modulus_bits} too small: a group of {group_size} with B={self.bits} "
                             f"and noise σ_c={self.sigma_client():.1f} reaches {bound:.0f} ≥ 2^{self.modulus_bits - 1}; "
                             f"raise modulus_bits or lower bits")
        if self.noise_multiplier > 0 and self.sigma_client() < 2:
            raise ValueError(f"noise share σ_c={self.sigma_client():.2f} < 2 grid units: raise bits")


def prepare_update(delta: Any, cfg: DistributedDPConfig, stream: RandomStream, backend: Any) -> tuple[Any, float]:
    """Clip, quantize, add this client's noise share, reduce mod 2^m. Returns (field vector, original norm)."""
    if len(delta) != cfg.dimension:
        raise ValueError(f"update has {len(delta)} coordinates, the task expects {cfg.dimension}")
    clipped, norm = l2_clip(delta, cfg.l2_clip, backend)
    q = quantize(clipped, cfg.fixed_point(), stream, backend)
    if cfg.noise_multiplier > 0:
        q = backend.add_ints(q, sample_discrete_gaussian(cfg.dimension, cfg.sigma_client(), stream, backend))
    return backend.ints_to_field(q, cfg.modulus_bits), norm


def decode_sum(field_sum: Any, cfg: DistributedDPConfig, backend: Any) -> Any:
    """The float sum (noise included) from a sum of prepared updates mod 2^m."""
    return backend.ints_to_floats(backend.field_to_signed(field_sum, cfg.modulus_bits), 1.0 / cfg.fixed_point().scale())
