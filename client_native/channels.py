"""Client-side transports: a gRPC bidirectional stream or a WebSocket, both carrying whole protocol frames.

A channel is ``await send(bytes)``, ``await recv() -> bytes | None`` (``None``: the server closed the session) and
``await close()``; connection failures raise :class:`ChannelError` so the client can reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol


class ChannelError(ConnectionError):
    """The connection failed or broke."""


class Channel(Protocol):
    async def send(self, data: bytes) -> None: ...
    async def recv(self) -> bytes | None: ...
    async def close(self) -> None: ...


class GrpcChannel:
    """The ``flcoordinator.v1.Federation/Session`` stream (see coordinator/service/transport_grpc.py)."""

    def __init__(self, target: str, max_message_bytes: int = 64 * 1024 * 1024, *, tls: bool = False,
                 ca_file: str | None = None) -> None:
        """``tls``: a TLS channel (the coordinator behind a TLS-terminating proxy, docs/operations.md), verified
        against the system's roots or ``ca_file`` (PEM); without it, plain h2c (loopback, private networks)."""
        self.target, self.max_message_bytes, self.tls, self.ca_file = target, max_message_bytes, tls, ca_file

    async def open(self, timeout: float = 10.0) -> GrpcChannel:
        import grpc

        from flcore.protocol import GRPC_METHOD as METHOD
        from flcore.protocol import grpc_channel_options as channel_options

        self._grpc = grpc
        options = channel_options(self.max_message_bytes)
        if self.tls:
            roots = _read_ca(self.ca_file)
            self.channel = grpc.aio.secure_channel(self.target, grpc.ssl_channel_credentials(roots), options=options)
        else:
            self.channel = grpc.aio.insecure_channel(self.target, options=options)
        try:
            await asyncio.wait_for(self.channel.channel_ready(), timeout)
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            await self.channel.close()
            raise ChannelError(f"gRPC {self.target}: not reachable ({type(exc).__name__})") from None
        try:
            self.call = self.channel.stream_stream(METHOD)()  # no request iterator: explicit write()/read()
        except Exception as exc:  # the channel broke between ready and the call
            await self.channel.close()
            raise ChannelError(f"gRPC {self.target}: {exc}") from None
        return self

    async def send(self, data: bytes) -> None:
        """Returns once gRPC has taken the message (flow control), so a later close() does not lose it."""
        try:
            await self.call.write(data)
        except (self._grpc.aio.AioRpcError, self._grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            # InvalidStateError: the server ended the call (e.g. the coordinator died) while we were busy – a lost
            # connection like any other, not a reason to exit (issue 13 F8)
            raise ChannelError(f"gRPC {self.target}: {exc or type(exc).__name__}") from None

    async def recv(self) -> bytes | None:
        try:
            msg = await self.call.read()
        except self._grpc.aio.AioRpcError as exc:
            raise ChannelError(f"gRPC {self.target}: {exc.code().name}: {exc.details()}") from None
        except (self._grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            raise ChannelError(f"gRPC {self.target}: {exc or type(exc).__name__}") from None
        if msg is self._grpc.aio.EOF:
            return None
        return bytes(msg)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call.done_writing(), 2.0)  # half-close: queued messages go out first
        with contextlib.suppress(Exception):
            await self.channel.close(grace=1.0)


def _read_ca(ca_file: str | None) -> bytes | None:
    """The PEM roots of ``ca_file`` (None: the system's)."""
    if not ca_file:
        return None
    try:
        with open(ca_file, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ChannelError(f"CA file {ca_file}: {exc.strerror or exc}") from None


class WebSocketChannel:
    def __init__(self, url: str, max_message_bytes: int = 64 * 1024 * 1024, *, ca_file: str | None = None) -> None:
        """``wss://`` URLs are verified against the system's roots or ``ca_file`` (PEM)."""
        self.url, self.max_message_bytes, self.ca_file = url, max_message_bytes, ca_file

    async def open(self, timeout: float = 10.0) -> WebSocketChannel:
        from websockets.asyncio.client import connect

        kw: dict[str, object] = {}
        if self.url.startswith("wss://"):
            import ssl

            _read_ca(self.ca_file)  # a missing file is a ChannelError like the others
            kw["ssl"] = ssl.create_default_context(cafile=self.ca_file or None)
        try:
            self.ws = await connect(self.url, max_size=self.max_message_bytes, compression=None,
                                    open_timeout=timeout, **kw)
        except (OSError, TimeoutError) as exc:
            raise ChannelError(f"WebSocket {self.url}: {exc}") from None
        except Exception as exc:  # websockets' handshake errors (InvalidStatus, InvalidURI, …)
            raise ChannelError(f"WebSocket {self.url}: {exc}") from None
        return self

    async def send(self, data: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self.ws.send(data)
        except ConnectionClosed as exc:
            raise ChannelError(f"WebSocket closed: {exc}") from None

    async def recv(self) -> bytes | None:
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        try:
            msg = await self.ws.recv()
        except ConnectionClosedOK:
            return None
        except ConnectionClosed as exc:
            raise ChannelError(f"WebSocket closed: {exc}") from None
        return msg.encode() if isinstance(msg, str) else bytes(msg)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


async def open_channel(server: str, transport: str = "grpc", max_message_bytes: int = 64 * 1024 * 1024,
                       ca_file: str | None = None) -> GrpcChannel | WebSocketChannel:
    """``server``: gRPC ``HOST:PORT`` (plain) or ``grpcs://HOST:PORT`` (TLS); WebSocket ``HOST:PORT``,
    ``ws://HOST:PORT/ws`` or ``wss://HOST[:PORT]/ws`` (TLS). TLS is verified against the system's roots or
    ``ca_file``; a coordinator behind a TLS proxy is reached this way (docs/operations.md)."""
    if transport == "grpc":
        tls = server.startswith("grpcs://")
        target = server.split("://", 1)[1] if server.startswith(("grpc://", "grpcs://")) else server
        return await GrpcChannel(target, max_message_bytes, tls=tls, ca_file=ca_file).open()
    if transport == "websocket":
        from flcore.protocol import WS_PATH

        url = server if server.startswith(("ws://", "wss://")) else f"ws://{server}{WS_PATH}"
        return await WebSocketChannel(url, max_message_bytes, ca_file=ca_file).open()
    raise ValueError(f"unknown transport {transport!r} (grpc or websocket)")
