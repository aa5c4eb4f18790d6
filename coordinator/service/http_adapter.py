"""The HTTP side of the WebSocket port: an :class:`~coordinator.service.http_server.HttpRequest` →
:class:`~coordinator.service.http_routes.HttpRoutes` → an :class:`~coordinator.service.http_server.HttpReply`.

:class:`~coordinator.service.http_server.HttpConnection` (streaming, keep-alive, ranges, timeouts) calls
:func:`respond` for every request that is not the WebSocket handshake (:mod:`coordinator.service.transport_ws`
decides). Passed on to the routes: the method, the target, ``If-None-Match`` (304 is theirs), ``Authorization``
(only when sent once) and ``Accept-Encoding`` (the gzip encoding of compressible static files – not for a range
request, see :func:`respond`); added here: CORS for the public paths (:func:`cors_headers`). Bodies stay the
routes' cached ``bytes`` – the connection sends them in slices with flow control, so no body is copied per
connection.
"""

from __future__ import annotations

from coordinator.service.http_routes import HttpRoutes
from coordinator.service.http_server import HttpReply, HttpRequest

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


def merge_headers(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """``base`` updated with ``extra``; ``Vary`` values are combined (``Accept-Encoding, Origin``), not replaced."""
    out = dict(base)
    for name, value in extra.items():
        if name == "Vary" and out.get("Vary"):
            have = [v.strip() for v in out["Vary"].split(",")]
            out["Vary"] = ", ".join(have + [v.strip() for v in value.split(",") if v.strip() not in have])
        else:
            out[name] = value
    return out


async def respond(routes: HttpRoutes, request: HttpRequest, allowed_origins: tuple[str, ...] = ()) -> HttpReply:
    """The reply to ``request`` (not a WebSocket handshake); CORS headers for the public paths when
    ``allowed_origins`` lets the request's ``Origin`` in (:func:`cors_headers`)."""
    h = request.headers
    # a range request gets the identity encoding: a client that resumes a download with the count of bytes it has
    # decoded (fetch() decodes gzip: client_web/js/loader.js resumes with Range: bytes=<decoded>-) would otherwise
    # get gzip bytes from the wrong offset; one that resumes the gzip encoding sends If-Range with its ETag, which
    # the identity encoding does not match: it gets the whole (identity) body – correct, if not the cheapest
    encoding = None if h.get_all("Range") else h.joined("Accept-Encoding")
    r = await routes.handle_async(request.method, request.target, h.joined("If-None-Match"), h.single("Authorization"),
                                  accept_encoding=encoding)
    headers = merge_headers({"Content-Type": r.content_type, **r.headers},
                            cors_headers(h.single("Origin"), request.target, allowed_origins))
    length = headers.pop("Content-Length", None)  # HEAD: the GET's length, no body
    return HttpReply(r.status, list(headers.items()), r.body,
                     int(length) if length is not None and request.method == "HEAD" else None)


__all__ = ["CORS_PATHS", "CORS_PREFIXES", "cors_headers", "merge_headers", "respond"]
