"""The native client against the real service in one event loop (real sockets, both transports): identity
persistence, trust-on-first-use pinning of the coordinator key, DP-SGD, wrong-key refusal, data loading."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

import mle
from client_native.cli import load_data
from client_native.client import ClientError, ClientOptions, LocalData, NativeClient
from client_native.dp_sgd import DpSgdOptions
from coordinator.federation.config import FederationConfig
from coordinator.service.server import start_service
from coordinator.service.settings import ServerSettings, ServeSettings
from flcore.modelspec import mlp


def _settings(tmp: Path, rounds: int = 2) -> ServeSettings:
    # the safe defaults end to end: one group of 5 (t = 4), noise the clients' default policy accepts
    fed = FederationConfig(model=mlp([64, 16, 10]), rounds=rounds, clients_per_round=5, group_size=5,
                           aggregator="mean", local_epochs=1, lr=0.1, train_timeout=30, phase_timeout=10,
                           noise_multiplier=2.0, epsilon=1e3, delta=1e-6)
    return ServeSettings(ServerSettings(ws_port=0, grpc_port=0, data_dir=str(tmp / "data")), fed, "digits")


def _data(i: int) -> LocalData:
    return load_data(f"digits:{i}/5", "iid", 0)


def test_clients_over_both_transports_with_dp_sgd_and_pinned_keys(tmp_path: Path) -> None:
    async def scenario() -> tuple:
        service = await start_service(_settings(tmp_path))
        try:
            opts = [ClientOptions(f"127.0.0.1:{service.ws_port}", "websocket", tmp_path / "c0"),
                    ClientOptions(f"127.0.0.1:{service.grpc_port}", "grpc", tmp_path / "c1"),
                    ClientOptions(f"127.0.0.1:{service.grpc_port}", "grpc", tmp_path / "c2",
                                  dp_sgd=DpSgdOptions(noise_multiplier=1.0, max_grad_norm=1.0)),
                    ClientOptions(f"127.0.0.1:{service.ws_port}", "websocket", tmp_path / "c3"),
                    ClientOptions(f"127.0.0.1:{service.grpc_port}", "grpc", tmp_path / "c4")]
            clients = [NativeClient(_data(i), o) for i, o in enumerate(opts)]
            summaries = await asyncio.wait_for(asyncio.gather(*(c.run() for c in clients)), 120)
            return service.driver.engine, clients, summaries
        finally:
            await service.stop()

    engine, clients, summaries = asyncio.run(scenario())
    assert [s.rounds for s in summaries] == [[1, 2]] * 5
    assert all(s.stop_reason == "all 2 rounds done" for s in summaries)
    assert summaries[2].dp_sgd_epsilon is not None and summaries[2].dp_sgd_epsilon > 0
    assert summaries[0].dp_sgd_epsilon is None
    for i in range(5):  # identity persisted, coordinator key pinned on first use, own privacy ledger kept
        assert (tmp_path / f"c{i}" / "identity.key").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / f"c{i}" / "coordinator.pub").read_text().strip() == engine.public_key.hex()
        led = summaries[i].ledger
        assert led["participations"] == 2 and 0 < led["epsilon"] <= 10.0 and led["epsilon"] < led["epsilon_worst_case"]
        assert engine.participation.count(clients[i].client_id) == 2
    again = NativeClient(_data(0), ClientOptions("127.0.0.1:1", "grpc", tmp_path / "c0"))
    assert again.client_id == clients[0].client_id and again.session.coordinator_key == engine.public_key
    assert again.session.ledger.participations() == 2  # the ledger file survived the restart
    model = mle.load(tmp_path / "data" / "models" / "round-000002.mle", trusted_keys=[engine.public_key],
                     require_signature=True)
    assert model.metadata["task"]["local_epochs"] == 1 and model.metadata["model"]["layers"][0]["type"] == "Linear"
    assert {c["kind"] for c in engine.status()["clients"]} == {None}  # all gone after the stop


def test_a_client_declines_a_coordinator_below_its_policy_and_the_ledger_stays_empty(tmp_path: Path) -> None:
    """A coordinator in groups of 3 without noise: clients with the default policy decline (nothing about their
    updates leaves them); the coordinator stops selecting them and never completes a round."""
    import dataclasses

    async def scenario() -> tuple:
        st = _settings(tmp_path)
        st = dataclasses.replace(st, federation=dataclasses.replace(st.federation, clients_per_round=3,
                                                                    group_size=3, noise_multiplier=0.0,
                                                                    epsilon=float("inf")))
        service = await start_service(st)
        try:
            clients = [NativeClient(_data(i), ClientOptions(f"127.0.0.1:{service.grpc_port}", "grpc",
                                                            tmp_path / f"d{i}")) for i in range(3)]
            tasks = [asyncio.create_task(c.run()) for c in clients]
            for _ in range(200):
                await asyncio.sleep(0.1)
                if all(c.summary.declined for c in clients):
                    break
            for c in clients:
                c._stopped = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return service.driver.engine, clients
        finally:
            await service.stop()

    engine, clients = asyncio.run(scenario())
    assert all(c.summary.declined and c.summary.declined[0][0] == "policy_group_size" for c in clients)
    assert engine.round_number == 0 and engine.participation.max_participations() == 0
    assert all(not (tmp_path / f"d{i}" / "privacy-ledger.json").exists() for i in range(3))


def test_client_refuses_a_coordinator_with_another_key(tmp_path: Path) -> None:
    async def scenario() -> None:
        service = await start_service(_settings(tmp_path))
        try:
            client = NativeClient(_data(0), ClientOptions(f"127.0.0.1:{service.grpc_port}", "grpc",
                                                          coordinator_key=bytes(32)))
            await asyncio.wait_for(client.run(), 30)
        finally:
            await service.stop()

    with pytest.raises(ClientError, match="handshake"):
        asyncio.run(scenario())


def test_load_data_errors(tmp_path: Path) -> None:
    for bad in ("digits:3/3", "digits:x", "nothing.npz"):
        with pytest.raises(ValueError):
            load_data(bad)
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
    assert len(load_data(str(tmp_path / "d.npz")).x) == 4
    np.savez(tmp_path / "bad.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="needs arrays"):
        load_data(str(tmp_path / "bad.npz"))
