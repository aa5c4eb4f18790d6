"""Trust evidence from one round's aggregation: how far each unit (a client, or a group mean) lies from the
other units, with the known DP and quantization noise taken out; and the honest norm bound on group means.

Distributed DP adds noise of a variance the server knows exactly (each survivor's discrete-Gaussian share σ_c,
plus stochastic rounding), isotropic over d coordinates. It inflates every squared distance by about d·σ²,
which for realistic d and σ drowns the signal: raw distances of honest and attacked groups become nearly equal
(observed: trust of sign-flipping attackers indistinguishable from honest clients). Subtracting the expected
noise energy d·(σ_i² + σ_j²) from each pairwise squared distance gives an unbiased estimate of the squared
*signal* distance ‖μ_i − μ_j‖²; a unit's median signal distance to the others, divided by the median over units,
is the outlier score the trust model consumes (≈ 1 typical, ≫ 1 outlier; see docs/trust.md).

The variance the server *prescribes* is not necessarily the variance *present*: a member that omits its noise
share makes the real noise of its group smaller, and subtracting the prescribed noise then hides up to d·v/n_g of
its shift (and frees as much slack in the norm bound). Hence the estimate of the noise actually present in each
released mean (``measured_noise_variance``, a robust scale estimate of the row's coordinates), and the three ways
the engine uses it: ``effective_noise_variance`` for the scores, ``bound_noise_variance`` for the norm bound, and
``noise_deficient``, a test that a group's noise is provably below what its members were told to add.
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


# ── the noise actually present ───────────────────────────────────────────────────────────────────────────────
MAD_TO_SIGMA = 1.4826  # 1/Φ⁻¹(3/4): the MAD of N(0, σ²) is σ/1.4826
MIN_MEASURED_DIMENSION = 1000  # below this the bound and the deficit test ignore the measurement (docs/trust.md)
BOUND_MARGIN_K = 8.0  # bound_noise_variance: measured · (1 + k/√d)
DEFICIT_MARGIN_K = 16.0  # noise_deficient: measured · (1 + k/√d) < prescribed


def measured_noise_variance(means: np.ndarray) -> np.ndarray:
    """Per row of ``means`` (G × d, a group mean each) a robust estimate of the per-coordinate variance of the noise
    actually present in it: (1.4826 · MAD)², MAD = median_k |x_k − median(x)|.

    Why this measures the noise and not the signal: an honest group mean has signal of L2 norm ≤ C (+ rounding),
    i.e. per-coordinate rms ≤ C/√d, far below the per-coordinate noise std in every regime where noise matters
    (z·C/√(t·n_g) for distributed DP); and the MAD has bounded influence, so a sparse or structured shift (a few
    coordinates, or coordinates far out in the tails) barely moves it. For N(0, v) coordinates it is consistent, with
    relative standard error ≈ 2.33/√d on the variance (asymptotic variance of the MAD at the normal,
    1/(16 φ(q)² q² d) with q = Φ⁻¹(3/4), doubled for the square). No contribution chosen independently of the other
    members' noise can make it smaller than that noise's own MAD (Anderson's inequality: a symmetric unimodal law puts
    the most mass in an interval centred at its centre). What it cannot tell apart from noise is a *dense* shift whose
    coordinates look Gaussian: a shift of per-coordinate size comparable to the noise std is absorbed (≈ 80–90 % of its
    energy for a shift of ≈ 1 noise std on 5–25 % of the coordinates).

    Non-finite rows (any inf/NaN) → inf; a zero row → 0; d = 0 → 0. d = 1 gives 0 (one coordinate has no spread);
    for small d the estimate is noisy (relative error ≈ 2.33/√d), which ``bound_noise_variance`` and
    ``noise_deficient`` account for. Rows are processed one at a time (float64 copies of one row only)."""
    x = np.asarray(means)
    if x.ndim != 2:
        raise ValueError(f"means must be G × d, got shape {x.shape}")
    g, d = x.shape
    out = np.zeros(g)
    if d == 0:
        return out
    for i in range(g):
        row = np.asarray(x[i], dtype=np.float64)
        if not np.isfinite(row).all():
            out[i] = np.inf
            continue
        dev = np.abs(row - np.median(row))
        out[i] = (MAD_TO_SIGMA * float(np.median(dev))) ** 2
    return out


def _rows(value: np.ndarray | float, g: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (g,)).copy()


def effective_noise_variance(assumed: np.ndarray | float, means: np.ndarray, *,
                             measured: np.ndarray | None = None) -> np.ndarray:
    """The per-coordinate noise variance to subtract in ``debiased_outlier_scores``: min(assumed, measured) per row.

    Never more noise than is measurably present (an attacker that omits its noise share no longer gets the missing
    share subtracted from its distances, which would hide up to d·v/n_g of its shift), and never more than was
    prescribed (an attacker that adds *extra* noise gains nothing: its distances are debiased by the prescribed amount
    only, the rest counts against it). ``measured`` may be passed if already computed (``measured_noise_variance``).

    The noise model is the distributed discrete Gaussian of Kairouz, Liu & Steinke (ICML'21, "The Distributed Discrete
    Gaussian Mechanism for Federated Learning with Secure Aggregation"): every member adds an independent N_Z(0, σ_c²)
    share per coordinate, so the noise of an honest group mean is i.i.d. over coordinates with a known variance.

    What an attacker can still do: replace its noise share by a *dense* shift whose coordinates are marginally
    indistinguishable from Gaussian noise. The measurement counts such a shift as noise, so it is hidden – but only up
    to the energy it replaces: measured ≈ present noise + (absorbed shift energy)/d, and the subtraction is capped at
    the prescribed variance, so the hidden energy is at most the noise share it omitted (d·σ_c²/(n_g·scale)² in the
    mean); such a shift is no larger than the noise it should have added (the norm bound still holds with the
    prescribed variance). At z ≈ 1 the noise std of one coordinate of a group sum, ≈ z·C·√(n_g/t), is as large as the
    largest coordinate an honest client may send (C), so a shift spread at or below that size is largely absorbed
    (≈ 80–90 % of its energy); only coordinates far out in the noise's tails are not. ``noise_deficient`` catches an
    attacker that omits its share without filling the gap."""
    x = np.asarray(means)
    m = measured_noise_variance(x) if measured is None else np.asarray(measured, dtype=np.float64)
    return np.minimum(_rows(assumed, x.shape[0]), m)


def _measured_upper(means: np.ndarray, resolution: np.ndarray | float,
                    measured: np.ndarray | None) -> np.ndarray:
    """(√measured + 1.4826 · resolution)²: the decoded means lie on a grid of spacing ``resolution``
    (1/(n_g · scale)); jittering each coordinate uniformly within ±resolution/2 gives a continuous variable of
    variance ≥ the lattice one whose MAD differs by at most one spacing, so this is an upper version of the
    continuous-noise estimate (the MAD of lattice data can be biased low by up to one spacing)."""
    x = np.asarray(means)
    m = measured_noise_variance(x) if measured is None else np.asarray(measured, dtype=np.float64)
    return (np.sqrt(m) + MAD_TO_SIGMA * _rows(resolution, x.shape[0])) ** 2


def bound_noise_variance(assumed: np.ndarray | float, means: np.ndarray, resolution: np.ndarray | float = 0.0, *,
                         measured: np.ndarray | None = None) -> np.ndarray:
    """The per-coordinate noise variance to use in ``mean_norm_bound``: min(assumed, measured⁺ · (1 + k/√d)),
    k = ``BOUND_MARGIN_K`` = 8, measured⁺ the lattice-corrected measurement (``resolution`` = the grid spacing of the
    means, 1/(n_g · scale); 0 for continuous data). For d < ``MIN_MEASURED_DIMENSION`` the assumed variance.

    Safe for honest groups: with w = measured⁺·(1 + k/√d) < v, an honest mean exceeds the bound only if its noise
    energy exceeds d·w + 6√(2d)·w, i.e. only if Z = √d(‖n‖²/d − measured)/v > (k + 6√2)·measured/v ≈ 16.5. Z has std
    √(2 + 2.33²) = 2.73 if the MAD error and the noise energy were independent (they are positively correlated,
    ρ ≈ 0.6, std 1.87), so k = 8 keeps ≥ 6 standard deviations. The honest signal and the lattice correction only make
    measured⁺ larger. What it buys: an attacker that omits its noise share can no longer spend the missing d·v/n_g on a
    larger update unless that update looks like noise to the MAD (see ``effective_noise_variance``)."""
    x = np.asarray(means)
    g, d = x.shape
    a = _rows(assumed, g)
    if d < MIN_MEASURED_DIMENSION:
        return a
    up = _measured_upper(x, resolution, measured)
    return np.minimum(a, up * (1.0 + BOUND_MARGIN_K / np.sqrt(d)))


def noise_deficient(prescribed: np.ndarray | float, means: np.ndarray, resolution: np.ndarray | float = 0.0, *,
                    measured: np.ndarray | None = None) -> np.ndarray:
    """Per row, True if the noise present is provably smaller than ``prescribed`` – the DP part only,
    σ_c²/(n_g · scale²) per survivor share, *without* the rounding term (rounding variance depends on the data and
    can be 0) – i.e. some member did not add its noise share: measured⁺ · (1 + k/√d) < prescribed with
    k = ``DEFICIT_MARGIN_K`` = 16 (measured⁺ as in ``bound_noise_variance``). Never True for d <
    ``MIN_MEASURED_DIMENSION`` or prescribed = 0; a non-finite row is not deficient (it is over the norm bound).

    Honest groups: their noise is the survivors' shares plus rounding plus signal, and independent additions only
    raise the MAD (Anderson), so a false flag needs the MAD estimate to fall 1/(1 + k/√d) below the truth: ≈ 6.9
    standard errors (2.33/√d); the exact binomial tail of the sample median gives ≤ 1e-7 for d = 1000 and ≤ 3e-10 for
    d ≥ 10⁴. Attackers: one of n_g members omitting its share leaves (n_g − 1)/n_g of the prescribed variance, caught
    when the gap 1/n_g exceeds ≈ 16/√d plus whatever of its shift the MAD absorbs (n_g = 5: d ≳ 10⁴ for a small
    shift); an attacker that fills the gap with a dense noise-like shift is not caught (``effective_noise_variance``)."""
    x = np.asarray(means)
    g, d = x.shape
    p = _rows(prescribed, g)
    if d < MIN_MEASURED_DIMENSION:
        return np.zeros(g, dtype=bool)
    up = _measured_upper(x, resolution, measured)
    return np.isfinite(up) & (p > 0) & (up * (1.0 + DEFICIT_MARGIN_K / np.sqrt(d)) < p)


def duplicate_units(means: np.ndarray, dp_var: np.ndarray | float, round_var_max: np.ndarray | float
                    ) -> np.ndarray:
    """Units (group means, or single clients with s = 1) that are closer to another unit than independent noise
    allows: proof of coordination – Sybils or free-riders sending one update, or sharing one noise draw.

    For two units whose noise is independent, ‖x_i − x_j‖² = ‖μ_i − μ_j‖² + (noise of the difference), and the
    noise term has mean d·(v_i + v_j) and standard deviation ≈ √(2d)·(v_i + v_j) for the DP part (Gaussian), plus
    at most d·(r_i + r_j) from stochastic rounding (variance ≤ ¼ grid unit² per coordinate). A pair with
    ‖x_i − x_j‖² ≤ max(0, d·(v_i + v_j) − 10·√(2d)·(v_i + v_j)) + 2d·(r_i + r_j) is below the independent-noise
    floor by ten standard deviations (with z = 0: closer than rounding alone can make two identical inputs), whatever
    their signals: both are flagged. Honest units differ by their data and draw their noise independently. What it
    does not catch: coordinated units that each add their own fresh noise (indistinguishable from honest clients
    with similar data) – those are for the outlier scores. Non-finite rows are never flagged here (they score inf
    elsewhere). Pass the noise *present* (:func:`effective_noise_variance`), not the prescribed one: a unit whose
    members omitted their shares is closer to every other unit than the prescribed noise implies, and would
    otherwise get honest units flagged with it."""
    x = np.asarray(means, dtype=np.float64)
    g, d = x.shape
    flags = np.zeros(g, bool)
    finite = np.isfinite(x).all(axis=1)
    if g < 2:
        return flags
    v = _rows(dp_var, g)
    r = _rows(round_var_max, g)
    idx = np.flatnonzero(finite)
    sq = np.einsum("ij,ij->i", x[idx], x[idx])
    raw = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x[idx] @ x[idx].T), 0.0)
    vv = v[idx][:, None] + v[idx][None, :]
    rr = r[idx][:, None] + r[idx][None, :]
    floor = np.maximum(0.0, d * vv - 10.0 * np.sqrt(2.0 * d) * vv) + 2.0 * d * rr
    # the Gram form loses precision for nearly equal large rows: compare exactly where it matters
    close = raw <= floor * 4 + 1e-30
    np.fill_diagonal(close, False)
    for a, b in zip(*np.nonzero(np.triu(close)), strict=True):
        i, j = idx[a], idx[b]
        if float(np.sum((x[i] - x[j]) ** 2)) <= floor[a, b]:
            flags[i] = flags[j] = True
    return flags


# ── direction evidence: group testing for coordinated stealthy attacks ───────────────────────────────────────
def deviation_evidence(means: np.ndarray, noise_var: np.ndarray | float, sizes: np.ndarray | float = 1.0
                       ) -> np.ndarray:
    """Per unit (a group mean, or a client with s = 1) its signed, standardized deviation along the round's
    dominant deviation direction, oriented towards the minority tail: > 0 suspicious, < 0 on the majority side,
    0 when the round shows no deviation beyond the noise.

    *The attacks it is for.* Stealthy coordinated attacks – ALIE (Baruch et al., NeurIPS'19), IPM (Xie et al.,
    UAI'19), min-max/min-sum (Shejwalkar & Houmansadr, NDSS'21), mimic (Karimireddy et al., ICLR'22) – shift every
    update they control by the *same* vector within a round and stay inside the honest spread, so no unit is an
    outlier by distance. But the shift is one direction: every unit that holds attackers moves the same way,
    by its attackers' share. That is what this finds.

    *Method.* Units are weighted by their sizes n_g (w_g = n_g/Σn). Centred on the weighted mean, the deviations
    e_g = x_g − x̄ satisfy Σ w_g e_g = 0. Their weighted Gram matrix with the noise covariance removed,
    M = D(E Eᵀ − d·N)D (D = diag √w; N the per-coordinate covariance of the centred noise, from the independent
    noise variances v_g), has a top eigenvector a with eigenvalue λ: the direction u = Eᵀ D a in which the units
    deviate most beyond the noise (principal component analysis of the group means, debiased like
    :func:`debiased_outlier_scores`). The projections p_g = ⟨e_g, u⟩/‖u‖ are standardized, z_g = p_g / √(Σ w p²),
    so that Σ w_g z_g = 0 and Σ w_g z_g² = 1, and multiplied by the signal fraction ρ = λ / (λ + d·aᵀDNDa) ∈ [0, 1]
    (0 when the deviation is no larger than the noise). The sign of u is free: it is oriented so that the
    weighted third moment Σ w_g z_g³ is positive – the tail is the suspicious side. Why: if attackers are a
    minority of the *clients*, the number of attackers k in a random group of s is hypergeometric/binomial with
    p < ½, whose skewness (1 − 2p)/√(s p (1 − p)) is positive, and the shift of a group is k/s times the attack.
    In one round with few groups the sample skew can point the wrong way (3 groups of 3 with attackers in two of
    them look like one deviating honest group); over rounds with fresh random groups (group testing, Dorfman,
    Ann. Math. Stat. 1943; with adversarial items, e.g. the "Byzantine-robust" group testing of Du & Hwang,
    "Combinatorial Group Testing and Its Applications", 2000) the expected evidence of an attacker is positive
    and that of an honest client negative, because the evidence of a round sums to zero over clients
    (Σ n_g z_g = 0) and every attacker is always in a group that holds an attacker. The consistency of the
    deviation direction across units is the signal that FoolsGold (Fung et al., RAID'20) uses between clients;
    here it is measured between group means, which is all secure aggregation reveals.

    Returns 0 for every unit when fewer than 3 finite units exist (two points have no tail), when the means
    do not deviate beyond the noise, or when the orientation is undecided (third moment 0); non-finite rows
    get 0 (they are full negative evidence elsewhere)."""
    x = np.asarray(means, dtype=np.float64)
    g, d = x.shape
    out = np.zeros(g)
    finite = np.isfinite(x).all(axis=1)
    idx = np.flatnonzero(finite)
    if len(idx) < 2 or d == 0:
        return out
    x = x[idx]
    v = _rows(noise_var, g)[idx]
    w = _rows(sizes, g)[idx]
    w = w / w.sum()
    e = x - w @ x
    # per-coordinate covariance of the centred noise: Cov(e_i, e_j) = δ_ij v_i − w_i v_i − w_j v_j + Σ w_k² v_k
    wv = w * v
    noise = np.diag(v) - wv[:, None] - wv[None, :] + float(np.sum(w * wv))
    sw = np.sqrt(w)
    gram = e @ e.T
    m = sw[:, None] * (gram - d * noise) * sw[None, :]
    vals, vecs = np.linalg.eigh(m)
    lam, a = float(vals[-1]), vecs[:, -1]
    noise_along = float(a @ (sw[:, None] * (d * noise) * sw[None, :]) @ a)
    if not lam > 1e-12 * float(np.sum(w * np.einsum("ij,ij->i", x, x))):  # no deviation (rounding error only)
        return out
    rho = lam / (lam + max(noise_along, 0.0))
    p = gram @ (sw * a)  # E u with u = Eᵀ D a (unnormalized: the standardization removes the scale)
    rms = float(np.sqrt(np.sum(w * p * p)))
    if not rms > 0:
        return out
    z = p / rms
    third = float(np.sum(w * z**3))
    out[idx] = (-1.0 if third < -1e-9 else 1.0) * rho * z
    return out


def round_orientation(deviation: np.ndarray, drift: np.ndarray) -> float:
    """The sign (±1) under which one round's per-client deviation evidence ``deviation`` (the unit's value of
    :func:`deviation_evidence` for each of its members) agrees with the members' accumulated ``drift``.

    The sign of a round's deviation direction cannot be trusted from the round alone (few groups: 3 groups of 3
    with attackers in two look like one deviating honest group). The clients' co-deviation matrix
    C = Σ_t ζ_t ζ_tᵀ (ζ_t: the round's per-client evidence, 0 for clients not in it) does not depend on those signs,
    and its top eigenvector separates clients that always deviate *together* – the members of a coordinated
    attack – from the rest. Orienting each ζ_t by its inner product with the running estimate and adding it
    is one step of a streaming power iteration for that eigenvector (Oja, J. Math. Biol. 1982; a sign-only
    variant): ``drift`` is that running estimate, one number per client, so the state stays O(clients).
    Since Σ ζ = 0 within a round, a drift common to every client does not change the orientation. Returns the
    round's own sign (+1) when the inner product is 0 (the first rounds, or nobody in the round observed yet)."""
    dot = float(np.dot(np.asarray(deviation, np.float64), np.asarray(drift, np.float64)))
    return -1.0 if dot < 0 else 1.0


def codeviation_statistics(drift: np.ndarray, energy: np.ndarray, gate: float = 2.0) -> np.ndarray:
    """Per client the self-normalized co-deviation statistic T_i = ± drift_i / √energy_i, oriented so that the
    minority of clients that deviate together has T > 0; all 0 while the population shows no such minority.

    ``drift`` is the decayed sum of a client's oriented per-round evidence, ``energy`` the decayed sum of its squares,
    so for a client whose evidence has mean 0 (an honest client in a federation without a coordinated attack) T is
    ≈ N(0, 1) whatever the scale of the evidence (a self-normalized sum; de la Peña, Lai & Shao, "Self-Normalized
    Processes", 2009), and a client whose evidence has mean μ > 0 and std σ drifts like μ/σ · √(observations).
    The drift's global sign is arbitrary (it is an eigenvector, :func:`round_orientation`); it is fixed by the
    skewness of T over the clients observed so far: attackers are a minority, so their side is the long tail.
    Orientation needs a skewness of at least ``gate`` standard errors (√(6/n) for n clients under normality),
    else every T is 0 – no evidence without a detectable coordinated minority (this keeps federations without
    a coordinated attack nearly free of it; measured in docs/trust.md). Clients with zero energy get 0."""
    s = np.asarray(drift, np.float64)
    q = np.asarray(energy, np.float64)
    out = np.zeros(len(s))
    obs = q > 0
    n = int(obs.sum())
    if n < 3:
        return out
    t = s[obs] / np.sqrt(q[obs])
    c = t - t.mean()
    m2 = float(np.mean(c * c))
    if not m2 > 0:
        return out
    skew = float(np.mean(c**3)) / m2**1.5
    if abs(skew) < gate * np.sqrt(6.0 / n):
        return out
    out[obs] = np.sign(skew) * t
    return out


def deviation_negative_evidence(statistic: np.ndarray | float, threshold: float) -> np.ndarray:
    """Negative evidence from the co-deviation statistic T: clip((T − t)/t, 0, 1) – none up to t, full from 2t.
    Never positive evidence: T < t (the majority side) gives 0. ``threshold`` = 0 disables it (all 0)."""
    t = np.asarray(statistic, np.float64)
    if threshold <= 0:
        return np.zeros_like(t)
    return np.clip((t - threshold) / threshold, 0.0, 1.0)


# ── alignment evidence: updates that oppose what the federation agreed on ───────────────────────────────────
def alignment_evidence(means: np.ndarray, aggregate: np.ndarray, gate: float = 5.0) -> np.ndarray:
    """Per unit (a group mean, or a client with s = 1) the cosine between its mean and the round's aggregate;
    NaN for a non-finite or zero unit, all NaN when the aggregate is zero or non-finite (no direction).

    *The attacks it is for.* Sign flipping (Damaskinos et al., ICML'18; the bit-flipping attack of Karimireddy,
    He & Jaggi, ICLR'22), gradient ascent on poisoned data (label flipping, Fang et al., USENIX Security'20) and
    inner-product manipulation (Xie et al., UAI'19) send updates inside the honest norms, each one different, so
    neither the norm bound, the distance score nor the duplicate test fires; the robust rule bounds their pull
    but, at 30 % of the clients, not to nothing (docs/results). What they cannot hide is that they point
    *against* the descent direction the honest majority agrees on. The robust aggregate of the round (after the
    pipeline's momentum: a smoothed estimate of that direction) is the reference, as the server model update is
    in FLTrust (Cao et al., NDSS'21) – but without a root data set, and as evidence over rounds
    (:meth:`coordinator.federation.trust.TrustState.observe_alignments`) rather than a weight in one round, so an
    honest client on skewed data whose update happens to oppose the aggregate in one round is not punished for it.

    *When the aggregate is not a reference.* Where honest clients barely agree with each other (FedProx
    Synthetic(1, 1): every client its own labelling function, honest cosines with the aggregate ≈ 0.05) 30 % of
    coordinated attackers steer the aggregate, and honest clients then oppose it round after round – measured:
    10–22 honest clients banned under sign flipping at 30 %. So a round counts only where the *majority* of units
    agrees with the aggregate far beyond chance: for a direction unrelated to it, cos·√d is ≈ N(0, 1); the round
    gives evidence only if the median unit's cos·√d ≥ ``gate`` (5), else all NaN. Measured per round (median
    cos·√d, 10th–90th percentile): digits 4.5–15 with or without attack; Synthetic(1, 1) 1.6–3.3 (gated out).

    DP noise is independent of the aggregate's direction in expectation, so it shrinks a unit's cosine towards 0
    but does not flip its sign on average (heavy noise gates a round out: no evidence rather than wrong
    evidence); the self-normalized statistic over rounds is scale-free."""
    x = np.asarray(means, dtype=np.float64)
    a = np.asarray(aggregate, dtype=np.float64).ravel()
    out = np.full(x.shape[0], np.nan)
    an = float(np.linalg.norm(a))
    if x.shape[0] == 0 or not np.isfinite(an) or an == 0.0 or a.shape[0] != x.shape[1]:
        return out
    finite = np.isfinite(x).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], x, 0.0), axis=1)
    ok = finite & (norms > 0)
    out[ok] = (x[ok] @ a) / (norms[ok] * an)
    out = np.clip(out, -1.0, 1.0)
    # the aggregate is a reference only where the majority of units agrees with it far beyond chance: for a
    # direction unrelated to the aggregate, cos·√d is ≈ N(0, 1); below ``gate`` the round gives no evidence
    if not ok.any() or not float(np.median(out[ok])) * np.sqrt(x.shape[1]) >= gate:
        return np.full(x.shape[0], np.nan)
    return out


def opposition_negative_evidence(align: float, energy: float, threshold: float) -> float:
    """Negative evidence from a client's alignment accumulator: A = align/√energy, clip((−A − t)/t, 0, 1) –
    none until A < −t, full from A ≤ −2t; 0 without observations or with ``threshold`` = 0."""
    if not energy > 0:
        return 0.0
    return float(deviation_negative_evidence(-align / np.sqrt(energy), threshold))  # the same ramp, on −A
