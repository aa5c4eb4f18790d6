"""The "must show" result suite of issue 12 (docs/simulation.md, "Result suite (issue 12)").

Two stages, each a set of grids (:mod:`simulations.grid`) run in one process pool:

- ``select``: candidate defences (FedAvg, median, trimmed mean, Krum, CC+bucketing+momentum and variants) on the
  four scenarios, groups of 1/3/5, without and with the strongest attacks, 3 seeds. Only the configurations the
  grouping planner accepts are run (a defence refused everywhere in a (scenario, m, β, s) is recorded with its risk,
  not run). Reports per defence its worst-case drop vs its own clean accuracy and its worst-case accuracy over the
  accepted cells, ranked "best in the worst case" – the default defence is chosen from it.
- ``tables``: the defence under test (``--defence SPEC``) on the four scenarios × clients per round 10/50 ×
  Byzantine 20 %/30 % × groups of 1/3/5 × every attack (the digits grid's, free-riding and Sybil), 3 seeds, with
  its clean reference (no attack). The cells the planner refuses run anyway, marked ¶ with the planner's risk
  (``refused_seeds``: with one seed only, said in every table). Plus the centralised reference: the same MLP on
  the honest clients' data (:mod:`simulations.centralised`).

Scenarios (``simulations/configs/suite_*.toml``): digits with Dirichlet α = 0.5, 1, 10 and FedProx
Synthetic(1, 1), 100 clients. f told to the defence = ⌈β·m⌉, the expected number of Byzantine clients per round
(lowered per cell where the rule's precondition over the groups cannot take it, marked †).

Outputs (``--out DIR``): per scenario ``SCENARIO/table.md`` (+ heatmaps), one grid folder per (m, β) or
(m, β, s) under it (``grid.json``, runs), ``summary.md`` and ``suite.json`` at the top. Progress on stderr.

    python -m simulations.results_suite select --out runs/suite-select --workers 2
    python -m simulations.results_suite tables --defence 'median' --out runs/suite-tables --workers 2
    python -m simulations.results_suite tables --quick --out /tmp/suite-quick      # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.federation.config import DEFAULT_AGGREGATOR
from simulations.config import apply_override, load_toml, parse_override
from simulations.grid import (
    GridSpec,
    PreparedGrid,
    cell_labels,
    execute,
    finish_grid,
    matrix,
    prepare_grid,
    risk_text,
)

CONFIGS = Path(__file__).resolve().parent / "configs"
SCENARIOS: dict[str, tuple[str, str]] = {  # key: (config file, title)
    "digits_a0.5": ("suite_digits_a05.toml", "digits, Dirichlet α = 0.5"),
    "digits_a1": ("suite_digits_a1.toml", "digits, Dirichlet α = 1"),
    "digits_a10": ("suite_digits_a10.toml", "digits, Dirichlet α = 10"),
    "synthetic": ("suite_synthetic.toml", "FedProx Synthetic(1, 1)"),
}
NONE, ABSENT = "none", "absent"
ATTACKS: tuple[tuple[str, str], ...] = (  # the digits grid's attacks, then free-riding and Sybil
    ("no attack", NONE), ("sign flip (×10)", "sign_flip(scale=10)"), ("label flip", "label_flip"),
    ("ALIE", "alie"), ("IPM (ε=10)", "ipm(eps=10)"), ("min-max", "minmax"), ("mimic", "mimic"),
    ("sign flip (×1)", "sign_flip(scale=1)"), ("IPM (ε=0.1)", "ipm(eps=0.1)"),
    ("attackers absent (reference)", ABSENT), ("free-rider", "free_ride"), ("Sybil", "sybil"))
SELECT_ATTACKS: tuple[tuple[str, str], ...] = (  # the attacks that hurt robust rules most in the digits grid,
    ("no attack", NONE), ("sign flip (×10)", "sign_flip(scale=10)"), ("IPM (ε=10)", "ipm(eps=10)"),  # and the two
    ("IPM (ε=0.1)", "ipm(eps=0.1)"), ("ALIE", "alie"), ("mimic", "mimic"),  # the first tables' worst cases were
    ("sign flip (×1)", "sign_flip(scale=1)"), ("label flip", "label_flip"))
CC = "clip(median)|bucket(2)|cc(tau=0.3, iters=3)|momentum(beta=0.9)"
CC_MOMENTUM = "clip(median)|cc(tau=0.3, iters=3)|momentum(beta=0.9)"
NNM_CC = "nnm|cc(tau=0.3, iters=3)|momentum(beta=0.9)"  # the default since the selection stage of 2026-12-01
CANDIDATES: tuple[tuple[str, str], ...] = (
    ("FedAvg", "mean"), ("median", "median"), ("trimmed mean", "trmean"), ("Krum", "krum"),
    ("CC+bucketing+momentum", CC), ("bucketing+trimmed mean", "bucket(2)|trmean"),
    ("CC+momentum (no bucketing)", CC_MOMENTUM), ("NNM+CC+momentum", NNM_CC))
GOAL_POINTS = 3.0  # the goal: within this many points of the defence's clean accuracy under every attack
POPULATION = 100


@dataclass
class Settings:
    """What a stage runs. :func:`stage_settings` gives the defaults of each stage and of ``--quick``."""

    stage: str
    scenarios: list[str]
    clients_per_round: list[int]
    fractions: list[float]
    group_sizes: list[int]
    seeds: list[int]
    rounds: int
    attacks: list[tuple[str, str]]
    defences: list[tuple[str, str]]
    workers: int = 2
    run_refused: bool = True  # tables: run the refused cells anyway (¶); select: only accepted cells run
    refused_seeds: list[int] | None = None  # seeds for the refused cells run anyway (None: every seed)
    centralised_epochs: int = 30
    extra: dict[str, Any] = field(default_factory=dict)  # --set overrides of the base configs: {"federation.lr": 0.1}


def stage_settings(stage: str, defence: str | None = None, quick: bool = False) -> Settings:
    """The defaults. ``tables``: the product's default defence (``coordinator.federation.config.DEFAULT_AGGREGATOR``, chosen
    from the ``select`` stage), 100 rounds (≈ 25 min on 2 workers, refused cells with one seed); ``select``: 100 rounds, accepted cells only. ``quick``: 3 rounds, one seed, two scenarios."""
    if stage == "tables":
        d = [(defence or DEFAULT_AGGREGATOR, defence or DEFAULT_AGGREGATOR)]
        s = Settings(stage, list(SCENARIOS), [10, 50], [0.2, 0.3], [1, 3, 5], [0, 1, 2], 100, list(ATTACKS), d,
                     refused_seeds=[0])
    elif stage == "select":
        s = Settings(stage, list(SCENARIOS), [10, 50], [0.2, 0.3], [1, 3, 5], [0, 1, 2], 100, list(SELECT_ATTACKS),
                     list(CANDIDATES), run_refused=False)
    else:
        raise ValueError(f"unknown stage {stage!r} (select, tables)")
    if quick:
        s = replace(s, scenarios=["digits_a1", "synthetic"], seeds=[0], rounds=3, group_sizes=[1, 3],
                    attacks=[a for a in s.attacks if a[1] in (NONE, "sign_flip(scale=10)", "alie")],
                    refused_seeds=[0] if s.refused_seeds else None, centralised_epochs=2)
    return s


# ── building the grids ───────────────────────────────────────────────────────────────────────────────────────
@dataclass
class Part:
    """One grid of the suite: a scenario at m clients per round with a Byzantine fraction β."""

    scenario: str
    m: int
    fraction: float
    grid: PreparedGrid | None  # None: select, every defence refused at this group size (nothing run)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # select: defences refused everywhere (not run)
    summary: dict[str, Any] | None = None  # grid.json, once run


def num_byzantine(fraction: float) -> int:
    return round(fraction * POPULATION)


def _parse_set(text: str) -> tuple[str, Any]:
    """``section.key=VALUE`` as ``simulate --set`` parses it, refusing the keys the suite sets itself."""
    key, value = parse_override(text)
    if key.split(".")[-1] in ("clients_per_round", "byzantine", "num_byzantine", "rounds", "name"):
        raise ValueError(f"--set {key}: the suite sets this key itself (use its own option)")
    return key, value


def f_told(fraction: float, m: int, defences: list[str] | tuple[str, ...] = ()) -> int:
    """f told to the defence: the expected number of Byzantine clients in a round, ⌈β·m⌉ – raised, when one of
    ``defences`` takes f (NNM, trimmed mean, Krum…), to the smallest f with which the grouping planner accepts
    groups of 1 (:func:`aggregation.planner.smallest_configured_f`): told only the expectation, such a rule is
    exceeded in about 4 rounds of 10 (the hypergeometric tail), which is not the rule's failure but the
    operator's. Rules that take no f are unaffected."""
    from aggregation import planner

    f = math.ceil(fraction * m - 1e-9)
    for d in defences:
        if planner.takes_f(d):
            need = planner.smallest_configured_f(m, 1, d, population=POPULATION, byzantine=num_byzantine(fraction))
            if need is not None:
                f = max(f, need)
    return f


def grid_spec(st: Settings, scenario: str, m: int, fraction: float, group_sizes: list[int],
              defences: list[tuple[str, str]], check: bool = True) -> GridSpec:
    """The grid of one (scenario, m, β): the scenario's base config with the suite's cells (``check``: every cell
    validated up front, as :meth:`GridSpec.from_dict` does; without it, cells are checked when asked for)."""
    data = load_toml(CONFIGS / SCENARIOS[scenario][0])
    data.update(rounds=st.rounds, name=f"{scenario} m={m} byz={num_byzantine(fraction)}")
    for key, value in st.extra.items():  # --set: before the suite's own cell keys, which it must control
        apply_override(data, key, value)
    data["federation"].update(clients_per_round=m, byzantine=f_told(fraction, m, [spec for _, spec in defences]))
    data["attack"].update(name=NONE, num_byzantine=num_byzantine(fraction))
    grid: dict[str, Any] = {"attacks": [{"label": a, "spec": s} for a, s in st.attacks],
                            "defences": [{"label": d, "spec": s} for d, s in defences],
                            "group_sizes": group_sizes, "seeds": st.seeds, "workers": st.workers,
                            "run_refused": st.run_refused}
    if st.refused_seeds:
        grid["refused_seeds"] = st.refused_seeds
    data["grid"] = grid
    if check:
        return GridSpec.from_dict(data)
    from simulations.config import SimulationConfig
    from simulations.grid import _axis

    base = SimulationConfig.from_dict({k: v for k, v in data.items() if k != "grid"})
    return GridSpec(base, _axis("attacks", grid["attacks"]), _axis("defences", grid["defences"]), list(group_sizes),
                    list(st.seeds), st.workers, True, st.run_refused, st.refused_seeds)


def _attacked_status(spec: GridSpec, s: int, defence_index: int) -> dict[str, Any]:
    """The planner's verdict on a defence's attacked cells at group size s (the same for every attack: only the
    Byzantine population matters); ``{"status": "cannot_run", "failure_probability": 1.0, "message": …}`` when the
    rule cannot run over that many groups for any f (e.g. Krum over 2 groups)."""
    from simulations.config import ConfigError

    attack = next(a for a in spec.attacks if a.spec != NONE)
    try:
        _, plan = spec.plan(spec.config_for(s, attack, spec.defences[defence_index], spec.seeds[0]))
    except ConfigError as exc:
        if "no f works" not in str(exc):
            raise
        return {"status": "cannot_run", "failure_probability": 1.0, "message": str(exc)}
    return plan


def build_parts(st: Settings, out: Path) -> list[Part]:
    """Every grid of the stage, prepared (configs checked, planner verdicts taken). ``tables``: one grid per
    (scenario, m, β) over the group sizes the defence can run at; ``select``: one grid per (scenario, m, β, s) over
    the defences the planner accepts there (refused ones are recorded with their risk, not run)."""
    parts = []
    for sc in st.scenarios:
        for m in st.clients_per_round:
            for frac in st.fractions:
                where = out / sc / f"m{m}_byz{num_byzantine(frac)}"
                full = grid_spec(st, sc, m, frac, st.group_sizes, st.defences, check=False)
                plans = {(s, k): _attacked_status(full, s, k) for s in st.group_sizes
                         for k in range(len(st.defences))}
                skip_status = ("cannot_run",) if st.stage == "tables" else ("cannot_run", "refused")
                skipped = [{"defence": st.defences[k][0], "s": s, **p} for (s, k), p in plans.items()
                           if p["status"] in skip_status]
                if st.stage == "tables":
                    sizes = [s for s in st.group_sizes if plans[(s, 0)]["status"] not in skip_status]
                    grid = (prepare_grid(grid_spec(st, sc, m, frac, sizes, st.defences), where, verbose=False)
                            if sizes else None)
                    parts.append(Part(sc, m, frac, grid, skipped))
                    continue
                for s in st.group_sizes:
                    keep = [d for k, d in enumerate(st.defences) if plans[(s, k)]["status"] not in skip_status]
                    mine = [x for x in skipped if x["s"] == s]
                    grid = (prepare_grid(grid_spec(st, sc, m, frac, [s], keep), where / f"s{s}", verbose=False)
                            if keep else None)
                    parts.append(Part(sc, m, frac, grid, mine))
    return parts


# ── running ────────────────────────────────────────────────────────────────────────────────────────────────────
def run_parts(parts: list[Part], workers: int) -> None:
    """All runs of all grids in one pool (the longest first), progress on stderr."""
    jobs: list[tuple[Part, int]] = [(p, i) for p in parts if p.grid for i in p.grid.todo()]
    cost = [p.m * p.grid.spec.base.rounds / max(1, p.grid.cells[i][0]) for p, i in jobs]
    order = sorted(range(len(jobs)), key=lambda k: -cost[k])
    jobs = [jobs[k] for k in order]
    t0 = time.monotonic()
    done = [0]

    def on_result(k: int, result: dict[str, Any]) -> None:
        part, i = jobs[k]
        r = part.grid.record(i, result)
        done[0] += 1
        s, a, d, seed = part.grid.cells[i]
        h = r["history"]
        acc = f"{100 * h[-1]['accuracy']:.1f}%" if h else "–"
        elapsed = time.monotonic() - t0
        eta = elapsed / done[0] * (len(jobs) - done[0])
        print(f"[{done[0]}/{len(jobs)} {elapsed:.0f}s, ~{eta:.0f}s left] {part.scenario} m={part.m} "
              f"byz={num_byzantine(part.fraction)} s={s} {a.label} × {d.label} seed={seed}: {acc} "
              f"({r['seconds']:.1f}s)", file=sys.stderr, flush=True)

    plugins = sorted({x for p in parts if p.grid for x in p.grid.spec.base.plugins})
    execute([part.grid.jobs[i] for part, i in jobs], workers, plugins, on_result)  # type: ignore[misc]


def _centralised_job(args: tuple[str, int, int, int]) -> dict[str, Any]:
    from simulations.centralised import train_centralised
    from simulations.config import SimulationConfig

    scenario, nb, seed, epochs = args
    data = load_toml(CONFIGS / SCENARIOS[scenario][0])
    cfg = SimulationConfig.from_dict({**data, "seed": seed})
    r = train_centralised(cfg, nb, epochs)
    return {"scenario": scenario, "seed": seed, "byzantine": nb, "accuracy": r.accuracy,
            **({"honest_accuracy": r.honest_accuracy} if r.honest_accuracy is not None else {}),
            "examples": r.examples,
            "honest_clients": len(r.honest_clients), "epochs": epochs}


def run_centralised(st: Settings, fraction: float = 0.3) -> dict[str, dict[str, Any]]:
    """The centralised reference of every scenario (honest data at ``fraction`` Byzantine), per seed, in a pool."""
    from concurrent.futures import ProcessPoolExecutor

    from simulations.grid import _worker_init

    jobs = [(sc, num_byzantine(fraction), seed, st.centralised_epochs) for sc in st.scenarios for seed in st.seeds]
    print(f"centralised references: {len(jobs)} trainings of {st.centralised_epochs} epochs", file=sys.stderr,
          flush=True)
    if st.workers > 1:
        import multiprocessing

        with ProcessPoolExecutor(st.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_init, initargs=([],)) as ex:
            results = list(ex.map(_centralised_job, jobs))
    else:
        results = [_centralised_job(j) for j in jobs]
    out: dict[str, dict[str, Any]] = {}
    for sc in st.scenarios:
        rs = [r for r in results if r["scenario"] == sc]
        out[sc] = {"accuracy": float(np.mean([r[goal_metric(rs)] for r in rs])), "runs": rs, "fraction": fraction,
                   "metric": goal_metric(rs)}
    return out


def goal_metric(entries: Any) -> str:
    """The accuracy the goal is measured on: ``honest_accuracy`` (the honest clients' own held-out data) where every
    entry has it – scenarios whose clients each have their own distribution (Synthetic), where no defence can learn
    the distributions of clients that never send an honest update – else ``accuracy`` (one shared test set)."""
    entries = list(entries)
    return "honest_accuracy" if entries and all("honest_accuracy" in e for e in entries) else "accuracy"


# ── rows: the planner's verdict and the defence's worst case per (scenario, m, β, s, defence) ─────────────────
@dataclass
class Row:
    scenario: str
    m: int
    fraction: float
    s: int
    defence: str
    status: str  # "ok" (accepted), "refused" (not run), "above_bound" (refused, run anyway: ¶)
    risk: float
    clean: float = math.nan  # accuracy without attack (mean over seeds)
    worst_accuracy: float = math.nan
    worst_attack: str = ""
    worst_drop: float = math.nan  # clean − worst attacked accuracy, in points of %
    mean_attacked: float = math.nan
    attacked: dict[str, float] = field(default_factory=dict)  # attack label → accuracy
    metric: str = "accuracy"  # the accuracy compared (goal_metric): "accuracy" or "honest_accuracy"

    @property
    def accepted(self) -> bool:
        return self.status == "ok"

    def violations(self) -> list[tuple[str, float]]:
        """The attacks costing more than GOAL_POINTS against the clean accuracy: (attack, drop in points)."""
        return [(a, 100 * (self.clean - acc)) for a, acc in self.attacked.items()
                if 100 * (self.clean - acc) > GOAL_POINTS]


def rows_of_grid(summary: dict[str, Any], scenario: str, m: int, fraction: float) -> list[Row]:
    """One :class:`Row` per (group size, defence) of a grid summary (``grid.json``). Attacked cells are every attack
    but "none" (the clean reference) and "absent" (a reference, not an attack)."""
    attacks = summary["attacks"]
    clean_label = next(a["label"] for a in attacks if a["spec"] == NONE)
    attacked = [a["label"] for a in attacks if a["spec"] not in (NONE, ABSENT)]
    rows = []
    for s in summary["group_sizes"]:
        t = summary["table"][str(s)]
        for d in summary["defences"]:
            dl = d["label"]
            plan = t[attacked[0]][dl].get("grouping_risk") or {}
            key = goal_metric(t[a][dl] for a in [clean_label, *attacked])
            row = Row(scenario, m, fraction, int(s), dl, plan.get("status", "ok"),
                      float(plan.get("failure_probability", 0.0)), clean=float(t[clean_label][dl][key]), metric=key)
            row.attacked = {a: float(t[a][dl][key]) for a in attacked if not math.isnan(float(t[a][dl][key]))}
            if row.attacked:
                row.worst_attack = min(row.attacked, key=lambda a: row.attacked[a])
                row.worst_accuracy = row.attacked[row.worst_attack]
                row.worst_drop = 100 * (row.clean - row.worst_accuracy)
                row.mean_attacked = float(np.mean(list(row.attacked.values())))
            rows.append(row)
    return rows


def skipped_rows(part: Part) -> list[Row]:
    """Select: the defences refused in a (scenario, m, β, s) and therefore not run."""
    return [Row(part.scenario, part.m, part.fraction, sk["s"], sk["defence"], sk["status"],
                float(sk["failure_probability"])) for sk in part.skipped]


# ── markdown ──────────────────────────────────────────────────────────────────────────────────────────────────
def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}"


def _pts(x: float) -> str:
    """A drop in points (positive: the attack cost accuracy)."""
    return "–" if math.isnan(x) else f"{x:.1f}"


def _esc(text: str) -> str:
    return text.replace("|", "\\|")


def verdict_label(row: Row) -> str:
    risk = risk_text(row.risk)
    return {"ok": f"accepts (risk {risk})", "refused": f"refuses¶ (risk {risk}), not run",
            "above_bound": f"refuses¶ (risk {risk}), run anyway",
            "cannot_run": "cannot run over this many groups (no f works), not run"}.get(row.status, row.status)


def verdict_table(rows: list[Row], with_defence: bool) -> str:
    """Per (scenario, m, β, s[, defence]): the planner's verdict, clean accuracy, worst attacked accuracy and drop."""
    head = ("| scenario | m | Byzantine | s | " + ("defence | " if with_defence else "")
            + "planner | clean % | worst under attack % (attack) | worst drop (points) |")
    lines = [head, "|---|---:|---:|---:|" + ("---|" if with_defence else "") + "---|---:|---|---:|"]
    for r in rows:
        worst = "–" if math.isnan(r.worst_accuracy) else f"{_pct(r.worst_accuracy)} ({r.worst_attack})"
        mark = "ʰ" if r.metric == "honest_accuracy" else ""
        lines.append(f"| {r.scenario}{mark} | {r.m} | {100 * r.fraction:.0f} % | {r.s} | "
                     + (f"{_esc(r.defence)} | " if with_defence else "")
                     + f"{verdict_label(r)} | {_pct(r.clean)} | {worst} | {_pts(r.worst_drop)} |")
    return "\n".join(lines)


def goal_section(rows: list[Row]) -> str:
    """Wherever the planner accepts, does the defence stay within GOAL_POINTS of its clean accuracy under every
    attack? Lists every violation."""
    accepted = [r for r in rows if r.accepted and r.attacked]
    out = [f"## Goal check: within {GOAL_POINTS:g} points of the clean accuracy under every attack, wherever the "
           "planner accepts\n"]
    if not accepted:
        out.append("The planner accepts **no** attacked configuration here: the goal is vacuous – every attacked "
                   "cell is refused (¶; the tables show the collapse the planner prevents).\n")
        return "\n".join(out)
    bad = [(r, a, d) for r in accepted for a, d in r.violations()]
    ok = sum(1 for r in accepted if not r.violations())
    out.append(f"{len(accepted)} accepted configurations (scenario × m × β × s × defence); the goal holds in {ok}, "
               f"fails in {len(accepted) - ok} ({len(bad)} attack cells more than {GOAL_POINTS:g} points below "
               "clean). Attacks counted: every attack but \"attackers absent\" (a reference).\n")
    if bad:
        out += ["| scenario | m | Byzantine | s | defence | attack | clean % | attacked % | drop (points) |",
                "|---|---:|---:|---:|---|---|---:|---:|---:|"]
        for r, a, d in sorted(bad, key=lambda x: -x[2]):
            out.append(f"| {r.scenario} | {r.m} | {100 * r.fraction:.0f} % | {r.s} | {_esc(r.defence)} | {a} | "
                       f"{_pct(r.clean)} | {_pct(r.attacked[a])} | {d:.1f} |")
    return "\n".join(out) + "\n"


def centralised_section(rows: list[Row], central: dict[str, dict[str, Any]], fraction: float = 0.3) -> str:
    """With 30 % Byzantine: the best worst-case accuracy of any accepted configuration vs the centralised model."""
    out = [f"## {100 * fraction:.0f} % Byzantine: best accepted configuration vs a centralised model on all honest "
           "data\n",
           "Per scenario, over the configurations (m, s, defence) the planner accepts, the one with the best "
           "worst-case accuracy over the attacks (its mean over attacks alongside), against the same MLP trained "
           "centrally on the union of the honest clients' training data (same partition and seeds, mean of the "
           "last 3 epochs; `simulations/centralised.py`).\n",
           "| scenario | best accepted configuration | worst case % | mean over attacks % | centralised % | "
           "worst case / centralised |", "|---|---|---:|---:|---:|---:|"]
    for sc, c in central.items():
        acc = [r for r in rows if r.scenario == sc and abs(r.fraction - fraction) < 1e-9 and r.accepted
               and r.attacked]
        if not acc:
            refused = [r for r in rows if r.scenario == sc and abs(r.fraction - fraction) < 1e-9]
            lowest = min((r.risk for r in refused), default=math.nan)
            out.append(f"| {sc} | none accepted (lowest risk {risk_text(lowest) if refused else '–'}) | – | – | "
                       f"{_pct(c['accuracy'])} | – |")
            continue
        best = max(acc, key=lambda r: r.worst_accuracy)
        out.append(f"| {sc} | m = {best.m}, s = {best.s}, {_esc(best.defence)} | {_pct(best.worst_accuracy)} "
                   f"({best.worst_attack}) | {_pct(best.mean_attacked)} | {_pct(c['accuracy'])} | "
                   f"{best.worst_accuracy / c['accuracy']:.2f} |")
    return "\n".join(out) + "\n"


def ranking_section(rows: list[Row]) -> str:
    """Select: per defence, the worst case over its accepted cells, ranked by worst-case accuracy."""
    defences = list(dict.fromkeys(r.defence for r in rows))
    stats = []
    for d in defences:
        mine = [r for r in rows if r.defence == d]
        acc = [r for r in mine if r.accepted and r.attacked]
        if acc:
            wa = min(acc, key=lambda r: r.worst_accuracy)
            wd = max(acc, key=lambda r: r.worst_drop)
            stats.append((d, len(acc), len(mine), wa.worst_accuracy, wa, wd.worst_drop, wd,
                          float(np.mean([r.clean for r in acc]))))
        else:
            stats.append((d, 0, len(mine), math.nan, None, math.nan, None, math.nan))
    stats.sort(key=lambda x: (x[1] == 0, -np.nan_to_num(x[3], nan=-1.0)))

    def where(r: Row | None) -> str:
        return "" if r is None else f" ({r.scenario}, m={r.m}, {100 * r.fraction:.0f} %, s={r.s}, {r.worst_attack})"

    out = ["## Defences ranked by worst-case accuracy over the configurations the planner accepts\n",
           "| rank | defence | accepted configurations | worst-case accuracy % (where) | worst-case drop vs own clean "
           "(points, where) | mean clean % (accepted) |", "|---:|---|---:|---|---|---:|"]
    for k, (d, n_acc, n, wa, war, wd, wdr, clean) in enumerate(stats, 1):
        out.append(f"| {k if n_acc else '–'} | {_esc(d)} | {n_acc} of {n} | {_pct(wa)}{where(war)} | "
                   f"{_pts(wd)}{where(wdr)} | {_pct(clean)} |")
    out.append("\nA defence with 0 accepted configurations is refused by the grouping planner in every "
               "(scenario, m, β, s) of the stage and cannot be the default for these settings. Worst cases over "
               "different accepted sets are not strictly comparable: see the per-scenario tables.")
    return "\n".join(out) + "\n"


def attack_table(part: Part) -> tuple[str, np.ndarray, list[str], list[str], list[list[str]]]:
    """Tables stage: rows = attacks, columns = group sizes, for the (single) defence under test."""
    summary = part.summary
    assert summary is not None
    s_list = [int(s) for s in summary["group_sizes"]]
    cols = [f"s = {s}" for s in s_list]
    labels = [cell_labels(summary, s) for s in s_list]
    values = [matrix(summary, s)[0] for s in s_list]
    rows = [a["label"] for a in summary["attacks"]]
    grid = [[labels[j][i][0] for j in range(len(s_list))] for i in range(len(rows))]
    m = np.array([[values[j][i][0] for j in range(len(s_list))] for i in range(len(rows))])
    lines = ["| attack \\ groups (accuracy %, mean of the last 3 rounds) | " + " | ".join(cols) + " |",
             "|---|" + "---:|" * len(cols)]
    lines += [f"| {r} | " + " | ".join(row) + " |" for r, row in zip(rows, grid, strict=True)]
    return "\n".join(lines), m, rows, cols, grid


def honest_table(part: Part) -> str | None:
    """Tables stage, scenarios with per-client test data: the same cells on the honest clients' own test data
    (the accuracy the goal uses there, :func:`goal_metric`); None where runs have no such metric."""
    summary = part.summary
    assert summary is not None
    s_list = [str(s) for s in summary["group_sizes"]]
    dl = summary["defences"][0]["label"]
    cells = [[summary["table"][s][a["label"]][dl] for s in s_list] for a in summary["attacks"]]
    if goal_metric(c for row in cells for c in row) != "honest_accuracy":
        return None
    lines = ["| attack \\ groups (accuracy % on the honest clients' test data, mean of the last 3 rounds) | "
             + " | ".join(f"s = {s}" for s in s_list) + " |", "|---|" + "---:|" * len(s_list)]
    lines += [f"| {a['label']} | " + " | ".join(_pct(c["honest_accuracy"]) for c in row) + " |"
              for a, row in zip(summary["attacks"], cells, strict=True)]
    return "\n".join(lines)


def scenario_markdown(st: Settings, scenario: str, parts: list[Part], rows: list[Row], out: Path,
                      version: str) -> str:
    """A scenario's table.md (and heatmaps, tables stage)."""
    from simulations.plots import plot_heatmap

    title = SCENARIOS[scenario][1]
    seeds = (f"seeds {st.seeds}" + (f"; cells the planner refuses (¶) were run with seed(s) {st.refused_seeds} only"
                                    if st.refused_seeds and st.run_refused else ""))
    text = [f"# {title} – {st.stage}\n",
            f"{POPULATION} clients, {st.rounds} rounds, cell = mean test accuracy of the last 3 rounds averaged over "
            f"{seeds}; f told = ⌈β·m⌉ (raised for rules that take f to the smallest f the planner accepts with groups of 1); code {version}. Config: `simulations/configs/{SCENARIOS[scenario][0]}`; "
            "each grid's folder has `grid.json` (every run) and `table.md` (marks † ‡ § ¶ explained).\n"]
    if st.stage == "tables":
        for p in parts:
            if p.summary is None:
                continue
            table, m, r_labels, cols, grid = attack_table(p)
            name = f"m{p.m}_byz{num_byzantine(p.fraction)}"
            text.append(f"\n## {p.m} clients per round, {100 * p.fraction:.0f} % Byzantine "
                        f"({num_byzantine(p.fraction)} of {POPULATION}), f told = "
                        f"{f_told(p.fraction, p.m, [spec for _, spec in st.defences])} – "
                        f"`{st.defences[0][1]}`\n\n{table}\n\n![heatmap]({name}.png)\n")
            honest = honest_table(p)
            if honest is not None:
                text.append(f"\nOn the honest clients' own held-out data (what the goal compares here, "
                            f"`honest_accuracy`):\n\n{honest}\n")
            for sk in p.skipped:
                text.append(f"\nGroups of {sk['s']}: the defence cannot run ({sk['message']}).\n")
            plot_heatmap(m, r_labels, cols, f"{title}: m = {p.m}, {100 * p.fraction:.0f} % Byzantine",
                         out / f"{name}.png", labels=[[c.replace(" (risk", "\n(risk") for c in row] for row in grid])
    text.append("\n## Planner verdict and worst case per configuration\n")
    text.append(verdict_table(rows, with_defence=st.stage == "select"))
    text.append("\n\n† the defence was told a smaller f than ⌈β·m⌉ (its precondition over this many groups allows no "
                "more). ‡ in some round more groups were corrupted than the f told. § a run stopped before its last "
                "round or raised (grid.json has the reason). ¶ the grouping planner (aggregation/planner.py, as `serve` uses it) refuses the configuration: "
                "the per-round probability that more groups are corrupted than the rule tolerates (risk shown, "
                "exact for the Byzantine clients among 100) exceeds 0.01. Drops are clean − attacked accuracy; "
                "\"attackers absent\" is a reference, not counted as an attack. ʰ clean, worst and drop are measured "
                "on the honest clients' own held-out data (`honest_accuracy`, docs/simulation.md): every client of "
                "this scenario has its own distribution, and no defence can learn those of clients that never send "
                "an honest update.\n")
    return "".join(text)


# ── the stage ─────────────────────────────────────────────────────────────────────────────────────────────────
def check_version(allow_dirty: bool, quick: bool) -> str:
    """The code version; refuses a +dirty tree for a real run unless allowed (warns otherwise)."""
    from simulations.runner import code_state

    version, changes = code_state()
    if version.endswith("+dirty"):
        msg = (f"code {version}: uncommitted changes to {len(changes)} tracked file(s) ({', '.join(changes[:5])}"
               f"{', …' if len(changes) > 5 else ''}); results are not reproducible from a commit")
        if not (allow_dirty or quick):
            raise SystemExit(f"results_suite: {msg}. Commit first, or pass --allow-dirty for a trial run.")
        print(f"warning: {msg}", file=sys.stderr, flush=True)
    return version


def run_stage(st: Settings, out: Path, version: str) -> dict[str, Any]:
    """Build, run and summarize every grid of the stage; write the tables and summary.md."""
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    parts = build_parts(st, out)
    n = sum(len(p.grid.todo()) for p in parts if p.grid)
    print(f"results_suite {st.stage}: {len(parts)} grids, {n} runs, {st.workers} workers, code {version}",
          file=sys.stderr, flush=True)
    run_parts(parts, st.workers)
    seconds_runs = time.monotonic() - t0
    rows: list[Row] = []
    for p in parts:
        if p.grid is not None:
            p.summary = finish_grid(p.grid)
            rows += rows_of_grid(p.summary, p.scenario, p.m, p.fraction)
        rows += skipped_rows(p)
    rows.sort(key=lambda r: (st.scenarios.index(r.scenario), r.m, r.fraction, r.s,
                             [d for d, _ in st.defences].index(r.defence)))
    central = run_centralised(st) if st.stage == "tables" else {}
    versions = sorted({p.summary["code_version"] for p in parts if p.summary})
    version = versions[0] if len(versions) == 1 else "mixed: " + ", ".join(versions) if versions else version
    for sc in st.scenarios:
        mine = [p for p in parts if p.scenario == sc]
        (out / sc).mkdir(parents=True, exist_ok=True)
        (out / sc / "table.md").write_text(scenario_markdown(st, sc, mine, [r for r in rows if r.scenario == sc],
                                                             out / sc, version))
    seconds = time.monotonic() - t0
    (out / "summary.md").write_text(summary_markdown(st, rows, central, version, n, seconds))
    result = {"stage": st.stage, "code_version": version, "settings": asdict(st), "runs": n,
              "seconds": seconds, "seconds_runs": seconds_runs, "rows": [asdict(r) for r in rows],
              "centralised": central}
    (out / "suite.json").write_text(json.dumps(result, indent=1, default=float))
    print(f"results_suite {st.stage}: done in {seconds:.0f}s ({n} runs); {out / 'summary.md'}", file=sys.stderr)
    return result


def summary_markdown(st: Settings, rows: list[Row], central: dict[str, dict[str, Any]], version: str, runs: int,
                     seconds: float) -> str:
    dirty = (" **Not reproducible from one commit** (uncommitted changes or several code versions)."
             if "+dirty" in version or version.startswith("mixed") else "")
    defs = ", ".join(f"{_esc(d)} = `{s}`" for d, s in st.defences)
    head = [f"# Result suite (issue 12): {st.stage}\n",
            f"Code {version}.{dirty} Scenarios: {', '.join(SCENARIOS[s][1] for s in st.scenarios)}; "
            f"{POPULATION} clients; clients per round {st.clients_per_round}; Byzantine "
            f"{', '.join(f'{100 * f:.0f} %' for f in st.fractions)}; groups of {st.group_sizes}; {st.rounds} rounds; "
            f"seeds {st.seeds}"
            + (f" (cells the planner refuses, run anyway ¶: seed(s) {st.refused_seeds} only)"
               if st.refused_seeds and st.run_refused else "")
            + (f"; base-config overrides (--set): {', '.join(f'{k} = {v!r}' for k, v in st.extra.items())}"
               if st.extra else "")
            + f"; attacks: {', '.join(a for a, _ in st.attacks)}; defence(s): {defs}. Cell accuracy = mean test "
            f"accuracy of the last 3 rounds, averaged over seeds; scenarios marked ʰ (per-client test data) are compared "
            f"on the "
            f"honest clients' own held-out data (`honest_accuracy`). {runs} runs in {seconds / 60:.1f} min with "
            f"{st.workers} workers. Per-scenario tables: "
            + ", ".join(f"[{s}]({s}/table.md)" for s in st.scenarios) + ".\n"]
    if st.stage == "select":
        return "\n".join([*head, ranking_section(rows), goal_section(rows),
                          "## Planner verdict and worst case per configuration\n",
                          verdict_table(rows, with_defence=True)]) + "\n"
    return "\n".join([*head, "## Planner verdict and worst drop per configuration\n",
                      verdict_table(rows, with_defence=False), "", goal_section(rows),
                      centralised_section(rows, central)]) + "\n"


def parse_args(argv: list[str] | None = None) -> tuple[Settings, Path, bool, bool]:
    p = argparse.ArgumentParser(prog="python -m simulations.results_suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("select", "tables"))
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--defence", help="tables: the defence under test, a pipeline spec (default: the product's, "
                   f"{DEFAULT_AGGREGATOR!r})")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2)")
    p.add_argument("--rounds", type=int, help="rounds per run (default 100)")
    p.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS))
    p.add_argument("--clients-per-round", type=int, nargs="+", help="default 10 50")
    p.add_argument("--group-sizes", type=int, nargs="+", help="default 1 3 5")
    p.add_argument("--fractions", type=float, nargs="+", help="Byzantine fractions of the population (default 0.2 0.3)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base-config key of every scenario, e.g. federation.server_lr=2 (TOML value)")
    p.add_argument("--all-seeds-refused", action="store_true",
                   help="tables: run the refused cells with every seed (default: the first seed only)")
    p.add_argument("--centralised-epochs", type=int)
    p.add_argument("--quick", action="store_true", help="a smoke run: 3 rounds, 1 seed, 2 scenarios, 3 attacks")
    p.add_argument("--allow-dirty", action="store_true", help="run from a tree with uncommitted changes (a trial)")
    a = p.parse_args(argv)
    if a.fractions and not all(0 < f < 1 for f in a.fractions):
        p.error(f"--fractions must be in (0, 1), got {a.fractions}")
    st = stage_settings(a.stage, a.defence, a.quick)
    over: dict[str, Any] = {"workers": a.workers}
    for key, value in (("seeds", a.seeds), ("rounds", a.rounds), ("scenarios", a.scenarios),
                       ("clients_per_round", a.clients_per_round), ("group_sizes", a.group_sizes),
                       ("fractions", a.fractions), ("centralised_epochs", a.centralised_epochs)):
        if value is not None:
            over[key] = value
    try:
        over["extra"] = dict(_parse_set(x) for x in a.set)
    except ValueError as exc:
        p.error(str(exc))
    st = replace(st, **over)
    if a.all_seeds_refused or (st.refused_seeds and not set(st.refused_seeds) <= set(st.seeds)):
        st = replace(st, refused_seeds=None if a.all_seeds_refused else st.seeds[:1])
    return st, Path(a.out), a.allow_dirty, a.quick


def main(argv: list[str] | None = None) -> int:
    st, out, allow_dirty, quick = parse_args(argv)
    version = check_version(allow_dirty, quick)
    run_stage(st, out, version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
