"""Native clients reach a coordinator behind a TLS-terminating proxy (the deployment of docs/operations.md): a real
``serve`` (plain WebSocket and h2c gRPC on loopback) behind a TLS terminator written here with asyncio's ssl
support – it decrypts and forwards bytes, as nginx or Caddy would – and real ``NativeClient``s over
``grpcs://`` and ``wss://``, verified against a test CA (tests/fixtures/tls: a CA and a ``localhost`` server
certificate valid until 2126, generated once with openssl; the CA's private key was discarded). A client without
the CA refuses the server's certificate."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import pytest

from client_native.channels import ChannelError, GrpcChannel, open_channel
from client_native.cli import load_data
from client_native.client import ClientOptions, NativeClient
from coordinator.federation.config import FederationConfig
from coordinator.service.server import start_service
from coordinator.service.settings import ServerSettings, ServeSettings
from flcore.modelspec import mlp

TLS = Path(__file__).parent / "fixtures" / "tls"
CA = str(TLS / "ca.pem")


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


async def tls_terminator(backend_port: int, alpn: list[str]) -> tuple[asyncio.Server, int]:
    """A TLS listener on loopback that forwards the decrypted bytes to ``backend_port``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(TLS / "server.pem", TLS / "server.key")
    ctx.set_alpn_protocols(alpn)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", backend_port)
        await asyncio.gather(_pump(reader, up_w), _pump(up_r, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1]


def _settings(tmp: Path) -> ServeSettings:
    fed = FederationConfig(model=mlp([64, 16, 10]), rounds=1, clients_per_round=5, group_size=5, aggregator="mean",
                           local_epochs=1, lr=0.1, train_timeout=30, phase_timeout=10, noise_multiplier=2.0,
                           epsilon=1e3, delta=1e-6)
    return ServeSettings(ServerSettings(ws_port=0, grpc_port=0, data_dir=str(tmp / "data")), fed, "digits")


def test_clients_over_grpcs_and_wss_through_a_tls_proxy(tmp_path: Path) -> None:
    async def scenario() -> list:
        service = await start_service(_settings(tmp_path))
        grpc_tls, grpc_port = await tls_terminator(service.grpc_port, ["h2"])
        ws_tls, ws_port = await tls_terminator(service.ws_port, ["http/1.1"])
        try:
            opts = [ClientOptions(f"grpcs://localhost:{grpc_port}", "grpc", tmp_path / f"g{i}", ca_file=CA)
                    for i in range(3)]
            opts += [ClientOptions(f"wss://localhost:{ws_port}/ws", "websocket", tmp_path / f"w{i}", ca_file=CA)
                     for i in range(2)]
            clients = [NativeClient(load_data(f"digits:{i}/5", "iid", 0), o) for i, o in enumerate(opts)]
            return await asyncio.wait_for(asyncio.gather(*(c.run() for c in clients)), 120)
        finally:
            grpc_tls.close()
            ws_tls.close()
            await service.stop()

    summaries = asyncio.run(scenario())
    assert [s.rounds for s in summaries] == [[1]] * 5
    assert all(s.stop_reason == "all 1 rounds done" for s in summaries)


def test_a_server_certificate_the_client_cannot_verify_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = backend.sockets[0].getsockname()[1]
        server, tls_port = await tls_terminator(port, ["h2", "http/1.1"])
        try:
            with pytest.raises(ChannelError):  # the system's roots do not include the test CA
                await open_channel(f"wss://localhost:{tls_port}/ws", "websocket")
            with pytest.raises(ChannelError):
                await GrpcChannel(f"localhost:{tls_port}", tls=True).open(timeout=3.0)
            with pytest.raises(ChannelError, match="CA file"):
                await open_channel(f"grpcs://localhost:{tls_port}", "grpc", ca_file=str(tmp_path / "missing.pem"))
        finally:
            server.close()
            backend.close()

    asyncio.run(scenario())
