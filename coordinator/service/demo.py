"""``make demo``: a real federation on loopback.

Starts the coordinator (the same service as ``fl-coordinator serve``: WebSocket + HTTP and gRPC on loopback,
SQLite store) in this process and fifteen ``fl-client`` processes, each holding one non-IID (Dirichlet α = 0.5)
shard of scikit-learn's digits. Secure aggregation runs in groups of 5 on the complete graph with threshold 4 (the
clients' safe default policy: it withstands a malicious coordinator with one colluding member), the median across
the three group means tolerates one Byzantine client, and distributed DP noise is added by the clients. Each
client keeps its own privacy ledger; the clients accept this demo's small noise (z = 0.05) and set no ε budget of
their own (``--min-noise 0.05 --epsilon-budget inf``, printed) – 15 clients cannot buy a small ε. Shows the
rounds as they complete (accuracy, ε against the coordinator), then the final accuracy, both ε figures, one
client's own ledger and where the signed model file is.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from coordinator.service.server import start_service
from coordinator.service.settings import ServerSettings, ServeSettings
from flcore.modelspec import mlp

OUT = Path("demo-output")
CLIENT_FLAGS = ["--min-noise", "0.05", "--epsilon-budget", "inf"]


def _settings(rounds: int, clients: int, out: Path) -> ServeSettings:
    from coordinator.federation.config import FederationConfig

    fed = FederationConfig(model=mlp([64, 32, 10]), rounds=rounds, clients_per_round=clients, group_size=5,
                           # the product's default defence (DEFAULT_AGGREGATOR, adaptive clipping, server step 2)
                           byzantine=1, local_epochs=3, lr=0.2, l2_clip=1.0,
                           noise_multiplier=0.05, epsilon=1e6, delta=1e-5, train_timeout=60, phase_timeout=10)
    server = ServerSettings(host="127.0.0.1", ws_port=0, grpc_port=0, data_dir=str(out / "data"), log_level="warning")
    return ServeSettings(server, fed, "digits", "mlp:64-32-10")


async def run(rounds: int, clients: int, out: Path) -> int:
    settings = _settings(rounds, clients, out)
    fed = settings.federation
    print(f"fl-coordinator demo: {clients} native clients, non-IID digits (Dirichlet α=0.5), model 64-32-10 "
          f"({fed.model.num_parameters():,} parameters)")
    print(f"  secure aggregation in groups of {fed.group_size} ({fed.num_groups} groups a round, complete graph, "
          f"threshold {fed.threshold()}), robust rule '{fed.aggregator}' across groups (f={fed.byzantine}), "
          f"distributed DP z={fed.noise_multiplier}, clip C ≤ {fed.l2_clip}"
          + (f" adapting to the {fed.adaptive_clip_quantile:g}-quantile of the update norms" if fed.adaptive_clip else ""))
    print(f"  client policy: the safe defaults (groups ≥ 5, {fed.threshold_rule} threshold withstanding "
          f"{fed.colluders} colluder, complete graph) relaxed for this demo: {' '.join(CLIENT_FLAGS)}")
    service = await start_service(settings)
    engine = service.driver.engine
    print(f"  coordinator {engine.public_key.hex()[:16]}… on ws+http :{service.ws_port}, grpc :{service.grpc_port}"
          f"  (status: http://127.0.0.1:{service.ws_port}/status)")
    print(f"  starting {clients} fl-client processes (each loads torch; the first round waits for all of them)")
    bar = tqdm(total=rounds, desc="rounds", unit="round", dynamic_ncols=True)

    def on_round(metrics: dict) -> None:
        bar.update(1)
        acc, loss = (float("nan") if metrics.get(k) is None else metrics[k] for k in ("accuracy", "loss"))
        eps = "∞" if metrics.get("epsilon") is None else f"{metrics['epsilon']:.4g}"
        bar.set_postfix(acc=f"{acc:.3f}", eps=eps, groups=f"{metrics['groups_ok']}/{metrics['groups']}")
        tqdm.write(f"  round {metrics['round']:>2}: accuracy {acc:.3f}  loss {loss:.3f}  ε vs coordinator {eps}  "
                   f"{metrics['duration']:.2f} s")

    service.driver.on_round = on_round
    logs = out / "client-logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(clients):
        with open(logs / f"client-{i}.log", "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "client_native.cli", "--server", f"127.0.0.1:{service.grpc_port}",
                 "--data", f"digits:{i}/{clients}", "--state-dir", str(out / "clients" / f"client-{i}"),
                 "--log-level", "warning", *CLIENT_FLAGS], stdout=log, stderr=subprocess.STDOUT))
    t0 = time.time()
    try:
        with tqdm(total=clients, desc="clients connected", unit="client", dynamic_ncols=True, leave=False) as cbar:
            while engine.round is None and not engine.history and not service.driver.finished.is_set():
                connected = engine.status()["connected"]
                if connected != cbar.n:  # redraw only on change (quiet logs when output is not a terminal)
                    cbar.n = connected
                    cbar.refresh()
                await asyncio.sleep(0.2)
        while not service.driver.finished.is_set():
            await asyncio.sleep(0.2)
            if all(p.poll() is not None for p in procs):
                print("all clients exited early; see", logs, file=sys.stderr)
                return 1
        await asyncio.sleep(0.5)  # let the stop messages reach the clients
    finally:
        bar.close()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        await service.stop()
    last = engine.history[-1]
    model = Path(settings.server.data_dir) / "models" / f"round-{engine.round_number:06d}.mle"
    priv = engine.privacy_status()
    print(f"\nfinished {engine.round_number} rounds in {time.time() - t0:.1f} s: test accuracy {last['accuracy']:.3f}")
    print(f"privacy at δ = {fed.delta:g} (per client, user level):")
    print(f"  ε against this coordinator  = {priv['epsilon_vs_coordinator']:.4g}  (the most-selected client, "
          f"{priv['max_participations']} rounds; no amplification: the coordinator knows whom it selected)")
    amplified = priv["epsilon_third_party"] < priv["epsilon_vs_coordinator"]
    print(f"  ε against third parties     = {priv['epsilon_third_party']:.4g}  (who see only the models; " + (
        "amplified by the trust-weighted selection)" if amplified else
        "no amplification here: every client was selected in every round)"))
    ledger = _client_ledger(out / "clients" / "client-0")
    if ledger:
        print(f"  client 0's own ledger       : ε = {_fmt(ledger.epsilon())} if secure aggregation holds (its "
              f"policy's δ = {ledger.delta:g}, ≤ 1 colluding group member), {_fmt(ledger.epsilon_worst_case())} if "
              f"it is broken (its own noise share alone), {ledger.participations()} rounds")
    print(f"  ({clients} clients cannot buy a small ε: distributed DP needs many more contributors per group sum – "
          "see docs/privacy.md)" if engine.epsilon() > 10 else "")
    print(f"final model (signed by the coordinator): {model}")
    print(f"inspect it:  .venv/bin/fl-coordinator mle inspect {model}")
    print(f"verify it:   .venv/bin/fl-coordinator mle verify {model} --key {engine.public_key.hex()}")
    return 0


def _client_ledger(state_dir: Path) -> object | None:
    from client_native.client import load_ledger
    from privacy.dp.ledger import PrivacyLedger

    state = load_ledger(state_dir)
    return PrivacyLedger.from_dict(state) if state else None


def _fmt(x: float) -> str:
    return "∞" if x == float("inf") else f"{x:.4g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--clients", type=int, default=15)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)  # a fresh federation each time
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run(args.rounds, args.clients, out))


if __name__ == "__main__":
    sys.exit(main())
