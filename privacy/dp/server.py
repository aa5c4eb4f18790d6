"""Server-side DP for a trusted coordinator (no secure aggregation).

- DP-FedAvg: McMahan, Ramage, Talwar & Zhang, ICLR'18, "Learning Differentially Private Recurrent Language
  Models": clip each update to S, average with a fixed denominator (the expected number of clients m), add
  N(0, (z·S/m)²) to every coordinate.
- Adaptive clipping: Andrew, Thakkar, McMahan & Ramaswamy, NeurIPS'21, "Differentially Private Learning with
  Adaptive Clipping": geometric update C ← C · exp(−η (b̃ − γ)) toward the γ-quantile of update norms, where
  b̃ is the fraction of unclipped updates, privatized as in TF Privacy's ``QuantileEstimatorQuery``: each client
  contributes the centred indicator b_i − ½ ∈ {−½, +½} (sensitivity ½ under add/remove), the sum gets
  N(0, σ_b²), and b̃ = (Σ(b_i − ½) + N(0, σ_b²))/m + ½ with a fixed, public denominator m (the expected number
  of clients, as DP-FedAvg's), clamped to [0, 1].
Gaussian noise comes from a :class:`RandomStream` (Box–Muller over ChaCha20 uniforms), never numpy.random.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from privacy.randomness import RandomStream


def gaussian(n: int, sigma: float, stream: RandomStream) -> np.ndarray:
    """n samples of N(0, σ²) by Box–Muller from the stream."""
    from privacy.backends import numpy_backend

    be = numpy_backend()
    k = (n + 1) // 2
    u1 = stream.uniforms_open(k, be)
    u2 = stream.uniforms(k, be)
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])[:n]
    return z * sigma


@dataclass(frozen=True)
class DPFedAvg:
    clip: float
    noise_multiplier: float
    expected_clients: int

    def __post_init__(self) -> None:
        if not (self.clip > 0 and self.noise_multiplier >= 0 and self.expected_clients >= 1):
            raise ValueError("DPFedAvg needs clip > 0, noise_multiplier >= 0 and expected_clients >= 1")

    def aggregate(self, updates: Any, stream: RandomStream) -> tuple[np.ndarray, dict[str, Any]]:
        """Clipped, noised average of the (n, d) updates. Rows with NaN/Inf are rejected (ValueError)."""
        x = np.asarray(updates, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"updates must be (n, d), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("updates contain NaN or Inf")
        norms = np.linalg.norm(x, axis=1)
        factors = np.minimum(1.0, self.clip / np.where(norms > 0, norms, np.inf))
        total = (factors[:, None] * x).sum(axis=0)
        sigma = self.noise_multiplier * self.clip
        noisy = (total + gaussian(x.shape[1], sigma, stream)) / self.expected_clients
        return noisy, {"norms": norms, "clipped_fraction": float(np.mean(norms > self.clip)), "sigma": sigma}


@dataclass(frozen=True)
class AdaptiveClipState:
    clip: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_noise: float = 0.0  # σ_b: std of the noise on the unclipped count

    def __post_init__(self) -> None:
        if not (self.clip > 0 and 0 < self.target_quantile < 1 and self.learning_rate > 0 and self.count_noise >= 0):
            raise ValueError("adaptive clipping needs clip > 0, 0 < quantile < 1, lr > 0, count_noise >= 0")


def adaptive_clip_update(state: AdaptiveClipState, norms: Any, stream: RandomStream,
                         expected_clients: int | None = None) -> AdaptiveClipState:
    """One geometric update of the clip norm from this round's update norms (Andrew et al. 2021, Alg. 1).

    The released quantity is the noisy *centred* count s̃ = Σ_i (b_i − ½) + N(0, σ_b²), b_i = [‖Δ_i‖ ≤ C]:
    adding or removing one client moves Σ(b_i − ½) by exactly ½, so with ``count_noise`` σ_b it is a Gaussian
    mechanism with noise multiplier 2σ_b (:func:`adaptive_effective_multiplier`). b̃ = s̃/m + ½ with
    m = ``expected_clients``: the ½-sensitivity argument needs a denominator that does not depend on who took
    part, so with ``count_noise`` > 0 ``expected_clients`` is required (pass DP-FedAvg's ``expected_clients``).
    Without noise (no privacy claimed) it defaults to the number of norms, giving the exact unclipped fraction.
    b̃ is clamped to [0, 1] (post-processing).
    """
    norms = np.asarray(norms, dtype=np.float64)
    if expected_clients is None:
        if state.count_noise > 0:
            raise ValueError("a noisy clipped count needs a fixed denominator: pass expected_clients")
        expected_clients = len(norms)
    elif isinstance(expected_clients, bool) or not isinstance(expected_clients, (int, np.integer)) or expected_clients < 1:
        raise ValueError(f"expected_clients must be an int >= 1, got {expected_clients!r}")
    if expected_clients == 0:  # no norms and no fixed denominator: nothing to learn from
        return state
    centred = float(np.sum(norms <= state.clip)) - 0.5 * len(norms)  # Σ (b_i − ½)
    noise = float(gaussian(1, state.count_noise, stream)[0]) if state.count_noise > 0 else 0.0
    b = min(1.0, max(0.0, (centred + noise) / expected_clients + 0.5))
    new_clip = state.clip * math.exp(-state.learning_rate * (b - state.target_quantile))
    return AdaptiveClipState(new_clip, state.target_quantile, state.learning_rate, state.count_noise)


def adaptive_effective_multiplier(noise_multiplier: float, count_noise: float) -> float:
    """Noise multiplier to account for when the update (noise multiplier z) and the centred clipped count of
    :func:`adaptive_clip_update` (noise σ_b on Σ(b_i − ½), L2 sensitivity ½, i.e. noise multiplier 2σ_b) are
    released together: two Gaussian mechanisms compose as one with z_eff = (z⁻² + (2σ_b)⁻²)^(−1/2) (Andrew et
    al. 2021, Thm. 1). Valid only for the centred count with a fixed denominator; the uncentred 0/1 count has
    sensitivity 1 and would need (z⁻² + σ_b⁻²)^(−1/2)."""
    if noise_multiplier <= 0 or count_noise <= 0:
        raise ValueError("both noise multipliers must be > 0")
    return (noise_multiplier ** -2 + (2 * count_noise) ** -2) ** -0.5
