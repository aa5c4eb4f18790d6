"""Offline federated datasets and partitions (nothing is downloaded): scikit-learn's bundled digits, the
FedProx Synthetic(α, β) generator, and IID / Dirichlet label-skew / shard partitions (and resampling with replacement for
populations larger than the data)."""

from federated_data.datasets import Dataset, load_digits, synthetic
from federated_data.partitions import dirichlet, iid, resample, shards

__all__ = ["Dataset", "dirichlet", "iid", "load_digits", "resample", "shards", "synthetic"]
