"""Partitions of a labelled dataset among clients. Each returns one index array per client; together they
cover every index exactly once – except :func:`resample`, which draws with replacement (more clients than
examples). Randomness comes from an explicit ``numpy.random.Generator`` (partitioning data is not a secret)."""

from __future__ import annotations

import numpy as np


def _check(labels: np.ndarray, n_clients: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError("labels must be a 1-D array")
    if n_clients < 1 or n_clients > len(labels):
        raise ValueError(f"n_clients must be in 1..{len(labels)}, got {n_clients}")
    return labels


def iid(labels: np.ndarray, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A uniformly random split into near-equal parts."""
    labels = _check(labels, n_clients)
    return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), n_clients)]


def dirichlet(labels: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator,
              min_size: int = 1, max_tries: int = 1000) -> list[np.ndarray]:
    """Label skew (Hsu, Qi & Brown 2019): for every class, its examples are split among the clients in
    proportions drawn from Dirichlet(α·1). Small α → each client sees few classes. Redrawn until every client
    has at least ``min_size`` examples."""
    labels = _check(labels, n_clients)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if min_size * n_clients > len(labels):
        raise ValueError(f"cannot give {n_clients} clients {min_size} examples each from {len(labels)}")
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            props = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"no Dirichlet(α={alpha}) draw gave every client {min_size} examples in {max_tries} tries")


def shards(labels: np.ndarray, n_clients: int, shards_per_client: int, rng: np.random.Generator
           ) -> list[np.ndarray]:
    """McMahan et al. (AISTATS'17) pathological non-IID split: sort by label, cut into
    n_clients·shards_per_client shards, give each client ``shards_per_client`` random shards."""
    labels = _check(labels, n_clients)
    n_shards = n_clients * shards_per_client
    if shards_per_client < 1 or n_shards > len(labels):
        raise ValueError(f"need 1 <= shards_per_client and n_clients·shards <= {len(labels)}")
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, n_shards)
    assignment = rng.permutation(n_shards).reshape(n_clients, shards_per_client)
    return [np.sort(np.concatenate([pieces[s] for s in row])) for row in assignment]


def resample(labels: np.ndarray, n_clients: int, size: int, alpha: float | None, rng: np.random.Generator
             ) -> list[np.ndarray]:
    """``size`` examples per client drawn *with replacement* from the whole set – for populations larger than the
    data (10,000 clients from 1,347 digits): not a partition, so the same example is in many clients' data
    (on average n_clients·size/len(labels) of them). With ``alpha`` each client first draws class proportions
    p_k ~ Dirichlet(α·1) (label skew as in :func:`dirichlet`), then each of its examples a class from p_k and an
    example of that class uniformly; ``alpha=None`` draws uniformly from all examples (IID)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not len(labels):
        raise ValueError("labels must be a non-empty 1-D array")
    if n_clients < 1 or size < 1:
        raise ValueError(f"n_clients and size must be >= 1, got {n_clients}, {size}")
    if alpha is None:
        return [np.sort(rng.integers(0, len(labels), size)) for _ in range(n_clients)]
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in classes]
    props = rng.dirichlet(np.full(len(classes), alpha), n_clients)
    out = []
    for k in range(n_clients):
        per_class = rng.multinomial(size, props[k])
        out.append(np.sort(np.concatenate([rng.choice(members[c], n) for c, n in enumerate(per_class) if n])))
    return out
