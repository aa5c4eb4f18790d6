"""Simulation configuration: a TOML file (or dict) validated as a whole, with errors that name the key.

```toml
name = "digits-cc"
seed = 0
rounds = 30
backend = "local"            # "local" (batched torch in this process) or "ray"
mode = "engine"              # "engine": the real coordinator engine + client sessions (full protocol)
                             # "direct": the same production math (client pipeline, group sums, robust
                             #           aggregation, optimizer, trust) without messages or crypto
[data]
dataset = "digits"           # "digits" | "synthetic"
partition = "dirichlet"      # "iid" | "dirichlet" | "shards" | "resample" (digits; synthetic is non-IID by
                             # construction unless synthetic_iid = true)
                             # or a Flower Datasets partitioner (docs/simulation.md):
                             # partition = {flwr = "DirichletPartitioner", args = {alpha = 0.5}}
alpha = 0.5                  # Dirichlet α
num_clients = 25             # population N
[model]
hidden = [32]                # an MLP input-hidden…-classes
[federation]                 # everything of coordinator.federation.config.FederationConfig
clients_per_round = 25
group_size = 1
aggregator = "clip(median)|bucket(2)|cc(tau=1)|momentum(beta=0.9)"
byzantine = 5                # f the defence is told
max_grouping_risk = 0.01     # the grouping planner's bound (docs/simulation.md, "The grouping planner"):
accept_grouping_risk = false # a run above it is refused unless this is true
[attack]
name = "alie"                # or "alie(z=1.5)"
num_byzantine = 5
```
"""

from __future__ import annotations

import copy
import logging
import math
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from federated_data.flower_partitions import FlowerPartition

DATASETS = ("digits", "synthetic")
PARTITIONS = ("iid", "dirichlet", "shards")  # partitions of the training set (every example exactly once)
RESAMPLE = "resample"  # not a partition: clients draw with replacement (more clients than examples)
BACKENDS = ("local", "ray")
log = logging.getLogger("simulations")
MODES = ("engine", "direct")


class ConfigError(ValueError):
    """A simulation config is invalid; the message names the offending key."""


def parse_override(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (``--set``): the dotted key and the value parsed as TOML (a bare string if it is not TOML)."""
    import tomllib

    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
    try:
        return key.strip(), tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value.strip()


def apply_override(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data[a][b]…[key] = value`` for the dotted ``key``, creating tables on the way."""
    parts = key.split(".")
    target = data
    for p in parts[:-1]:
        target = target.setdefault(p, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {key}: {p} is not a table")
    target[parts[-1]] = value


def _check_keys(section: str, data: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        where = f"[{section}]" if section else "top level"
        raise ConfigError(f"unknown key(s) {sorted(unknown)} at {where} (allowed: {', '.join(sorted(allowed))})")


def _typed(section: str, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"[{section}] {key} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise ConfigError(f"[{section}] {key} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    return value


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    # one of PARTITIONS, or a Flower Datasets partitioner ({flwr = NAME, args = {…}} in TOML; see parse_partition)
    partition: str | FlowerPartition = "dirichlet"
    alpha: float = 0.5  # Dirichlet concentration
    shards_per_client: int = 2
    num_clients: int = 25
    min_size: int = 10  # Dirichlet: every client gets at least this many training examples
    test_fraction: float = 0.25
    # Synthetic(α, β) (FedProx): client heterogeneity of models (α) and of features (β)
    synthetic_alpha: float = 1.0
    synthetic_beta: float = 1.0
    synthetic_dim: int = 60
    synthetic_samples: tuple[int, int] = (50, 200)
    # FedProx's Synthetic-IID variant: one labelling function for every client, feature shift B_k ~ N(0, β) only
    # (federated_data.synthetic(iid=True); the non-IID Synthetic gives every client its own labelling function)
    synthetic_iid: bool = False
    # partition = "resample" (digits): each client draws this many training examples with replacement, class
    # proportions ~ Dirichlet(alpha) – populations larger than the data set (federated_data.resample)
    resample_size: int = 20

    def __post_init__(self) -> None:  # a table given in code (DataConfig(partition={"flwr": …})) is parsed too
        object.__setattr__(self, "partition", parse_partition(self.partition))

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"[data] dataset must be one of {DATASETS}, got {self.dataset!r}")
        if isinstance(self.partition, str) and self.partition not in (*PARTITIONS, RESAMPLE):
            raise ConfigError(f"[data] partition must be one of {PARTITIONS} or a Flower Datasets partitioner "
                              f"{{flwr = \"<Partitioner>\", args = {{…}}}}, or {RESAMPLE!r} (draws with "
                              f"replacement), got {self.partition!r}")
        if self.num_clients < 1:
            raise ConfigError(f"[data] num_clients must be >= 1, got {self.num_clients}")
        if not isinstance(self.partition, str):
            self._validate_flower()
        if not self.alpha > 0:
            raise ConfigError(f"[data] alpha must be > 0, got {self.alpha}")
        if self.shards_per_client < 1 or self.min_size < 1:
            raise ConfigError("[data] shards_per_client and min_size must be >= 1")
        if self.resample_size < 1:
            raise ConfigError(f"[data] resample_size must be >= 1, got {self.resample_size}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"[data] test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.synthetic_alpha < 0 or self.synthetic_beta < 0 or self.synthetic_dim < 1:
            raise ConfigError("[data] synthetic_alpha/beta must be >= 0 and synthetic_dim >= 1")
        lo, hi = self.synthetic_samples
        if not 1 <= lo <= hi:
            raise ConfigError(f"[data] synthetic_samples must be [lo, hi] with 1 <= lo <= hi, got {[lo, hi]}")

    def _validate_flower(self) -> None:
        """A Flower partitioner: the dataset takes a partition, Flower Datasets is installed, and the arguments
        that depend on the number of clients fit (name and arguments were checked by :func:`parse_partition`)."""
        from federated_data.flower_partitions import INSTALL, FlowerPartitionError, flower_installed

        if self.dataset == "synthetic":
            raise ConfigError(f"[data] partition = {self.partition}: dataset 'synthetic' takes no partition "
                              f"(FedProx Synthetic(α, β) generates each client's data, non-IID by construction; "
                              f"synthetic_alpha and synthetic_beta set its heterogeneity)")
        if not flower_installed():
            raise ConfigError(f"[data] partition = {self.partition}: Flower Datasets partitioners need "
                              f"flwr-datasets, which is not installed: {INSTALL}")
        try:
            self.partition.check_clients(self.num_clients)
        except FlowerPartitionError as exc:
            raise ConfigError(f"[data] partition: {exc}") from None


@dataclass(frozen=True)
class AttackConfig:
    name: str = "none"  # an attack spec: "ipm" or "ipm(eps=10)"
    num_byzantine: int = 0  # Byzantine clients in the population (chosen by the seed)
    omniscient: bool | None = None  # None: as the attack's paper assumes
    respect_clip: bool = False  # True: attackers run the client pipeline's L2 clipping like honest clients
    # a clean reference (num_byzantine = 0) of runs with this many Byzantine clients: the clients they would be
    # (same seed, same draw) are honest here, and only left out of ``honest_accuracy`` (per-client test data)
    reference_byzantine: int = 0


# ── [federation]: derived from coordinator.federation.config.FederationConfig, so the two cannot drift ───────────────────
# Every FederationConfig field is a [federation] key except the ones the harness sets itself (the model from
# [model], rounds and seed from the top level, ``extra``). The harness keeps its own defaults for a few keys
# (10 clients per round in groups of 1 with a loose clip ceiling, so a config states what secure aggregation it
# studies); the defence – the aggregator and adaptive clipping – is the product's own default
# (coordinator.federation.config.DEFAULT_AGGREGATOR), shared with serve and FederationConfig.
FEDERATION_EXCLUDED = ("model", "rounds", "seed", "extra")
HARNESS_DEFAULTS: dict[str, Any] = {"clients_per_round": 10, "group_size": 1, "l2_clip": 10.0}
# harness-only keys (not FederationConfig fields): name, type, default, meaning
HARNESS_ONLY: tuple[tuple[str, type, Any, str], ...] = (
    ("bans", bool, True, "False: the trust system never bans (ban_threshold = 0), isolating the aggregation rule"),
    ("client_momentum", float, 0.0, "worker momentum β (Karimireddy, He & Jaggi ICLR'22): each honest client "
                                    "sends m ← β·m + (1 − β)·Δ instead of its round delta Δ; 0 = off"),
    ("max_grouping_risk", float, 0.01, "the grouping planner's bound on the per-round probability that more groups "
                                       "are corrupted than the rule tolerates (aggregation/planner.py); a run "
                                       "above it is refused, as `serve --max-grouping-risk` does"),
    ("accept_grouping_risk", bool, False, "True: run a configuration above max_grouping_risk anyway (a logged "
                                          "warning; the risk is recorded in metrics.json), as `serve "
                                          "--accept-grouping-risk`"),
)
# Why the harness does not offer a rule that needs a server root update (checked before anything runs).
NO_ROOT_UPDATE = ("the engine's round completion passes no server root update to the rule (FLTrust and its like "
                  "need the server to train on a clean root data set each round, Cao et al. NDSS'21), so the "
                  "harness does not offer it")


def _federation_fields() -> list[tuple[str, Any, Any]]:
    from coordinator.federation.config import FederationConfig

    out: list[tuple[str, Any, Any]] = []
    for f in fields(FederationConfig):
        if f.name in FEDERATION_EXCLUDED or not f.init:
            continue
        if f.name in HARNESS_DEFAULTS:
            out.append((f.name, f.type, field(default=HARNESS_DEFAULTS[f.name])))
        elif f.default is not MISSING:
            out.append((f.name, f.type, field(default=f.default)))
        elif f.default_factory is not MISSING:  # pragma: no cover - no such field today
            out.append((f.name, f.type, field(default_factory=f.default_factory)))
        else:  # pragma: no cover - a required FederationConfig field the harness does not know how to set
            raise TypeError(f"FederationConfig.{f.name} has no default: teach simulations/config.py to set it")
    out += [(name, kind, field(default=default)) for name, kind, default, _ in HARNESS_ONLY]
    return out


FederationSection = make_dataclass("FederationSection", _federation_fields(), frozen=True)
FederationSection.__module__ = __name__  # picklable as simulations.config.FederationSection
FederationSection.__doc__ = ("The [federation] table: every coordinator.federation.config.FederationConfig option (except "
                             f"{', '.join(FEDERATION_EXCLUDED)}) plus the harness-only "
                             f"{', '.join(n for n, *_ in HARNESS_ONLY)}.")


@dataclass(frozen=True)
class SimulationConfig:
    name: str = "simulation"
    seed: int = 0
    rounds: int = 10
    backend: str = "local"
    mode: str = "engine"
    ray_workers: int = 2
    ray_address: str = ""  # "" starts a local Ray instance
    torch_threads: int = 0  # 0: leave torch's default (a grid sets 1: see grid.py; results can depend on it)
    out_dir: str = ""
    plots: bool = True
    # a failed round (too few groups left for the rule, every group failed) is retried with the same round
    # number, as the engine does; this many failed attempts of one round in a row stop the run
    max_round_retries: int = 50
    plugins: tuple[str, ...] = ()  # modules imported before the config is checked (extra attacks/defences)
    hidden: tuple[int, ...] = (32,)
    data: DataConfig = field(default_factory=DataConfig)
    federation: FederationSection = field(default_factory=FederationSection)
    attack: AttackConfig = field(default_factory=AttackConfig)

    # ── derived ─────────────────────────────────────────────────────────────────────────────────────
    def model_spec(self, input_dim: int, num_classes: int) -> Any:
        from flcore.modelspec import mlp

        return mlp([input_dim, *self.hidden, num_classes])

    def federation_config(self, spec: Any) -> Any:
        """The coordinator's FederationConfig: every [federation] key except the harness-only ones is passed
        through unchanged; ``bans = false`` sets ``ban_threshold = 0``."""
        from coordinator.federation.config import FederationConfig

        f = self.federation
        kw = {name: getattr(f, name) for name in federation_keys()}
        if not f.bans:
            kw["ban_threshold"] = 0.0
        return FederationConfig(model=spec, rounds=self.rounds, seed=self.seed, **kw)

    def validate(self) -> SimulationConfig:
        from simulations.attacks import make_attack

        load_plugins(self.plugins)
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if self.max_round_retries < 0:
            raise ConfigError(f"max_round_retries must be >= 0, got {self.max_round_retries}")
        if not 0 <= self.federation.max_grouping_risk < 1:
            raise ConfigError(f"[federation] max_grouping_risk must be in [0, 1), got "
                              f"{self.federation.max_grouping_risk}")
        if not 0 <= self.federation.client_momentum < 1:
            raise ConfigError(f"client_momentum must be in [0, 1), got {self.federation.client_momentum}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.ray_workers < 1:
            raise ConfigError(f"ray_workers must be >= 1, got {self.ray_workers}")
        if not self.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ConfigError(f"[model] hidden must be a non-empty list of positive integers, got {list(self.hidden)}")
        self.data.validate()
        n, m = self.data.num_clients, self.federation.clients_per_round
        if not 1 <= m <= n:
            raise ConfigError(f"[federation] clients_per_round must be in 1..num_clients={n}, got {m}")
        a = self.attack
        if not 0 <= a.num_byzantine <= n:
            raise ConfigError(f"[attack] num_byzantine must be in 0..num_clients={n}, got {a.num_byzantine}")
        if not 0 <= a.reference_byzantine <= n:
            raise ConfigError(f"[attack] reference_byzantine must be in 0..num_clients={n}, "
                              f"got {a.reference_byzantine}")
        try:
            attack = make_attack(a.name)
        except ValueError as exc:
            raise ConfigError(f"[attack] name: {exc}") from None
        if attack.name != "none" and a.num_byzantine == 0:
            raise ConfigError(f"[attack] attack {a.name!r} needs num_byzantine >= 1")
        _check_rules_offered(self.federation.aggregator)
        try:
            self.federation_config(self.model_spec(64, 10)).trust_params()
        except ValueError as exc:
            raise ConfigError(f"[federation] trust options (trust_decay, trust_outlier_threshold, trust_floor, "
                              f"ban_threshold, trust_min_evidence, selection): {exc}") from None
        try:
            self.federation_config(self.model_spec(64, 10)).validate()
        except ValueError as exc:
            msg = str(exc)
            if "unknown pipeline step" in msg:
                msg += f"; the harness offers the aggregators {', '.join(offered_rules())}"
            raise ConfigError(f"[federation] {msg}") from None
        return self

    # ── the grouping planner ─────────────────────────────────────────────────────────────────────────
    def grouping_report(self) -> Any:
        """The grouping planner's verdict (:func:`aggregation.planner.check`, as ``fl-coordinator serve`` uses it)
        on this federation. The simulation knows its population and its attackers exactly, so the planner is
        called with ``population = num_clients`` and ``byzantine_fraction = num_byzantine / num_clients``: the
        selection is hypergeometric with exactly ``num_byzantine`` Byzantine clients among ``num_clients``; the
        rule is evaluated as the engine runs it (f_groups = min(byzantine, G), every round size from
        ``min_clients_per_round`` to ``clients_per_round``); the bound is ``max_grouping_risk``."""
        from aggregation import planner

        n = self.data.num_clients
        try:
            return planner.check(self.federation_config(self.model_spec(64, 10)), self.attack.num_byzantine / n,
                                 self.federation.max_grouping_risk, population=n)
        except ValueError as exc:
            raise ConfigError(f"[federation] grouping planner: {exc}") from None

    def check_grouping_risk(self) -> Any:
        """:meth:`grouping_report`, refused with a :class:`ConfigError` carrying the planner's message when the
        per-round risk exceeds ``max_grouping_risk`` unless ``accept_grouping_risk`` (then a logged warning).
        Returns the report."""
        report = self.grouping_report()
        if report.ok:
            return report
        if self.federation.accept_grouping_risk:
            log.warning("%s: running with the grouping risk accepted ([federation] accept_grouping_risk = true): "
                        "%s", self.name, report.message())
            return report
        raise ConfigError(f"[federation] {report.message()} To run it anyway set [federation] accept_grouping_risk "
                          f"= true; [federation] max_grouping_risk sets the bound (docs/simulation.md, 'The grouping "
                          f"planner').")

    # ── (de)serialization ───────────────────────────────────────────────────────────────────────────
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = {"hidden": list(d.pop("hidden"))}
        d["plugins"] = list(d["plugins"])
        d["data"]["synthetic_samples"] = list(d["data"]["synthetic_samples"])
        if not isinstance(self.data.partition, str):
            d["data"]["partition"] = self.data.partition.to_table()
        if d["federation"]["epsilon"] == math.inf:
            d["federation"]["epsilon"] = "inf"
        if d["attack"]["omniscient"] is None:
            del d["attack"]["omniscient"]
        return d

    def to_toml(self) -> str:
        d = self.to_dict()
        lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
        for sec, body in d.items():
            if isinstance(body, dict):
                lines.append(f"\n[{sec}]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in body.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulationConfig:
        data = copy.deepcopy(data)
        if not isinstance(data, dict):
            raise ConfigError("a simulation config must be a table")
        data.pop("grid", None)
        top = {f.name for f in fields(cls)} - {"hidden", "data", "federation", "attack"}
        _check_keys("", data, top | {"model", "data", "federation", "attack"})
        kw: dict[str, Any] = {}
        types = {"name": str, "seed": int, "rounds": int, "backend": str, "mode": str, "ray_workers": int,
                 "ray_address": str, "torch_threads": int, "out_dir": str, "plots": bool, "max_round_retries": int}
        for k in top:
            if k == "plugins" and k in data:
                plugins = data[k]
                if not (isinstance(plugins, list) and all(isinstance(x, str) and x for x in plugins)):
                    raise ConfigError(f"plugins must be a list of module names, got {plugins!r}")
                kw[k] = tuple(dict.fromkeys(plugins))
            elif k in data:
                kw[k] = _typed("top level", k, data[k], types[k])
        model = data.get("model", {})
        _check_keys("model", model, {"hidden"})
        if "hidden" in model:
            hid = model["hidden"]
            if not isinstance(hid, list):
                raise ConfigError(f"[model] hidden must be a list of integers, got {hid!r}")
            kw["hidden"] = tuple(hid)
        kw["data"] = _section(DataConfig, "data", data.get("data", {}))
        kw["federation"] = _section(FederationSection, "federation", data.get("federation", {}))
        attack = data.get("attack", {})
        if isinstance(attack, str):
            attack = {"name": attack}
        kw["attack"] = _section(AttackConfig, "attack", attack)
        return cls(**kw).validate()

    def replace(self, **changes: Any) -> SimulationConfig:
        """A copy with dotted keys changed, e.g. ``replace(**{"attack.name": "ipm", "rounds": 5})``."""
        d = self.to_dict()
        for key, value in changes.items():
            parts = key.split(".")
            target = d
            for p in parts[:-1]:
                target = target.setdefault(p, {})
            target[parts[-1]] = value
        return SimulationConfig.from_dict(d)


def federation_keys() -> tuple[str, ...]:
    """The [federation] keys that are FederationConfig options (all of them but the harness-only ones)."""
    harness_only = {n for n, *_ in HARNESS_ONLY}
    return tuple(f.name for f in fields(FederationSection) if f.name not in harness_only)


def unavailable_rules() -> dict[str, str]:
    """Registered pipeline steps the harness does not offer, with the reason: those that need a server root
    update (``RuleSpec.needs_root_update`` in :mod:`aggregation.registry`: FLTrust, and any plug-in rule alike)."""
    from aggregation import registry

    return {name: NO_ROOT_UPDATE for name, spec in registry.rules().items() if spec.needs_root_update}


def offered_rules() -> list[str]:
    """The aggregators the harness offers: every registered aggregator (plug-ins' included) but
    :func:`unavailable_rules`."""
    from aggregation import registry

    return sorted(registry.names_of_kind("aggregator") - set(unavailable_rules()))


def _check_rules_offered(aggregator: str) -> None:
    from aggregation import parse_pipeline

    try:
        steps = parse_pipeline(aggregator).steps
    except ValueError:
        return  # FederationConfig.validate reports it
    unavailable = unavailable_rules()
    for step in steps:
        if step.name in unavailable:
            raise ConfigError(f"[federation] aggregator {aggregator!r}: {step.name} is not available in the "
                              f"simulation harness: {unavailable[step.name]} (offered: {', '.join(offered_rules())})")


def load_plugins(modules: Any) -> list[Any]:
    """Import plug-in modules (``package.module``); importing one registers its attacks (and defences), see
    docs/simulation.md "Plug-ins". Idempotent: a module is imported once per process."""
    import importlib

    out = []
    for name in modules:
        try:
            out.append(importlib.import_module(name))
        except ImportError as exc:
            raise ConfigError(f"plugins: cannot import {name!r}: {exc}") from None
    return out


def parse_partition(value: Any) -> str | FlowerPartition:
    """``[data] partition``: one of :data:`PARTITIONS` or :data:`RESAMPLE` (checked by
    :meth:`DataConfig.validate`), or the inline table ``{flwr = "DirichletPartitioner", args = {alpha = 0.5}}``: a
    Flower Datasets partitioner, its name and arguments checked here
    (:class:`federated_data.flower_partitions.FlowerPartition`; Flower is not imported)."""
    if isinstance(value, str):
        return value
    from federated_data.flower_partitions import FlowerPartition, FlowerPartitionError

    if isinstance(value, FlowerPartition):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"[data] partition must be one of {PARTITIONS} or a Flower Datasets partitioner "
                          f"{{flwr = \"<Partitioner>\", args = {{…}}}}, or {RESAMPLE!r} (draws with replacement), "
                          f"got {value!r}")
    try:
        return FlowerPartition.from_table(value)
    except FlowerPartitionError as exc:
        raise ConfigError(f"[data] partition: {exc}") from None


def _section(cls: type, name: str, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{name}] must be a table, got {data!r}")
    allowed = {f.name: f for f in fields(cls)}
    _check_keys(name, data, set(allowed))
    kw = {}
    for k, v in data.items():
        default = allowed[k].default
        if default is MISSING:  # pragma: no cover - only fields with a default_factory
            kw[k] = v
            continue
        if k == "epsilon" and v in ("inf", "infinity"):
            v = math.inf
        if k == "synthetic_samples":
            if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v)):
                raise ConfigError(f"[{name}] synthetic_samples must be [lo, hi], got {v!r}")
            v = tuple(v)
        elif cls is DataConfig and k == "partition":
            v = parse_partition(v)
        elif k == "omniscient":
            v = _typed(name, k, v, bool)
        elif default is not None and not isinstance(default, tuple):
            v = _typed(name, k, v, type(default))
        kw[k] = v
    return cls(**kw)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table, e.g. [data] partition = {flwr = "…", args = {…}}
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, float) and math.isinf(v):
        return '"inf"'
    return repr(v)


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else _toml_value(key)


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None


def load_config(path: str | Path) -> SimulationConfig:
    return SimulationConfig.from_dict(load_toml(path))
