"""One simulation run: data, clients (honest and Byzantine), the federation, metrics and outputs."""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simulations.attacks import Attack, AttackContext, add_trigger, make_attack
from simulations.config import SimulationConfig
from simulations.data import FederatedData, build_data
from simulations.training import train_clients


@dataclass
class SimulationResult:
    config: SimulationConfig
    history: list[dict[str, Any]]
    byzantine: list[int]
    stopped_reason: str = ""
    seconds: float = 0.0
    client_updates: int = 0
    out_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # per completed round: {"round", "clients" (population indices, sorted), "trust" (theirs when selected)}
    selection: list[dict[str, Any]] = field(default_factory=list)
    client_ids: list[str] = field(default_factory=list)  # population index → the client's id (Ed25519 hash)
    code_version: str = ""  # git commit the run ran from, "+dirty" with uncommitted changes to tracked files
    code_changes: list[str] = field(default_factory=list)  # those files (empty for a clean commit)
    error: dict[str, str] | None = None  # the run raised: {"type", "message", "traceback"} (on_error="record")
    threads: dict[str, Any] = field(default_factory=dict)  # compute threads the run had (torch, BLAS/OpenMP pools)
    grouping_risk: dict[str, Any] = field(default_factory=dict)  # the grouping planner's verdict (grouping_record)

    @property
    def final_accuracy(self) -> float:
        return float(self.history[-1]["accuracy"]) if self.history else math.nan

    def final(self, key: str) -> float:
        return float(self.history[-1].get(key, math.nan)) if self.history else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.config.name, "code_version": self.code_version or code_version(),
                "code_changes": self.code_changes, "config": self.config.to_dict(),
                "byzantine": self.byzantine, "stopped_reason": self.stopped_reason, "error": self.error,
                "seconds": self.seconds, "client_updates": self.client_updates, "rounds": self.history,
                "selection": self.selection, "client_ids": self.client_ids, "threads": self.threads,
                "grouping_risk": self.grouping_risk, **self.extra}


def client_privacy(participation: Any, client_ids: list[str], delta: float) -> dict[str, Any]:
    """Every client's ε against the coordinator at ``delta`` from the engine's per-participation accountant
    (``coordinator``'s ``ParticipationAccountant``: q = 1, each released group sum one Gaussian with the group's
    effective z; docs/privacy.md), summarised: the largest (what ``/status`` reports and the budget bounds), the
    median and mean over the whole population (clients never selected: 0), and the participations."""
    eps = np.array([participation.epsilon_of(c, delta) for c in client_ids])
    counts = np.array([participation.count(c) for c in client_ids])
    taken = eps[counts > 0]
    return {"delta": delta, "epsilon_max": float(eps.max(initial=0.0)), "epsilon_median": float(np.median(eps)),
            "epsilon_mean": float(eps.mean()) if len(eps) else 0.0,
            "epsilon_median_participants": float(np.median(taken)) if len(taken) else 0.0,
            "participations_max": int(counts.max(initial=0)), "participations_median": float(np.median(counts)),
            "participations_histogram": np.bincount(counts).tolist() if len(counts) else [],
            "clients_participated": int((counts > 0).sum())}


def thread_counts() -> dict[str, Any]:
    """The compute threads this process uses: torch's intra-op threads and every BLAS/OpenMP pool loaded."""
    import torch

    out: dict[str, Any] = {"torch": torch.get_num_threads()}
    try:
        from threadpoolctl import threadpool_info

        out["pools"] = {f"{i['internal_api']} ({Path(i['filepath']).name})": i["num_threads"]
                        for i in threadpool_info()}
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    return out


def code_state() -> tuple[str, list[str]]:
    """The git commit the harness runs from (12 hex digits, ``+dirty`` when tracked files have uncommitted
    changes) and those files; ("unknown", []) outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", []
    if not head:
        return "unknown", []
    changes = sorted(line[3:].strip() for line in status.splitlines() if line.strip())
    return head + ("+dirty" if changes else ""), changes


def code_version() -> str:
    """The git commit the harness runs from (``+dirty`` with local changes), for the saved results."""
    return code_state()[0]


def grouping_record(cfg: SimulationConfig, report: Any) -> dict[str, Any]:
    """The grouping planner's verdict on a run, as metrics.json records it: the per-round risk (exact,
    hypergeometric: ``byzantine`` Byzantine among a ``population`` of num_clients), the bound, whether it holds,
    whether the run went ahead above it (``accepted``: accept_grouping_risk), and the planner's message."""
    return {"failure_probability": float(report.failure_probability), "bound": float(report.bound),
            "ok": bool(report.ok), "accepted": bool(not report.ok and cfg.federation.accept_grouping_risk),
            "byzantine_fraction": float(report.byzantine_fraction), "population": report.model.population,
            "byzantine": report.model.byzantine, "tolerated_groups": report.worst_round.tolerated,
            "num_groups": report.worst_round.num_groups, "message": report.message()}


def byzantine_clients(seed: int, population: int, count: int) -> list[int]:
    """The population indices of the ``count`` Byzantine clients a run with ``seed`` has (sorted)."""
    rng = np.random.default_rng([seed, 2])
    return sorted(int(i) for i in rng.choice(population, count, replace=False))


def training_seed(seed: int, rnd: int, client: int) -> int:
    return int(np.random.SeedSequence([seed, rnd, client]).generate_state(1, np.uint64)[0] >> 1)


class Simulation:
    """Build with a validated :class:`SimulationConfig`; :meth:`run` returns a :class:`SimulationResult`."""

    def __init__(self, cfg: SimulationConfig, data: FederatedData | None = None) -> None:
        self.cfg = cfg.validate()
        # the grouping planner, as `serve` uses it: refuses (ConfigError) above the bound unless accepted
        self.grouping = grouping_record(cfg, cfg.check_grouping_risk())
        self.code_version, self.code_changes = code_state()  # before anything runs: the code that ran
        if cfg.torch_threads:
            limit_threads(cfg.torch_threads)
        self.data = data or build_data(cfg.data, cfg.seed)
        if self.data.num_clients != cfg.data.num_clients:
            raise ValueError(f"data has {self.data.num_clients} clients, config says {cfg.data.num_clients}")
        self.spec = cfg.model_spec(self.data.input_dim, self.data.num_classes)
        self.fed = cfg.federation_config(self.spec)
        self.byzantine = byzantine_clients(cfg.seed, cfg.data.num_clients, cfg.attack.num_byzantine)
        self.attack: Attack = make_attack(cfg.attack.name)
        self.omniscient = (self.attack.omniscient_default if cfg.attack.omniscient is None
                           else cfg.attack.omniscient)
        self.attack_rng = np.random.default_rng([cfg.seed, 3])
        self.xs = list(self.data.xs)
        self.ys = list(self.data.ys)
        if self.attack.data_poisoning:
            prng = np.random.default_rng([cfg.seed, 4])
            for i in self.byzantine:
                self.xs[i], self.ys[i] = self.attack.poison(self.xs[i], self.ys[i], self.data.num_classes,
                                                            self.data.image_shape, prng)
        self.trainer = self._make_trainer()
        self.client_updates = 0
        self._momenta: dict[int, np.ndarray] = {}
        self._module = None
        # per-client test data (Synthetic): the honest clients' part is also evaluated on its own, since no
        # defence can learn the distributions of clients that never send an honest update
        self._honest_test = None
        left_out = self.byzantine or byzantine_clients(cfg.seed, cfg.data.num_clients,
                                                       cfg.attack.reference_byzantine)
        if self.data.test_owner is not None and left_out:
            import torch

            keep = ~np.isin(self.data.test_owner, left_out)
            self._honest_test = torch.from_numpy(keep) if keep.any() else None
        self._backdoor_x: np.ndarray | None = None
        if hasattr(self.attack, "poison") and self.attack.name in ("backdoor", "model_replacement"):
            target = int(self.attack.p("target", 0))
            keep = self.data.y_test != target
            self._backdoor_x = add_trigger(self.data.x_test[keep], self.data.image_shape,
                                           int(self.attack.p("size", 2)))
            self._backdoor_target = target

    def _make_trainer(self) -> Any:
        if self.cfg.backend == "ray":
            from simulations.ray_backend import RayTrainer

            return RayTrainer(self.spec, self.xs, self.ys, workers=self.cfg.ray_workers,
                              address=self.cfg.ray_address)
        return LocalTrainer(self.spec, self.xs, self.ys)

    # ── one round's client updates ──────────────────────────────────────────────────────────────────
    def updates(self, rnd: int, params: np.ndarray, idxs: list[int]) -> np.ndarray:
        """Every selected client's update: honest deltas in one batch, then the attackers' crafted ones."""
        f = self.fed
        seeds = [training_seed(self.cfg.seed, rnd, i) for i in idxs]
        deltas = self.trainer.train(params, idxs, seeds, epochs=f.local_epochs, batch_size=f.batch_size, lr=f.lr)
        self.client_updates += len(idxs)
        beta = self.cfg.federation.client_momentum
        if beta > 0:  # worker momentum: what an honest client sends is its momentum, not its latest delta
            for k, i in enumerate(idxs):
                m = self._momenta.get(i)
                m = (1 - beta) * deltas[k] if m is None else beta * m + (1 - beta) * deltas[k]
                self._momenta[i] = m
                deltas[k] = m
        byz = set(self.byzantine)
        bad = [k for k, i in enumerate(idxs) if i in byz]
        if not bad or self.attack.name == "none" or self.attack.absent:
            return deltas
        good = [k for k, i in enumerate(idxs) if i not in byz]
        honest = deltas[good] if self.omniscient else np.zeros((0, deltas.shape[1]), np.float32)
        ctx = AttackContext(rnd, honest, deltas[bad], len(idxs), len(bad), [idxs[k] for k in good] if
                            self.omniscient else [], self.attack_rng, params)
        crafted = np.asarray(self.attack.craft(ctx), np.float32)
        if crafted.shape != (len(bad), deltas.shape[1]):
            raise AssertionError(f"attack {self.attack} returned {crafted.shape}")
        out = deltas.copy()
        out[bad] = crafted
        return out

    # ── evaluation ──────────────────────────────────────────────────────────────────────────────────
    def evaluate(self, params: dict[str, np.ndarray]) -> dict[str, float]:
        import torch

        from client_native.torch_model import build_module, set_parameters

        if self._module is None:
            self._module = build_module(self.spec)
        set_parameters(self._module, params)
        self._module.eval()
        with torch.no_grad():
            x = torch.from_numpy(np.asarray(self.data.x_test, np.float32).reshape(-1, *self.spec.input_shape))
            y = torch.from_numpy(self.data.y_test)
            logits = self._module(x)
            right = logits.argmax(1) == y
            out = {"loss": float(torch.nn.functional.cross_entropy(logits, y)),
                   "accuracy": float(right.float().mean())}
            if self._honest_test is not None:  # the honest clients' own held-out data (docs/simulation.md)
                out["honest_accuracy"] = float(right[self._honest_test].float().mean())
            if self._backdoor_x is not None:
                xb = torch.from_numpy(self._backdoor_x.reshape(-1, *self.spec.input_shape))
                out["attack_success_rate"] = float((self._module(xb).argmax(1) == self._backdoor_target)
                                                   .float().mean())
        if not math.isfinite(out["loss"]):
            out["loss"] = float("nan")
        return out

    # ── run ─────────────────────────────────────────────────────────────────────────────────────────
    def run(self, out_dir: str | Path | None = None, verbose: bool = False, on_error: str = "raise",
            on_round: Callable[[dict[str, Any]], None] | None = None) -> SimulationResult:
        """Run the federation. ``on_error="record"``: an exception in a round ends the run with
        ``result.error`` set (type, message, traceback), the rounds completed so far kept and the outputs
        written – how a grid records a failed run instead of aborting; ``"raise"`` (default) re-raises it.
        ``on_round`` is called with each completed round's metrics (progress reports of long runs)."""
        if on_error not in ("raise", "record"):
            raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
        t0 = time.perf_counter()
        cfg = self.cfg
        threads = thread_counts()
        state = None  # bans = false is ban_threshold = 0 in the FederationConfig (SimulationConfig.federation_config)

        def log(m: dict[str, Any]) -> None:
            if on_round is not None:
                on_round(m)
            if verbose:
                extra = f" asr={m['attack_success_rate']:.3f}" if "attack_success_rate" in m else ""
                print(f"[{cfg.name}] round {m['round']:>3}: accuracy={m['accuracy']:.4f} "
                      f"loss={m['loss']:.4f}{extra}", flush=True)

        driver: Any
        kw = {"seed": cfg.seed, "byzantine": set(self.byzantine), "attackers_clip": cfg.attack.respect_clip,
              "evaluator": self.evaluate, "engine_state": state, "max_retries": cfg.max_round_retries,
              "absent": set(self.byzantine) if self.attack.absent else set()}
        if cfg.mode == "engine":
            from simulations.engine_driver import EngineDriver

            driver = EngineDriver(self.fed, cfg.data.num_clients, self.updates, **kw)
        else:
            from simulations.direct import DirectDriver

            driver = DirectDriver(self.fed, cfg.data.num_clients, self.updates, **kw)
        error = None
        try:
            driver.run(on_round=log)
            reason = driver.stopped_reason
        except Exception as exc:  # recorded with its traceback (on_error="record")
            if on_error == "raise":
                raise
            import traceback

            error = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
            reason = (f"run failed in round {driver.engine.round_number + 1}: {type(exc).__name__}: "
                      f"{str(exc)[:300]}")
        finally:
            self.trainer.close()
        extra = {"failures": [list(x) for x in driver.failures[:20]]} if cfg.mode == "engine" else {}
        history = [{k: v for k, v in h.items() if k != "time"} for h in driver.engine.history]
        done = {h["round"] for h in history}
        selection = [{"round": r, "clients": ids, "trust": [float(t) for t in trust]}
                     for r, (ids, trust) in sorted(driver.selection.items()) if r in done]
        client_ids = list(driver.ids) if cfg.mode == "direct" else [s.client_id for s in driver.sessions.values()]
        if self.fed.noise_multiplier > 0:  # every client's own ε against the coordinator (its participations)
            extra["privacy"] = client_privacy(driver.engine.participation, client_ids, self.fed.delta)
        # per population index the trust system's final view: trust, ban, observations, co-deviation statistic
        ts = driver.engine.trust
        codev = ts.codeviation()
        extra["trust_final"] = [{"trust": ts.trust(c), "banned": ts.ensure(c).banned,
                                 "observations": ts.ensure(c).observations, "codeviation": codev.get(c, 0.0)}
                                for c in client_ids]
        result = SimulationResult(cfg, history, self.byzantine, reason, time.perf_counter() - t0,
                                  self.client_updates, extra=extra, selection=selection, client_ids=client_ids,
                                  code_version=self.code_version, code_changes=self.code_changes, error=error,
                                  threads=threads, grouping_risk=self.grouping)
        target = out_dir or cfg.out_dir
        if target:
            write_outputs(result, Path(target))
        return result


class LocalTrainer:
    def __init__(self, spec: Any, xs: list[np.ndarray], ys: list[np.ndarray]) -> None:
        self.spec, self.xs, self.ys = spec, xs, ys

    def train(self, params: np.ndarray, idxs: list[int], seeds: list[int], **kw: Any) -> np.ndarray:
        deltas, _ = train_clients(self.spec, params, [self.xs[i] for i in idxs], [self.ys[i] for i in idxs],
                                  seeds=seeds, **kw)
        return deltas

    def close(self) -> None:
        pass


def run_simulation(cfg: SimulationConfig | dict[str, Any], out_dir: str | Path | None = None,
                   verbose: bool = False, on_error: str = "raise") -> SimulationResult:
    """The Python API: ``run_simulation(load_config("exp.toml"))`` or with a dict of the same shape."""
    if isinstance(cfg, dict):
        cfg = SimulationConfig.from_dict(cfg)
    return Simulation(cfg).run(out_dir, verbose=verbose, on_error=on_error)


BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def limit_threads(n: int) -> dict[str, Any]:
    """Limit this process to ``n`` compute threads: torch (intra-op), the BLAS/OpenMP pools numpy and torch
    already loaded (threadpoolctl), and – for processes started from here – the OPENBLAS/OMP/MKL environment
    variables and the aggregation package's AGGREGATION_THREADS. Returns what it replaced, for
    :func:`restore_threads`."""
    import os

    import torch

    saved: dict[str, Any] = {"torch": torch.get_num_threads(), "env": {}}
    torch.set_num_threads(n)
    for var in (*BLAS_THREAD_VARS, "AGGREGATION_THREADS"):
        saved["env"][var] = os.environ.get(var)
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits

        saved["pools"] = threadpool_limits(limits=n)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        saved["pools"] = None
    return saved


def restore_threads(saved: dict[str, Any]) -> None:
    import os

    import torch

    torch.set_num_threads(saved["torch"])
    for var, value in saved["env"].items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    if saved.get("pools") is not None:
        saved["pools"].restore_original_limits()


# ── outputs ─────────────────────────────────────────────────────────────────────────────────────────
def write_outputs(result: SimulationResult, out: Path) -> None:
    """``config.toml`` (the resolved config: rerunning it reproduces the run), ``metrics.csv``,
    ``metrics.json`` and, if matplotlib is available and plots are on, ``accuracy.png``."""
    out.mkdir(parents=True, exist_ok=True)
    version = result.code_version or code_version()
    note = ("" if not version.endswith("+dirty") else
            "# uncommitted changes to tracked files (metrics.json: code_changes): not reproducible from the commit\n")
    (out / "config.toml").write_text(f"# fl-coordinator simulation, code {version}; rerun: fl-coordinator simulate "
                                     f"config.toml\n{note}" + result.config.to_toml())
    (out / "metrics.json").write_text(json.dumps(jsonable(result.to_dict()), indent=1))
    byz = set(result.byzantine)
    with (out / "selected.csv").open("w", newline="") as fh:  # one row per selected client per round
        sw = csv.writer(fh)
        sw.writerow(["round", "client", "trust", "byzantine"])
        for sel in result.selection:
            for i, t in zip(sel["clients"], sel["trust"], strict=True):
                sw.writerow([sel["round"], i, repr(float(t)), int(i in byz)])
    keys: list[str] = []
    for h in result.history:
        keys += [k for k in h if k not in keys]
    with (out / "metrics.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for h in result.history:
            w.writerow(h)
    if result.config.plots and result.history:
        from simulations.plots import plot_run

        plot_run(result, out / "accuracy.png")
    result.out_dir = out


def jsonable(x: Any) -> Any:
    """``x`` with numpy scalars as Python numbers and non-finite floats as None / "inf" / "-inf" (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x
