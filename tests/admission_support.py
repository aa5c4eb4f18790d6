"""Helpers for the admission-control tests (issue 13 F1, F10, F11, F18, F20): a real WebSocket transport on
loopback around a real engine, raw-socket WebSocket peers and a real client handshake."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.service.admission import Admission, LimitSettings
from coordinator.service.driver import EngineDriver
from coordinator.service.http_routes import HttpRoutes
from coordinator.service.transport_ws import WebSocketTransport
from flcore.modelspec import mlp
from flcore.session import ClientSession, SendFrame
from flcrypto import default_crypto


def engine() -> Engine:
    cfg = FederationConfig(model=mlp([4, 3]), rounds=2, clients_per_round=2, group_size=1, aggregator="mean")
    return Engine(cfg, b"\x07" * 32, seed=0)


@asynccontextmanager
async def ws_service(limits: LimitSettings | None = None, max_message_bytes: int = 64 << 20,
                     allowed_origins: tuple[str, ...] = ()) -> AsyncIterator[tuple[WebSocketTransport, int]]:
    e = engine()
    ws = WebSocketTransport(EngineDriver(e), HttpRoutes(e.status), max_message_bytes,
                            Admission(limits or LimitSettings()), allowed_origins)
    port = await ws.start("127.0.0.1", 0)
    try:
        yield ws, port
    finally:
        await ws.stop()


def session() -> ClientSession:
    return ClientSession(default_crypto().random_bytes(32), None)


def frames(actions: list) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, SendFrame)]


async def authenticate(ws, s: ClientSession | None = None) -> ClientSession:
    """A real client handshake (hello → challenge → auth → welcome) over a ``websockets`` client connection."""
    s = s or session()
    (hello,) = frames(s.start())
    await ws.send(hello)
    (auth,) = frames(s.receive(await ws.recv()))
    await ws.send(auth)
    s.receive(await ws.recv())  # welcome
    return s


class RawPeer:
    """A WebSocket client on a plain socket: sends whatever frames (or parts of them) a test writes."""

    def __init__(self, port: int, path: str = "/ws", headers: dict[str, str] | None = None) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.port, self.path, self.headers = port, path, headers or {}

    async def open(self) -> int:
        """The handshake; returns the HTTP status (101 = WebSocket open)."""
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        self.writer.write(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                          f"{extra}\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1])

    @staticmethod
    def header(length: int, opcode: int = 2, fin: bool = True) -> bytes:
        b0 = (0x80 if fin else 0) | opcode
        if length < 126:
            return struct.pack("!BB", b0, 0x80 | length) + b"\0\0\0\0"
        if length < 1 << 16:
            return struct.pack("!BBH", b0, 0x80 | 126, length) + b"\0\0\0\0"
        return struct.pack("!BBQ", b0, 0x80 | 127, length) + b"\0\0\0\0"  # mask 0: payload as is

    def frame(self, payload: bytes, opcode: int = 2, fin: bool = True) -> bytes:
        return self.header(len(payload), opcode, fin) + payload

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self, timeout: float = 8.0) -> tuple[int, bytes]:
        """The server's next frame: (opcode, payload)."""
        assert self.reader is not None
        async with asyncio.timeout(timeout):
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return b0 & 0x0F, await self.reader.readexactly(n)

    async def close_code(self, timeout: float = 8.0) -> int | None:
        """Read until the server's close frame (its code) or EOF (None)."""
        assert self.reader is not None
        async with asyncio.timeout(timeout):
            while True:
                try:
                    b0, b1 = await self.reader.readexactly(2)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return None
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                payload = await self.reader.readexactly(n)
                if b0 & 0x0F == 8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    def abort(self) -> None:
        if self.reader is not None:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.writer.close()
