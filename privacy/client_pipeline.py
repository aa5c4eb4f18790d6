"""What a client does to its update before secure aggregation, and how the server decodes a group sum.

prepare_update: L2-clip the whole update to C → stochastic rounding onto the integer grid (fixed point, B bits,
scale (2^(B−1)−1)/C) → add this client's discrete-Gaussian noise share → reduce mod 2^m (field elements).

Distributed DP (Kairouz, Liu & Steinke, ICML'21, "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation"): each client adds N_Z(0, σ_c²) with σ_c = σ / √t, so any released sum of at
least t inputs (SecAgg+'s threshold – fewer and nothing is released) carries noise of variance ≥ σ². In grid
units the L2 sensitivity is Δ = C·scale + √d (stochastic rounding moves each coordinate by < 1), and the
effective noise multiplier for accounting follows Kairouz et al.'s Theorem on sums of discrete Gaussians:
1/z² = Δ²/(t·σ_c²) + τ·d/2 with their τ (negligible for σ_c ≥ 2). Pure Python + backend: runs in the browser.

Adaptive clipping inside secure aggregation (Andrew, Thakkar, McMahan & Ramaswamy, NeurIPS'21, "Differentially
Private Learning with Adaptive Clipping", Algorithm 1 with the centred indicator of TF Privacy's
``QuantileEstimatorQuery``): with ``clip_indicator`` κ > 0 each client appends one coordinate κ·(b − ½), where
b = 1 if its update's norm was ≤ C (not clipped) and 0 otherwise. The coordinate travels in the same SecAgg+ vector,
on the same grid and under the same noise as the update, so the server learns only each group's *count* of
unclipped members (plus noise), never a client's bit. The client's contribution (clipped update, κ(b − ½)) has L2
norm ≤ √(C² + κ²/4), which replaces C in the sensitivity Δ; the noise shares are calibrated to that Δ, so one
Gaussian mechanism with multiplier z covers update and bit together, and ε is that of z. The price is noise: the
update's noise grows by √(1 + (κ/C)²/4) (3 % at κ = C/2) and the count's noise per released sum is
z·√(C²/κ² + ¼) in units of members (σ_b in Andrew et al.; their effective multiplier (z_Δ⁻² + (2σ_b)⁻²)^(−1/2)
with z_Δ = z·√(1 + κ²/4C²) is exactly z). κ ≤ 2C keeps the coordinate within the grid's range ±C.
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
    dimension: int  # d (the model's parameters; the SecAgg+ vector has :attr:`length` coordinates)
    clip_indicator: float = 0.0  # κ: weight of the appended clipped-indicator coordinate (0: none)

    def __post_init__(self) -> None:
        if not (self.l2_clip > 0 and math.isfinite(self.l2_clip)):
            raise ValueError(f"l2_clip must be > 0, got {self.l2_clip}")
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if self.min_contributors < 1 or self.dimension < 1:
            raise ValueError("min_contributors and dimension must be >= 1")
        if not (0 <= self.clip_indicator <= 2 * self.l2_clip and math.isfinite(self.clip_indicator)):
            raise ValueError(f"clip_indicator must be in [0, 2·l2_clip] = [0, {2 * self.l2_clip:g}], "
                             f"got {self.clip_indicator}")
        self.fixed_point()  # validates bits / modulus

    @property
    def length(self) -> int:
        """Coordinates of the secure-aggregation vector: d, plus one for the clipped indicator when κ > 0."""
        return self.dimension + (1 if self.clip_indicator > 0 else 0)

    def contribution_bound(self) -> float:
        """L2 bound of one client's contribution before quantization: √(C² + κ²/4) (C without the indicator)."""
        return math.hypot(self.l2_clip, self.clip_indicator / 2)

    def update_noise_multiplier(self) -> float:
        """Noise on the *update* relative to C (Andrew et al.'s z_Δ): z·√(C² + κ²/4)/C (z without the indicator)."""
        return self.noise_multiplier * self.contribution_bound() / self.l2_clip

    def count_noise(self, contributors: int | None = None) -> float:
        """Standard deviation of a released sum's indicator count (members), noise only: σ/κ in model units,
        σ = √contributors·σ_c/scale (default: the calibrated threshold). ``inf`` without the indicator."""
        if self.clip_indicator <= 0:
            return math.inf
        n = self.min_contributors if contributors is None else contributors
        return math.sqrt(n) * self.sigma_client() / self.fixed_point().scale() / self.clip_indicator

    def fixed_point(self) -> FixedPointConfig:
        return FixedPointConfig(clip=self.l2_clip, bits=self.bits, modulus_bits=self.modulus_bits)

    def sensitivity(self) -> float:
        """L2 sensitivity of one client's quantized contribution (update and indicator), in grid units."""
        return self.contribution_bound() * self.fixed_point().scale() + math.sqrt(self.length)

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
        sc, d = self.sigma_client(), self.length
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


def prepare_update(delta: Any, cfg: DistributedDPConfig, stream: RandomStream, backend: Any,
                   indicator_value: float | None = None) -> tuple[Any, float]:
    """Clip, quantize, add this client's noise share, reduce mod 2^m. Returns (field vector, original norm).

    With ``cfg.clip_indicator`` κ > 0 the vector ends with κ·(b − ½), b = 1 iff the norm was ≤ C (Andrew et al.
    NeurIPS'21); ``indicator_value`` replaces that value (what a Byzantine client can send: the simulation harness
    uses it; the quantizer still confines it to the grid's ±C like every coordinate)."""
    if len(delta) != cfg.dimension:
        raise ValueError(f"update has {len(delta)} coordinates, the task expects {cfg.dimension}")
    clipped, norm = l2_clip(delta, cfg.l2_clip, backend)
    if cfg.clip_indicator > 0:
        if indicator_value is None:
            indicator_value = cfg.clip_indicator * ((1.0 if norm <= cfg.l2_clip else 0.0) - 0.5)
        clipped = backend.concat_floats(clipped, [float(indicator_value)])
    q = quantize(clipped, cfg.fixed_point(), stream, backend)
    if cfg.noise_multiplier > 0:
        q = backend.add_ints(q, sample_discrete_gaussian(cfg.length, cfg.sigma_client(), stream, backend))
    return backend.ints_to_field(q, cfg.modulus_bits), norm


def decode_sum(field_sum: Any, cfg: DistributedDPConfig, backend: Any) -> Any:
    """The float sum (noise included) from a sum of prepared updates mod 2^m: ``cfg.length`` values (the update
    sum, then the indicator sum when κ > 0; :func:`split_indicator`)."""
    return backend.ints_to_floats(backend.field_to_signed(field_sum, cfg.modulus_bits), 1.0 / cfg.fixed_point().scale())


def unclipped_count(indicator_sum: float, cfg: DistributedDPConfig, members: int) -> float:
    """How many of a group's ``members`` reported an unclipped update, from the decoded indicator sum
    Σ κ(b_i − ½) + noise: Σ/κ + n/2, clamped to [0, n] (a Byzantine member can send any value its grid holds;
    the clamp bounds a corrupted group's pull on the estimate to its own size)."""
    if cfg.clip_indicator <= 0:
        raise ValueError("this configuration carries no clipped indicator")
    return min(float(members), max(0.0, float(indicator_sum) / cfg.clip_indicator + members / 2))
