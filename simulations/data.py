"""Client datasets for a simulation: scikit-learn digits split by IID / Dirichlet(α) / shards or a Flower Datasets
partitioner (:mod:`federated_data.flower_partitions`), or resampled with replacement for more clients than examples
(``partition = "resample"``), or FedProx's Synthetic(α, β) (one generated client per simulated client, with a
pooled held-out test set; ``synthetic_iid``: the shared-model variant)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from federated_data import dirichlet, iid, load_digits, resample, shards, synthetic
from simulations.config import ConfigError, DataConfig


@dataclass
class FederatedData:
    xs: list[np.ndarray]  # per client, float32 (n_i, features)
    ys: list[np.ndarray]  # per client, int64
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    image_shape: tuple[int, int] | None = None  # digits: (8, 8), used by the backdoor trigger
    # per test example, the client whose held-out data it is (Synthetic: every client has its own distribution);
    # None when the test set is one shared distribution (digits)
    test_owner: np.ndarray | None = None

    @property
    def num_clients(self) -> int:
        return len(self.xs)

    @property
    def input_dim(self) -> int:
        return int(self.x_test.shape[1])


def build_data(cfg: DataConfig, seed: int) -> FederatedData:
    rng = np.random.default_rng([seed, 1])
    if cfg.dataset == "digits":
        ds = load_digits(test_fraction=cfg.test_fraction, seed=seed)
        n = cfg.num_clients
        if not isinstance(cfg.partition, str):
            parts = _flower_parts(cfg, ds.y_train, seed)
        elif cfg.partition == "iid":
            parts = iid(ds.y_train, n, rng)
        elif cfg.partition == "dirichlet":
            min_size = min(cfg.min_size, len(ds.y_train) // n)
            try:
                parts = dirichlet(ds.y_train, n, cfg.alpha, rng, min_size=min_size)
            except ValueError as exc:
                raise ConfigError(
                    f"[data] min_size = {cfg.min_size}: the Dirichlet(α={cfg.alpha:g}) partition of "
                    f"{len(ds.y_train)} training examples over num_clients = {n} failed ({exc}); lower "
                    f"[data] min_size (now {min_size} examples per client), raise [data] alpha or use fewer "
                    f"clients") from None
        elif cfg.partition == "resample":  # more clients than examples: drawn with replacement
            parts = resample(ds.y_train, n, cfg.resample_size, cfg.alpha, rng)
        else:
            parts = shards(ds.y_train, n, cfg.shards_per_client, rng)
        return FederatedData([ds.x_train[p] for p in parts], [ds.y_train[p] for p in parts], ds.x_test, ds.y_test,
                             ds.num_classes, (8, 8))
    if not isinstance(cfg.partition, str):  # DataConfig.validate refuses it first; a config built unchecked
        raise ConfigError(f"[data] partition = {cfg.partition}: dataset 'synthetic' takes no partition (non-IID by "
                          f"construction)")
    xs, ys = synthetic(cfg.synthetic_alpha, cfg.synthetic_beta, cfg.num_clients, dim=cfg.synthetic_dim,
                       samples_per_client=cfg.synthetic_samples, seed=seed, iid=cfg.synthetic_iid)
    # hold out test_fraction of every client's examples; the pooled held-out set is the test set
    tr_x, tr_y, te_x, te_y, owner = [], [], [], [], []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        order = rng.permutation(len(y))
        k = max(1, round(cfg.test_fraction * len(y)))
        k = min(k, len(y) - 1) if len(y) > 1 else 0
        te, tr = order[:k], order[k:]
        tr_x.append(x[tr])
        tr_y.append(y[tr])
        te_x.append(x[te])
        te_y.append(y[te])
        owner.append(np.full(len(te), i, dtype=np.int64))
    return FederatedData(tr_x, tr_y, np.concatenate(te_x), np.concatenate(te_y), 10, None, np.concatenate(owner))


def _flower_parts(cfg: DataConfig, labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """The digits training set split by a Flower Datasets partitioner (seeded by the run's seed), an exact cover
    or a :class:`ConfigError` saying which option to change."""
    from federated_data.flower_partitions import FlowerPartitionError

    try:
        return cfg.partition.split(labels, cfg.num_clients, seed)
    except FlowerPartitionError as exc:
        raise ConfigError(f"[data] partition (digits training set: {len(labels)} examples with test_fraction = "
                          f"{cfg.test_fraction:g}, num_clients = {cfg.num_clients}): {exc}") from None
