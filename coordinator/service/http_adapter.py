"""The HTTP side of the WebSocket port: :class:`~coordinator.service.http_routes.HttpRoutes` → a ``websockets``
``Response`` (``process_request``), with the static-bytes budget (:class:`~coordinator.service.static_files.
InflightBudget`): a response body of at least :data:`COUNTED_BYTES` is counted from when it is handed to the
connection until the connection is gone (the peer read it all and closed, or the handshake timeout aborted it);
when the budget is spent the request waits up to ``InflightBudget.wait`` seconds for room, then the answer is 503
with ``Retry-After`` – small responses (``/health``, ``/status``) are never delayed or refused.
"""

from __future__ import annotations

from http import HTTPStatus

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from coordinator.service.http_routes import HttpRoutes, unavailable

COUNTED_BYTES = 16 * 1024  # smaller bodies fit the socket's send buffer: they are neither counted nor refused


def _single(headers: Headers, name: str) -> str | None:
    """A header sent exactly once, else None (a repeated ``Authorization`` is not credentials)."""
    values = headers.get_all(name)
    return values[0] if len(values) == 1 else None


async def respond(routes: HttpRoutes, connection: ServerConnection, request: Request) -> Response:
    """The HTTP response to ``request`` on ``connection`` (not a WebSocket handshake)."""
    method = getattr(request, "method", "GET")
    r = await routes.handle_async(method, request.path, request.headers.get("If-None-Match"),
                                  _single(request.headers, "Authorization"))
    n = len(r.body)
    if n >= COUNTED_BYTES:
        peer = str((connection.remote_address or ("?",))[0])
        if await routes.inflight.acquire_wait(peer, n):
            connection.connection_lost_waiter.add_done_callback(lambda _: routes.inflight.release(peer, n))
        else:
            r = routes.finish(method, unavailable("busy: too many large downloads in progress"), None)
    headers = Headers({"Content-Type": r.content_type, "Content-Length": str(len(r.body)), **r.headers})
    return Response(r.status, HTTPStatus(r.status).phrase, headers, r.body)


__all__ = ["COUNTED_BYTES", "respond"]
