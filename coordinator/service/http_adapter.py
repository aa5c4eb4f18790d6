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
# what a page on another (allowed) origin may read: the public status, liveness and the static files of the SDK,
# the Python bundle and the demo data – never the operator's views
CORS_PATHS = ("/status", "/health")
CORS_PREFIXES = ("/sdk/", "/py/", "/demo/", "/assets/")


def cors_headers(origin: str | None, path: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """``Access-Control-Allow-Origin`` for a simple GET/HEAD from ``origin`` (docs/operations.md "Other origins"):
    only when the operator allowed other origins (``allowed_origins``: listed ones, or ``*``) and only for the public
    paths above. Same-origin pages (the default) need none; no credentials are ever allowed (nothing here reads
    cookies, and ``/status/operator`` is not shared)."""
    if not origin or not allowed:
        return {}
    p = path.split("?", 1)[0]
    if not (p in CORS_PATHS or p.startswith(CORS_PREFIXES)):
        return {}
    if "*" in allowed:
        return {"Access-Control-Allow-Origin": "*"}
    o = origin.strip().lower().rstrip("/")
    if o in {a.strip().lower().rstrip("/") for a in allowed}:
        return {"Access-Control-Allow-Origin": origin.strip(), "Vary": "Origin"}
    return {}


def _single(headers: Headers, name: str) -> str | None:
    """A header sent exactly once, else None (a repeated ``Authorization`` is not credentials)."""
    values = headers.get_all(name)
    return values[0] if len(values) == 1 else None


async def respond(routes: HttpRoutes, connection: ServerConnection, request: Request,
                  allowed_origins: tuple[str, ...] = ()) -> Response:
    """The HTTP response to ``request`` on ``connection`` (not a WebSocket handshake); CORS headers for the
    public paths when ``allowed_origins`` lets the request's ``Origin`` in (:func:`cors_headers`)."""
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
    cors = cors_headers(_single(request.headers, "Origin"), request.path, allowed_origins)
    headers = Headers({"Content-Type": r.content_type, "Content-Length": str(len(r.body)), **r.headers, **cors})
    return Response(r.status, HTTPStatus(r.status).phrase, headers, r.body)


__all__ = ["COUNTED_BYTES", "cors_headers", "respond"]
