"""Datasets and partitions."""

from __future__ import annotations

import numpy as np
import pytest

from federated_data import dirichlet, iid, load_digits, shards, synthetic


def _covers(parts: list[np.ndarray], n: int) -> bool:
    allidx = np.concatenate(parts)
    return len(allidx) == n and len(np.unique(allidx)) == n


def test_digits_split_is_stratified_and_deterministic() -> None:
    a, b = load_digits(seed=1), load_digits(seed=1)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert len(a.x_train) + len(a.x_test) == 1797 and a.x_train.dtype == np.float32
    assert a.x_train.max() <= 1.0 and a.x_train.min() >= 0.0
    assert set(np.unique(a.y_test)) == set(range(10))
    assert load_digits(images=True).x_train.shape[1:] == (1, 8, 8)


def test_partitions_cover_every_index_once_and_are_deterministic() -> None:
    y = load_digits().y_train
    for make in (lambda r: iid(y, 15, r), lambda r: dirichlet(y, 15, 0.5, r), lambda r: shards(y, 15, 2, r)):
        p1, p2 = make(np.random.default_rng(5)), make(np.random.default_rng(5))
        assert _covers(p1, len(y)) and len(p1) == 15
        assert all(np.array_equal(a, b) for a, b in zip(p1, p2, strict=True))


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    y = load_digits().y_train

    def mean_classes(alpha: float) -> float:
        parts = dirichlet(y, 15, alpha, np.random.default_rng(0), min_size=5)
        return float(np.mean([len(np.unique(y[p])) for p in parts]))

    assert mean_classes(0.05) < mean_classes(1.0) < mean_classes(100.0) <= 10
    # a shard spans at most two labels (cuts need not fall on class boundaries): ≤ 4 labels per client
    assert all(len(np.unique(y[p])) <= 4 for p in shards(y, 15, 2, np.random.default_rng(0)))
    with pytest.raises(ValueError):
        dirichlet(y, 15, 0.0, np.random.default_rng(0))


def test_synthetic_shapes_and_heterogeneity() -> None:
    xs, ys = synthetic(1.0, 1.0, 10, samples_per_client=(50, 80), seed=3)
    assert len(xs) == 10 and all(x.shape[1] == 60 for x in xs)
    assert all(50 <= len(y) <= 80 and y.max() < 10 for y in ys)
    xs0, _ = synthetic(0.0, 0.0, 10, samples_per_client=(200, 200), seed=3)
    spread_hi = np.std([x.mean() for x in xs])
    spread_lo = np.std([x.mean() for x in xs0])
    assert spread_hi > spread_lo  # β controls how far clients' feature means drift apart


def test_synthetic_follows_the_definition() -> None:
    """x ~ N(v_k, diag(j^−1.2)) per client, and labels are the argmax of a linear model: a (nearly)
    unregularized linear classifier separates a client's data almost perfectly."""
    from sklearn.linear_model import LogisticRegression

    xs, ys = synthetic(0.5, 0.5, 3, samples_per_client=(4000, 4000), seed=1)
    x = xs[0].astype(np.float64)
    var = x.var(axis=0)
    expected = np.arange(1, 61) ** -1.2
    np.testing.assert_allclose(var, expected, rtol=0.15)
    off = np.cov(x.T) - np.diag(np.diag(np.cov(x.T)))
    assert np.abs(off).max() < 0.05
    clf = LogisticRegression(C=1e4, max_iter=3000).fit(x, ys[0])
    assert clf.score(x, ys[0]) > 0.97
    # default sample counts: the reference's power law lognormal(4, 2) + 50 (capped)
    counts = [len(y) for y in synthetic(0.0, 0.0, 30, seed=2)[1]]
    assert min(counts) >= 50 and max(counts) <= 5000 and np.median(counts) < 200 < max(counts)
    with pytest.raises(ValueError):
        synthetic(-1.0, 0.0, 3)
