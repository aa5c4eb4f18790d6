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
The reference row is the first version's wire: B = 16 in a 32-bit field, no rotation, the full model down.

Run: `.venv/bin/python benchmarks/bench_wire.py [--quick] [--write]` (--write: docs/results/bench_wire.txt).
"""

from __future__ import annotations

import argparse
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
HIDDEN = (32, 256)  # bytes for both models; accuracy for the first
GROUP, PER_ROUND = 5, 20


def bits_for_modulus(m: int, *, z: float, rotation: bool, spec: Any = D_SPEC, group: int = GROUP,
                     per_round: int = PER_ROUND) -> int:
    """The largest quantization bits B whose largest group's sum (noise included) fits an m-bit field."""
    for b in range(min(m, 31), 1, -1):
        cfg = FederationConfig(spec, clients_per_round=per_round, group_size=group, noise_multiplier=z,
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


def measure_bytes(fed: dict[str, Any], rounds: int = 3, hidden: int = 32) -> dict[str, float]:
    """Run ``rounds`` rounds in engine mode and count every frame per client and round (by the engine's round at
    the time): mean bytes per client per round in the steady state (rounds 2…; round 1 also holds the connection's
    handshake and the first, full model: reported as ``down_first``)."""
    from flcore.session import SendFrame
    from simulations.config import SimulationConfig
    from simulations.engine_driver import EngineDriver
    from simulations.runner import Simulation

    cfg = SimulationConfig.from_dict({"name": "wire", "seed": 0, "rounds": rounds, "mode": "engine",
                                      "data": {"dataset": "digits", "partition": "iid", "num_clients": 10},
                                      "model": {"hidden": [hidden]},
                                      "federation": {"clients_per_round": 10, "group_size": GROUP, **fed}})
    up: dict[int, int] = defaultdict(int)
    down: dict[int, int] = defaultdict(int)
    masked: list[int] = []
    orig_deliver, orig_client = EngineDriver._deliver, EngineDriver._client

    def deliver(self: Any, conn: str, data: bytes) -> None:
        down[self.engine.round_number + 1] += len(data)
        orig_deliver(self, conn, data)

    def client(self: Any, conn: str, act: Any) -> None:
        if isinstance(act, SendFrame):
            up[self.engine.round_number + 1] += len(act.data)
            if len(act.data) > 1500:  # the masked input is the one large client message
                masked.append(len(act.data))
        orig_client(self, conn, act)

    EngineDriver._deliver, EngineDriver._client = deliver, client  # type: ignore[method-assign]
    try:
        with redirect_stdout(io.StringIO()):
            sim = Simulation(cfg.validate())
            sim.run()
    finally:
        EngineDriver._deliver, EngineDriver._client = orig_deliver, orig_client  # type: ignore[method-assign]
    steady = range(2, rounds + 1)
    n = 10 * len(steady)
    return {"up": sum(up[r] for r in steady) / n, "down": sum(down[r] for r in steady) / n,
            "down_first": down[1] / 10, "masked": statistics.mean(masked) if masked else float("nan"),
            "d": sim.spec.num_parameters() if hasattr(sim, "spec") else float("nan")}


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


def configs(z: float) -> list[tuple[str, list[dict[str, Any]]]]:
    """Rows: a name and the [federation] keys for each model of HIDDEN (B depends on d when m is fixed)."""
    dp: dict[str, Any] = {"noise_multiplier": z, "epsilon": 1e9, "delta": 1e-5} if z else {}
    first = {"quantization_bits": 16, "modulus_bits": 32, "rotation": False, "downlink": "full", **dp}
    auto = {"quantization_bits": 0, "modulus_bits": 0, "rotation": True, **dp}
    rows: list[tuple[str, list[dict[str, Any]]]] = [("first version: B=16, u32", [first] * len(HIDDEN)),
                                                     ("defaults (B, m chosen)", [auto] * len(HIDDEN))]
    for m in (10, 12, 16, 20, 32):
        for rot in (False, True):
            feds = [{"quantization_bits": bits_for_modulus(m, z=z, rotation=rot, spec=mlp([64, h, 10])),
                     "modulus_bits": m, "rotation": rot, **dp} for h in HIDDEN]
            bits = "/".join(str(f["quantization_bits"]) for f in feds)
            rows.append((f"m={m:2d} {'rot' if rot else '   '} (B={bits})", feds))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 15 rounds")
    ap.add_argument("--write", action="store_true", help="also write docs/results/bench_wire.txt")
    ap.add_argument("--noise", type=float, nargs="*", default=[0.0, 0.3], help="noise multipliers z (0: no DP)")
    args = ap.parse_args()
    rounds, seeds = (15, [0]) if args.quick else (30, [0, 1, 2])
    from simulations.runner import code_version

    lines = [f"bench_wire · code {code_version()} · digits, groups of {GROUP} · {time.strftime('%Y-%m-%d')}",
             "bytes: per client per round in the steady state (rounds 2-3 of an engine-mode run, 10 clients);",
             "  masked = the masked-input message alone (what scales with d); up = every frame a client sends in a",
             "  round (ready, reveal, SecAgg+ keys, shares, masked input, consistency, unmask); down = every frame",
             "  it receives (selection, task with the model delta, SecAgg+ relays, round end); ÷f32 = ÷ the float32",
             "  update as a raw .mle tensor"]
    for hidden in HIDDEN:
        d = mlp([64, hidden, 10]).num_parameters()
        peers = peer_bytes(d)
        lines.append(f"MLP 64-{hidden}-10, d = {d:,}; peers, one update: "
                     + ", ".join(f"{k} {v:,} B" for k, v in peers.items()))
    print("\n".join(lines), flush=True)
    for z in args.noise:
        lines.append("")
        lines.append(f"noise z = {z:g} ({'distributed DP' if z else 'no DP noise'}); accuracy (MLP 64-32-10): mean ± sd "
                     f"over {len(seeds)} seed(s), {rounds} rounds, 60 clients, {PER_ROUND} per round")
        lines.append(f"{'configuration':26s} | {'d = 2,410: masked':>17s} {'÷f32':>5s} {'up':>7s} {'÷f32':>5s} "
                     f"{'down':>6s} | {'d = 19,210: masked':>18s} {'÷f32':>5s} {'up':>7s} {'÷f32':>5s} {'down':>6s}"
                     f" | {'accuracy':>15s}")
        print("\n".join(lines[-3:]), flush=True)
        for name, feds in configs(z):
            t0 = time.perf_counter()
            cells = []
            for hidden, fed in zip(HIDDEN, feds, strict=True):
                f32 = peer_bytes(mlp([64, hidden, 10]).num_parameters())["float32 .mle"]
                b = measure_bytes(fed, hidden=hidden)
                cells.append(f"{b['masked']:17,.0f} {b['masked'] / f32:5.3f} {b['up']:7,.0f} {b['up'] / f32:5.3f} "
                             f"{b['down']:6,.0f}")
            acc, sd = accuracy(feds[0], rounds, seeds)
            lines.append(f"{name:26s} | {cells[0]} | {' ' + cells[1]} | {acc:9.4f} ± {sd:.3f}"
                         f"   ({time.perf_counter() - t0:.0f} s)")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    if args.write:
        out = REPO / "docs" / "results" / "bench_wire.txt"
        out.write_text(text + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
