"""Admission control through the whole service (issue 13 F10, F12, F20): ``fl-coordinator serve`` cuts attacker
text in its log and summarises floods of one message; ``RunningService.stop`` is bounded when peers ignore the
close handshake or never finish their opening one."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import numpy as np
import websockets
from admission_support import RawPeer, authenticate, session
from e2e_support import Coordinator
from websockets.exceptions import ConnectionClosed

import mle
from coordinator.federation.config import FederationConfig
from coordinator.service.server import start_service
from coordinator.service.settings import ServerSettings, ServeSettings
from flcore.modelspec import mlp
from flcore.protocol import PROTOCOL_VERSIONS
from flcrypto import default_crypto


def test_f20_stop_is_bounded_when_peers_ignore_the_close_handshake(tmp_path: Path) -> None:
    fed = FederationConfig(model=mlp([64, 10]), rounds=2, clients_per_round=2, group_size=1, aggregator="mean")
    settings = ServeSettings(ServerSettings(ws_port=0, grpc_port=0, data_dir=str(tmp_path / "data")), fed, "none")

    async def main() -> None:
        service = await start_service(settings)
        deaf = RawPeer(service.ws_port)
        assert await deaf.open() == 101  # a WebSocket that will never answer (nor read) the close frame
        _, silent = await asyncio.open_connection("127.0.0.1", service.ws_port)  # no opening handshake at all
        await asyncio.wait_for(service.stop(), 8)  # the default close_timeout is 2 s; without it ≥ 10 s
        deaf.abort()
        silent.close()

    asyncio.run(main())  # returns (wait_for raises TimeoutError otherwise)


def _forged_frame(sender: str) -> bytes:
    """A well-formed envelope with an attacker-chosen sender, signed with some key that is not the sender's."""
    env = {"v": max(PROTOCOL_VERSIONS), "type": "ready", "from": sender, "to": "coordinator", "session": "",
           "seq": 0, "round": -1, "body": {"commitment": "00" * 32}}
    return mle.dumps({"pad": np.zeros(8, np.uint8)}, {"fl": env}, signing_key=default_crypto().random_bytes(32))


def test_f10_attacker_text_in_the_log_is_cut_and_floods_are_summarised(tmp_path: Path) -> None:
    c = Coordinator(tmp_path, ["--evaluation", "none"]).start()
    try:
        async def main() -> None:
            url = f"ws://127.0.0.1:{c.ws_port}/ws"
            async with websockets.connect(url, max_size=None) as ws:
                await authenticate(ws)
                await ws.send(_forged_frame("A" * (15 << 20)))  # a 15 MiB sender id: named in the rejection
                await ws.recv()  # the error reply: the coordinator has logged it
            bad = _forged_frame("mallory")

            async def flood() -> None:  # 50 connections × 20 rejected frames = 1,000 (each closed at its 20th)
                async with websockets.connect(url) as ws:
                    await authenticate(ws, session())
                    for _ in range(20):
                        await ws.send(bad)
                    try:
                        while True:
                            await ws.recv()
                    except ConnectionClosed:
                        pass

            await asyncio.wait_for(asyncio.gather(*(flood() for _ in range(50))), 60)

        asyncio.run(main())
    finally:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
        c.wait(30)
    lines = c.logs[-1].read_text(errors="replace").splitlines()
    longest = max(len(line) for line in lines)
    rejected = [line for line in lines if "rejected message" in line]
    assert longest < 2200, longest  # 2,000 characters of record plus the time/level/logger prefix
    assert any("… (" in line and "chars)" in line for line in rejected)
    assert len(rejected) <= 12, len(rejected)  # 1,001 rejections: 10 lines, one "suppressing", maybe one summary
    assert any("suppressing this message" in line for line in rejected)
