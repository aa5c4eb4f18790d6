"""Grids: one base config, swept over attacks × defences (× secure-aggregation group sizes).

```toml
# … a full simulation config (the base) …
[grid]
attacks = ["none", "sign_flip(scale=10)", {label = "IPM", spec = "ipm(eps=10)"}]
defences = [{label = "FedAvg", spec = "mean"}, "median"]
group_sizes = [1, 2, 5]      # optional (default: the base's group_size)
seeds = [0]                  # optional: several seeds are averaged
workers = 2                  # optional: runs in parallel processes
run_refused = false          # optional: true runs the cells the grouping planner refuses anyway (marked ¶)
refused_seeds = [0]          # optional: run those cells with these seeds only (default: every seed)
```
Outputs under ``out_dir``: one folder per run (config, metrics, plot), ``grid.json``, and per group size a
markdown table (attack × defence, test accuracy in %: the mean of the last 3 rounds of each run, averaged over
seeds) and a heatmap PNG with the table's marks.

Every cell is checked by the grouping planner (:meth:`SimulationConfig.grouping_report`, as a single run and
``serve`` are). A cell above ``[federation] max_grouping_risk`` is not run – it is recorded as refused, with the
planner's risk and message, and the table shows ``refused¶ (risk …)`` – unless ``[grid] run_refused = true`` (or
the base's ``accept_grouping_risk``): then it runs with the risk accepted and the table shows its accuracy
marked ``¶ (risk …)``, above the planner's bound – the collapse the planner prevents.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from simulations.config import ConfigError, SimulationConfig, load_toml


@dataclass(frozen=True)
class Axis:
    label: str
    spec: str


def _axis(name: str, items: Any) -> list[Axis]:
    if not isinstance(items, list) or not items:
        raise ConfigError(f"[grid] {name} must be a non-empty list")
    out = []
    for it in items:
        if isinstance(it, str):
            out.append(Axis(it, it))
        elif isinstance(it, dict) and set(it) <= {"label", "spec"} and isinstance(it.get("spec"), str):
            out.append(Axis(str(it.get("label", it["spec"])), it["spec"]))
        else:
            raise ConfigError(f"[grid] {name}: each entry is a string or {{label = …, spec = …}}, got {it!r}")
    labels = [a.label for a in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"[grid] {name}: duplicate labels {labels}")
    return out


@dataclass
class GridSpec:
    base: SimulationConfig
    attacks: list[Axis]
    defences: list[Axis]
    group_sizes: list[int]
    seeds: list[int]
    workers: int
    adapt_byzantine: bool = True
    run_refused: bool = False  # run the cells the grouping planner refuses (accept_grouping_risk), marked ¶
    refused_seeds: list[int] | None = None  # the seeds run for cells above the bound (None: every seed)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridSpec:
        if "grid" not in data or not isinstance(data["grid"], dict):
            raise ConfigError("a grid config needs a [grid] table with attacks and defences")
        g = dict(data["grid"])
        unknown = set(g) - {"attacks", "defences", "group_sizes", "seeds", "workers", "adapt_byzantine",
                            "run_refused", "refused_seeds"}
        if unknown:
            raise ConfigError(f"unknown key(s) {sorted(unknown)} in [grid]")
        base = SimulationConfig.from_dict({k: v for k, v in data.items() if k != "grid"})
        spec = cls(base, _axis("attacks", g.get("attacks")), _axis("defences", g.get("defences")),
                   list(g.get("group_sizes", [base.federation.group_size])), list(g.get("seeds", [base.seed])),
                   int(g.get("workers", 1)), bool(g.get("adapt_byzantine", True)),
                   _flag("run_refused", g.get("run_refused", False)), _refused_seeds(g))
        for run in spec.runs():  # validate every cell up front: a typo fails before hours of compute
            spec.config_for(*run)
        return spec

    def runs(self) -> list[tuple[int, Axis, Axis, int]]:
        return [(s, a, d, seed) for s in self.group_sizes for a in self.attacks for d in self.defences
                for seed in self.seeds]

    def config_for(self, s: int, attack: Axis, defence: Axis, seed: int) -> SimulationConfig:
        """The cell's config. The attackers stay in the population for every attack except "none" (same
        population, same seed). If the defence cannot tolerate the base's f over this cell's groups (e.g. Krum
        over 5 groups tolerates 1 corrupted group), f told to the defence is lowered to the largest value its
        precondition accepts, and the table marks the cell (the guarantee no longer covers the attackers)."""
        clean = attack.spec.split("(")[0].strip() == "none"
        num_byz = 0 if clean else self.base.attack.num_byzantine
        changes = {"federation.group_size": s, "federation.aggregator": defence.spec, "attack.name": attack.spec,
                   "attack.num_byzantine": num_byz,
                   "attack.reference_byzantine": self.base.attack.num_byzantine if clean else 0, "seed": seed, "torch_threads": self.base.torch_threads or 1,
                   "name": f"{self.base.name}/s{s}/{attack.label}/{defence.label}"}
        where = f"grid cell (group_size={s}, attack={attack.label!r}, defence={defence.label!r})"
        f_base = self.base.federation.byzantine
        first: ConfigError | None = None
        for f in range(f_base, -1, -1):
            try:
                return self.base.replace(**changes, **{"federation.byzantine": f})
            except ConfigError as exc:
                first = first or exc
                if not self.adapt_byzantine or not _precondition_error(exc):
                    raise ConfigError(f"{where}: {exc}") from None
                last = exc
        # every f from the base down to 0 fails the rule's precondition over this cell's groups
        raise ConfigError(f"{where}: no f works: {defence.spec!r} over groups of {s} does not accept any f in "
                          f"0..{f_base} (with f=0: {last}); use smaller groups, more clients per round or another "
                          f"rule") from None


    def plan(self, cfg: SimulationConfig) -> tuple[SimulationConfig | None, dict[str, Any]]:
        """The grouping planner's verdict on a cell's config: ``(config to run, record)``. The record is
        :func:`simulations.runner.grouping_record` with ``status``: "ok" (within the bound), "above_bound" (above
        it, run anyway: ``run_refused`` or the base's ``accept_grouping_risk``; the config returned accepts the
        risk) or "refused" (not run: the config returned is ``None``)."""
        from simulations.runner import grouping_record

        report = grouping_report(cfg)
        if report.ok:
            return cfg, {**grouping_record(cfg, report), "status": "ok"}
        if cfg.federation.accept_grouping_risk or self.run_refused:
            run = cfg if cfg.federation.accept_grouping_risk else cfg.replace(
                **{"federation.accept_grouping_risk": True})
            return run, {**grouping_record(run, report), "status": "above_bound"}
        return None, {**grouping_record(cfg, report), "status": "refused"}


# ── the planner's verdicts, computed once per distinct federation ───────────────────────────────────────────
# planner.check can take seconds (it scans round sizes up to 1,000 for its suggestions), and every run checks its
# config again (Simulation.__init__). The verdict is a pure function of the [federation] table (the accept flag
# aside) and the population, so a grid computes it once here and hands the verdicts to its workers.
_REPORTS: dict[tuple[str, int, int], Any] = {}
_UNCACHED = SimulationConfig.grouping_report


def _report_key(cfg: SimulationConfig) -> tuple[str, int, int]:
    import dataclasses

    fed = dataclasses.replace(cfg.federation, accept_grouping_risk=False)
    return repr(fed), cfg.attack.num_byzantine, cfg.data.num_clients


def grouping_report(cfg: SimulationConfig) -> Any:
    """:meth:`SimulationConfig.grouping_report`, memoized per process (see above)."""
    key = _report_key(cfg)
    if key not in _REPORTS:
        _REPORTS[key] = _UNCACHED(cfg)
    return _REPORTS[key]


def _use_report_cache(reports: dict[tuple[str, int, int], Any]) -> None:
    """Make every :class:`SimulationConfig` of this process (the runs' own planner check included) use the
    memoized verdicts, seeded with ``reports``."""
    _REPORTS.update(reports)
    SimulationConfig.grouping_report = grouping_report  # type: ignore[method-assign]


def _refused_seeds(g: dict[str, Any]) -> list[int] | None:
    value = g.get("refused_seeds")
    if value is None:
        return None
    if not (isinstance(value, list) and value and all(isinstance(x, int) and not isinstance(x, bool)
                                                      for x in value)):
        raise ConfigError(f"[grid] refused_seeds must be a non-empty list of seeds, got {value!r}")
    seeds = g.get("seeds")
    if seeds is not None and not set(value) <= set(seeds):
        raise ConfigError(f"[grid] refused_seeds {value} must be among the seeds {seeds}")
    return list(value)


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"[grid] {key} must be true or false, got {value!r}")
    return value


def _precondition_error(exc: ConfigError) -> bool:
    """The error is a robust rule's precondition over the groups failing for the f told (lowering f may help)."""
    return str(exc).startswith("[federation] aggregator ") and " needs n >= " in str(exc)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "x"


LAST_ROUNDS = 3  # a cell's accuracy: the mean over the last LAST_ROUNDS rounds of each run, then over seeds


def _run_one(args: tuple[dict[str, Any], str | None]) -> dict[str, Any]:
    """One grid run. A run that raises is recorded (its error, traceback and the rounds it completed), not
    propagated: one broken cell must not abort hours of grid."""
    import logging

    from simulations.runner import code_version, run_simulation

    cfg_dict, out = args
    quiet = logging.getLogger("simulations")  # the accepted-risk warning: the grid records the risk (table, json)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        r = run_simulation(cfg_dict, out, on_error="record")
    except Exception as exc:  # before the first round (e.g. the data partition): nothing ran
        import traceback

        return {"history": [], "stopped_reason": f"run failed before round 1: {type(exc).__name__}: "
                                                 f"{str(exc)[:300]}",
                "seconds": 0.0, "byzantine": [], "f_told": cfg_dict["federation"]["byzantine"],
                "error": {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()},
                "code_version": code_version(), "selection": []}
    finally:
        quiet.setLevel(level)
    return {"history": r.history, "stopped_reason": r.stopped_reason, "seconds": r.seconds,
            "byzantine": r.byzantine, "f_told": r.config.federation.byzantine, "error": r.error,
            "code_version": r.code_version, "selection": r.selection}


Job = tuple[dict[str, Any], str]  # a run's config (dict) and its output folder


@dataclass
class PreparedGrid:
    """A grid's cells with the planner's verdicts, ready to run: ``jobs[i]`` is None for a cell not run (refused,
    ``results[i]`` already recorded). Several prepared grids can share one process pool (:func:`execute`)."""

    spec: GridSpec
    out: Path
    cells: list[tuple[int, Axis, Axis, int]]
    jobs: list[Job | None]
    plans: list[dict[str, Any]]
    results: list[dict[str, Any] | None]

    def todo(self) -> list[int]:
        return [i for i, job in enumerate(self.jobs) if job is not None]

    def record(self, i: int, result: dict[str, Any]) -> dict[str, Any]:
        self.results[i] = {**result, "grouping_risk": self.plans[i]}
        return self.results[i]  # type: ignore[return-value]


def prepare_grid(spec: GridSpec, out: Path, verbose: bool = True, stream: TextIO | None = None) -> PreparedGrid:
    """Every cell's config and planner verdict. A refused cell is recorded, not run; with ``refused_seeds`` a
    cell above the bound (run anyway) is kept for those seeds only."""
    out.mkdir(parents=True, exist_ok=True)
    grid = PreparedGrid(spec, out, [], [], [], [])
    for s, a, d, seed in spec.runs():
        cfg = spec.config_for(s, a, d, seed)
        run, plan = spec.plan(cfg)  # the grouping planner: a refused cell is recorded, not run
        if (plan["status"] == "above_bound" and spec.refused_seeds is not None
                and seed not in spec.refused_seeds):
            continue
        grid.cells.append((s, a, d, seed))
        grid.plans.append(plan)
        grid.jobs.append(None if run is None else
                         (run.to_dict(), str(out / f"s{s}" / _slug(a.label) / _slug(d.label) / f"seed{seed}")))
        grid.results.append(None if run is not None else _refused(cfg, plan))
        if run is None and verbose:
            _report(grid.cells[-1], grid.results[-1], stream)  # type: ignore[arg-type]
    return grid


def execute(jobs: list[Job], workers: int, plugins: list[str],
            on_result: Callable[[int, dict[str, Any]], None]) -> None:
    """Run ``jobs`` (:func:`_run_one` each) in ``workers`` spawned processes with one compute thread each (or in
    this process, limited to one thread and restored afterwards); ``on_result(index, result)`` as each finishes."""
    from simulations.runner import limit_threads, restore_threads

    saved = limit_threads(1)  # this process, and (environment) the workers it spawns
    try:
        if workers > 1 and jobs:
            ctx = multiprocessing.get_context("spawn")  # fresh interpreters read the thread limits at import
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                     initargs=(list(plugins), dict(_REPORTS))) as ex:
                futures = {ex.submit(_run_one, job): i for i, job in enumerate(jobs)}
                for fut in as_completed(futures):
                    on_result(futures[fut], fut.result())
        else:
            SimulationConfig.grouping_report = grouping_report  # type: ignore[method-assign]
            try:
                for i, job in enumerate(jobs):
                    on_result(i, _run_one(job))
            finally:
                SimulationConfig.grouping_report = _UNCACHED  # type: ignore[method-assign]
    finally:
        restore_threads(saved)


def finish_grid(grid: PreparedGrid) -> dict[str, Any]:
    """Summarize a grid whose runs are done: ``grid.json``, ``table.md``, heatmaps and ``config.toml``."""
    summary = summarize(grid.spec, grid.cells, grid.results)  # type: ignore[arg-type]
    (grid.out / "grid.json").write_text(json.dumps(summary, indent=1, default=_default))
    write_tables(grid.spec, summary, grid.out)
    return summary


def run_grid(spec: GridSpec | dict[str, Any], out_dir: str | Path | None = None, verbose: bool = True,
             stream: TextIO | None = None) -> dict[str, Any]:
    """Run every cell. ``workers`` processes (spawned, each limited to one torch/BLAS/OpenMP thread); with one
    worker the runs execute in this process, limited to one thread as well (restored afterwards). Every run's
    config says ``torch_threads = 1`` (unless the base sets it), so rerunning its config.toml reproduces it.
    Progress lines go to ``stream`` (default stdout) unless ``verbose`` is false."""
    if isinstance(spec, dict):
        spec = GridSpec.from_dict(spec)
    grid = prepare_grid(spec, Path(out_dir or spec.base.out_dir or f"runs/{_slug(spec.base.name)}"), verbose, stream)
    todo = grid.todo()

    def done(k: int, result: dict[str, Any]) -> None:
        r = grid.record(todo[k], result)
        if verbose:
            _report(grid.cells[todo[k]], r, stream)

    execute([grid.jobs[i] for i in todo], spec.workers, list(spec.base.plugins), done)  # type: ignore[misc]
    return finish_grid(grid)


def _refused(cfg: SimulationConfig, plan: dict[str, Any]) -> dict[str, Any]:
    """A cell the grouping planner refuses: recorded with its risk and the planner's message, not run."""
    from simulations.runner import code_version

    return {"history": [], "stopped_reason": f"refused by the grouping planner: {plan['message']}", "seconds": 0.0,
            "byzantine": [], "f_told": cfg.federation.byzantine, "error": None, "code_version": code_version(),
            "selection": [], "refused": True, "grouping_risk": plan}


def risk_text(p: float) -> str:
    """A per-round risk as the table prints it (the planner's own format)."""
    if p == 0.0:
        return "0"
    return f"{p:.1e}" if p < 1e-4 else f"{p:.4f}"


def _default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


def _worker_init(plugins: list[str], reports: dict[tuple[str, int, int], Any] | None = None) -> None:
    from simulations.config import load_plugins
    from simulations.runner import limit_threads

    limit_threads(1)
    load_plugins(plugins)
    _use_report_cache(reports or {})


def _report(cell: tuple[int, Axis, Axis, int], r: dict[str, Any], stream: TextIO | None = None) -> None:
    """One progress line for a finished (or refused) cell, on ``stream`` (default stdout)."""
    s, a, d, seed = cell
    out = stream or sys.stdout
    plan = r.get("grouping_risk") or {}
    if r.get("refused"):
        print(f"s={s} {a.label:>14} × {d.label:<14} seed={seed}: refused by the grouping planner (risk "
              f"{risk_text(plan['failure_probability'])} > {plan['bound']:g}), not run", file=out, flush=True)
        return
    acc = r["history"][-1]["accuracy"] if r["history"] else math.nan
    note = f"  [{r['stopped_reason']}]" if r.get("error") or _stopped_early(r["stopped_reason"]) else ""
    print(f"s={s} {a.label:>14} × {d.label:<14} seed={seed}: final accuracy {100 * _num(acc):5.1f}% "
          f"({r['seconds']:.1f}s){note}", file=out, flush=True)


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def last_rounds_accuracy(history: list[dict[str, Any]], k: int = LAST_ROUNDS, key: str = "accuracy") -> float:
    """Mean test accuracy over the last ``k`` completed rounds (fewer if the run completed fewer); ``key`` =
    ``"honest_accuracy"``: on the honest clients' own test data (scenarios with per-client test data)."""
    accs = [_num(x.get(key)) for x in history[-k:]]
    return float(np.mean(accs)) if accs else math.nan


def summarize(spec: GridSpec, cells: list[tuple[int, Axis, Axis, int]], results: list[dict[str, Any]]
              ) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for (s, a, d, seed), r in zip(cells, results, strict=True):
        h = r["history"]
        byz = set(r.get("byzantine", []))
        sel = [len(set(x["clients"]) & byz) / len(x["clients"]) for x in r.get("selection", []) if x["clients"]]
        entry = table.setdefault(str(s), {}).setdefault(a.label, {}).setdefault(d.label, {"runs": []})
        entry["runs"].append({"seed": seed, "accuracy": last_rounds_accuracy(h),
                              **({"honest_accuracy": last_rounds_accuracy(h, key="honest_accuracy")}
                                 if h and "honest_accuracy" in h[-1] else {}),
                              "final_accuracy": _num(h[-1]["accuracy"]) if h else math.nan,
                              "best_accuracy": max((_num(x["accuracy"]) for x in h), default=math.nan),
                              "rounds": len(h), "stopped_reason": r["stopped_reason"],
                              "stopped_early": (len(h) < spec.base.rounds or bool(r.get("error")))
                              and not r.get("refused"),
                              "refused": bool(r.get("refused")), "grouping_risk": r.get("grouping_risk"),
                              "error": r.get("error"),
                              "code_version": r.get("code_version", ""),
                              "groups_ok_min": min((x.get("groups_ok", 0) for x in h), default=0),
                              "f_told": r["f_told"],
                              "groups": h[-1].get("groups") if h else None,
                              "corrupted_groups_max": max((x.get("corrupted_groups", 0) for x in h), default=0),
                              "corrupted_groups_mean": float(np.mean([x.get("corrupted_groups", 0) for x in h]))
                              if h else 0.0,
                              "groups_over_bound": sum(x.get("groups_over_bound", 0) for x in h),
                              "rounds_all_groups_corrupted": sum(
                                  1 for x in h if x.get("corrupted_groups", 0) >= x.get("groups", 1) > 0),
                              "rounds_over_tolerance": sum(
                                  1 for x in h if x.get("corrupted_groups", 0) > min(r["f_told"], x.get("groups", 0))),
                              "failed_attempts": sum(x.get("attempts", 1) - 1 for x in h),
                              "byzantine_selection_share": float(np.mean(sel)) if sel else None,
                              "attack_success_rate": h[-1].get("attack_success_rate") if h else None,
                              "seconds": r["seconds"]})
    for by_attack in table.values():
        for by_def in by_attack.values():
            for entry in by_def.values():
                entry["accuracy"] = float(np.mean([x["accuracy"] for x in entry["runs"]]))
                entry["final_accuracy"] = float(np.mean([x["final_accuracy"] for x in entry["runs"]]))
                if all("honest_accuracy" in x for x in entry["runs"]):
                    entry["honest_accuracy"] = float(np.mean([x["honest_accuracy"] for x in entry["runs"]]))
                entry["f_told"] = min(x["f_told"] for x in entry["runs"])
                entry["rounds_over_tolerance"] = sum(x["rounds_over_tolerance"] for x in entry["runs"])
                entry["grouping_risk"] = entry["runs"][0]["grouping_risk"]  # the same for every seed
    from simulations.runner import code_version

    versions = sorted({x["code_version"] for by_a in table.values() for by_d in by_a.values()
                       for e in by_d.values() for x in e["runs"] if x["code_version"]}) or [code_version()]
    return {"name": spec.base.name, "code_version": versions[0] if len(versions) == 1 else "mixed: " + ", ".join(versions),
            "code_versions": versions, "accuracy": f"mean test accuracy of the last {LAST_ROUNDS} rounds of each run, "
                                                   f"averaged over seeds",
            "base": spec.base.to_dict(), "attacks": [a.__dict__ for a in spec.attacks],
            "defences": [d.__dict__ for d in spec.defences], "group_sizes": spec.group_sizes,
            "seeds": spec.seeds, "table": table}


def matrix(summary: dict[str, Any], s: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Attack × defence accuracies (the mean of the last rounds; ``final_accuracy`` in summaries that predate it)."""
    rows = [a["label"] for a in summary["attacks"]]
    cols = [d["label"] for d in summary["defences"]]
    t = summary["table"][str(s)]
    m = np.array([[t[r][c].get("accuracy", t[r][c]["final_accuracy"]) for c in cols] for r in rows], dtype=float)
    return m, rows, cols


def cell_marks(summary: dict[str, Any], s: int) -> list[list[str]]:
    """The marks of every cell, shared by the markdown table and the heatmap: † = the defence was told a smaller
    f than the attackers present (its precondition over this many groups allows no more); ‡ = in some round more
    groups were corrupted than the f the defence was told (no guarantee that round); § = a run stopped before its
    last round or failed (grid.json has the reason and any error); ¶ = the grouping planner refuses the cell's
    configuration (its risk exceeds max_grouping_risk): not run, or run anyway (run_refused) above its bound."""
    _, rows, cols = matrix(summary, s)
    t = summary["table"][str(s)]
    f_base = summary["base"]["federation"]["byzantine"]
    out = []
    for r in rows:
        line = []
        for c in cols:
            e = t[r][c]
            mark = ("†" if e["f_told"] < f_base else "") + ("‡" if e["rounds_over_tolerance"] else "")
            mark += "§" if any(x.get("stopped_early", _stopped_early(x["stopped_reason"])) for x in e["runs"]) else ""
            mark += "¶" if _planner_status(e) in ("refused", "above_bound") else ""
            line.append(mark)
        out.append(line)
    return out


def _planner_status(entry: dict[str, Any]) -> str:
    """"ok", "refused" (not run), "above_bound" (run anyway) or "" (a summary that predates the planner)."""
    return (entry.get("grouping_risk") or {}).get("status", "")


def cell_labels(summary: dict[str, Any], s: int, sep: str = " ") -> list[list[str]]:
    """Each cell as printed: the accuracy in % (one decimal, "–" if no round completed) and its marks; a cell
    the grouping planner refuses reads ``refused¶ (risk p)`` (not run) or ``acc¶ (risk p)`` (run anyway), p the
    planner's per-round risk (``sep`` before the risk: the heatmap puts it on a line of its own)."""
    m, rows, cols = matrix(summary, s)
    marks = cell_marks(summary, s)
    t = summary["table"][str(s)]
    out = []
    for r, row, mrow in zip(rows, m, marks, strict=True):
        line = []
        for c, v, mk in zip(cols, row, mrow, strict=True):
            e = t[r][c]
            status = _planner_status(e)
            text = ("refused" if status == "refused" else "–" if np.isnan(v) else f"{100 * v:.1f}") + mk
            if status in ("refused", "above_bound"):
                text += f"{sep}(risk {risk_text(e['grouping_risk']['failure_probability'])})"
            line.append(text)
        out.append(line)
    return out


def markdown_table(summary: dict[str, Any], s: int) -> str:
    """Accuracy in % (mean of the last rounds, see :data:`LAST_ROUNDS`) with the marks of :func:`cell_marks`."""
    _, rows, cols = matrix(summary, s)
    labels = cell_labels(summary, s)

    def esc(text: str) -> str:  # a pipeline label such as "clip(median)|cc" must not split the column
        return text.replace("|", "\\|")

    lines = [f"| attack \\ defence (accuracy %, mean of the last {LAST_ROUNDS} rounds) | "
             + " | ".join(map(esc, cols)) + " |", "|---|" + "---:|" * len(cols)]
    for r, row in zip(rows, labels, strict=True):
        lines.append(f"| {esc(r)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def corruption_note(summary: dict[str, Any], s: int) -> str:
    """How many groups the attackers corrupted (from the runs with an attack)."""
    t = summary["table"][str(s)]
    runs = [x for a, by_def in t.items() for e in by_def.values() for x in e["runs"] if a != "none"]
    runs = [x for x in runs if x["groups"]]
    if not runs:
        return ""
    g = runs[0]["groups"]
    mean = float(np.mean([x["corrupted_groups_mean"] for x in runs]))
    allc = sum(x["rounds_all_groups_corrupted"] for x in runs)
    total = sum(x["rounds"] for x in runs)
    f_told = sorted({(c, e["f_told"]) for by_def in t.values() for c, e in by_def.items()})
    told = ", ".join(f"{c}: f={f}" for c, f in dict(f_told).items())
    return (f"{g} groups per round; on average {mean:.2f} of them contained a Byzantine client; every group "
            f"was corrupted in {allc} of {total} attacked rounds. f told to each defence: {told}.")


def write_tables(spec: GridSpec, summary: dict[str, Any], out: Path) -> None:
    from simulations.plots import plot_heatmap

    b = spec.base
    version = summary["code_version"]
    dirty = ("" if "+dirty" not in version and not version.startswith("mixed") else
             " **Not reproducible from one commit** (uncommitted changes or several code versions: see grid.json).")
    parts = [f"# {b.name}\n", f"Test accuracy (%), **mean of the last {LAST_ROUNDS} rounds** of {b.rounds} (averaged "
             f"over seeds {spec.seeds}); {b.data.num_clients} clients on {b.data.dataset} ({b.data.partition}), "
             f"{b.federation.clients_per_round} per round, {b.attack.num_byzantine} Byzantine; code {version}."
             f"{dirty} Config: `config.toml`.\n"]
    entries = [e for by_a in summary["table"].values() for by_d in by_a.values() for e in by_d.values()]
    refused = sum(_planner_status(e) == "refused" for e in entries)
    above = sum(_planner_status(e) == "above_bound" for e in entries)
    parts.append(f"\nGrouping planner: per-round risk bound {b.federation.max_grouping_risk:g}; {refused} of "
                 f"{len(entries)} cells refused (not run), {above} run above the bound (¶, risk shown).\n")
    for s in spec.group_sizes:
        m, rows, cols = matrix(summary, s)
        title = "no secure aggregation (groups of 1)" if s == 1 else f"secure aggregation in groups of {s}"
        parts.append(f"\n## {title}\n\n{markdown_table(summary, s)}\n\n{corruption_note(summary, s)}\n")
        if b.plots:
            plot_heatmap(m, rows, cols, f"{b.name}: accuracy (mean of the last {LAST_ROUNDS} rounds), {title}",
                         out / f"heatmap_s{s}.png", labels=cell_labels(summary, s, sep="\n"))
    parts.append("\n† the defence was told a smaller f than the attackers present (its precondition over this many "
                 "groups allows no more). ‡ in some round more groups were corrupted than the f the defence was "
                 "told: no guarantee in that round. § a run of the cell stopped before its last round – a round "
                 f"failed more than max_round_retries = {b.max_round_retries} times in a row (e.g. too few groups "
                 "left for the rule's precondition when the attackers are absent), the federation stalled or ran "
                 "out of privacy budget, or the run raised an error; the accuracy is that of its last completed "
                 "rounds; grid.json has the reason and any error. ¶ the grouping planner (aggregation/planner.py, "
                 "as `serve` uses it) refuses the configuration: the per-round probability that more groups are "
                 "corrupted than the rule tolerates – the risk shown, exact for "
                 f"{b.attack.num_byzantine} Byzantine among {b.data.num_clients} clients – exceeds "
                 f"max_grouping_risk = {b.federation.max_grouping_risk:g}; 'refused' = not run (grid.json has the "
                 "planner's message: the corrupted groups the rule tolerates, the largest group size and the "
                 "smallest clients per round that hold); an accuracy = run anyway ([grid] run_refused = true or "
                 "[federation] accept_grouping_risk = true), above the planner's bound: the collapse it prevents"
                 + (f"; such cells ran with seed(s) {spec.refused_seeds} only" if spec.refused_seeds else "")
                 + ".\n")
    (out / "table.md").write_text("".join(parts))
    (out / "config.toml").write_text(b.to_toml() + _grid_toml(spec))


def _grid_toml(spec: GridSpec) -> str:
    from simulations.config import _toml_value

    def ax(items: list[Axis]) -> str:
        return "[" + ", ".join(f"{{label = {_toml_value(a.label)}, spec = {_toml_value(a.spec)}}}" for a in items) + "]"

    return (f"\n[grid]\nattacks = {ax(spec.attacks)}\ndefences = {ax(spec.defences)}\n"
            f"group_sizes = {_toml_value(spec.group_sizes)}\nseeds = {_toml_value(spec.seeds)}\n"
            f"workers = {spec.workers}\nrun_refused = {_toml_value(spec.run_refused)}\n"
            + (f"refused_seeds = {_toml_value(spec.refused_seeds)}\n" if spec.refused_seeds else ""))


def load_grid(path: str | Path) -> GridSpec:
    return GridSpec.from_dict(load_toml(path))


def _stopped_early(reason: str) -> bool:
    """The run ended before its last round (the engine raised, a round failed too often, the federation stalled or
    ran out of budget, the run raised): anything but the engine's "all N rounds done"."""
    return bool(reason) and not reason.startswith("all ")
