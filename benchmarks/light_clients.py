"""Lightweight federated clients for benchmarks: the real client session (handshake, signatures, DP/quantization
pipeline, SecAgg+) over the real transports, but "training" is a seeded random update – so the coordinator, not
torch, is what gets measured. Run by benchmarks/bench_rounds.py:

    python benchmarks/light_clients.py --server 127.0.0.1:PORT --transport grpc --count 50
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from client_native.channels import ChannelError, open_channel
from flcore.policy import PrivacyPolicy
from flcore.session import ClientSession, SendFrame, Stopped, Train
from flcrypto import default_crypto


async def one_client(i: int, server: str, transport: str, start: asyncio.Event) -> int:
    c = default_crypto()
    # a throughput benchmark (groups of 1 and of 5, no noise): the clients accept any well-formed task
    session = ClientSession(c.random_bytes(32), None, policy=PrivacyPolicy.permissive())
    rng = np.random.default_rng(i)
    await start.wait()
    ch = None
    for _ in range(50):
        try:
            ch = await open_channel(server, transport)
            break
        except ChannelError:
            await asyncio.sleep(0.2)
    assert ch is not None, "could not connect"
    for a in session.start():
        await ch.send(a.data)
    rounds = 0
    while True:
        data = await ch.recv()
        if data is None:
            return rounds
        pending = list(session.receive(data))
        while pending:
            a = pending.pop(0)
            if isinstance(a, SendFrame):
                await ch.send(a.data)
            elif isinstance(a, Train):
                d = sum(int(np.prod(s)) for _, s in a.spec.parameter_shapes())
                delta = rng.normal(0, 0.01, d).astype(np.float32)
                pending.extend(session.training_done(delta))
                rounds += 1
            elif isinstance(a, Stopped):
                await ch.close()
                return rounds


async def main_async(args: argparse.Namespace) -> None:
    start = asyncio.Event()
    tasks = [asyncio.create_task(one_client(args.first + i, args.server, args.transport, start))
             for i in range(args.count)]
    start.set()
    done = await asyncio.gather(*tasks)
    print(f"{args.count} light clients done: {sum(done)} client-rounds", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--transport", default="grpc")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--first", type=int, default=0)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
