"""kill -9 at every point of a round (issue 13): a real ``fl-coordinator serve`` with real native clients (two
client worker processes, gRPC, each client with its own state dir: identity key, pinned coordinator key and its
own privacy ledger) is SIGKILLed again and again at points spread over every phase of a round, and restarted on
the same data dir each time.

How the kill points are reached: the bench polls ``/status/operator`` (the round's stage and SecAgg+ phases) and
kills as soon as the targeted phase is seen. To make the short SecAgg+ phases observable, one client per round
drops its connection after sending k of its secure-aggregation messages (k cycles through 0–4 with the round
number), so that round waits in phase k until the phase deadline; the other phases (between rounds, the reveals,
training) are targeted directly, and "random" kills come at a random delay in the round. Each kill is labelled
with the last stage/phase seen before it, and after the kill with what the data dir shows (``released`` = a group
sum's privacy spend is on disk for a round that is not committed: the F5 window).

After every kill, before the restart, the data dir is read (SQLite, read only) and checked:
  rounds      committed rounds are 1..R with R ≥ the last round seen before the kill and ≥ the previous check
              (never lower, never twice: one row per round);
  models      every committed round's model file exists and matches its recorded SHA-256; no file of a round
              after R survives the restart;
  ledger      the DP ledger (third-party events) is never rewritten or shorter, every client's participation count
              and Σ1/z² never go down; nothing counted twice: each client's count ≤ the entries of its own ledger
              (the client writes its entry before sending the masked input the coordinator charges) and the spends
              of committed rounds (Σ survivors) ≤ Σ counts ≤ clients_per_round × released attempts;
  trust       every trust row belongs to an enrolled client, its value is α/(α+β) of its state, its observation
              count never goes down;
and after the restart: ε (status) ≥ the last ε seen before the kill, and a new round commits (clients resume).

    PYTHONPATH=. python benchmarks/bench_crash.py --kills 50      # ≈ 10 min on 2 busy cores
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from e2e_support import UTILITY_POLICY, Coordinator, Workers  # noqa: E402

TARGETS = ("between rounds", "reveal", "advertise", "shares", "masked", "consistency", "unmask", "random")
CLIENTS = 6
FLAGS = ["--clients-per-round", str(CLIENTS), "--group-size", str(CLIENTS), "--train-timeout", "4",
         "--phase-timeout", "1.5", "--aggregator", "mean", "--local-epochs", "1", "--noise-multiplier", "0.05",
         "--epsilon", "1e9", "--l2-clip", "1.0", "--log-level", "warning"]


@dataclass
class Snapshot:
    rounds: list[int] = field(default_factory=list)
    models: dict[int, tuple[str, str]] = field(default_factory=dict)
    ledger: list[str] = field(default_factory=list)
    ledger_rounds: list[int] = field(default_factory=list)
    participation: dict[str, tuple[int, float]] = field(default_factory=dict)
    trust: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    clients: set[str] = field(default_factory=set)
    survivors: dict[int, int] = field(default_factory=dict)


def snapshot(data_dir: Path) -> Snapshot:
    """What the kill left on disk (read only: the restart does the recovery)."""
    db = sqlite3.connect(f"file:{data_dir / 'coordinator.sqlite'}?mode=ro", uri=True)
    try:
        s = Snapshot()
        for r, f, sha in db.execute("SELECT round, model_file, model_sha256 FROM rounds WHERE status='completed' "
                                    "ORDER BY round"):
            s.rounds.append(int(r))
            s.models[int(r)] = (f, sha)
        for r, e in db.execute("SELECT round, event FROM dp_ledger ORDER BY id"):
            s.ledger.append(e)
            s.ledger_rounds.append(int(r))
        s.participation = {c: (int(n), float(z)) for c, n, z in
                           db.execute("SELECT client_id, count, inv_z2 FROM participation")}
        s.trust = {c: (float(t), json.loads(st)) for c, t, st in db.execute("SELECT client_id, trust, state FROM trust")}
        s.clients = {r[0] for r in db.execute("SELECT id FROM clients")}
        s.survivors = {int(r): int(v) for r, v in db.execute("SELECT round, value FROM metrics WHERE name='survivors'")}
        return s
    finally:
        db.close()


def client_ledgers(root: Path) -> dict[str, int]:
    """Each client's own ledger: client id → entries (participations it accounted before sending its input)."""
    from flcore.wire import client_id_for
    from flcrypto import default_crypto

    out = {}
    for d in root.glob("client-*"):
        key, ledger = d / "identity.key", d / "privacy-ledger.json"
        if key.exists():
            cid = client_id_for(default_crypto().ed25519_public_key(key.read_bytes()))
            out[cid] = len(json.loads(ledger.read_text())["entries"]) if ledger.exists() else 0
    return out


def check(prev: Snapshot, cur: Snapshot, seen_round: int, data_dir: Path, ledgers: dict[str, int]) -> list[str]:
    """The invariants of the module docstring; returns the failures (empty: all hold)."""
    bad = []
    last = cur.rounds[-1] if cur.rounds else 0
    if cur.rounds != list(range(1, last + 1)):
        bad.append(f"rounds not 1..{last}: {cur.rounds[:3]}…")
    if last < seen_round or last < (prev.rounds[-1] if prev.rounds else 0):
        bad.append(f"round went back: store {last}, seen {seen_round}, before {prev.rounds[-1:]}")
    for r, (f, sha) in cur.models.items():
        p = data_dir / "models" / f
        if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != sha:
            bad.append(f"model of round {r} missing or altered")
    if cur.ledger[: len(prev.ledger)] != prev.ledger:
        bad.append("DP ledger rewritten or shorter")
    for c, (n, z) in prev.participation.items():
        n2, z2 = cur.participation.get(c, (0, 0.0))
        if n2 < n or z2 < z - 1e-12:
            bad.append(f"participation of {c[:8]} went down ({n}, {z:.4g}) → ({n2}, {z2:.4g})")
    for c, (n, _) in cur.participation.items():
        if c in ledgers and n > ledgers[c]:
            bad.append(f"{c[:8]} charged {n} times, its own ledger has {ledgers[c]} entries (counted twice)")
    total = sum(n for n, _ in cur.participation.values())
    committed = sum(cur.survivors.get(r, 0) for r in cur.rounds)
    if not committed <= total <= CLIENTS * len(cur.ledger):
        bad.append(f"spends: committed rounds {committed} ≤ Σ counts {total} ≤ {CLIENTS}×{len(cur.ledger)} fails")
    if sorted(set(cur.ledger_rounds)) != sorted(set(cur.ledger_rounds) | set(cur.rounds)):
        bad.append("a committed round has no DP ledger event")
    for c, (t, st) in cur.trust.items():
        if c not in cur.clients:
            bad.append(f"trust row of unknown client {c[:8]}")
        if abs(t - st["alpha"] / (st["alpha"] + st["beta"])) > 1e-9:
            bad.append(f"trust of {c[:8]} does not match its state")
        if c in prev.trust and st["observations"] < prev.trust[c][1]["observations"]:
            bad.append(f"trust observations of {c[:8]} went down")
    return bad


def leftovers(data_dir: Path, last: int) -> list[str]:
    """Model files of rounds after the last committed one still there after the restart (must be none)."""
    return [p.name for p in (data_dir / "models").iterdir()
            if p.name.endswith(".tmp") or (p.name.startswith("round-") and int(p.name[6:12]) > last)]


def where(status: dict[str, Any]) -> str:
    rs = status.get("round_in_progress")
    if rs is None:
        return "between rounds"
    if rs["stage"] == "reveal":
        return "reveal"
    phases = [p for p in rs["phases"] if p not in ("done", "failed")]
    return phases[0] if len(phases) == 1 else "/".join(phases) or "aggregating"


def _print(line: str) -> None:
    print(line, flush=True)


def run(kills: int, tmp: Path, seed: int = 0, budget_s: float = 900.0, log: Any = _print) -> dict[str, Any]:
    rnd = random.Random(seed)
    drops = [f"--drop={r}:{r % 5}:{r % CLIENTS}" for r in range(1, 2000)]
    coord = Coordinator(tmp, ["--rounds", "100000", *FLAGS]).start()
    workers = Workers()
    clients_root = tmp / "clients"
    try:
        for chunk in ([0, 1, 2], [3, 4, 5]):
            workers.spawn(tmp, f"127.0.0.1:{coord.grpc_port}", chunk, CLIENTS, "--state-root", str(clients_root),
                          "--policy", UTILITY_POLICY, *drops)
        coord.wait_round(1, 120)
        prev, labels, after_disk, failures = Snapshot(), Counter(), Counter(), []
        lost = checks = resumed = 0
        started = time.time()
        for k in range(kills):
            if time.time() - started > budget_s:
                log(f"time budget of {budget_s:.0f} s spent after {k} kills")
                break
            target = TARGETS[k % len(TARGETS)]
            deadline = time.time() + 30
            kill_at = time.time() + rnd.uniform(0.0, 3.0)
            label, seen_round, eps = "?", 0, 0.0
            while True:
                try:
                    s = coord.status()
                except OSError:
                    continue
                label, seen_round = where(s), s["round"]
                eps = s["privacy"]["epsilon"] or 0.0
                if (target == "random" and time.time() >= kill_at) or label == target or time.time() > deadline:
                    break
                time.sleep(0.005)
            if target == "random":
                time.sleep(rnd.uniform(0.0, 0.05))
            coord.kill()
            labels[label] += 1
            cur = snapshot(coord.data_dir)
            last = cur.rounds[-1] if cur.rounds else 0
            after_disk["released, not committed" if last + 1 in cur.ledger_rounds else "no release pending"] += 1
            lost += max(0, seen_round - last)
            bad = check(prev, cur, seen_round, coord.data_dir, client_ledgers(clients_root))
            coord.start()
            bad += [f"leftover {n}" for n in leftovers(coord.data_dir, last)]
            after = coord.status()
            if (after["privacy"]["epsilon"] or 0.0) < eps:
                bad.append(f"ε after the restart {after['privacy']['epsilon']} < before the kill {eps}")
            if after["round"] != last:
                bad.append(f"resumed at round {after['round']}, the store has {last}")
            try:
                coord.wait_round(last + 1, 90)
                resumed += 1
            except TimeoutError:
                bad.append(f"no round after {last} within 90 s of the restart")
            checks += 1
            if bad:
                failures.append((k, label, bad))
            log(f"kill {k + 1:>3}: target {target:<14} seen {label:<14} store round {last:>4}, ledger "
                f"{len(cur.ledger):>4} events, {'ok' if not bad else 'FAILED: ' + '; '.join(bad)}")
            prev = cur
        return {"kills": sum(labels.values()), "labels": dict(labels), "disk": dict(after_disk), "lost": lost,
                "checks": checks, "passed": checks - len(failures), "resumed": resumed, "failures": failures,
                "seconds": time.time() - started, "rounds": prev.rounds[-1] if prev.rounds else 0,
                "ledger_events": len(prev.ledger)}
    finally:
        coord.kill()
        workers.kill()


def table(res: dict[str, Any]) -> str:
    lines = ["| phase seen at the kill | kills |", "|---|---:|"]
    lines += [f"| {p} | {res['labels'].get(p, 0)} |" for p in (*TARGETS[:-1], *sorted(set(res["labels"]) -
                                                                                         set(TARGETS)))]
    lines += ["", "| on disk after the kill | kills |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(res["disk"].items())]
    lines += ["", f"kills: {res['kills']} in {res['seconds']:.0f} s; rounds lost: {res['lost']}; rounds committed: "
                  f"{res['rounds']}; DP ledger events: {res['ledger_events']}",
              f"checks passed (rounds, models, ledger, trust, ε, resume): {res['passed']}/{res['checks']}; "
              f"clients resumed (a new round committed) after {res['resumed']}/{res['checks']} restarts"]
    for k, label, bad in res["failures"]:
        lines.append(f"  kill {k + 1} ({label}): {'; '.join(bad)}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=900.0, help="stop killing after this many seconds")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as d:
        res = run(args.kills, Path(d), args.seed, args.budget)
    print(table(res))
    return 0 if not res["failures"] and res["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
