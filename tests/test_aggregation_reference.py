"""Aggregators against naive reference implementations written here from the papers' definitions (plain
Python loops over inputs and coordinates), on random inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import aggregation as A


def ref_krum_scores(x: np.ndarray, f: int) -> list[float]:
    """Blanchard et al. 2017: for each i, sum of squared distances to its n−f−2 closest other vectors."""
    n = len(x)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((x[i].astype(np.float64) - x[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[: n - f - 2]))
    return scores


def ref_median(x: np.ndarray) -> np.ndarray:
    out = []
    for j in range(x.shape[1]):
        col = sorted(float(v) for v in x[:, j])
        n = len(col)
        out.append(col[n // 2] if n % 2 else (col[n // 2 - 1] + col[n // 2]) / 2)
    return np.array(out)


def ref_trimmed_mean(x: np.ndarray, b: int) -> np.ndarray:
    out = []
    for j in range(x.shape[1]):
        col = sorted(float(v) for v in x[:, j])
        kept = col[b: len(col) - b]
        out.append(sum(kept) / len(kept))
    return np.array(out)


def ref_bulyan(x: np.ndarray, f: int) -> np.ndarray:
    """El Mhamdi et al. 2018: recursive Krum selection of θ = n−2f, then per coordinate the mean of the
    β = θ−2f values closest to the median."""
    n = len(x)
    theta, beta = n - 2 * f, n - 4 * f
    remaining = list(range(n))
    chosen = []
    for _ in range(theta):
        sub = x[remaining]
        k = max(len(remaining) - f - 2, 1)
        scores = []
        for i in range(len(remaining)):
            d = sorted(float(np.sum((sub[i].astype(np.float64) - sub[j]) ** 2))
                       for j in range(len(remaining)) if j != i)
            scores.append(sum(d[:k]))
        pick = int(np.argmin(scores))
        chosen.append(remaining.pop(pick))
    s = x[sorted(chosen)].astype(np.float64)
    out = []
    for j in range(x.shape[1]):
        col = sorted(s[:, j])
        med = col[theta // 2] if theta % 2 else (col[theta // 2 - 1] + col[theta // 2]) / 2
        closest = sorted(col, key=lambda v: abs(v - med))[:beta]
        out.append(sum(closest) / beta)
    return np.array(out)


def ref_geometric_median(x: np.ndarray, iters: int = 5000) -> np.ndarray:
    """Plain Weiszfeld in float64, run to convergence."""
    z = x.mean(axis=0).astype(np.float64)
    for _ in range(iters):
        d = np.array([max(1e-12, float(np.linalg.norm(z - xi))) for xi in x.astype(np.float64)])
        z_new = sum(xi / di for xi, di in zip(x.astype(np.float64), d, strict=True)) / np.sum(1 / d)
        if np.linalg.norm(z_new - z) < 1e-12:
            break
        z = z_new
    return z


def ref_centered_clipping(x: np.ndarray, v: np.ndarray, tau: float, iters: int) -> np.ndarray:
    v = v.astype(np.float64)
    for _ in range(iters):
        acc = np.zeros_like(v)
        for xi in x.astype(np.float64):
            diff = xi - v
            nrm = float(np.linalg.norm(diff))
            acc += diff * min(1.0, tau / nrm) if nrm > 0 else 0
        v = v + acc / len(x)
    return v


def ref_fltrust(x: np.ndarray, g0: np.ndarray) -> np.ndarray:
    g0 = g0.astype(np.float64)
    num, den = np.zeros_like(g0), 0.0
    for xi in x.astype(np.float64):
        ts = max(0.0, float(xi @ g0) / (np.linalg.norm(xi) * np.linalg.norm(g0)))
        num += ts * xi * np.linalg.norm(g0) / np.linalg.norm(xi)
        den += ts
    return num / den


def ref_nnm(x: np.ndarray, f: int) -> np.ndarray:
    n = len(x)
    out = []
    for i in range(n):
        d = [(float(np.sum((x[i].astype(np.float64) - x[j]) ** 2)), j) for j in range(n)]
        nearest = [j for _, j in sorted(d)[: n - f]]
        out.append(x[nearest].astype(np.float64).mean(axis=0))
    return np.array(out)


@pytest.fixture(params=range(4))
def data(request) -> np.ndarray:
    rng = np.random.default_rng(100 + request.param)
    n = [11, 15, 19, 23][request.param]
    x = rng.normal(size=(n, 40)).astype(np.float32)
    x[: n // 5] += rng.normal(3, 2, size=(n // 5, 40)).astype(np.float32)  # some outliers
    return x


def test_krum_and_multikrum_match_reference(data) -> None:
    n = len(data)
    f = (n - 3) // 2
    ref = ref_krum_scores(data, f)
    np.testing.assert_allclose(A.krum_scores(A.gram_sq_distances(data), f), ref, rtol=1e-4)
    res = A.krum(data, f)
    np.testing.assert_array_equal(res.value, data[int(np.argmin(ref))])
    m = n - f
    best = np.argsort(ref, kind="stable")[:m]
    np.testing.assert_allclose(A.multi_krum(data, f, m).value, data[np.sort(best)].astype(np.float64).mean(0),
                               rtol=1e-5, atol=1e-6)


def test_median_and_trimmed_mean_match_reference(data) -> None:
    np.testing.assert_allclose(A.median(data).value, ref_median(data), rtol=1e-6, atol=1e-6)
    for b in (0, 1, len(data) // 4):
        np.testing.assert_allclose(A.trimmed_mean(data, f=b).value, ref_trimmed_mean(data, b), rtol=1e-5,
                                   atol=1e-5)
    np.testing.assert_allclose(A.trimmed_mean(data, fraction=0.2).value,
                               ref_trimmed_mean(data, int(0.2 * len(data))), rtol=1e-5, atol=1e-5)


def test_bulyan_matches_reference(data) -> None:
    n = len(data)
    f = (n - 3) // 4
    np.testing.assert_allclose(A.bulyan(data, f).value, ref_bulyan(data, f), rtol=1e-5, atol=1e-5)


def test_geometric_median_matches_reference(data) -> None:
    res = A.geometric_median(data.astype(np.float64), tol=1e-12, nu=1e-12, max_iter=20000)
    ref = ref_geometric_median(data)
    assert res.diagnostics.extra["converged"]
    np.testing.assert_allclose(res.value, ref, atol=1e-5)
    # first-order optimality: the sum of unit vectors towards the inputs is ~0
    units = [(xi - res.value) / np.linalg.norm(xi - res.value) for xi in data.astype(np.float64)]
    assert np.linalg.norm(np.sum(units, axis=0)) < 1e-3


def test_centered_clipping_matches_reference(data) -> None:
    rng = np.random.default_rng(5)
    v0 = rng.normal(size=data.shape[1]).astype(np.float32)
    for tau, iters in ((0.5, 1), (2.0, 3), (100.0, 2)):
        res, state = A.centered_clipping(data, tau, A.CenteredClippingState(v0), iters=iters)
        np.testing.assert_allclose(res.value, ref_centered_clipping(data, v0, tau, iters), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(state.center, res.value)


def test_fltrust_matches_reference(data) -> None:
    g0 = data[len(data) - 1] + 0.1
    np.testing.assert_allclose(A.fltrust(data, g0).value, ref_fltrust(data, g0), rtol=1e-4, atol=1e-6)


def test_nnm_matches_reference(data) -> None:
    f = (len(data) - 1) // 2
    out = A.nnm(data, f)
    np.testing.assert_allclose(out.x, ref_nnm(data, f), rtol=1e-5, atol=1e-6)


def test_corrupted_groups_distribution_matches_enumeration() -> None:
    """Exact DP against brute-force enumeration of attacker placements."""
    sizes = [3, 3, 2, 2]
    n, f = sum(sizes), 3
    owner = [g for g, s in enumerate(sizes) for _ in range(s)]
    counts = np.zeros(len(sizes) + 1)
    for combo in itertools.combinations(range(n), f):
        counts[len({owner[i] for i in combo})] += 1
    np.testing.assert_allclose(A.corrupted_groups_distribution(sizes, f), counts / counts.sum())


def test_bucketing_averages_random_buckets(data) -> None:
    """Karimireddy, He & Jaggi 2022: a random permutation cut into buckets of s, each averaged."""
    out = A.bucketing(data, 3, 2, np.random.default_rng(4))
    buckets = out.info["buckets"]
    assert sorted(i for b in buckets for i in b) == list(range(len(data)))
    assert all(len(b) == 3 for b in buckets[:-1]) and 1 <= len(buckets[-1]) <= 3
    for row, b in zip(out.x, buckets, strict=True):
        np.testing.assert_allclose(row, data[b].astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
    assert out.f == min(2, len(buckets))
