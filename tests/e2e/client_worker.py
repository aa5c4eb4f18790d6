"""A test process running several native clients (the real :class:`client_native.client.NativeClient` over the
network), with optional misbehaviour. Started by tests/test_e2e_*.py; prints one JSON summary line per client.

    python tests/e2e/client_worker.py --server 127.0.0.1:PORT --indices 0,1,2 --num-clients 15 [--attack signflip10]

Attacks (all clients of the process): ``signflip10`` sends −10 × its honest update *without* clipping (a
malicious client runs its own code); ``nan`` sends a masked input made of float32 NaNs instead of field elements.
``--drop R:N:I`` makes client I drop its connection in round R after sending N secure-aggregation messages
(it then reconnects on its own). ``--dump-dir`` writes each client's secure-aggregation input per round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import mle
from client_native.cli import load_data
from client_native.client import ClientOptions, NativeClient
from flcore.policy import PrivacyPolicy


class WorkerClient(NativeClient):
    def __init__(self, index: int, *args: Any, attack: str = "", drops: dict[tuple[int, int], int] | None = None,
                 dump_dir: Path | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.index, self.attack, self.drops, self.dump_dir = index, attack, drops or {}, dump_dir

    def transform_update(self, round_: int, delta: np.ndarray) -> np.ndarray:
        return -10.0 * delta if self.attack == "signflip10" else delta

    def disconnect_after_send(self, round_: int, secagg_messages_sent: int) -> bool:
        return self.drops.get((round_, self.index)) == secagg_messages_sent

    async def _train(self, task: Any) -> list[Any]:
        out = await super()._train(task)
        if self.dump_dir is not None and self.session.last_input is not None:
            mle.save(self.dump_dir / f"round-{task.round:06d}-{self.client_id}.mle",
                     {"input": np.asarray(self.session.last_input)}, {"round": task.round, "client": self.client_id})
        return out


def _install_attack(attack: str) -> None:
    if attack == "signflip10":  # skip the client-side L2 clipping, and the rounding bound that assumes it
        import privacy.client_pipeline as cp

        cp.l2_clip = lambda x, clip, backend: (x, backend.l2_norm(x))
        cp.round_within = lambda x, cfg, stream, backend: cp.quantize(x, cfg.fixed_point(), stream, backend)
    elif attack == "nan":  # a masked input of float NaNs instead of field elements
        import privacy.secagg.client as sc
        from privacy.secagg.wire import KIND

        def nan_masked(values: Any, modulus_bits: int, round: int, group: int) -> bytes:
            return mle.dumps({"masked": np.full(len(values), np.nan, np.float32)},
                             {"kind": KIND, "round": round, "group": group})

        sc.encode_masked = nan_masked


async def main_async(args: argparse.Namespace) -> int:
    _install_attack(args.attack)
    drops: dict[tuple[int, int], int] = {}
    for item in args.drop:
        r, n, i = (int(v) for v in item.split(":"))
        drops[(r, i)] = n
    dump_dir = Path(args.dump_dir) if args.dump_dir else None
    if dump_dir:
        dump_dir.mkdir(parents=True, exist_ok=True)
    policy = PrivacyPolicy.from_dict(json.loads(args.policy)) if args.policy else PrivacyPolicy()
    clients = []
    for i in (int(v) for v in args.indices.split(",")):
        data = load_data(f"digits:{i}/{args.num_clients}", args.partition, args.partition_seed)
        state = Path(args.state_root) / f"client-{i}" if args.state_root else None
        opts = ClientOptions(args.server, args.transport, state, None, 1, None, reconnect_initial=0.2,
                             reconnect_max=1.0, seed=1000 + i, policy=policy)
        clients.append(WorkerClient(i, data, opts, attack=args.attack, drops=drops, dump_dir=dump_dir))
    summaries = await asyncio.gather(*(c.run() for c in clients))
    for c, s in zip(clients, summaries, strict=True):
        print(json.dumps({"index": c.index, "client_id": s.client_id, "rounds": s.rounds, "reconnects": s.reconnects,
                          "errors": s.errors, "stop_reason": s.stop_reason, "ledger": s.ledger,
                          "declined": s.declined}), flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--transport", default="grpc")
    p.add_argument("--indices", required=True)
    p.add_argument("--num-clients", type=int, required=True)
    p.add_argument("--partition", default="dirichlet:0.5")
    p.add_argument("--partition-seed", type=int, default=0)
    p.add_argument("--attack", default="", choices=("", "signflip10", "nan"))
    p.add_argument("--drop", action="append", default=[])
    p.add_argument("--dump-dir", default="")
    p.add_argument("--state-root", default="")
    p.add_argument("--policy", default="", help="the clients' privacy policy as JSON (PrivacyPolicy.from_dict); "
                   "default: the safe default policy")
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
