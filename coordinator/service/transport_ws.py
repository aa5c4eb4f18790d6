"""WebSocket transport (library ``websockets``, asyncio): one binary frame = one protocol message.

Also answers plain HTTP requests on the same port (health, status JSON, static files) through
:class:`coordinator.service.http_routes.HttpRoutes`, passing on the method, ``If-None-Match`` and ``Authorization``.
Frames above ``max_message_bytes`` close the connection with code 1009 ("message too big"); text frames are
refused with a protocol error by the engine (they are not .mle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from coordinator.service import http_adapter
from coordinator.service.driver import EngineDriver, QueueLink
from coordinator.service.http_routes import HttpRoutes
from flcore.protocol import WS_PATH

log = logging.getLogger("fl-coordinator.ws")


class WebSocketTransport:
    def __init__(self, driver: EngineDriver, routes: HttpRoutes, max_message_bytes: int) -> None:
        self.driver, self.routes, self.max_message_bytes = driver, routes, max_message_bytes
        self.server: Server | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = await serve(self._handler, host, port, max_size=self.max_message_bytes, compression=None,
                                  process_request=self._process_request, max_queue=64,
                                  server_header="fl-coordinator")
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Awaitable[Response] | None:
        if request.path.split("?", 1)[0] == WS_PATH:
            return None  # go on with the WebSocket handshake
        return http_adapter.respond(self.routes, connection, request)  # HTTP (websockets awaits it)

    async def _handler(self, ws: ServerConnection) -> None:
        link = QueueLink()
        conn = self.driver.open("websocket", link, str(ws.remote_address))
        writer = asyncio.create_task(self._writer(ws, link))
        try:
            async for message in ws:
                data = message.encode() if isinstance(message, str) else message
                self.driver.receive(conn, data)
        except ConnectionClosed as exc:
            if (exc.rcvd is not None and exc.rcvd.code == 1009) or (exc.sent is not None and exc.sent.code == 1009):
                log.warning("%s: closed, frame over the %d-byte limit", conn, self.max_message_bytes)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self.driver.closed(conn)

    @staticmethod
    async def _writer(ws: ServerConnection, link: QueueLink) -> None:
        try:
            while True:
                data = await link.queue.get()
                if data is None:
                    await ws.close(1000, link.close_reason[:120])
                    return
                await ws.send(data)
        except ConnectionClosed:
            return
