"""Benchmark: coordinator round wall time and coordinator CPU per round on loopback, for 10 / 50 / 200
lightweight clients (benchmarks/light_clients.py: the real session, signatures and SecAgg+, random updates),
d ≈ 100k parameters (MLP 784-128-10: 101,770), over WebSocket and gRPC, with secure aggregation (groups of 5)
and without (groups of 1).

The coordinator runs as its own process (`fl-coordinator serve`); its CPU time is read from /proc at each round
boundary. Round wall time is the engine's own measure (task sent → model updated). The first round is a
warm-up and is not counted. Run: `.venv-bench/bin/python benchmarks/bench_rounds.py [--quick]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=30) as r:
        return json.loads(r.read())


def run(n: int, transport: str, group_size: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ws, grpc = free_port(), free_port()
        cmd = [sys.executable, "-m", "coordinator.service.cli", "serve", "--data-dir", f"{tmp}/data", "--ws-port", str(ws),
               "--grpc-port", str(grpc), "--port-file", f"{tmp}/ports.json", "--model", "mlp:784-128-10",
               "--evaluation", "none", "--rounds", str(rounds), "--clients-per-round", str(n), "--group-size",
               str(group_size), "--aggregator", "mean", "--noise-multiplier", "0", "--train-timeout", "300",
               "--phase-timeout", "300", "--log-level", "warning", "--exit-when-finished"]
        with open(f"{tmp}/coord.log", "wb") as log:
            coord = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
        while not Path(f"{tmp}/ports.json").exists():
            time.sleep(0.05)
        server = f"127.0.0.1:{grpc if transport == 'grpc' else ws}"
        procs = 2 if n >= 50 else 1  # two client processes: one per core
        workers = [subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "light_clients.py"), "--server",
                                     server, "--transport", transport, "--count", str(n // procs + (k < n % procs)),
                                     "--first", str(k * n)], cwd=REPO, stdout=subprocess.DEVNULL)
                   for k in range(procs)]
        marks: dict[int, float] = {}
        last = -1
        while coord.poll() is None:
            try:
                r = status(ws)["round"]
            except OSError:
                break
            if r != last:
                marks[r] = cpu_seconds(coord.pid)
                last = r
            time.sleep(0.05)
        for w in workers:
            w.wait(60)
        from coordinator.service.store import Store

        store = Store.open(f"{tmp}/data")
        durations = [m["duration"] for _, m in store.metrics()]
        store.close()
    counted = [r for r in sorted(marks) if r >= 1]
    cpu = [(marks[b] - marks[a]) / (b - a) for a, b in itertools.pairwise(counted)]
    timed = durations[1:] or durations
    return {"n": n, "transport": transport, "secagg": group_size > 1, "rounds": len(durations),
            "wall_s": sum(timed) / len(timed), "cpu_s": sum(cpu) / len(cpu) if cpu else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="10 and 50 clients only")
    args = p.parse_args()
    sizes = [10, 50] if args.quick else [10, 50, 200]
    print(f"{'clients':>7} {'transport':>9} {'secagg':>6} {'round wall s':>12} {'coord CPU s/round':>17}")
    rows = []
    for n in sizes:
        for transport in ("websocket", "grpc"):
            for gs in (1, 5):
                row = run(n, transport, gs, rounds=4 if n < 200 else 3)
                rows.append(row)
                print(f"{n:>7} {transport:>9} {'yes' if row['secagg'] else 'no':>6} {row['wall_s']:>12.3f} "
                      f"{row['cpu_s']:>17.3f}", flush=True)
    print("\nsecure aggregation cost (wall time, secagg / none):")
    for n in sizes:
        for transport in ("websocket", "grpc"):
            a = next(r for r in rows if r["n"] == n and r["transport"] == transport and r["secagg"])
            b = next(r for r in rows if r["n"] == n and r["transport"] == transport and not r["secagg"])
            print(f"  {n:>4} clients, {transport:>9}: {a['wall_s'] / b['wall_s']:.2f}×")
    # Flower is measured beside us, never quoted here (a figure from elsewhere once included Ray's start-up)
    print("Flower for comparison, measured in the same run as ours: docs/results/bench_secagg.txt (SecAgg+ "
          "in its Ray simulation, warmed-up rounds); benchmarks/bench_flower.py → "
          "docs/results/bench_flower.txt (its deployment engine against this coordinator, its simulation)")


if __name__ == "__main__":
    main()
