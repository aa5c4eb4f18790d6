"""WebSocket transport (library ``websockets``, asyncio): one binary frame = one protocol message.

The same port serves plain HTTP (health, status JSON, static files) through
:class:`coordinator.service.http_routes.HttpRoutes`. Every accepted connection first waits for its first request's
header block (at most ``[http] header_timeout_s``, 8 KiB) before anything else runs – no ``websockets`` handshake
task, no ``open_timeout``. Then it is one of two kinds:

- a request for ``/ws`` (``flcore.protocol.WS_PATH``; the WebSocket handshake): the connection becomes a
  ``websockets`` connection – ``ServerConnection.connection_made`` runs now and is fed the bytes read so far;
  ``websockets`` answers a request there that is not an upgrade with 426;
- anything else: the transport is handed to a :class:`coordinator.service.http_server.HttpConnection`
  (``transport.set_protocol``), which serves this and later keep-alive requests through
  :func:`coordinator.service.http_adapter.respond`, streaming bodies with bounded buffers, Range requests and its
  own timeouts (header, idle, send progress) instead of ``websockets``' 10 s deadline for a whole response.

Text frames are refused with a protocol error by the engine (they are not .mle).

Admission control (issue 13 F1, F11, F18, F20; :mod:`coordinator.service.admission`, docs/operations.md):

- a TCP connection over ``max_connections`` or ``max_connections_per_ip`` is dropped as it is accepted (both kinds
  count until they close); one whose first header block is not complete within ``header_timeout_s`` is closed;
- the bytes held of requests not yet parsed (≤ 8 KiB before the decision, 16 KiB on an HTTP connection) count
  towards ``max_buffered_mb`` like partial frames do;
- ``/ws`` refuses a browser handshake whose ``Origin`` is not allowed with 403 (default: the origin of the host the
  browser asked for, and native clients that send no ``Origin``; ``*`` allows all);
- until the engine has authenticated the connection a frame (or a fragmented message) may hold at most
  ``pre_auth_max_frame_kb``; after it, ``max_message_bytes`` – larger ones close with 1009 as soon as their header
  announces the size. websockets checks ``protocol.max_message_size`` at each frame header, so the limit is raised
  right after the ``auth`` frame is handled, before the ``welcome`` is even queued;
- the bytes held in partial and queued incoming frames count towards the global ``max_buffered_mb``; the connection
  whose data crosses it closes with 1009;
- every incoming frame (data, control and continuation frames alike) takes a token from the connection's bucket and
  its IP's bucket; an empty bucket closes the connection with 1008 (policy violation);
- a peer that does not answer a close is dropped after ``close_timeout`` (also on shutdown, so ``stop`` is bounded:
  connections that have not sent a request yet are closed, HTTP connections finish their current response within
  ``close_timeout`` or are aborted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode, Frame
from websockets.http11 import Request, Response
from websockets.protocol import State

from coordinator.service import http_adapter
from coordinator.service.admission import Admission, LimitSettings, TokenBucket, peer_ip
from coordinator.service.driver import EngineDriver, QueueLink
from coordinator.service.http_routes import HttpRoutes
from coordinator.service.http_server import (
    HttpConnection,
    HttpLimits,
    HttpReply,
    HttpRequest,
    error_reply,
    head_end,
    request_target,
)
from coordinator.service.security_headers import security_headers
from flcore.protocol import WS_PATH

log = logging.getLogger("fl-coordinator.ws")


def _single(headers: Headers, name: str) -> str | None:
    """A header sent exactly once, else None (a repeated ``Authorization`` is not credentials)."""
    values = headers.get_all(name)
    return values[0] if len(values) == 1 else None


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """``/ws`` handshake: no ``Origin`` (native clients) is allowed; ``*`` allows every origin; otherwise the origin
    must be listed (``scheme://host[:port]``, case-insensitive) or, with an empty list, be the origin of the
    ``Host`` the browser asked for (http or https)."""
    if origin is None:
        return True
    if "*" in allowed:
        return True
    o = origin.strip().lower().rstrip("/")
    if allowed:
        return o in {a.strip().lower().rstrip("/") for a in allowed}
    parts = urlsplit(o)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc == host.strip().lower() \
        and not parts.path and not parts.query


class _AdmittedConnection(ServerConnection):
    """A :class:`ServerConnection` that reports to the transport's :class:`Admission` and becomes a WebSocket only
    when its first request asks for ``/ws`` (see the module docstring); otherwise its transport goes to an
    :class:`HttpConnection`."""

    transport_owner: WebSocketTransport  # set on the per-transport subclass

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # websockets' connection_made (which starts the handshake under open_timeout) waits for the first request
        owner = self.transport_owner
        assert isinstance(transport, asyncio.Transport)
        self.raw_transport = transport
        self.ip = peer_ip(transport.get_extra_info("peername"))
        self.bucket: TokenBucket = owner.admission.connection_bucket()
        self.authenticated = False
        self.refused = False
        self.kind = "pending"  # → "websocket" | "http" once the first header block is in
        self.head = bytearray()
        self._abort_handle: asyncio.TimerHandle | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self.admitted = owner.admission.open(self.ip) is None
        if not self.admitted:
            transport.abort()  # over a connection cap: no handshake, no buffers (counted and logged by Admission)
            return
        owner.pending.add(self)
        self.head_deadline = self.loop.time() + owner.http_limits.header_timeout_s
        self._head_timer = self.loop.call_at(self.head_deadline, transport.close)  # a slowloris: no answer

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        if self.kind == "websocket":
            super().connection_lost(exc)
        if self._abort_handle is not None:
            self._abort_handle.cancel()
        if self.admitted:
            self.admitted = False
            self.transport_owner.admission.close(self.ip, self)
        self.transport_owner.pending.discard(self)
        self.transport_owner.live.discard(self)

    def eof_received(self) -> bool | None:
        if self.kind == "websocket":
            return super().eof_received()
        return None  # before a complete request: nothing to answer, close

    def data_received(self, data: bytes) -> None:
        if self.kind == "pending":
            if not self.admitted:
                return
            searched = max(0, len(self.head) - 3)  # a slowloris sending byte by byte: each byte searched once
            self.head += data
            limit = self.transport_owner.http_limits.max_header_bytes
            if head_end(self.head, searched) is None and len(self.head) <= limit:
                if not self.transport_owner.admission.set_buffered(self, len(self.head)):
                    self.raw_transport.abort()  # too many bytes buffered over all connections
                return
            self._dispatch()
            return
        super().data_received(data)
        if self.admitted:
            self.account()
            if self.protocol.state is State.CLOSING:
                self._abort_later()

    def _dispatch(self) -> None:
        """The first header block is in (or too long): WebSocket for ``/ws``, HTTP for everything else."""
        owner, transport = self.transport_owner, self.raw_transport
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        owner.pending.discard(self)
        data, self.head = bytes(self.head), bytearray()
        line_end = data.find(b"\r\n")
        target = request_target(data[:line_end]) if line_end >= 0 else None
        if target is not None and target.split("?", 1)[0] == WS_PATH:
            self.kind = "websocket"
            ServerConnection.connection_made(self, transport)  # the handshake task (open_timeout) starts now
            self.protocol.max_message_size = owner.admission.limits.pre_auth_max_bytes
            owner.live.add(self)
            self.data_received(data)
            return
        self.kind = "http"
        owner.admission.set_buffered(self, 0)  # the HTTP connection accounts for its bytes itself
        self.admitted = False  # … and closes the admission when it is gone
        http = HttpConnection(owner.http_handler, owner.http_limits,
                              error_headers=list(security_headers("text/plain", b"", owner.routes.csp).items()))

        def buffered(n: int) -> bool:
            return owner.admission.set_buffered(http, n)

        def closed(ip: str = self.ip) -> None:
            owner.admission.close(ip, http)
            owner.http.discard(http)

        http.on_buffered, http.on_closed = buffered, closed
        owner.http.add(http)
        transport.set_protocol(http)
        http.start(transport, data, self.head_deadline)

    def process_event(self, event: object) -> None:
        if isinstance(event, Frame) and self.admitted:
            if self.refused:
                return  # failed by us: nothing more reaches the engine (frames parsed with the refused one)
            if self.protocol.state is not State.OPEN:  # e.g. the peer's close came in the same read: deliver
                super().process_event(event)         # the frames before it (a last message, a bye)
                return
            reason = self.transport_owner.admission.allow_message(self.bucket, self.ip)
            if reason is not None:
                self.refuse(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
                return
        super().process_event(event)

    def held_bytes(self) -> int:
        """Incoming bytes this connection holds: the unparsed buffer (a partial frame), the fragments of the
        message being received and the frames queued for the handler."""
        queued = sum(len(f.data) for f in self.recv_messages.frames.queue)
        return len(self.protocol.reader.buffer) + (self.protocol.current_size or 0) + queued

    def account(self) -> None:
        if self.admitted and not self.transport_owner.admission.set_buffered(self, self.held_bytes()):
            self.refuse(CloseCode.MESSAGE_TOO_BIG, "server busy: too many bytes buffered")

    def set_authenticated(self, authenticated: bool) -> None:
        if authenticated != self.authenticated:
            self.authenticated = authenticated
            limits = self.transport_owner.admission.limits
            self.protocol.max_message_size = (self.transport_owner.max_message_bytes if authenticated
                                              else limits.pre_auth_max_bytes)

    def refuse(self, code: int, reason: str) -> None:
        """Fail the connection now (close frame, then the socket after ``close_timeout``) and free its buffers."""
        self.refused = True
        if self.protocol.state is State.OPEN:
            self.protocol.fail(code, reason)
            self.send_data()
            self.protocol.reader.discard()
        if self.admitted:
            self.transport_owner.admission.set_buffered(self, 0)
        self._abort_later()

    def _abort_later(self) -> None:
        if self._abort_handle is None and self.transport is not None:
            self._abort_handle = self.loop.call_later(self.transport_owner.admission.limits.close_timeout,
                                                      self.transport.abort)


class WebSocketTransport:
    """The WebSocket + HTTP port (module docstring). ``live``: WebSocket connections; ``http``: HTTP connections;
    ``pending``: connections whose first request is not complete yet."""

    def __init__(self, driver: EngineDriver, routes: HttpRoutes, max_message_bytes: int,
                 admission: Admission | None = None, allowed_origins: tuple[str, ...] = (),
                 http_limits: HttpLimits | None = None) -> None:
        self.driver, self.routes, self.max_message_bytes = driver, routes, max_message_bytes
        self.admission = admission or Admission(LimitSettings())
        self.allowed_origins = tuple(allowed_origins)
        self.http_limits = http_limits or HttpLimits()
        self.server: Server | None = None
        self.live: set[_AdmittedConnection] = set()
        self.pending: set[_AdmittedConnection] = set()
        self.http: set[HttpConnection] = set()

    async def start(self, host: str, port: int) -> int:
        connection_class = type("AdmittedConnection", (_AdmittedConnection,), {"transport_owner": self})
        self.server = await serve(self._handler, host, port, max_size=self.max_message_bytes, compression=None,
                                  process_request=self._process_request, max_queue=64,
                                  server_header="fl-coordinator", create_connection=connection_class,
                                  close_timeout=self.admission.limits.close_timeout)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every connection (WebSockets with 1001) and the listening socket; connections without a request
        yet are closed at once, HTTP connections after their current response; peers that ignore the close
        handshake, never finish their opening handshake or do not read are dropped after ``close_timeout`` –
        shutdown stays bounded (F20)."""
        if self.server is None:
            return
        grace = self.admission.limits.close_timeout
        self.server.close()
        for pending in list(self.pending):
            pending.raw_transport.abort()
        http = list(self.http)
        for connection in http:
            connection.shutdown(grace)
        try:
            await asyncio.wait_for(self.server.wait_closed(), grace + 1.0)
        except TimeoutError:
            for connection in list(self.live):
                if connection.transport is not None:
                    connection.transport.abort()
            await self.server.wait_closed()
        waiting = [c.closed for c in http if c.closed is not None and not c.closed.done()]
        if waiting:  # each is aborted after the grace period at the latest
            await asyncio.wait(waiting, timeout=grace + 1.0)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The ``/ws`` handshake (only ``/ws`` requests reach ``websockets``): 403 for a browser origin that is not
        allowed, else on with the handshake."""
        origins = request.headers.get_all("Origin")
        origin = origins[0] if len(origins) == 1 else ("" if origins else None)  # repeated: not allowed
        if not origin_allowed(origin, _single(request.headers, "Host"), self.allowed_origins):
            self.admission.refused("origin", f"WebSocket handshake from origin {origin[:200]!r}")
            body = b"Origin not allowed\n"
            return Response(403, "Forbidden", Headers({"Content-Type": "text/plain",
                                                       "Content-Length": str(len(body))}), body)
        return None  # go on with the WebSocket handshake

    async def http_handler(self, request: HttpRequest) -> HttpReply:
        """An HTTP request on an :class:`HttpConnection` → :func:`http_adapter.respond`. ``/ws`` there (after
        other requests on a keep-alive connection) is refused: the handshake must be a connection's first
        request."""
        if request.path == WS_PATH:
            csp = security_headers("text/plain", b"", self.routes.csp)
            return error_reply(400, "the WebSocket handshake must be the first request on its connection",
                               [*csp.items(), ("Connection", "close")])
        return await http_adapter.respond(self.routes, request, self.allowed_origins)

    async def _handler(self, ws: ServerConnection) -> None:
        assert isinstance(ws, _AdmittedConnection)
        link = QueueLink()
        conn = self.driver.open("websocket", link, str(ws.remote_address))
        writer = asyncio.create_task(self._writer(ws, link))
        try:
            async for message in ws:
                data = message.encode() if isinstance(message, str) else message
                self.driver.receive(conn, data)
                # the next frame header is checked against the limit of the state this message left us in
                ws.set_authenticated(self.driver.is_authenticated(conn))
                ws.account()
        except ConnectionClosed as exc:
            ours = exc.sent is not None and exc.sent.reason.startswith("server busy")
            if not ours and ((exc.rcvd is not None and exc.rcvd.code == 1009) or
                             (exc.sent is not None and exc.sent.code == 1009)):
                limit = self.max_message_bytes if ws.authenticated else self.admission.limits.pre_auth_max_bytes
                self.admission.refused("frame_size", f"{conn}: closed, frame over the {limit}-byte limit"
                                       f"{'' if ws.authenticated else ' before authentication'}")
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
