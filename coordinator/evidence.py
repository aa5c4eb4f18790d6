"""Trust evidence from one round's aggregation: how far each unit (a client, or a group mean) lies from the
other units, with the known DP and quantization noise taken out; and the honest norm bound on group means.

Distributed DP adds noise of a variance the server knows exactly (each survivor's discrete-Gaussian share σ_c,
plus stochastic rounding), isotropic over d coordinates. It inflates every squared distance by about d·σ²,
which for realistic d and σ drowns the signal: raw distances of honest and attacked groups become nearly equal
(observed: trust of sign-flipping attackers indistinguishable from honest clients). Subtracting the expected
noise energy d·(σ_i² + σ_j²) from each pairwise squared distance gives an unbiased estimate of the squared
*signal* distance ‖μ_i − μ_j‖²; a unit's median signal distance to the others, divided by the median over units,
is the outlier score the trust model consumes (≈ 1 typical, ≫ 1 outlier; see docs/trust.md).
"""

from __future__ import annotations

import numpy as np


def noise_variance_of_mean(survivors: int, sigma_client: float, scale: float) -> float:
    """Per-coordinate variance (float units) of a group mean over ``survivors`` inputs: each adds a DP share of
    std σ_c grid units and stochastic rounding noise (variance ≤ 1/4, 1/6 on average)."""
    if survivors < 1:
        raise ValueError("survivors must be >= 1")
    return (sigma_client**2 + 1 / 6) / (survivors * scale**2)


def mean_norm_bound(l2_clip: float, dimension: int, scale: float, noise_var: float) -> float:
    """The largest L2 norm an honest group mean can have, with overwhelming probability.

    Honest signal s: ‖s‖ ≤ c = C + √d/scale (clipping, then stochastic rounding moves each coordinate by < 1 grid
    unit). Independent noise n of per-coordinate variance v: ‖s + n‖² = ‖s‖² + 2⟨s, n⟩ + ‖n‖², where ‖n‖² has mean
    d·v and standard deviation √(2d)·v, and ⟨s, n⟩ standard deviation ≤ c·√v. Six standard deviations each:
    ‖s + n‖² ≤ c² + d·v + 6√(2d)·v + 12·c·√v. (Testing the squared norm keeps the honest slack at ≈ C instead
    of C + √(d·v), which is what lets a scaled-up attacker be caught even when noise dominates.)"""
    c = l2_clip + np.sqrt(dimension) / scale
    v = float(noise_var)
    return float(np.sqrt(c * c + dimension * v + 6 * np.sqrt(2 * dimension) * v + 12 * c * np.sqrt(v)))


def debiased_outlier_scores(means: np.ndarray, noise_var: np.ndarray) -> np.ndarray:
    """Outlier scores of ``means`` (G × d) from their pairwise distances with the known noise removed.

    For independent noise, E‖x_i − x_j‖² = ‖μ_i − μ_j‖² + d(σ_i² + σ_j²) exactly, whatever the aggregation rule,
    so D_ij = √max(‖x_i − x_j‖² − d(σ_i² + σ_j²), 0) estimates the signal distance. A unit's spread is the median
    of its D_ij over the other units (robust while honest units are a majority); the score is that spread over
    the median spread. Non-finite rows score ``inf``. When every unit is within the noise, spreads are compared
    with a floor of 5 % of the noise's own scale, so pure noise gives scores ≲ 1, not spurious outliers."""
    means = np.asarray(means)
    noise_var = np.asarray(noise_var, dtype=np.float64)
    g, d = means.shape
    finite = np.isfinite(means).all(axis=1)
    out = np.full(g, np.inf)
    n = int(finite.sum())
    if n == 0:
        return out
    if n == 1:
        out[finite] = 1.0
        return out
    x, var = means[finite], noise_var[finite]
    x32 = x.astype(np.float32)
    sq = np.einsum("ij,ij->i", x, x)
    # Gram form: one float32 BLAS product (float64 squared norms); cancellation is harmless here since the
    # distances that matter (noise, outliers) are of the order of the norms themselves
    raw = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x32 @ x32.T).astype(np.float64), 0.0)
    signal = np.sqrt(np.maximum(raw - d * (var[:, None] + var[None, :]), 0.0))
    np.fill_diagonal(signal, np.nan)
    spread = np.nanmedian(signal, axis=1)
    floor = 0.05 * float(np.sqrt(2 * d * var.mean())) + 1e-12
    out[finite] = spread / max(float(np.median(spread)), floor)
    return out
