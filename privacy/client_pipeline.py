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
from privacy.rotation import Rotation, padded_length

ROTATION_CLIP_SIGMAS = 4.0  # k: the rotated coordinates' range ±k·B/√L (B: the contribution bound)
ROUNDING_BETA = 1e-9  # β of conditional randomized rounding: how often a rounded vector is rounded again


@dataclass(frozen=True)
class DistributedDPConfig:
    l2_clip: float  # C
    noise_multiplier: float  # z: target σ/Δ of every released sum (0: no noise)
    bits: int  # B
    modulus_bits: int  # m
    min_contributors: int  # t: fewest inputs in a released sum (SecAgg+ threshold; 1 without secure aggregation)
    dimension: int  # d (the model's parameters; the SecAgg+ vector has :attr:`length` coordinates)
    clip_indicator: float = 0.0  # κ: weight of the appended clipped-indicator coordinate (0: none)
    rotation_seed: str = ""  # hex of the public rotation's 32-byte seed (privacy.rotation; "": no rotation)

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
        if self.rotation_seed and (len(self.rotation_seed) != 64 or
                                   any(c not in "0123456789abcdef" for c in self.rotation_seed)):
            raise ValueError("rotation_seed must be empty or 64 lowercase hex digits")
        self.fixed_point()  # validates bits / modulus

    @property
    def length(self) -> int:
        """Coordinates of a client's contribution: d, plus one for the clipped indicator when κ > 0."""
        return self.dimension + (1 if self.clip_indicator > 0 else 0)

    @property
    def field_length(self) -> int:
        """Coordinates of the secure-aggregation vector: :attr:`length`, zero-padded to the rotation's blocks
        when a rotation is applied (:func:`privacy.rotation.padded_length`)."""
        return padded_length(self.length) if self.rotation_seed else self.length

    def rotation(self) -> Rotation | None:
        """The public random rotation applied before quantization (``None`` without one)."""
        return Rotation(bytes.fromhex(self.rotation_seed), self.length) if self.rotation_seed else None

    def coordinate_clip(self) -> float:
        """The range ±c of every coordinate on the grid. Without rotation c = C (one coordinate may carry the
        whole clipped update; κ ≤ 2C keeps the indicator inside). After the rotation every coordinate of a vector
        of norm ≤ B is about B/√L: c = min(B, ROTATION_CLIP_SIGMAS·B/√L) with B the contribution bound – a
        coordinate beyond it (probability ≈ 6e-5 each) is clipped, which only shortens the vector."""
        if not self.rotation_seed:
            return self.l2_clip
        b = self.contribution_bound()
        return min(b, ROTATION_CLIP_SIGMAS * b / math.sqrt(self.field_length))

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
        return FixedPointConfig(clip=self.coordinate_clip(), bits=self.bits, modulus_bits=self.modulus_bits)

    def sensitivity(self) -> float:
        """L2 sensitivity of one client's quantized contribution (update and indicator), in grid units: the bound
        :func:`prepare_update` enforces on the rounded vector (conditional randomized rounding), never more than
        the unconditional a + √L (a = contribution bound × grid scale; rounding moves each of the L coordinates
        by < 1)."""
        a = self.contribution_bound() * self.fixed_point().scale()
        return min(a + math.sqrt(self.field_length), self.rounding_bound() * (1 + 1e-12))

    def rounding_bound(self) -> float:
        """Conditional randomized rounding (Kairouz, Liu & Steinke ICML'21, Section 4.1 and Theorem 13): a
        rounded vector longer than √(a² + L/4 + √(2 ln(1/β))·(a + √L/2)) is rounded again. Unbiased rounding
        exceeds it with probability ≤ β (β = ROUNDING_BETA), so the resampling is rare and its bias negligible,
        while the sensitivity drops from a + √L to about √(a² + L/4): at 8 bits and d = 2,410 from 1.39·a to
        1.03·a – the noise, and so the bits a round needs, no longer grow with √d."""
        a = self.contribution_bound() * self.fixed_point().scale()
        L = self.field_length
        return math.sqrt(a * a + L / 4 + math.sqrt(2 * math.log(1 / ROUNDING_BETA)) * (a + math.sqrt(L) / 2))

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
        sc, d = self.sigma_client(), self.field_length
        inv = self.sensitivity() ** 2 / (contributors * sc * sc) + sum_divergence_tau(sc, contributors) * d / 2
        return 1.0 / math.sqrt(inv)

    def sum_bound(self, group_size: int) -> float:
        """The largest |coordinate| of a group's sum, noise included (10 standard deviations of the group's total
        noise): every member's coordinate is within ±(2^(B−1) − 1) on the grid."""
        max_q = (1 << (self.bits - 1)) - 1
        return group_size * max_q + 10 * self.sigma_client() * math.sqrt(group_size)

    def required_modulus_bits(self, group_size: int) -> int:
        """The fewest modulus bits m ≥ B with :meth:`sum_bound` < 2^(m−1): what the group's sum needs (quantization
        bits, group size, noise headroom). ``ValueError`` if even 32 bits do not suffice."""
        m = max(self.bits, math.floor(math.log2(max(self.sum_bound(group_size), 1.0))) + 2)
        while m > self.bits and self.sum_bound(group_size) < 1 << (m - 2):
            m -= 1  # guard against log2 rounding up at a power of two
        while self.sum_bound(group_size) >= 1 << (m - 1):
            m += 1
        if m > 32:
            raise ValueError(f"a group of {group_size} with B={self.bits} and noise σ_c={self.sigma_client():.1f} "
                             f"needs {m} > 32 modulus bits; lower bits")
        return m

    def validate(self, group_size: int) -> None:
        """``ValueError`` unless a sum of ``group_size`` inputs plus noise fits in (−2^(m−1), 2^(m−1)) with
        overwhelming probability (noise bounded by 10 standard deviations of the group's total)."""
        bound = self.sum_bound(group_size)
        if bound >= 1 << (self.modulus_bits - 1):
            raise ValueError(f"modulus 2^{self.modulus_bits} too small: a group of {group_size} with B={self.bits} "
                             f"and noise σ_c={self.sigma_client():.1f} reaches {bound:.0f} ≥ 2^{self.modulus_bits - 1}; "
                             f"raise modulus_bits or lower bits")
        if self.noise_multiplier > 0 and self.sigma_client() < 2:
            raise ValueError(f"noise share σ_c={self.sigma_client():.2f} < 2 grid units: raise bits")


MAX_NOISE_INFLATION = 1.02  # automatic bits with DP noise: rounding raises the sensitivity (so the noise) ≤ 2 %
ROTATED_BITS_NO_NOISE = 8  # automatic bits without noise, rotated: a grid step of 3 % of a coordinate's rms


def choose_quantization_bits(cfg: DistributedDPConfig) -> int:
    """The quantization bits B a configuration needs (``cfg.bits`` is ignored): the fewest bits – and so the
    smallest modulus – at which quantization costs nothing measurable.

    With DP noise: the smallest B whose conditional-rounding sensitivity is within 2 % of the unrounded bound a
    (the rounding then adds ≤ 2 % to the noise for the same ε, and its own error is far below the noise); rotated,
    that is 5–7 bits whatever the model size. Without noise: rotated, 8 bits (the grid step is 4/127 of a rotated
    coordinate's typical size, whatever d); unrotated, the same step relative to C/√L, which needs
    log₂(127·√L/4) + 1 bits because one coordinate may carry the whole norm C."""
    import dataclasses

    if cfg.noise_multiplier > 0:
        for b in range(2, 25):
            c = dataclasses.replace(cfg, bits=b, modulus_bits=max(b, cfg.modulus_bits))
            a = c.contribution_bound() * c.fixed_point().scale()
            if c.sensitivity() <= MAX_NOISE_INFLATION * a:
                return b
        return 24
    if cfg.rotation_seed:
        return ROTATED_BITS_NO_NOISE
    return min(24, math.ceil(math.log2(127 * math.sqrt(cfg.field_length) / 4 + 1)) + 1)


def prepare_update(delta: Any, cfg: DistributedDPConfig, stream: RandomStream, backend: Any,
                   indicator_value: float | None = None, bound_rounding: bool | None = None) -> tuple[Any, float]:
    """Clip, quantize, add this client's noise share, reduce mod 2^m. Returns (field vector, original norm).

    With ``cfg.clip_indicator`` κ > 0 the vector ends with κ·(b − ½), b = 1 iff the norm was ≤ C (Andrew et al.
    NeurIPS'21); ``indicator_value`` replaces that value (what a Byzantine client can send: the simulation harness
    uses it; the quantizer still confines it to the grid's ±C like every coordinate). ``bound_rounding``: round
    conditionally (:func:`round_within`, the honest client's sensitivity bound); default: unless a lying
    ``indicator_value`` is given – a Byzantine client's contribution is not within the bound, and it does not
    care to be."""
    if len(delta) != cfg.dimension:
        raise ValueError(f"update has {len(delta)} coordinates, the task expects {cfg.dimension}")
    if bound_rounding is None:  # decided before the honest indicator value is filled in below
        bound_rounding = indicator_value is None
    clipped, norm = l2_clip(delta, cfg.l2_clip, backend)
    if cfg.clip_indicator > 0:
        if indicator_value is None:
            indicator_value = cfg.clip_indicator * ((1.0 if norm <= cfg.l2_clip else 0.0) - 0.5)
        clipped = backend.concat_floats(clipped, [float(indicator_value)])
    rotation = cfg.rotation()
    if rotation is not None:
        clipped = rotation.forward(_as_rotation_input(clipped, backend))
    q = round_within(clipped, cfg, stream, backend) if bound_rounding else quantize(clipped, cfg.fixed_point(),
                                                                                      stream, backend)
    if cfg.noise_multiplier > 0:
        q = backend.add_ints(q, sample_discrete_gaussian(cfg.field_length, cfg.sigma_client(), stream, backend))
    return backend.ints_to_field(q, cfg.modulus_bits), norm


MAX_ROUNDING_ATTEMPTS = 64


def round_within(x: Any, cfg: DistributedDPConfig, stream: RandomStream, backend: Any) -> Any:
    """Conditional randomized rounding: :func:`privacy.fixedpoint.quantize` repeated (fresh uniforms each time)
    until the rounded vector's L2 norm is within :meth:`DistributedDPConfig.rounding_bound` – the sensitivity the
    accounting uses. The squared norm is computed exactly (integers), so every backend decides alike."""
    bound2 = cfg.rounding_bound() ** 2
    fp = cfg.fixed_point()
    for _ in range(MAX_ROUNDING_ATTEMPTS):
        q = quantize(x, fp, stream, backend)
        if _squared_norm(q, backend) <= bound2:
            return q
    raise ValueError(f"rounding exceeded the sensitivity bound {MAX_ROUNDING_ATTEMPTS} times: the update does not "
                     "fit the grid (is it clipped?)")


def _squared_norm(q: Any, backend: Any) -> int:
    """Σ q_i² as an exact integer."""
    if backend.name == "numpy":
        import numpy as np

        qa = np.asarray(q, dtype=np.int64)
        mx = int(np.abs(qa).max()) if qa.size else 0
        if qa.size * mx * mx < 1 << 62:
            return int(np.dot(qa, qa))
        return sum(int(v) * int(v) for v in qa.tolist())
    return sum(int(v) * int(v) for v in q)


def _as_rotation_input(x: Any, backend: Any) -> Any:
    if backend.name == "numpy":
        import numpy as np

        return np.asarray(x, dtype=np.float64)
    return x


def decode_sum(field_sum: Any, cfg: DistributedDPConfig, backend: Any) -> Any:
    """The float sum (noise included) from a sum of prepared updates mod 2^m: ``cfg.length`` values (the update
    sum, then the indicator sum when κ > 0; :func:`split_indicator`), rotated back when a rotation was applied."""
    out = backend.ints_to_floats(backend.field_to_signed(field_sum, cfg.modulus_bits), 1.0 / cfg.fixed_point().scale())
    rotation = cfg.rotation()
    if rotation is None:
        return out
    return rotation.inverse(_as_rotation_input(out, backend))


def unclipped_count(indicator_sum: float, cfg: DistributedDPConfig, members: int) -> float:
    """How many of a group's ``members`` reported an unclipped update, from the decoded indicator sum
    Σ κ(b_i − ½) + noise: Σ/κ + n/2, clamped to [0, n] (a Byzantine member can send any value its grid holds;
    the clamp bounds a corrupted group's pull on the estimate to its own size)."""
    if cfg.clip_indicator <= 0:
        raise ValueError("this configuration carries no clipped indicator")
    return min(float(members), max(0.0, float(indicator_sum) / cfg.clip_indicator + members / 2))
