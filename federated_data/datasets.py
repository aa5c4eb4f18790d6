"""Datasets available offline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def load_digits(test_fraction: float = 0.25, seed: int = 0, images: bool = False) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1,797 images, 10 classes), pixels scaled to [0, 1] float32, with a
    seeded stratified train/test split. ``images=True`` gives (n, 1, 8, 8) for convolutional models."""
    from sklearn.datasets import load_digits as _load

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    data = _load()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_idx.extend(idx[: round(test_fraction * len(idx))].tolist())
    test = np.zeros(len(y), bool)
    test[test_idx] = True
    if images:
        x = x.reshape(-1, 1, 8, 8)
    return Dataset(x[~test], y[~test], x[test], y[test], 10)


def synthetic(alpha: float, beta: float, num_clients: int, *, dim: int = 60, num_classes: int = 10,
              samples_per_client: tuple[int, int] | None = None, seed: int = 0, iid: bool = False
              ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """FedProx's Synthetic(α, β) (Li et al., MLSys'20, "Federated Optimization in Heterogeneous Networks"):
    client k draws u_k ~ N(0, α), B_k ~ N(0, β); model W_k, b_k ~ N(u_k, 1); feature mean v_k with entries
    ~ N(B_k, 1); x ~ N(v_k, Σ) with Σ = diag(j^−1.2); y = argmax softmax(W_k x + b_k). Sample counts follow a
    power law (lognormal(4, 2) + 50 as in the reference code, capped at 5,000 here) unless ``samples_per_client`` bounds are given.
    Returns per-client (x, y) lists.

    ``iid=True`` is the reference code's ``iid = 1`` variant (FedProx's "Synthetic-IID" with α = β = 0): one model
    W, b ~ N(0, 1) shared by every client (α is unused) and feature mean v_k = B_k·1 with B_k ~ N(0, β) – one
    labelling function, clients differ only by a feature shift (none at β = 0). Without it every client has its
    own labelling function (W_k's shared mean u_k shifts every class's score alike, so α does not make clients
    agree), which one global model cannot fit once there are thousands of clients."""
    if alpha < 0 or beta < 0 or num_clients < 1:
        raise ValueError("alpha and beta must be >= 0 and num_clients >= 1")
    rng = np.random.default_rng(seed)
    if samples_per_client is None:
        counts = (rng.lognormal(4, 2, num_clients).astype(int) + 50).clip(50, 5000)
    else:
        lo, hi = samples_per_client
        counts = rng.integers(lo, hi + 1, num_clients)
    if iid:
        return _synthetic_iid(beta, counts, dim, num_classes, rng)
    cov = np.diag(np.arange(1, dim + 1, dtype=np.float64) ** -1.2)
    xs, ys = [], []
    for k in range(num_clients):
        u = rng.normal(0, np.sqrt(alpha))
        b_mean = rng.normal(0, np.sqrt(beta))
        w = rng.normal(u, 1, (num_classes, dim))
        b = rng.normal(u, 1, num_classes)
        v = rng.normal(b_mean, 1, dim)
        x = rng.multivariate_normal(v, cov, int(counts[k]))
        y = np.argmax(x @ w.T + b, axis=1)
        xs.append(x.astype(np.float32))
        ys.append(y.astype(np.int64))
    return xs, ys


def _synthetic_iid(beta: float, counts: np.ndarray, dim: int, num_classes: int, rng: np.random.Generator
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """:func:`synthetic` with ``iid=True``: one W, b for all clients, feature means B_k·1 (Σ diagonal, so x is
    drawn as v_k + √diag(Σ)·N(0, I) – the same distribution as ``multivariate_normal``, much faster for 10^4
    clients)."""
    sd = np.arange(1, dim + 1, dtype=np.float64) ** -0.6  # √(j^−1.2)
    w = rng.normal(0, 1, (num_classes, dim))
    b = rng.normal(0, 1, num_classes)
    xs, ys = [], []
    for n in counts:
        x = rng.normal(0, np.sqrt(beta)) + rng.standard_normal((int(n), dim)) * sd
        xs.append(x.astype(np.float32))
        ys.append(np.argmax(x @ w.T + b, axis=1).astype(np.int64))
    return xs, ys
