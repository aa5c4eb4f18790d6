"""Meaningful ε at population scale (issue 16, item 3): 10,000 clients, 1,000 per round in secure groups, with the
product's privacy and robustness defaults, and every client's ε against the coordinator ≤ 8 at δ = 10⁻⁵ < 1/N.

Distributed DP buys a small ε only with many contributors per released sum: a group sum of s members carries noise
z·C (z = the noise multiplier, C = the round's clip), so a group *mean* carries z·C/s – larger groups need less
noise per client for the same accuracy – and ε grows with the number of times a client takes part. With N = 10⁴
and m = 10³ a client takes part in about one round in ten, and the engine's per-client accountant (no amplification
by subsampling: the coordinator knows whom it selected) charges it one Gaussian mechanism per participation.

Every run is the simulation harness's direct mode (bit-identical to the engine mode; docs/simulation.md) with
``FederationConfig``'s defaults for everything the study does not name: the default defence
(``nnm|cc(tau=0.3, iters=3)|momentum(beta=0.9)``), adaptive clipping to the median update norm (the clipped
indicator inside the secure-aggregation vector), trust-weighted selection, the SecAgg+ threshold (two-thirds,
1 colluder) and the ε budget enforced per client and per participation (``epsilon = 8``: the engine never selects a
client whose ε after one more round would exceed it). What the study chooses: the group size s, the noise
multiplier z, the rounds, the initial clip (the ceiling of adaptive clipping), local training and the server step.

Tasks (``TASKS``): digits (1,797 images: each of the 10,000 clients draws 20 training images *with replacement*,
class proportions ~ Dirichlet(1) – ``[data] partition = "resample"``; so one image sits in ~150 clients' data: the
guarantee is per client, whatever its records, and says nothing about a single image) and FedProx's Synthetic-IID
(one labelling function, 20–60 examples per client; the non-IID Synthetic(α, β) gives each of the 10,000 clients
its own labelling function, which no global model fits: a centralised MLP reaches 22 %).

Per configuration the study runs the private federation and its non-private reference (the same config with
z = 0, which needs no budget) and records accuracy (mean test accuracy of the last 3 rounds), every client's ε
(max, median), the participations, client updates per second and wall time. ``--engine-rounds R`` also runs the
chosen configuration through the real engine (``mode = "engine"``: ClientSessions, Ed25519, SecAgg+ in groups of s)
for R rounds at full participation (N = m = 1,000: must equal the direct mode bit for bit), and
``--engine-population-rounds`` at the population (N = 10,000: the engine starts a round with the first m ready
clients, so its selection differs – compared by its metrics and speed).

    python -m simulations.population_study --out docs/results/population [--workers 2] [--engine-rounds 2]
        [--engine-population-rounds 1]
    python -m simulations.population_study --quick --out /tmp/population-quick     # N = 200, m = 40, 2 rounds
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

POPULATION = 10_000  # N
PER_ROUND = 1_000  # m
DELTA = 1e-5  # < 1/N = 1e-4
BUDGET = 8.0  # ε per client against the coordinator, enforced by the engine
SEED = 0

# The two tasks: data and local training / server step (everything else: FederationConfig's defaults).
TASKS: dict[str, dict[str, Any]] = {
    "digits": {
        "label": "digits, resampled (20 images per client, Dirichlet(1) classes)",
        "rounds": 30,
        "data": {"dataset": "digits", "partition": "resample", "resample_size": 20, "alpha": 1.0},
        "federation": {"local_epochs": 2, "batch_size": 16, "lr": 0.3, "server_lr": 2.0, "l2_clip": 1.0},
    },
    "synthetic": {
        "label": "FedProx Synthetic-IID (20–60 examples per client)",
        "rounds": 60,
        "data": {"dataset": "synthetic", "synthetic_iid": True, "synthetic_alpha": 0.0, "synthetic_beta": 0.0,
                 "synthetic_samples": [20, 60]},
        "federation": {"local_epochs": 2, "batch_size": 16, "lr": 0.3, "server_lr": 2.0, "l2_clip": 1.0},
    },
}
GROUP_SIZE = 100  # the study's main group size: 10 groups of 100 per round
NOISE = {"digits": (2.0, 3.0, 5.0, 8.0), "synthetic": (2.0, 3.0, 4.0, 6.0, 8.0)}  # z at GROUP_SIZE: accuracy vs ε
# few large groups vs many small: other group sizes at one z per task, and the largest z with one group of 1,000
OTHER_GROUP_SIZES = (10, 1000)
COMPARE_NOISE = {"digits": 3.0, "synthetic": 4.0}
LARGE_GROUP_NOISE = 8.0
ENGINE_CHECK = ("digits", 100, 3.0)  # (task, s, z): the configuration the engine mode runs


@dataclass(frozen=True)
class PopulationRun:
    """One run of the study: a task and its (s, z); z = 0 is the non-private reference."""

    task: str
    group_size: int
    noise: float
    num_clients: int = POPULATION
    clients_per_round: int = PER_ROUND
    rounds: int = 0  # 0: the task's
    mode: str = "direct"
    seed: int = SEED

    @property
    def private(self) -> bool:
        return self.noise > 0

    @property
    def label(self) -> str:
        z = f"z={self.noise:g}" if self.private else "non-private"
        extra = f" N={self.num_clients} m={self.clients_per_round}" if (self.num_clients, self.clients_per_round) != (
            POPULATION, PER_ROUND) else ""
        mode = f" [{self.mode}]" if self.mode != "direct" else ""
        return f"{self.task} s={self.group_size} {z}{extra}{mode}"

    def reference(self) -> PopulationRun:
        return replace(self, noise=0.0)

    def total_rounds(self) -> int:
        return self.rounds or int(TASKS[self.task]["rounds"])


def build_config(run: PopulationRun) -> dict[str, Any]:
    """The simulation config (a dict for :func:`simulations.run_simulation`) of one run: the task's data, local
    training and server step, N, m, s, z, the budget and δ; every other [federation] key is FederationConfig's
    default (the default defence, adaptive clipping, trust-weighted selection, SecAgg+ thresholds)."""
    task = TASKS[run.task]
    fed = {**copy.deepcopy(task["federation"]), "clients_per_round": run.clients_per_round,
           "group_size": run.group_size, "noise_multiplier": run.noise, "delta": DELTA,
           # the budget is enforced per client and per participation (Engine.within_budget); without noise
           # there is no ε to bound
           "epsilon": BUDGET if run.private else "inf"}
    return {"name": f"population-{run.task}-s{run.group_size}-z{run.noise:g}-n{run.num_clients}-{run.mode}",
            "seed": run.seed, "rounds": run.total_rounds(), "mode": run.mode, "plots": False, "torch_threads": 1,
            "data": {**copy.deepcopy(task["data"]), "num_clients": run.num_clients}, "model": {"hidden": [32]},
            "federation": fed}


def study_runs(quick: bool = False) -> list[PopulationRun]:
    """Every run of the study (private runs and the non-private reference of each (task, s)); ``quick``: a
    seconds-long version (N = 200, m = 40, groups of 10, 2 rounds, one z per task)."""
    if quick:
        runs = [PopulationRun(t, 10, z, 200, 40, 2) for t in TASKS for z in (0.0, NOISE[t][-1])]
        return runs
    runs = [PopulationRun(t, GROUP_SIZE, z) for t in TASKS for z in NOISE[t]]
    runs += [PopulationRun(t, s, COMPARE_NOISE[t]) for t in TASKS for s in OTHER_GROUP_SIZES]
    runs += [PopulationRun(t, max(OTHER_GROUP_SIZES), LARGE_GROUP_NOISE) for t in TASKS]
    refs = list(dict.fromkeys(r.reference() for r in runs))
    return refs + runs


def _progress(run: PopulationRun, t0: float, every: int) -> Any:
    total = run.total_rounds()

    def report(m: dict[str, Any]) -> None:
        r = int(m["round"])
        if r % every == 0 or r == total:
            eps = m.get("epsilon")
            e = f", ε max {eps:.2f}" if eps is not None else ""
            print(f"  [{run.label}] round {r}/{total}: accuracy {100 * m['accuracy']:.1f} %{e} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return report


def run_one(run: PopulationRun, every: int = 10) -> dict[str, Any]:
    """One run: the config, accuracy (last 3 rounds' mean, per-round curve), every client's ε summary, speed."""
    import logging

    logging.getLogger("simulations").setLevel(logging.ERROR)
    from simulations.config import SimulationConfig
    from simulations.runner import Simulation

    cfg = build_config(run)
    t0 = time.perf_counter()
    sim = Simulation(SimulationConfig.from_dict(cfg))
    built = time.perf_counter() - t0
    res = sim.run(on_error="record", on_round=_progress(run, t0, every))
    acc = [float(h["accuracy"]) for h in res.history]
    return {"run": asdict(run), "label": run.label, "config": cfg, "code_version": res.code_version,
            "accuracy": float(np.mean(acc[-3:])) if acc else math.nan, "final_accuracy": acc[-1] if acc else math.nan,
            "curve": acc, "epsilon_curve": [h.get("epsilon") for h in res.history],
            "clip_final": float(res.history[-1]["clip"]) if res.history else math.nan,
            "privacy": res.extra.get("privacy"), "rounds_done": len(acc), "stopped_reason": res.stopped_reason,
            "error": res.error and res.error["message"], "client_updates": res.client_updates,
            "build_seconds": built, "run_seconds": res.seconds,
            "updates_per_second": res.client_updates / res.seconds if res.seconds > 0 else math.nan,
            "history": res.history, "threads": res.threads}


def engine_runs(rounds: int, population_rounds: int = 0, quick: bool = False) -> list[PopulationRun]:
    """The engine-mode check of a chosen configuration (:data:`ENGINE_CHECK`) through the real engine
    (ClientSessions, SecAgg+ in groups of s) and the same in the direct mode: ``rounds`` rounds at full
    participation (N = m = 10³: the two must agree bit for bit) and ``population_rounds`` at the population
    (N = 10⁴, m = 10³: the engine starts a round with the first m ready clients, docs/simulation.md, so its
    selection differs – compared by its figures and speed). ``quick``: N = m = 20 in groups of 10 only."""
    task, s, z = ENGINE_CHECK
    if quick:
        return [PopulationRun(task, 10, z, 20, 20, rounds, mode) for mode in ("engine", "direct")] if rounds else []
    sizes = [(PER_ROUND, PER_ROUND, rounds), (POPULATION, PER_ROUND, population_rounds)]
    return [PopulationRun(task, s, z, n, m, r, mode) for n, m, r in sizes if r for mode in ("engine", "direct")]


ENGINE_KEYS = ("accuracy", "loss", "epsilon", "groups", "groups_ok", "survivors", "clip")


def engine_check(runs: list[PopulationRun], results: dict[PopulationRun, dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs of engine/direct runs of :func:`engine_runs`: their per-round figures, whether they are identical
    (:data:`ENGINE_KEYS` of every round), and their speed."""
    out = []
    for r in runs:
        if r.mode != "engine":
            continue
        e, d = results[r], results[replace(r, mode="direct")]
        same = len(e["history"]) == len(d["history"]) and all(
            a.get(k) == b.get(k) for a, b in zip(e["history"], d["history"], strict=True) for k in ENGINE_KEYS)
        out.append({"task": r.task, "group_size": r.group_size, "noise": r.noise, "rounds": r.total_rounds(),
                    "num_clients": r.num_clients, "clients_per_round": r.clients_per_round,
                    "full_participation": r.num_clients == r.clients_per_round, "identical": same,
                    "compared": list(ENGINE_KEYS),
                    **{mode: {k: v for k, v in res.items() if k not in ("config", "threads")}
                       for mode, res in (("engine", e), ("direct", d))}})
    return out


def check_version(allow_dirty: bool, quick: bool) -> str:
    """The code version; a real run refuses a tree with uncommitted changes to tracked files (``+dirty``: the
    results could not be traced to a commit) unless ``allow_dirty`` (a trial) – as the result suite does."""
    from simulations.runner import code_state

    version, changes = code_state()
    if version.endswith("+dirty"):
        msg = f"uncommitted changes to tracked files ({', '.join(changes[:5])}{' …' if len(changes) > 5 else ''})"
        if not (allow_dirty or quick):
            raise SystemExit(f"population_study: {msg}. Commit first, or pass --allow-dirty for a trial run.")
        print(f"population_study: warning: {msg}: the results are not reproducible from a commit", file=sys.stderr)
    return version


def run_study(out: Path, *, workers: int = 2, quick: bool = False, engine_rounds: int = 0,
              engine_population_rounds: int = 0, version: str = "", runs: list[PopulationRun] | None = None
              ) -> dict[str, Any]:
    """Run every configuration and the engine-mode check (:func:`engine_runs`) in ``workers`` processes of one
    thread each, and write ``results.json``, ``table.md``, ``table.csv`` and ``accuracy_vs_epsilon.png`` to
    ``out``."""
    runs = runs if runs is not None else study_runs(quick)
    checks = engine_runs(engine_rounds, engine_population_rounds, quick)
    jobs = list(dict.fromkeys(runs + checks))
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    print(f"population study: {len(jobs)} runs ({len(checks)} of them the engine-mode check) on {workers} worker(s) "
          f"→ {out}", file=sys.stderr, flush=True)
    # longest first (the engine mode, private runs, the longer task), so the pool's last job is a short one
    order = sorted(jobs, key=lambda r: (r.mode != "engine", -r.total_rounds(), -r.private, -r.group_size))
    results: dict[PopulationRun, dict[str, Any]] = {}

    def done(r: PopulationRun, res: dict[str, Any]) -> None:
        results[r] = res
        p = res["privacy"] or {}
        eps = f", ε max {p['epsilon_max']:.2f} / median {p['epsilon_median']:.2f}" if p else ""
        print(f"[{len(results)}/{len(jobs)} done, {time.perf_counter() - t0:.0f} s] {r.label}: accuracy "
              f"{100 * res['accuracy']:.1f} %{eps}, {res['updates_per_second']:,.0f} updates/s, "
              f"{res['run_seconds']:.0f} s{' – ' + res['stopped_reason'] if res['rounds_done'] < r.total_rounds() else ''}",
              file=sys.stderr, flush=True)

    if workers > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            futures = {ex.submit(run_one, r): r for r in order}
            for f in as_completed(futures):
                done(futures[f], f.result())
    else:
        for r in order:
            done(r, run_one(r))
    engine = engine_check(checks, results)
    rows = [_row(r, results) for r in runs]
    versions = sorted({res["code_version"] for res in results.values()})
    result = {"code_version": version or (versions[0] if len(versions) == 1 else "mixed: " + ", ".join(versions)),
              "quick": quick, "population": POPULATION, "per_round": PER_ROUND, "delta": DELTA, "budget": BUDGET,
              "seed": SEED, "tasks": {t: {k: v for k, v in TASKS[t].items()} for t in TASKS},
              "seconds": time.perf_counter() - t0, "workers": workers, "cpus": os.cpu_count(),
              "load_average": {"start": load0, "end": os.getloadavg()},
              "rows": rows, "engine_check": engine,
              "runs": [results[r] for r in runs]}
    out.mkdir(parents=True, exist_ok=True)
    from simulations.runner import jsonable

    (out / "results.json").write_text(json.dumps(jsonable(result), indent=1))
    _write_csv(rows, out / "table.csv")
    (out / "table.md").write_text(table(result))
    plot(result, out / "accuracy_vs_epsilon.png")
    return result


def _row(r: PopulationRun, results: dict[PopulationRun, dict[str, Any]]) -> dict[str, Any]:
    res = results[r]
    ref = results.get(r.reference())
    p = res["privacy"] or {}
    fed = res["config"]["federation"]
    row = {"task": r.task, "N": r.num_clients, "m": r.clients_per_round, "s": r.group_size,
           "groups": r.clients_per_round // r.group_size, "z": r.noise, "rounds": r.total_rounds(),
           "rounds_done": res["rounds_done"], "clip_initial": fed["l2_clip"], "clip_final": res["clip_final"],
           "server_lr": fed["server_lr"], "lr": fed["lr"], "local_epochs": fed["local_epochs"],
           "accuracy": res["accuracy"], "accuracy_nonprivate": ref["accuracy"] if ref else math.nan,
           "epsilon_max": p.get("epsilon_max", math.nan), "epsilon_median": p.get("epsilon_median", math.nan),
           "participations_max": p.get("participations_max", 0), "participations_median": p.get(
               "participations_median", math.nan), "delta": DELTA,
           "updates_per_second": res["updates_per_second"], "seconds": res["run_seconds"] + res["build_seconds"],
           "stopped_reason": res["stopped_reason"]}
    # accuracy change against the non-private reference, in points (negative: the private run is worse)
    row["change_points"] = 100 * (row["accuracy"] - row["accuracy_nonprivate"]) if r.private else math.nan
    row["meets_goal"] = bool(r.private and row["epsilon_max"] <= BUDGET and row["change_points"] >= -3.0
                             and res["rounds_done"] == r.total_rounds())
    return row


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def table(result: dict[str, Any]) -> str:
    n, m = result["population"], result["per_round"]
    lines = [f"# Population scale: N = {n:,} clients, m = {m:,} per round, ε ≤ {result['budget']:g} per client "
             f"at δ = {result['delta']:g}", "",
             f"Code {result['code_version']}{' (QUICK: a smoke run, not the study)' if result['quick'] else ''}. "
             f"Produced by `python -m simulations.population_study` in {result['seconds'] / 60:.1f} min on "
             f"{result['workers']} worker(s), {result['cpus']} CPUs (load average {result['load_average']['start'][0]:.1f}"
             f" at the start). Direct mode (bit-identical to the engine mode), seed {result['seed']}; "
             "the product's defaults for everything not listed (the default defence `nnm|cc(tau=0.3, iters=3)|"
             "momentum(beta=0.9)`, adaptive clipping to the median norm with the clip below as its initial value and "
             "ceiling, trust-weighted selection, SecAgg+ threshold two-thirds with 1 colluder, the ε budget enforced "
             "per client per participation). Accuracy: mean test accuracy of the last 3 rounds; the non-private "
             "reference is the same configuration with z = 0. ε: every client's ε against the coordinator (the "
             "engine's per-participation accountant), max and median over all N clients (never selected: 0). "
             "✓: max ε ≤ budget and within 3 points of the reference.", ""]
    for task in result["tasks"]:
        lines += [f"## {task}: {result['tasks'][task]['label']}", "",
                  "| s (groups) | z | rounds | clip (initial → final) | server lr | accuracy private % | "
                  "non-private % | change (points) | ε max | ε median | participations max / median | "
                  "updates/s | wall s | |",
                  "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
        for row in result["rows"]:
            if row["task"] != task:
                continue
            private = row["z"] > 0
            stop = "" if row["rounds_done"] == row["rounds"] else f" (stopped at {row['rounds_done']})"
            lines.append(
                f"| {row['s']} ({row['groups']}) | {row['z']:g} | {row['rounds']}{stop} | {row['clip_initial']:g} → "
                f"{row['clip_final']:.3f} | {row['server_lr']:g} | "
                + (f"{100 * row['accuracy']:.1f} | {100 * row['accuracy_nonprivate']:.1f} | {row['change_points']:+.1f}"
                   .replace("-", "−") if private else f"– | {100 * row['accuracy']:.1f} | –")
                + (f" | {row['epsilon_max']:.2f} | {row['epsilon_median']:.2f} | {row['participations_max']} / "
                   f"{row['participations_median']:g}" if private else " | – | – | –")
                + f" | {row['updates_per_second']:,.0f} | {row['seconds']:.0f} | {'✓' if row['meets_goal'] else ''} |")
        lines.append("")
    checks = result.get("engine_check", [])
    if checks:
        c = checks[0]
        lines += [f"## Engine mode: {c['task']}, s = {c['group_size']}, z = {c['noise']:g}", "",
                  "The real engine (`mode = \"engine\"`: a ClientSession per client, Ed25519-signed messages, SecAgg+ "
                  "in groups of s with X25519 agreements, Shamir shares and masks) against the direct mode.", "",
                  "| population | mode | accuracy per round % | loss per round | ε max per round | updates/s | run s | "
                  "identical |",
                  "|---|---|---|---|---|---:|---:|---|"]
        for e in checks:
            for mode in ("engine", "direct"):
                r = e[mode]
                eps = ", ".join("–" if v is None else f"{v:.3f}" for v in r["epsilon_curve"])
                same = "" if mode != "engine" else (("**yes**" if e["identical"] else "**NO**") if e["full_participation"]
                                                    else "– (other clients selected)")
                loss = ", ".join(f"{h['loss']:.6f}" for h in r["history"])
                lines.append(f"| N = {e['num_clients']:,}, m = {e['clients_per_round']:,} | {mode} | "
                             f"{', '.join(f'{100 * a:.2f}' for a in r['curve'])} | {loss} | {eps} | "
                             f"{r['updates_per_second']:,.1f} | {r['run_seconds']:.0f} | {same} |")
        lines += ["", f"Identical: {', '.join(c['compared'])} equal in every round. At full participation (N = m) both "
                      "modes select every client and must agree bit for bit. At the population the engine starts each "
                      "round with the first m clients that are ready (the direct mode samples from all N), so the two "
                      "select different clients: comparable figures, not equal ones.", ""]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Accuracy vs max per-client ε, one panel per task: the main group size's z values joined, the other group
    sizes as separate markers, the non-private reference as a dashed line, the budget as a dotted one."""
    from simulations.plots import _plt

    plt = _plt()
    tasks = list(result["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.6 * len(tasks), 3.9), squeeze=False)
    markers = {10: "v", 100: "o", 1000: "s"}
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = [r for r in result["rows"] if r["task"] == task]
        sizes = sorted({r["s"] for r in rows})
        colours = dict(zip(sizes, ("tab:orange", "tab:blue", "tab:green", "tab:red", "tab:purple"), strict=False))
        for s in sizes:
            pts = sorted((r["epsilon_max"], 100 * r["accuracy"], r["z"]) for r in rows if r["s"] == s and r["z"] > 0)
            if not pts:
                continue
            xs, ys, _ = zip(*pts, strict=True)
            ax.plot(xs, ys, marker=markers.get(s, "o"), color=colours[s], linestyle="-" if len(pts) > 1 else "none",
                    label=f"s = {s}")
            for x, y, z in pts:
                ax.annotate(f"z={z:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
            ref = [100 * r["accuracy"] for r in rows if r["s"] == s and r["z"] == 0]
            if ref:
                ax.axhline(ref[0], color=colours[s], linestyle="--", linewidth=0.9, label=f"non-private, s = {s}")
                if s == GROUP_SIZE:  # the goal: within 3 points of the non-private reference
                    ax.axhspan(ref[0] - 3, ref[0], color=colours[s], alpha=0.08, label=f"within 3 points (s = {s})")
        ax.axvline(result["budget"], color="grey", linestyle=":", linewidth=1, label=f"budget ε = {result['budget']:g}")
        ax.set_xlabel(f"max per-client ε against the coordinator (δ = {result['delta']:g})")
        ax.set_ylabel("test accuracy % (last 3 rounds)")
        ax.set_title(f"{task}: N = {result['population']:,}, m = {result['per_round']:,}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)



def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/population")
    p.add_argument("--workers", type=int, default=2, help="processes (one thread each)")
    p.add_argument("--engine-rounds", type=int, default=2,
                   help="rounds of the engine-mode check of the chosen digits configuration at full participation "
                        "(N = m = 1,000; 0: skip)")
    p.add_argument("--engine-population-rounds", type=int, default=1,
                   help="rounds of the engine-mode check at the population (N = 10,000, m = 1,000; 0: skip)")
    p.add_argument("--quick", action="store_true", help="N = 200, m = 40, groups of 10, 2 rounds: a smoke run")
    p.add_argument("--allow-dirty", action="store_true", help="run from a tree with uncommitted changes (a trial)")
    a = p.parse_args(argv)
    if a.workers < 1 or a.engine_rounds < 0 or a.engine_population_rounds < 0:
        p.error("--workers must be >= 1 and the engine rounds >= 0")
    version = check_version(a.allow_dirty, a.quick)
    out = Path(a.out)
    res = run_study(out, workers=a.workers, quick=a.quick, engine_rounds=a.engine_rounds,
                    engine_population_rounds=a.engine_population_rounds, version=version)
    print((out / "table.md").read_text())
    print(f"{len(res['runs'])} runs in {res['seconds'] / 60:.1f} min; results in {out}")


if __name__ == "__main__":
    main()
