"""Enrolment policies end to end (issue 13 F4): the serve settings, ``fl-coordinator enrol-token``, ``fl-client
--enrolment-token`` / ``--show-identity``, and a real service (both transports' code path, one event loop) that
admits a token holder and refuses, closes and stores nothing for a key without one."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from client_native.cli import load_data
from client_native.cli import main as fl_client_main
from client_native.client import ClientError, ClientOptions, NativeClient
from coordinator.federation.admission import check_token
from coordinator.federation.config import FederationConfig
from coordinator.service.cli import main as coordinator_main
from coordinator.service.server import start_service
from coordinator.service.settings import (
    ServerSettings,
    ServeSettings,
    SettingsError,
    add_serve_arguments,
    admission_config,
    load_settings,
)
from coordinator.service.store import Store
from flcore.modelspec import mlp
from flcore.policy import PrivacyPolicy
from flcrypto import default_crypto


def _settings(*flags: str):
    p = argparse.ArgumentParser(prog="serve")
    add_serve_arguments(p)
    return load_settings(p.parse_args(list(flags)))


def test_serve_admission_settings_defaults_and_refusals(tmp_path: Path) -> None:
    a = admission_config(_settings().server)
    assert (a.enrolment, a.enrolment_per_minute, a.enrolment_burst, a.probation, a.hello_timeout,
            a.ready_timeout, a.stall_evidence, a.stall_ban) == ("open", 120.0, 120, 10.0, 10.0, 300.0, 0.5, 6)
    key = default_crypto().ed25519_public_key(b"\x01" * 32)
    listed = tmp_path / "clients.txt"
    listed.write_text(f"# lab machines\n{key.hex()}\n")
    s = _settings("--enrolment", "allowlist", "--enrolment-allowlist", str(listed), "--ready-timeout", "0")
    assert admission_config(s.server).allowlist == {key} and admission_config(s.server).ready_timeout == 0
    for flags, message in ((["--enrolment", "allowlist"], "needs enrolment_allowlist"),
                           (["--enrolment", "allowlist", "--enrolment-allowlist", str(tmp_path / "nope")],
                            "enrolment_allowlist"),
                           (["--enrolment", "invite"], "enrolment must be one of"),
                           (["--enrolment-allowlist", str(listed)], "only used with enrolment = allowlist"),
                           (["--stall-evidence", "2"], "stall_evidence"),
                           (["--hello-timeout", "-1"], "hello_timeout")):
        with pytest.raises(SettingsError, match=message):
            _settings(*flags)
    bad = tmp_path / "bad.txt"
    bad.write_text("00ff\n")
    with pytest.raises(SettingsError, match="line 1"):
        _settings("--enrolment", "allowlist", "--enrolment-allowlist", str(bad))


def test_enrol_token_cli_and_client_identity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert coordinator_main(["enrol-token", "--data-dir", str(data), "--client-key", "00" * 32]) == 2
    assert "start fl-coordinator serve" in capsys.readouterr().err
    data.mkdir()
    seed = b"\x07" * 32
    (data / "coordinator.key").write_bytes(seed)
    assert fl_client_main(["--show-identity", "--state-dir", str(tmp_path / "c")]) == 0
    ident = json.loads(capsys.readouterr().out)
    assert coordinator_main(["enrol-token", "--data-dir", str(data), "--client-key", "zz"]) == 2
    assert "--client-key" in capsys.readouterr().err
    assert coordinator_main(["enrol-token", "--data-dir", str(data), "--client-key", ident["public_key"],
                             "--valid-days", "2"]) == 0
    token = capsys.readouterr().out.strip()
    expires = check_token(default_crypto().ed25519_public_key(seed), bytes.fromhex(ident["public_key"]), token, 0.0)
    assert expires > 86400
    assert fl_client_main(["--data", "digits:0/5"]) == 2  # --server is still required to run


def test_a_token_enrols_a_native_client_and_a_key_without_one_is_refused(tmp_path: Path) -> None:
    fed = FederationConfig(model=mlp([64, 16, 10]), rounds=1, clients_per_round=1, group_size=1, aggregator="mean",
                           local_epochs=1, train_timeout=30, phase_timeout=10)
    st = ServeSettings(ServerSettings(ws_port=0, grpc_port=0, data_dir=str(tmp_path / "data"), enrolment="token",
                                      probation=0.0), fed, "none")
    policy = PrivacyPolicy.permissive()  # groups of 1, no noise: a test federation

    async def scenario() -> tuple:
        service = await start_service(st, web=False)
        try:
            seed = (tmp_path / "data" / "coordinator.key").read_bytes()
            from coordinator.federation.admission import issue_token

            member = NativeClient(load_data("digits:0/5", "iid"), ClientOptions(
                f"127.0.0.1:{service.grpc_port}", "grpc", tmp_path / "member", policy=policy))
            member.session.enrolment_token = issue_token(seed, member.session.public_key, 2**40)
            stranger = NativeClient(load_data("digits:1/5", "iid"), ClientOptions(
                f"127.0.0.1:{service.ws_port}", "websocket", tmp_path / "stranger", policy=policy))
            with pytest.raises(ClientError, match="enrolment: enrolment needs a token"):
                await asyncio.wait_for(stranger.run(), 30)
            summary = await asyncio.wait_for(member.run(), 60)
            return service.driver.engine, member, stranger, summary
        finally:
            await service.stop()

    engine, member, stranger, summary = asyncio.run(scenario())
    assert summary.rounds == [1] and summary.stop_reason == "all 1 rounds done"
    assert stranger.summary.reconnects == 0  # final: the client stops instead of hammering the coordinator
    assert set(engine.registry) == {member.client_id} and stranger.client_id not in engine.trust.clients
    assert engine.refusals == {"enrolment": 1}
    store = Store.open(tmp_path / "data")
    assert [c.id for c in store.clients()] == [member.client_id]
    store.close()


def test_the_service_closes_sockets_that_never_authenticate_or_never_say_ready(tmp_path: Path) -> None:
    """F12 through the real driver and transports: a WebSocket and a gRPC stream that never say hello, and a client
    that authenticates and never says ready, are closed by the engine's deadline timer (one sweep timer for all)."""
    from client_native.channels import ChannelError, open_channel
    from flcore.session import ClientSession, SendFrame

    fed = FederationConfig(model=mlp([64, 16, 10]), rounds=1, clients_per_round=2, group_size=1, aggregator="mean")
    st = ServeSettings(ServerSettings(ws_port=0, grpc_port=0, data_dir=str(tmp_path / "data"), hello_timeout=1.0,
                                      ready_timeout=2.0), fed, "none")

    async def closed(ch) -> str:
        try:
            while await asyncio.wait_for(ch.recv(), 30) is not None:
                pass  # the idle client gets an "idle" error first
            return "closed"
        except ChannelError:
            return "closed"

    async def scenario() -> tuple:
        service = await start_service(st, web=False)
        try:
            ws = await open_channel(f"127.0.0.1:{service.ws_port}", "websocket")
            grpc = await open_channel(f"127.0.0.1:{service.grpc_port}", "grpc")
            idle = await open_channel(f"127.0.0.1:{service.ws_port}", "websocket")
            s = ClientSession(b"\x05" * 32, None)
            await idle.send(s.start()[0].data)
            auth = s.receive(await idle.recv())
            assert isinstance(auth[0], SendFrame)
            await idle.send(auth[0].data)
            s.receive(await idle.recv())  # welcome – and never ready
            got = await asyncio.gather(closed(ws), closed(grpc), closed(idle))
            for ch in (ws, grpc, idle):
                await ch.close()
            return got, dict(service.driver.engine.refusals), service.driver.engine.conns
        finally:
            await service.stop()

    got, refusals, conns = asyncio.run(scenario())
    assert got == ["closed"] * 3 and not conns
    assert refusals == {"hello_timeout": 2, "ready_timeout": 1}
