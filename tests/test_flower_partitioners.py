"""Flower Datasets partitioners in the simulation harness (federated_data.flower_partitions): every supported
partitioner is an exact cover of the digits labels, ShardPartitioner's remainder is kept by default and refused
when dropping is forced, PathologicalPartitioner's unused classes are refused, clear errors for unknown names / bad
arguments / NaturalIdPartitioner, seeded, the TOML form end to end through the harness against flwr_datasets'
own partitioner, and the module imports without Flower. In-memory data only (nothing is downloaded)."""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import federated_data
from federated_data import load_digits
from federated_data.flower_partitions import (
    SUPPORTED,
    FlowerPartition,
    FlowerPartitionError,
    coverage,
    flower_partition,
)
from simulations.config import ConfigError, SimulationConfig, load_config, parse_override
from simulations.runner import Simulation

pytest.importorskip("flwr_datasets")


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return load_digits().y_train  # 1,347 training labels, 10 classes


def _even(n: int, total: int = 1347) -> list[int]:
    return [len(p) for p in np.array_split(np.arange(total), n)]


COVER_CASES = [
    ("IidPartitioner", {}, (7, 25)),
    ("DirichletPartitioner", {"alpha": 0.5}, (10, 25)),
    ("ShardPartitioner", {"num_shards_per_partition": 2}, (7, 10)),  # 1347 = 7·14·96 + 3 = 10·20·67 + 7
    ("ShardPartitioner", {"shard_size": 50}, (10,)),
    ("PathologicalPartitioner", {"num_classes_per_partition": 2, "class_assignment_mode": "first-deterministic"},
     (10, 25)),
    ("LinearPartitioner", {}, (10, 25)),
    ("SquarePartitioner", {}, (7, 10)),
    ("ExponentialPartitioner", {}, (3, 7)),  # more clients: the first get no sample (refused, below)
    ("InnerDirichletPartitioner", {"alpha": 0.5}, (5, 10)),  # partition_sizes: an even split, added per N
]


@pytest.mark.parametrize(("name", "args", "sizes"), COVER_CASES, ids=[f"{c[0]}-{c[1]}" for c in COVER_CASES])
def test_every_supported_partitioner_is_an_exact_cover_of_the_digits_labels(labels, name, args, sizes) -> None:
    for n in sizes:
        kw = {**args, "partition_sizes": _even(n)} if name == "InnerDirichletPartitioner" else args
        parts = flower_partition(labels, n, name, kw, seed=0)
        assert len(parts) == n and coverage(parts, len(labels)).exact, (name, n)
        assert all(p.dtype == np.int64 and len(p) and np.all(np.diff(p) > 0) for p in parts)
    assert set(SUPPORTED) == {c[0] for c in COVER_CASES}  # every supported partitioner is covered here


def test_the_argument_tables_match_the_installed_flower() -> None:
    """Every argument the harness accepts or sets is a parameter of the installed Flower partitioner."""
    module = importlib.import_module("flwr_datasets.partitioner")
    for name, spec in SUPPORTED.items():
        params = set(inspect.signature(getattr(module, name).__init__).parameters)
        ours = set(spec.args) | {k for k, on in (("partition_by", spec.by_label), ("seed", spec.seeded),
                                                   ("num_partitions", not spec.sized)) if on}
        assert ours <= params, (name, ours - params)


# ── ShardPartitioner's remainder ──────────────────────────────────────────────────────────────────────────────
@pytest.mark.filterwarnings("ignore::FutureWarning")  # pyarrow's, from datasets' sort
def test_flower_shard_partitioner_drops_samples_the_way_we_work_around(labels) -> None:
    """flwr-datasets 0.6.1 as read in its source: with num_shards_per_partition alone it cuts N·k shards of
    floor(n / (N·k)) and drops the rest; keep_incomplete_shard = true then drops a whole random shard instead.
    If Flower changes this, the harness's workaround (_shard_kwargs) and docs/simulation.md need a look."""
    from datasets import Dataset
    from flwr_datasets.partitioner import ShardPartitioner

    def dropped(keep: bool) -> int:
        p = ShardPartitioner(num_partitions=10, partition_by="label", num_shards_per_partition=2,
                             keep_incomplete_shard=keep, seed=0)
        p.dataset = Dataset.from_dict({"label": labels, "index": np.arange(len(labels))})
        return len(labels) - sum(len(p.load_partition(i)) for i in range(10))

    assert dropped(False) == 1347 % 20 == 7
    assert dropped(True) == 1347 // 20 == 67  # a whole shard


def test_shard_remainder_is_kept_by_default_and_refused_when_dropping_is_forced(labels, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="federated_data"):
        parts = flower_partition(labels, 10, "ShardPartitioner", {"num_shards_per_partition": 2}, seed=0)
    assert coverage(parts, len(labels)).exact
    assert "would drop 7 samples" in caplog.text and "shard_size = 68" in caplog.text
    with pytest.raises(FlowerPartitionError) as exc:
        flower_partition(labels, 10, "ShardPartitioner", {"num_shards_per_partition": 2,
                                                          "keep_incomplete_shard": False}, seed=0)
    assert "not an exact cover – 7 sample(s) dropped" in str(exc.value)
    assert "keep_incomplete_shard = false drops" in str(exc.value)
    # both sizes given: Flower takes exactly N·k shards of shard_size
    with pytest.raises(FlowerPartitionError, match=r"147 sample\(s\) dropped.*give only one of them"):
        flower_partition(labels, 10, "ShardPartitioner", {"num_shards_per_partition": 2, "shard_size": 60}, seed=0)
    # nothing to drop (1347 = 3 · 449: 3 shards of 449): keep_incomplete_shard = false is fine
    assert coverage(flower_partition(labels, 3, "ShardPartitioner", {"num_shards_per_partition": 1,
                                                                    "keep_incomplete_shard": False}, seed=0),
                    len(labels)).exact


def test_pathological_partitioner_leaving_a_class_unused_is_refused(labels) -> None:
    args = {"num_classes_per_partition": 2}  # "random": 10 clients draw 2 of 10 classes each
    with pytest.raises(FlowerPartitionError) as exc:
        flower_partition(labels, 10, "PathologicalPartitioner", args, seed=0)
    msg = str(exc.value)
    unused = int(msg.split("per class {")[1].split(":")[0])
    assert f"{np.sum(labels == unused)} sample(s) dropped" in msg
    assert 'class_assignment_mode = "first-deterministic"' in msg and "gave some class to no client" in msg
    # the same seed with a mode that uses every class is an exact cover
    fixed = flower_partition(labels, 10, "PathologicalPartitioner",
                             {**args, "class_assignment_mode": "first-deterministic"}, seed=0)
    assert coverage(fixed, len(labels)).exact


# ── clear errors ──────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("name", "args", "n", "message"), [
    ("FooPartitioner", {}, 10, "unknown Flower partitioner 'FooPartitioner' (supported: IidPartitioner, "
                               "DirichletPartitioner"),
    ("NaturalIdPartitioner", {}, 10, "NaturalIdPartitioner is not supported: it makes one partition per value of "
                                     "a natural id column"),
    ("DirichletPartitioner", {"alpha": 0.5, "beta": 1}, 10, "DirichletPartitioner has no argument 'beta' (its "
                                                            "arguments: alpha, min_partition_size"),
    ("DirichletPartitioner", {"alpha": -1}, 10, "args.alpha must be a number > 0"),
    ("DirichletPartitioner", {}, 10, "DirichletPartitioner needs args.alpha"),
    ("DirichletPartitioner", {"alpha": 0.5, "seed": 1}, 10, "args.seed is set by the harness"),
    ("DirichletPartitioner", {"alpha": [1.0, 2.0]}, 10, "args.alpha as a list needs one value per client"),
    ("ShardPartitioner", {"shard_size": 0}, 10, "args.shard_size must be an integer >= 1, got 0"),
    ("ShardPartitioner", {}, 10, "needs args.num_shards_per_partition or args.shard_size"),
    ("PathologicalPartitioner", {"num_classes_per_partition": 2, "class_assignment_mode": "rr"}, 10,
     "args.class_assignment_mode must be one of 'random'"),
    ("PathologicalPartitioner", {"num_classes_per_partition": 11}, 10, "Flower failed: The specified "
                                                                       "`num_classes_per_partition`=11"),
    ("InnerDirichletPartitioner", {"alpha": 1, "partition_sizes": [100] * 10}, 10,
     "args.partition_sizes sum to 1000, the data set has 1347 samples"),
    ("InnerDirichletPartitioner", {"alpha": 1, "partition_sizes": [100] * 9}, 10, "has 9 entries, one per client"),
    ("ExponentialPartitioner", {}, 10, "use fewer clients"),
    ("DirichletPartitioner", {"alpha": 0.05, "min_partition_size": 0}, 100, "client(s) empty"),
])
def test_clear_errors(labels, name, args, n, message) -> None:
    with pytest.raises(FlowerPartitionError) as exc:
        flower_partition(labels, n, name, args, seed=0)
    assert message in str(exc.value)


def test_same_seed_same_partition(labels) -> None:
    def run(seed: int) -> list[np.ndarray]:
        return flower_partition(labels, 10, "DirichletPartitioner", {"alpha": 0.5}, seed=seed)

    a, b, c = run(3), run(3), run(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    iid = [flower_partition(labels, 5, "IidPartitioner", seed=s) for s in (3, 3, 4)]  # seeded by the shuffle
    assert all(np.array_equal(x, y) for x, y in zip(iid[0], iid[1], strict=True))
    assert not np.array_equal(iid[0][0], iid[2][0])


# ── the harness ───────────────────────────────────────────────────────────────────────────────────────────────
DIRICHLET = {"flwr": "DirichletPartitioner", "args": {"alpha": 0.5}}


def tiny(partition: object = DIRICHLET, **data: object) -> dict:
    """6 digits clients, groups of 1, FedAvg, 2 rounds in the direct mode (as test_simulation_harness_fixes)."""
    return {"name": "flwr", "rounds": 2, "seed": 3, "mode": "direct", "plots": False,
            "data": {"num_clients": 6, "partition": partition, **data}, "model": {"hidden": [8]},
            "federation": {"clients_per_round": 6, "group_size": 1, "aggregator": "mean"},
            "attack": {"name": "none", "num_byzantine": 0}}


def test_a_dirichlet_config_runs_and_its_clients_hold_what_flower_gives(tmp_path: Path) -> None:
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner

    toml = tmp_path / "exp.toml"
    toml.write_text('name = "flwr"\nrounds = 2\nseed = 3\nmode = "direct"\nplots = false\n'
                    '[data]\nnum_clients = 6\npartition = {flwr = "DirichletPartitioner", args = {alpha = 0.5}}\n'
                    '[model]\nhidden = [8]\n'
                    '[federation]\nclients_per_round = 6\ngroup_size = 1\naggregator = "mean"\n')
    cfg = load_config(toml)
    assert cfg == SimulationConfig.from_dict(tiny())
    sim = Simulation(cfg)
    ours = np.array([np.bincount(y, minlength=10) for y in sim.data.ys])
    # the reference: flwr_datasets' partitioner called directly, on the data FederatedDataset would hand it (the
    # training labels shuffled with the seed, FederatedDataset's default shuffle=True)
    y = load_digits(test_fraction=cfg.data.test_fraction, seed=cfg.seed).y_train
    ref = DirichletPartitioner(num_partitions=6, partition_by="label", alpha=0.5, seed=cfg.seed)
    ref.dataset = Dataset.from_dict({"label": y}).shuffle(seed=cfg.seed)
    theirs = np.array([np.bincount(ref.load_partition(i)["label"], minlength=10) for i in range(6)])
    np.testing.assert_array_equal(ours, theirs)
    r = sim.run()
    assert len(r.history) == 2 and r.stopped_reason == "all 2 rounds done"
    # the config a run saves (runner.write_outputs: config.to_toml()) reruns with the same partition
    saved = tomllib.loads(r.config.to_toml())
    assert saved["data"]["partition"] == DIRICHLET
    assert SimulationConfig.from_dict(saved).data.partition == cfg.data.partition


def test_the_config_form_round_trips_and_is_checked_at_load() -> None:
    cfg = SimulationConfig.from_dict(tiny())
    assert cfg.data.partition == FlowerPartition("DirichletPartitioner", (("alpha", 0.5),))
    assert SimulationConfig.from_dict(tomllib.loads(cfg.to_toml())) == cfg
    key, value = parse_override('data.partition={flwr = "IidPartitioner"}')
    assert cfg.replace(**{key: value}).data.partition == FlowerPartition("IidPartitioner")
    assert cfg.replace(**{"data.partition": "iid"}).data.partition == "iid"  # the string forms unchanged
    for partition, message in [
        ({"flwr": "NaturalIdPartitioner"}, "[data] partition: NaturalIdPartitioner is not supported"),
        ({"flwr": "DirichletPartitioner", "args": {"alpha": 0.5, "x": 1}}, "has no argument 'x'"),
        ({"flwr": "InnerDirichletPartitioner", "args": {"alpha": 1, "partition_sizes": [1, 2]}}, "one per client"),
        ({"partitioner": "IidPartitioner"}, 'expected {flwr = "<Partitioner>", args = {…}}'),
        ("flwr", "partition must be one of ('iid', 'dirichlet', 'shards') or a Flower Datasets partitioner"),
    ]:
        with pytest.raises(ConfigError) as exc:
            SimulationConfig.from_dict(tiny(partition))
        assert message in str(exc.value)
    with pytest.raises(ConfigError, match="dataset 'synthetic' takes no partition"):
        SimulationConfig.from_dict(tiny(dataset="synthetic"))


def test_a_partition_that_is_not_an_exact_cover_stops_the_harness_before_it_runs() -> None:
    cfg = SimulationConfig.from_dict(tiny({"flwr": "ShardPartitioner",
                                           "args": {"num_shards_per_partition": 2, "keep_incomplete_shard": False}}))
    with pytest.raises(ConfigError) as exc:
        Simulation(cfg)
    assert str(exc.value).startswith("[data] partition (digits training set: 1347 examples")
    assert "3 sample(s) dropped" in str(exc.value)  # 1347 = 6·2·112 + 3


# ── without Flower ────────────────────────────────────────────────────────────────────────────────────────────
def test_the_module_imports_without_flower_and_errors_only_when_used(monkeypatch, labels) -> None:
    monkeypatch.setitem(sys.modules, "flwr_datasets", None)  # import flwr_datasets → ImportError
    monkeypatch.setitem(sys.modules, "flwr_datasets.partitioner", None)
    monkeypatch.delitem(sys.modules, "federated_data.flower_partitions")
    monkeypatch.setattr(federated_data, "flower_partitions", None, raising=False)  # restored after the test
    fresh = importlib.import_module("federated_data.flower_partitions")
    assert not fresh.flower_installed()
    choice = fresh.FlowerPartition.make("DirichletPartitioner", {"alpha": 0.5})  # checks need no Flower
    with pytest.raises(fresh.FlowerPartitionError, match=r"install 'fl-coordinator\[flower\]'"):
        choice.split(labels, 10, seed=0)
    with pytest.raises(ConfigError, match=r"flwr-datasets, which is not installed: pip install"):
        SimulationConfig.from_dict(tiny())
