"""Benchmark: bytes on the wire per client per round, up and down, and accuracy at equal rounds, for the modulus
m = 12, 16, 20, 32 bits with and without the random rotation (issue 16).

Bytes are *measured*: one federation runs through the real engine and real client sessions in-process (the
simulation harness's engine mode: every protocol message is a signed .mle frame, SecAgg+ in groups of 5) and every
frame each client sends or receives is counted. Per configuration:
- up: everything a client sends in a round (ready/reveal, the SecAgg+ key advertisement, encrypted shares, the
  masked input, the unmask reply) and, separately, the masked-input message alone;
- down: everything it receives (selection, task with the model, the SecAgg+ relays, round end).
Peers, measured with their own serializers on the same d: the float32 update as a raw .mle tensor, and Flower's
SecAgg+ masked vector (int64, serialized by ``flwr.common.ndarray_to_bytes`` as Flower's records carry it).

Accuracy: the digits MLP 64-32-10 (d = 2,410), 60 clients (Dirichlet α = 1), 20 per round in groups of 5, the
default defence, through the direct mode (bit-identical to the engine mode) for the same rounds and seeds, with
and without distributed DP noise. For each m the quantization bits B are the largest whose group sum fits m
(``DistributedDPConfig.required_modulus_bits``), so each row is what the coordinator would choose for that width.
The reference row is the float32-equivalent grid of the first version (B = 16 in a 32-bit field).

Run: `.venv/bin/python benchmarks/bench_wire.py [--quick] [--write]` (--write: docs/results/bench_wire.txt).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import statistics
import sys
import time
from collections import defaultdict
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from coordinator.federation.config import FederationConfig  # noqa: E402
from flcore.modelspec import mlp  # noqa: E402

D_SPEC = mlp([64, 32, 10])
GROUP, PER_ROUND = 5, 20


def bits_for_modulus(m: int, *, z: float, rotation: bool, group: int = GROUP, per_round: int = PER_ROUND) -> int:
    """The largest quantization bits B whose largest group's sum (noise included) fits an m-bit field."""
    for b in range(min(m, 31), 1, -1):
        cfg = FederationConfig(D_SPEC, clients_per_round=per_round, group_size=group, noise_multiplier=z,
                               epsilon=1e9 if z else float("inf"), quantization_bits=b, modulus_bits=0,
                               rotation=rotation, delta=1e-5)
        n = cfg.largest_group()
        try:
            need = cfg.dp_config(members=n).modulus_bits
        except ValueError:
            continue
        if need <= m:
            return b
    raise ValueError(f"no quantization fits m = {m}")


def measure_bytes(fed: dict[str, Any], rounds: int = 2) -> dict[str, float]:
    """Run ``rounds`` rounds in engine mode and count every frame per client: mean bytes per client per round."""
    from simulations.config import SimulationConfig
    from simulations.engine_driver import EngineDriver
    from simulations.runner import Simulation

    cfg = SimulationConfig.from_dict({"name": "wire", "seed": 0, "rounds": rounds, "mode": "engine",
                                      "data": {"dataset": "digits", "partition": "iid", "num_clients": 10},
                                      "model": {"hidden": [32]},
                                      "federation": {"clients_per_round": 10, "group_size": GROUP, **fed}})
    up: dict[str, int] = defaultdict(int)
    masked: list[int] = []
    down: dict[str, int] = defaultdict(int)
    orig_deliver, orig_client = EngineDriver._deliver, EngineDriver._client

    def deliver(self: Any, conn: str, data: bytes) -> None:
        down[conn] += len(data)
        orig_deliver(self, conn, data)

    def client(self: Any, conn: str, act: Any) -> None:
        from flcore.session import SendFrame

        if isinstance(act, SendFrame):
            up[conn] += len(act.data)
            if len(act.data) > 2000:  # the masked input is the one large client message
                masked.append(len(act.data))
        orig_client(self, conn, act)

    EngineDriver._deliver, EngineDriver._client = deliver, client  # type: ignore[method-assign]
    try:
        with redirect_stdout(io.StringIO()):
            Simulation(cfg.validate()).run()
    finally:
        EngineDriver._deliver, EngineDriver._client = orig_deliver, orig_client  # type: ignore[method-assign]
    n = len(up) * rounds
    return {"up": sum(up.values()) / n, "down": sum(down.values()) / n,
            "masked": statistics.mean(masked) if masked else float("nan")}


def peer_bytes(d: int) -> dict[str, int]:
    import mle

    out = {"float32 .mle": len(mle.dumps({"delta": np.zeros(d, np.float32)}))}
    try:
        from flwr.common import ndarray_to_bytes

        out["Flower int64 (ndarray_to_bytes)"] = len(ndarray_to_bytes(np.zeros(d, np.int64)))
        out["Flower float32 (ndarray_to_bytes)"] = len(ndarray_to_bytes(np.zeros(d, np.float32)))
    except ImportError:  # pragma: no cover - flwr is in the dev extra
        pass
    return out


def accuracy(fed: dict[str, Any], rounds: int, seeds: list[int]) -> tuple[float, float]:
    from simulations.runner import run_simulation

    accs = []
    for seed in seeds:
        cfg = {"name": "wire-acc", "seed": seed, "rounds": rounds, "mode": "direct",
               "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 1.0, "num_clients": 60},
               "model": {"hidden": [32]},
               "federation": {"clients_per_round": PER_ROUND, "group_size": GROUP, "l2_clip": 2.0, "lr": 0.3,
                              "local_epochs": 2, **fed}}
        with redirect_stdout(io.StringIO()):
            accs.append(run_simulation(cfg).final_accuracy)
    return statistics.mean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)


def configs(z: float) -> list[tuple[str, dict[str, Any]]]:
    dp: dict[str, Any] = {"noise_multiplier": z, "epsilon": 1e9, "delta": 1e-5} if z else {}
    rows: list[tuple[str, dict[str, Any]]] = [("B=16 in u32 (first version)",
                                               {"quantization_bits": 16, "modulus_bits": 32, **dp})]
    for m in (12, 16, 20, 32):
        for rot in (False, True):
            b = bits_for_modulus(m, z=z, rotation=rot)
            rows.append((f"m={m:2d} {'rot' if rot else '   '} (B={b})",
                         {"quantization_bits": b, "modulus_bits": m, "rotation": rot, **dp}))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 15 rounds")
    ap.add_argument("--write", action="store_true", help="also write docs/results/bench_wire.txt")
    ap.add_argument("--noise", type=float, nargs="*", default=[0.0, 1.0], help="noise multipliers z (0: no DP)")
    args = ap.parse_args()
    rounds, seeds = (15, [0]) if args.quick else (30, [0, 1, 2])
    from simulations.runner import code_version

    lines = [f"bench_wire · code {code_version()} · digits MLP 64-32-10 (d = {D_SPEC.num_parameters():,}) · "
             f"groups of {GROUP} · {time.strftime('%Y-%m-%d')}"]
    d = D_SPEC.num_parameters()
    peers = peer_bytes(d)
    lines.append("peers, one update of d coordinates: " + ", ".join(f"{k} {v:,} B" for k, v in peers.items()))
    f32 = peers["float32 .mle"]
    for z in args.noise:
        lines.append("")
        lines.append(f"noise z = {z:g} ({'distributed DP' if z else 'no DP noise'}); accuracy: mean ± sd over "
                     f"{len(seeds)} seed(s), {rounds} rounds, 60 clients, {PER_ROUND} per round")
        lines.append(f"{'configuration':30s} {'masked B':>9s} {'÷f32':>6s} {'up B/rnd':>9s} {'÷f32':>6s} "
                     f"{'down B/rnd':>10s} {'accuracy':>15s}")
        for name, fed in configs(z):
            t0 = time.perf_counter()
            b = measure_bytes(fed)
            acc, sd = accuracy(fed, rounds, seeds)
            lines.append(f"{name:30s} {b['masked']:9,.0f} {b['masked'] / f32:6.3f} {b['up']:9,.0f} "
                         f"{b['up'] / f32:6.3f} {b['down']:10,.0f} {acc:9.4f} ± {sd:.3f}"
                         f"   ({time.perf_counter() - t0:.0f} s)")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print("\n" + text)
    if args.write:
        out = REPO / "docs" / "results" / "bench_wire.txt"
        out.write_text(text + "\n")
        print(f"wrote {out}")


_ = dataclasses  # (kept for readers extending the configs)

if __name__ == "__main__":
    main()
