"""Grids: one base config, swept over attacks × defences (× secure-aggregation group sizes).

```toml
# … a full simulation config (the base) …
[grid]
attacks = ["none", "sign_flip(scale=10)", {label = "IPM", spec = "ipm(eps=10)"}]
defences = [{label = "FedAvg", spec = "mean"}, "median"]
group_sizes = [1, 2, 5]      # optional (default: the base's group_size)
seeds = [0]                  # optional: several seeds are averaged
workers = 2                  # optional: runs in parallel processes
```
Outputs under ``out_dir``: one folder per run (config, metrics, plot), ``grid.json``, and per group size a
markdown table (attack × defence, test accuracy in %: the mean of the last 3 rounds of each run, averaged over
seeds) and a heatmap PNG with the table's marks.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridSpec:
        if "grid" not in data or not isinstance(data["grid"], dict):
            raise ConfigError("a grid config needs a [grid] table with attacks and defences")
        g = dict(data["grid"])
        unknown = set(g) - {"attacks", "defences", "group_sizes", "seeds", "workers", "adapt_byzantine"}
        if unknown:
            raise ConfigError(f"unknown key(s) {sorted(unknown)} in [grid]")
        base = SimulationConfig.from_dict({k: v for k, v in data.items() if k != "grid"})
        spec = cls(base, _axis("attacks", g.get("attacks")), _axis("defences", g.get("defences")),
                   list(g.get("group_sizes", [base.federation.group_size])), list(g.get("seeds", [base.seed])),
                   int(g.get("workers", 1)), bool(g.get("adapt_byzantine", True)))
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
        num_byz = self.base.attack.num_byzantine if attack.spec.split("(")[0].strip() != "none" else 0
        changes = {"federation.group_size": s, "federation.aggregator": defence.spec, "attack.name": attack.spec,
                   "attack.num_byzantine": num_byz, "seed": seed, "torch_threads": self.base.torch_threads or 1,
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


def _precondition_error(exc: ConfigError) -> bool:
    """The error is a robust rule's precondition over the groups failing for the f told (lowering f may help)."""
    return str(exc).startswith("[federation] aggregator ") and " needs n >= " in str(exc)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "x"


LAST_ROUNDS = 3  # a cell's accuracy: the mean over the last LAST_ROUNDS rounds of each run, then over seeds


def _run_one(args: tuple[dict[str, Any], str | None]) -> dict[str, Any]:
    """One grid run. A run that raises is recorded (its error, traceback and the rounds it completed), not
    propagated: one broken cell must not abort hours of grid."""
    from simulations.runner import code_version, run_simulation

    cfg_dict, out = args
    try:
        r = run_simulation(cfg_dict, out, on_error="record")
    except Exception as exc:  # before the first round (e.g. the data partition): nothing ran
        import traceback

        return {"history": [], "stopped_reason": f"run failed before round 1: {type(exc).__name__}: "
                                                 f"{str(exc)[:300]}",
                "seconds": 0.0, "byzantine": [], "f_told": cfg_dict["federation"]["byzantine"],
                "error": {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()},
                "code_version": code_version(), "selection": []}
    return {"history": r.history, "stopped_reason": r.stopped_reason, "seconds": r.seconds,
            "byzantine": r.byzantine, "f_told": r.config.federation.byzantine, "error": r.error,
            "code_version": r.code_version, "selection": r.selection}


def run_grid(spec: GridSpec | dict[str, Any], out_dir: str | Path | None = None, verbose: bool = True
             ) -> dict[str, Any]:
    """Run every cell. ``workers`` processes (spawned, each limited to one torch/BLAS/OpenMP thread); with one
    worker the runs execute in this process, limited to one thread as well (restored afterwards). Every run's
    config says ``torch_threads = 1`` (unless the base sets it), so rerunning its config.toml reproduces it."""
    if isinstance(spec, dict):
        spec = GridSpec.from_dict(spec)
    from simulations.runner import limit_threads, restore_threads

    out = Path(out_dir or spec.base.out_dir or f"runs/{_slug(spec.base.name)}")
    out.mkdir(parents=True, exist_ok=True)
    cells = spec.runs()
    jobs = []
    for s, a, d, seed in cells:
        cfg = spec.config_for(s, a, d, seed)
        jobs.append((cfg.to_dict(), str(out / f"s{s}" / _slug(a.label) / _slug(d.label) / f"seed{seed}")))
    results: list[dict[str, Any]] = []
    saved = limit_threads(1)  # this process, and (environment) the workers it spawns
    try:
        if spec.workers > 1:
            ctx = multiprocessing.get_context("spawn")  # fresh interpreters read the thread limits at import
            with ProcessPoolExecutor(spec.workers, mp_context=ctx, initializer=_worker_init,
                                     initargs=(list(spec.base.plugins),)) as ex:
                for i, r in enumerate(ex.map(_run_one, jobs)):
                    results.append(r)
                    if verbose:
                        _report(cells[i], r)
        else:
            for i, job in enumerate(jobs):
                results.append(_run_one(job))
                if verbose:
                    _report(cells[i], results[-1])
    finally:
        restore_threads(saved)
    summary = summarize(spec, cells, results)
    (out / "grid.json").write_text(json.dumps(summary, indent=1, default=_default))
    write_tables(spec, summary, out)
    return summary


def _default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


def _worker_init(plugins: list[str]) -> None:
    from simulations.config import load_plugins
    from simulations.runner import limit_threads

    limit_threads(1)
    load_plugins(plugins)


def _report(cell: tuple[int, Axis, Axis, int], r: dict[str, Any]) -> None:
    s, a, d, seed = cell
    acc = r["history"][-1]["accuracy"] if r["history"] else math.nan
    note = f"  [{r['stopped_reason']}]" if r.get("error") or _stopped_early(r["stopped_reason"]) else ""
    print(f"s={s} {a.label:>14} × {d.label:<14} seed={seed}: final accuracy {100 * _num(acc):5.1f}% "
          f"({r['seconds']:.1f}s){note}", flush=True)


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def last_rounds_accuracy(history: list[dict[str, Any]], k: int = LAST_ROUNDS) -> float:
    """Mean test accuracy over the last ``k`` completed rounds (fewer if the run completed fewer)."""
    accs = [_num(x.get("accuracy")) for x in history[-k:]]
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
                              "final_accuracy": _num(h[-1]["accuracy"]) if h else math.nan,
                              "best_accuracy": max((_num(x["accuracy"]) for x in h), default=math.nan),
                              "rounds": len(h), "stopped_reason": r["stopped_reason"],
                              "stopped_early": len(h) < spec.base.rounds or bool(r.get("error")),
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
                entry["f_told"] = min(x["f_told"] for x in entry["runs"])
                entry["rounds_over_tolerance"] = sum(x["rounds_over_tolerance"] for x in entry["runs"])
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
    last round or failed (grid.json has the reason and any error)."""
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
            line.append(mark)
        out.append(line)
    return out


def cell_labels(summary: dict[str, Any], s: int) -> list[list[str]]:
    """Each cell as printed: the accuracy in % (one decimal, "–" if no round completed) and its marks."""
    m, _, _ = matrix(summary, s)
    marks = cell_marks(summary, s)
    return [[("–" if np.isnan(v) else f"{100 * v:.1f}") + mk for v, mk in zip(row, mrow, strict=True)]
            for row, mrow in zip(m, marks, strict=True)]


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
    for s in spec.group_sizes:
        m, rows, cols = matrix(summary, s)
        title = "no secure aggregation (groups of 1)" if s == 1 else f"secure aggregation in groups of {s}"
        parts.append(f"\n## {title}\n\n{markdown_table(summary, s)}\n\n{corruption_note(summary, s)}\n")
        if b.plots:
            plot_heatmap(m, rows, cols, f"{b.name}: accuracy (mean of the last {LAST_ROUNDS} rounds), {title}",
                         out / f"heatmap_s{s}.png", labels=cell_labels(summary, s))
    parts.append("\n† the defence was told a smaller f than the attackers present (its precondition over this many "
                 "groups allows no more). ‡ in some round more groups were corrupted than the f the defence was "
                 "told: no guarantee in that round. § a run of the cell stopped before its last round – a round "
                 f"failed more than max_round_retries = {b.max_round_retries} times in a row (e.g. too few groups "
                 "left for the rule's precondition when the attackers are absent), the federation stalled or ran "
                 "out of privacy budget, or the run raised an error; the accuracy is that of its last completed "
                 "rounds; grid.json has the reason and any error.\n")
    (out / "table.md").write_text("".join(parts))
    (out / "config.toml").write_text(b.to_toml() + _grid_toml(spec))


def _grid_toml(spec: GridSpec) -> str:
    from simulations.config import _toml_value

    def ax(items: list[Axis]) -> str:
        return "[" + ", ".join(f"{{label = {_toml_value(a.label)}, spec = {_toml_value(a.spec)}}}" for a in items) + "]"

    return (f"\n[grid]\nattacks = {ax(spec.attacks)}\ndefences = {ax(spec.defences)}\n"
            f"group_sizes = {_toml_value(spec.group_sizes)}\nseeds = {_toml_value(spec.seeds)}\n"
            f"workers = {spec.workers}\n")


def load_grid(path: str | Path) -> GridSpec:
    return GridSpec.from_dict(load_toml(path))


def _stopped_early(reason: str) -> bool:
    """The run ended before its last round (the engine raised, a round failed too often, the federation stalled or
    ran out of budget, the run raised): anything but the engine's "all N rounds done"."""
    return bool(reason) and not reason.startswith("all ")
