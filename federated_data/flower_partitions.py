"""Flower Datasets partitioners (``flwr_datasets.partitioner``) over our in-memory labels, checked to be an exact
cover: every sample in exactly one client's data, no client empty – the contract of :mod:`federated_data.partitions`.

```python
from federated_data.flower_partitions import flower_partition
parts = flower_partition(labels, 10, "DirichletPartitioner", {"alpha": 0.5}, seed=0)   # list of index arrays
```

How a partition is made, as ``flwr_datasets.FederatedDataset`` does by default: an in-memory
``datasets.Dataset`` of the labels (column ``label``) and their positions (column ``index``) is shuffled with the
seed (``Dataset.shuffle(seed=seed)``, FederatedDataset's ``shuffle=True``) and handed to the partitioner, built
with ``num_partitions`` = the number of clients, ``partition_by="label"`` and ``seed`` = the seed where it takes
them. Each client's indices are read back from the ``index`` column (ShardPartitioner sorts the data by label, so
its own positions are not ours) and sorted. Nothing is downloaded.

Flower behaviours handled here (flwr-datasets 0.6.1, read in its source and checked on the digits labels):

* ShardPartitioner drops samples by default (``keep_incomplete_shard=False``: the remainder that does not fill a
  shard). With ``num_shards_per_partition`` alone, ``keep_incomplete_shard=True`` does not help: Flower then picks
  num_partitions · num_shards_per_partition of the ceil(n / shard_size) shards at random and drops a *whole* one.
  Unless the user sets ``keep_incomplete_shard = false``, :func:`_shard_kwargs` keeps every sample (logged).
* PathologicalPartitioner's ``class_assignment_mode = "random"`` can give a class to no client: its samples are
  dropped (Flower only warns). The exact-cover check refuses it and names the modes that use every class.
* ExponentialPartitioner/SquarePartitioner fail for more than a few clients (a partition of size 0).

``flwr_datasets`` and Hugging Face ``datasets`` are imported only inside the functions that partition, so the
core imports this module without Flower; using it then raises :class:`FlowerPartitionError` ("install
fl-coordinator[flower]").
"""

from __future__ import annotations

import importlib.util
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger("federated_data")
INSTALL = "pip install 'fl-coordinator[flower]'"
# set by the caller, never in args: the number of clients, the label column and the run's seed
RESERVED = {"num_partitions": "the number of clients", "partition_by": 'the label column ("label")',
            "seed": "the run's seed"}


class FlowerPartitionError(ValueError):
    """A Flower Datasets partition that cannot be made or is not an exact cover; the message says what to change."""


# ── argument checks: each returns what is wrong with a value, or None ────────────────────────────────────────
Check = Callable[[Any], str | None]


def _integer(lo: int) -> Check:
    def check(v: Any) -> str | None:
        return None if isinstance(v, int) and not isinstance(v, bool) and v >= lo else f"must be an integer >= {lo}"
    return check


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _positive(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _alpha(v: Any) -> str | None:
    ok = _positive(v) or (isinstance(v, list | tuple) and len(v) > 0 and all(_positive(x) for x in v))
    return None if ok else "must be a number > 0 or a list of numbers > 0"


def _sizes(v: Any) -> str | None:
    ok = isinstance(v, list | tuple) and len(v) > 0 and all(_integer(1)(x) is None for x in v)
    return None if ok else "must be a list of integers >= 1 (one per client)"


def _one_of(*choices: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {', '.join(repr(c) for c in choices)}"
    return check


@dataclass(frozen=True)
class PartitionerSpec:
    """What the harness lets a user set on one Flower partitioner (checked before Flower is imported)."""

    args: dict[str, Check] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    by_label: bool = False  # takes partition_by
    seeded: bool = False  # takes seed
    sized: bool = False  # its partitions are len(partition_sizes), it takes no num_partitions


_SHUFFLE = {"shuffle": _boolean}  # the order of samples inside a partition (ours are sorted: no effect)
SUPPORTED: dict[str, PartitionerSpec] = {
    "IidPartitioner": PartitionerSpec(),
    "DirichletPartitioner": PartitionerSpec(
        {"alpha": _alpha, "min_partition_size": _integer(0), "self_balancing": _boolean, **_SHUFFLE},
        required=("alpha",), by_label=True, seeded=True),
    "ShardPartitioner": PartitionerSpec(
        {"num_shards_per_partition": _integer(1), "shard_size": _integer(1), "keep_incomplete_shard": _boolean,
         **_SHUFFLE}, by_label=True, seeded=True),
    "PathologicalPartitioner": PartitionerSpec(
        {"num_classes_per_partition": _integer(1),
         "class_assignment_mode": _one_of("random", "deterministic", "first-deterministic"), **_SHUFFLE},
        required=("num_classes_per_partition",), by_label=True, seeded=True),
    "LinearPartitioner": PartitionerSpec(),
    "SquarePartitioner": PartitionerSpec(),
    "ExponentialPartitioner": PartitionerSpec(),
    "InnerDirichletPartitioner": PartitionerSpec(
        {"partition_sizes": _sizes, "alpha": _alpha, **_SHUFFLE}, required=("partition_sizes", "alpha"),
        by_label=True, seeded=True, sized=True),
}
_NATURAL = ("it makes one partition per value of a natural id column (a user or writer id), so the number of "
            "clients is the number of ids; our data sets have no such column")
_VERTICAL = "it splits the features (vertical federated learning), not the samples"
REFUSED: dict[str, str] = {"NaturalIdPartitioner": _NATURAL, "GroupedNaturalIdPartitioner": _NATURAL,
                           "VerticalEvenPartitioner": _VERTICAL, "VerticalSizePartitioner": _VERTICAL}


def supported() -> list[str]:
    """The Flower partitioner names the harness accepts."""
    return list(SUPPORTED)


def flower_installed() -> bool:
    """Whether flwr_datasets and datasets can be imported (without importing them)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("flwr_datasets", "datasets"))
    except (ImportError, ValueError):
        return False


def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, list | tuple) else v


def _thaw(v: Any) -> Any:
    return [_thaw(x) for x in v] if isinstance(v, tuple) else v


# ── the choice ────────────────────────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class FlowerPartition:
    """A validated choice of Flower partitioner and its arguments (``{flwr = NAME, args = {…}}`` in a config).
    Hashable and picklable; lists in ``args`` are kept as tuples and handed to Flower as lists."""

    name: str
    args: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        spec = _spec(self.name)
        given = dict(self.args)
        for key, value in given.items():
            if key in RESERVED:
                raise FlowerPartitionError(f"{self.name}: args.{key} is set by the harness ({RESERVED[key]}); "
                                           f"leave it out")
            if key not in spec.args:
                known = ", ".join(spec.args) or "none"
                raise FlowerPartitionError(f"{self.name} has no argument {key!r} (its arguments: {known})")
            problem = spec.args[key](value)
            if problem:
                raise FlowerPartitionError(f"{self.name}: args.{key} {problem}, got {_thaw(value)!r}")
        missing = [k for k in spec.required if k not in given]
        if missing:
            raise FlowerPartitionError(f"{self.name} needs args.{' and args.'.join(missing)}")
        if self.name == "ShardPartitioner" and not {"num_shards_per_partition", "shard_size"} & set(given):
            raise FlowerPartitionError("ShardPartitioner needs args.num_shards_per_partition or args.shard_size")

    @classmethod
    def make(cls, name: str, args: Mapping[str, Any] | None = None) -> FlowerPartition:
        if not isinstance(name, str):
            raise FlowerPartitionError(f"the Flower partitioner must be a name such as 'DirichletPartitioner', "
                                       f"got {name!r}")
        if args is not None and not isinstance(args, Mapping):
            raise FlowerPartitionError(f"{name}: args must be a table of the partitioner's arguments, got {args!r}")
        return cls(name, tuple(sorted((k, _freeze(v)) for k, v in (args or {}).items())))

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> FlowerPartition:
        """``{flwr = "DirichletPartitioner", args = {alpha = 0.5}}`` (args optional)."""
        unknown = set(table) - {"flwr", "args"}
        if "flwr" not in table or unknown:
            raise FlowerPartitionError(f'expected {{flwr = "<Partitioner>", args = {{…}}}}, got {dict(table)!r}')
        return cls.make(table["flwr"], table.get("args", {}))

    @property
    def kwargs(self) -> dict[str, Any]:
        """The user's arguments, lists as lists."""
        return {k: _thaw(v) for k, v in self.args}

    def to_table(self) -> dict[str, Any]:
        return {"flwr": self.name, "args": self.kwargs}

    def __str__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"

    def check_clients(self, n_clients: int) -> None:
        """The checks that need only the number of clients (a config can make them before any data exists)."""
        kw = self.kwargs
        if SUPPORTED[self.name].sized and len(kw["partition_sizes"]) != n_clients:
            raise FlowerPartitionError(f"{self.name}: args.partition_sizes has {len(kw['partition_sizes'])} "
                                       f"entries, one per client is needed ({n_clients} clients)")
        alpha = kw.get("alpha")
        if self.name == "DirichletPartitioner" and isinstance(alpha, list) and len(alpha) != n_clients:
            raise FlowerPartitionError(f"{self.name}: args.alpha as a list needs one value per client "
                                       f"({n_clients}), got {len(alpha)}")

    def split(self, labels: np.ndarray, n_clients: int, seed: int) -> list[np.ndarray]:
        """One sorted index array per client; an exact cover of ``range(len(labels))`` or an error."""
        labels = _labels(labels, n_clients)
        self.check_clients(n_clients)
        kw = self.kwargs
        if self.name == "InnerDirichletPartitioner" and sum(kw["partition_sizes"]) != len(labels):
            raise FlowerPartitionError(f"{self.name}: args.partition_sizes sum to {sum(kw['partition_sizes'])}, "
                                       f"the data set has {len(labels)} samples: they must sum to exactly that")
        if self.name == "ShardPartitioner":
            kw = _shard_kwargs(kw, len(labels), n_clients)
        where = f"{self} over {len(labels)} samples and {n_clients} clients"
        parts = _run(self.name, kw, labels, n_clients, seed, where)
        check_exact_cover(parts, labels, where, _hint(self, labels, n_clients))
        return parts


def _spec(name: str) -> PartitionerSpec:
    if name in SUPPORTED:
        return SUPPORTED[name]
    if name in REFUSED:
        raise FlowerPartitionError(f"{name} is not supported: {REFUSED[name]} (supported: {', '.join(SUPPORTED)})")
    raise FlowerPartitionError(f"unknown Flower partitioner {name!r} (supported: {', '.join(SUPPORTED)})")


def flower_partition(labels: np.ndarray, n_clients: int, name: str, args: Mapping[str, Any] | None = None, *,
                     seed: int) -> list[np.ndarray]:
    """Partition ``labels`` among ``n_clients`` with ``flwr_datasets.partitioner.<name>(**args)``: one sorted index
    array per client, every index in exactly one (:func:`check_exact_cover`), as :mod:`federated_data.partitions`
    gives. The same seed gives the same partition."""
    return FlowerPartition.make(name, args).split(labels, n_clients, seed)


# ── running Flower ────────────────────────────────────────────────────────────────────────────────────────────
def _labels(labels: np.ndarray, n_clients: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise FlowerPartitionError("labels must be a 1-D array of integer class ids")
    if not 1 <= n_clients <= len(labels):
        raise FlowerPartitionError(f"the number of clients must be in 1..{len(labels)}, got {n_clients}")
    return labels


_SIZED_HINT = {name: f" ({name} gives client i a share ∝ {share} of the samples: with too many clients the "
                     f"first ones get none; use fewer clients)"
               for name, share in (("LinearPartitioner", "i"), ("SquarePartitioner", "i²"),
                                   ("ExponentialPartitioner", "e^i"))}


def _flower() -> tuple[Any, Any]:
    """(``datasets``, ``flwr_datasets.partitioner``), or the error saying how to install them."""
    try:
        import datasets
        from flwr_datasets import partitioner
    except ImportError as exc:
        raise FlowerPartitionError(f"Flower Datasets partitioners need flwr-datasets, which is not installed "
                                   f"({exc}): {INSTALL}") from None
    return datasets, partitioner


def _run(name: str, kw: dict[str, Any], labels: np.ndarray, n_clients: int, seed: int, where: str
         ) -> list[np.ndarray]:
    datasets, module = _flower()
    spec = SUPPORTED[name]
    call = dict(kw)
    if not spec.sized:
        call["num_partitions"] = n_clients
    if spec.by_label:
        call["partition_by"] = "label"
    if spec.seeded:
        call["seed"] = seed
    try:
        partitioner = getattr(module, name)(**call)
    except (TypeError, ValueError) as exc:
        raise FlowerPartitionError(f"{name}: Flower refused the arguments {kw}: {exc}") from None
    data = datasets.Dataset.from_dict({"label": labels, "index": np.arange(len(labels))}).shuffle(seed=seed)
    partitioner.dataset = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parts = [_indices(partitioner.load_partition(i)) for i in range(n_clients)]
        except (TypeError, ValueError) as exc:
            raise FlowerPartitionError(f"{where}: Flower failed: {exc}{_SIZED_HINT.get(name, '')}") from None
    for w in caught:  # the checks below say what matters, with the option to change
        log.debug("flwr_datasets %s: %s", name, w.message)
    return parts


def _indices(partition: Any) -> np.ndarray:
    """A loaded partition's positions in our labels (its ``index`` column), sorted."""
    return np.sort(np.asarray(partition.with_format("numpy")["index"][:], dtype=np.int64))


def _shard_kwargs(kw: dict[str, Any], n: int, n_clients: int) -> dict[str, Any]:
    """ShardPartitioner's arguments that keep every sample, unless the user set ``keep_incomplete_shard = false``
    (then the exact-cover check refuses a partition that drops any). With ``shard_size`` alone:
    ``keep_incomplete_shard = true`` (the last, shorter shard is dealt out too). With ``num_shards_per_partition``
    = k alone and n not a multiple of num_clients · k: Flower would cut num_clients · k shards of floor(n / (num_clients
    · k)) and drop the rest (with keep_incomplete_shard = true, a whole random shard), so ``shard_size`` =
    ceil(n / (num_clients · k)) with ``keep_incomplete_shard = true`` is used instead: the same number of shards
    (or fewer when n is small), the last one shorter, dealt out by Flower."""
    if kw.get("keep_incomplete_shard") is False:
        return kw
    k, size = kw.get("num_shards_per_partition"), kw.get("shard_size")
    if size is not None and k is None:
        if "keep_incomplete_shard" not in kw and n % size:
            log.warning("ShardPartitioner: keep_incomplete_shard = true (the harness's default: the last shard, "
                        "of %d samples, is dealt out, not dropped)", n % size)
        return {**kw, "keep_incomplete_shard": True}
    if k is not None and size is None and n % (n_clients * k):
        size = math.ceil(n / (n_clients * k))
        shards = math.ceil(n / size)
        log.warning("ShardPartitioner: num_shards_per_partition = %d over %d samples and %d clients would drop %d "
                    "samples (Flower cuts %d shards of %d samples); using shard_size = %d with keep_incomplete_shard "
                    "= true instead: %d shards, the last of %d samples, every sample kept%s", k, n, n_clients,
                    n % (n_clients * k), n_clients * k, n // (n_clients * k), size, shards, n - (shards - 1) * size,
                    "" if shards == n_clients * k else f" (some clients get {shards // n_clients} shards, not {k})")
        rest = {key: v for key, v in kw.items() if key != "num_shards_per_partition"}
        return {**rest, "shard_size": size, "keep_incomplete_shard": True}
    return kw  # n a multiple of num_clients · k (nothing to drop), or both given (checked by the exact cover)


# ── the exact-cover check ─────────────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class Coverage:
    """How a partition covers ``range(n)``: the indices in no part, in more than one part, the empty parts."""

    dropped: np.ndarray
    duplicated: np.ndarray
    empty: tuple[int, ...]
    outside: int = 0  # indices not in range(n)

    @property
    def exact(self) -> bool:
        return not (len(self.dropped) or len(self.duplicated) or self.empty or self.outside)


def coverage(parts: list[np.ndarray], n: int) -> Coverage:
    every = np.concatenate([np.asarray(p, dtype=np.int64).ravel() for p in parts]) if parts else np.zeros(0, int)
    inside = every[(every >= 0) & (every < n)]
    counts = np.bincount(inside, minlength=n)
    return Coverage(np.flatnonzero(counts == 0), np.flatnonzero(counts > 1),
                    tuple(i for i, p in enumerate(parts) if len(p) == 0), len(every) - len(inside))


def check_exact_cover(parts: list[np.ndarray], labels: np.ndarray, what: str, hint: str = "") -> None:
    """Raise :class:`FlowerPartitionError` unless every index of ``labels`` is in exactly one part and no part is
    empty; the message counts what was dropped/duplicated (with the classes of the dropped samples)."""
    c = coverage(parts, len(labels))
    if c.exact:
        return
    found = []
    if len(c.dropped):
        cls, cnt = np.unique(np.asarray(labels)[c.dropped], return_counts=True)
        per_class = ", ".join(f"{k}: {v}" for k, v in zip(cls.tolist(), cnt.tolist(), strict=True))
        found.append(f"{len(c.dropped)} sample(s) dropped (in no client's data; per class {{{per_class}}})")
    if len(c.duplicated):
        found.append(f"{len(c.duplicated)} sample(s) duplicated (in several clients' data)")
    if c.empty:
        found.append(f"{len(c.empty)} client(s) empty ({', '.join(map(str, c.empty[:10]))}"
                     f"{', …' if len(c.empty) > 10 else ''})")
    if c.outside:
        found.append(f"{c.outside} index(es) outside the data")
    raise FlowerPartitionError(f"{what}: not an exact cover – {'; '.join(found)}. Every sample must be in "
                               f"exactly one client's data and no client may be empty." + (f" {hint}" if hint else ""))


def _hint(choice: FlowerPartition, labels: np.ndarray, n_clients: int) -> str:
    """Which options fix a failed exact cover, for the partitioners whose failure modes are known."""
    kw = choice.kwargs
    if choice.name == "ShardPartitioner":
        if kw.get("keep_incomplete_shard") is False:
            return ("keep_incomplete_shard = false drops the samples that do not fill a shard: leave it out and the "
                    "harness keeps them (docs/simulation.md, 'Flower Datasets partitioners').")
        if "num_shards_per_partition" in kw and "shard_size" in kw:
            k, s = kw["num_shards_per_partition"], kw["shard_size"]
            return (f"With both num_shards_per_partition and shard_size Flower takes exactly num_clients · "
                    f"num_shards_per_partition = {n_clients * k} shards of {s} samples ({n_clients * k * s} "
                    f"samples): give only one of them.")
    if choice.name == "PathologicalPartitioner":
        k, c = kw["num_classes_per_partition"], len(np.unique(labels))
        fixes = []
        if n_clients >= c:
            fixes.append(f'class_assignment_mode = "first-deterministic" (uses every class when num_clients >= '
                         f'the {c} classes)')
        if n_clients + k - 1 >= c:
            fixes.append(f'class_assignment_mode = "deterministic" (uses every class when num_clients + '
                         f'num_classes_per_partition - 1 >= {c})')
        fixes += ["a larger num_classes_per_partition", "more clients"]
        if kw.get("class_assignment_mode", "random") == "random":
            fixes.append("another seed")
        return ("PathologicalPartitioner gave some class to no client, so its samples would be dropped; fix it "
                "with " + ", or ".join(fixes) + ".")
    if choice.name == "DirichletPartitioner":
        return "Raise args.min_partition_size (Flower redraws until every client has that many samples)."
    return ""
