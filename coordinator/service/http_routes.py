"""The coordinator's HTTP endpoints (served on the WebSocket port): health, status JSON, static files.

Pure request → response functions; :mod:`coordinator.service.http_adapter` adapts them to the HTTP connections of
the WebSocket port (:mod:`coordinator.service.http_server`, :mod:`coordinator.service.transport_ws`). ``GET`` and ``HEAD`` (the same headers, no body) only – anything else is
405. Every response carries the security headers of :mod:`coordinator.service.security_headers` (CSP, no framing,
``nosniff``, no referrer). Work too slow for the event loop (a demo shard) is returned as a :class:`Deferred` and
run in a worker thread.

``/status`` is public and shows federation-level aggregates only (:func:`coordinator.service.status_view.public_status`);
``/status/operator`` shows the engine's full status (every client's id, trust, state) to a request carrying
``Authorization: Bearer <operator token>``; it is 404 when no operator token is configured. The token is only
accepted in that header – never from the query string, which ends up in access logs, proxies and browser history.
``operator_routes`` puts more paths behind the same check (``/metrics``, ``/status/operator/rounds`` and
``/status/operator/events``: :mod:`coordinator.service.dashboard`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.service.security_headers import DEFAULT_CSP, security_headers
from coordinator.service.static_files import (
    FileData,
    accepts_gzip,
    allowed_file,
    gzip_body,
    read_file,
    under_root,
)
from coordinator.service.status_view import operator_status, public_status

RETRY_AFTER_S = 2  # seconds a 503 asks the client to wait


@dataclass(frozen=True)
class HttpResponse:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_response(value: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, "application/json", json.dumps(value, allow_nan=False).encode() + b"\n",
                        {"Cache-Control": "no-store"})


def not_found(path: str) -> HttpResponse:
    return json_response({"error": "not_found", "path": path}, 404)


OPERATOR_PATH = "/status/operator"
REALM = "fl-coordinator operator"


def unauthorized(error: str | None = None) -> HttpResponse:
    """401 with a Bearer challenge (RFC 6750: ``error="invalid_token"`` when a token was sent but is wrong)."""
    r = json_response({"error": "unauthorized", "detail": "send Authorization: Bearer <operator token>"}, 401)
    challenge = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    return HttpResponse(r.status, r.content_type, r.body, {**r.headers, "WWW-Authenticate": challenge})


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    return credentials if scheme.lower() == "bearer" and credentials else None


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison (of SHA-256 digests, so the time does not depend on the lengths either)."""
    def digest(t: str) -> bytes:
        return hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest()

    return hmac.compare_digest(digest(given), digest(expected))


# a generated route: (path after the prefix, query string) → a response, a Deferred (expensive work, run off the
# event loop by the transport), or None for 404
Handler = Callable[[str, str], "HttpResponse | StaticBody | Deferred | None"]


@dataclass(frozen=True)
class Deferred:
    """Work too slow for the event loop: :meth:`HttpRoutes.handle_async` runs ``compute`` in a worker thread
    (:meth:`HttpRoutes.handle` runs it inline); ``None`` means 404."""

    compute: Callable[[], HttpResponse | None]


def unavailable(reason: str, retry_after: int = RETRY_AFTER_S) -> HttpResponse:
    """503 with ``Retry-After``: the server is busy (a budget is spent), try again shortly."""
    r = json_response({"error": "unavailable", "message": reason}, 503)
    return HttpResponse(503, r.content_type, r.body, {**r.headers, "Retry-After": str(retry_after)})


@dataclass
class HttpRoutes:
    """``status`` returns the engine's full status dict (``/status`` publishes its public view only);
    ``static`` maps URL prefixes (``/sdk/``) to directories, ``allow`` optionally a prefix to the only files
    (relative paths) served from it; ``handlers`` maps URL prefixes to functions that generate the response
    (checked before ``static``); ``operator_token`` enables ``/status/operator``; ``csp`` is the
    Content-Security-Policy (:mod:`coordinator.service.security_headers`)."""

    status: Callable[[], dict[str, Any]]
    static: dict[str, Path] = field(default_factory=dict)
    index: Path | None = None  # the page served at "/"
    handlers: dict[str, Handler] = field(default_factory=dict)
    operator_token: str | None = field(default=None, repr=False)  # None: /status/operator is 404
    allow: dict[str, frozenset[str]] = field(default_factory=dict)
    csp: str = DEFAULT_CSP
    max_deferred: int = 4  # Deferred computations queued or running at once; more → 503
    deferred_pending: int = field(default=0, init=False)
    _executor: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    # more paths behind the operator token (/metrics, /status/operator/events, …): path → response
    operator_routes: dict[str, Callable[[], HttpResponse]] = field(default_factory=dict)
    # /health's figures without the full status (O(1) instead of O(identities): it is polled, and public); None:
    # taken from ``status``
    health: Callable[[], dict[str, Any]] | None = None
    # the public /status is recomputed at most once per this many seconds (it costs O(identities) and anyone may
    # ask: bench_load's 10,000 identities made every request walk them); 0 = every request
    public_status_ttl: float = 1.0
    _public: tuple[float, HttpResponse] | None = field(default=None, init=False, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def handle(self, method: str, path: str, if_none_match: str | None = None,
               authorization: str | None = None, accept_encoding: str | None = None) -> HttpResponse:
        """The response to ``method path`` (deferred work runs inline); a static file whose ETag is in
        ``if_none_match`` gives 304; ``authorization`` is the request's ``Authorization`` header (only
        ``/status/operator`` reads it); ``accept_encoding`` the request's ``Accept-Encoding`` (a compressible static
        file is sent gzip-encoded once its encoding is ready: :func:`~coordinator.service.static_files.gzip_body`).
        ``HEAD`` is answered as ``GET`` without the body."""
        r = self._handle(method, path, authorization, accept_encoding)
        if isinstance(r, Deferred):
            r = r.compute() or not_found(path.partition("?")[0])
        return self.finish(method, r, if_none_match)

    async def handle_async(self, method: str, path: str, if_none_match: str | None = None,
                           authorization: str | None = None, accept_encoding: str | None = None) -> HttpResponse:
        """:meth:`handle` for the event loop: deferred work runs in one worker thread, at most
        ``max_deferred`` at once (queued or running) – beyond that 503 with ``Retry-After``."""
        r = self._handle(method, path, authorization, accept_encoding)
        if isinstance(r, Deferred):
            if self.deferred_pending >= self.max_deferred:
                r = unavailable("busy: too many requests being computed")
            else:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="fl-http")
                self.deferred_pending += 1
                try:
                    r = await asyncio.get_running_loop().run_in_executor(self._executor, r.compute)
                finally:
                    self.deferred_pending -= 1
                r = r or not_found(path.partition("?")[0])
        return self.finish(method, r, if_none_match)

    def close(self) -> None:
        """Stop the worker thread (waits for a running computation)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def finish(self, method: str, r: HttpResponse, if_none_match: str | None) -> HttpResponse:
        """``r`` as sent: 304 when its ETag matches ``if_none_match``, the security headers, no body for HEAD."""
        etag = r.headers.get("ETag")
        if etag and if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
            kept = {k: v for k, v in r.headers.items() if k in ("Vary", "Content-Encoding")}
            r = HttpResponse(304, r.content_type, b"", {"ETag": etag, **kept,
                                                        "Cache-Control": r.headers.get("Cache-Control", "no-cache")})
        headers = {**r.headers, **security_headers(r.content_type, r.body, self.csp)}
        if method == "HEAD":  # the GET response's headers, its length, no body
            return HttpResponse(r.status, r.content_type, b"", {**headers, "Content-Length": str(len(r.body))})
        return HttpResponse(r.status, r.content_type, r.body, headers)

    def _handle(self, method: str, path: str, authorization: str | None,
                accept_encoding: str | None = None) -> HttpResponse | Deferred:
        path, _, query = path.partition("?")
        if method not in ("GET", "HEAD"):
            r = json_response({"error": "method_not_allowed"}, 405)
            return HttpResponse(r.status, r.content_type, r.body, {**r.headers, "Allow": "GET, HEAD"})
        if path == "/health":
            s = self.health() if self.health is not None else self.status()
            return json_response({"ok": True, "round": s["round"], "finished": s["finished"]})
        if path == "/status":
            now = self.clock()
            if self._public is None or now - self._public[0] >= self.public_status_ttl or now < self._public[0]:
                self._public = (now, json_response(public_status(self.status())))
            return self._public[1]
        if path == OPERATOR_PATH or path in self.operator_routes:
            return self._operator(authorization, path)
        if path == "/" and self.index is not None:
            return _file(self.index, accept_encoding)
        for prefix, handler in self.handlers.items():
            if path.startswith(prefix):
                r = handler(path[len(prefix):], query) or not_found(path)
                return _file_response(r.file, r.cache_control, accept_encoding) if isinstance(r, StaticBody) else r
        for prefix, root in self.static.items():
            if path.startswith(prefix):
                rel = path[len(prefix):]
                allow = self.allow.get(prefix)
                target = under_root(root, rel) if allow is None else allowed_file(root, rel, allow)
                return _file(target, accept_encoding) if target is not None else not_found(path)
        return not_found(path)

    def _operator(self, authorization: str | None, path: str = OPERATOR_PATH) -> HttpResponse:
        if not self.operator_token:
            return not_found(path)  # the operator view is disabled
        given = bearer_token(authorization)
        if given is None:
            return unauthorized()
        if not token_matches(given, self.operator_token):
            return unauthorized("invalid_token")
        if path != OPERATOR_PATH:
            return self.operator_routes[path]()
        return json_response(operator_status(self.status()))


@dataclass(frozen=True)
class StaticBody:
    """What a generated route returns for a file kept in memory (its gzip encoding is chosen per request)."""

    file: FileData
    cache_control: str = "no-cache"


def _file(path: Path, accept_encoding: str | None = None) -> HttpResponse:
    """A file with an ETag from its size and modification time; its contents are one cached ``bytes`` object
    (:func:`coordinator.service.static_files.read_file`)."""
    return _file_response(read_file(path), "no-cache", accept_encoding)


def _file_response(f: FileData, cache_control: str, accept_encoding: str | None) -> HttpResponse:
    """``f`` with its ETag; a compressible one varies by ``Accept-Encoding``: its gzip encoding (ETag ``"…-gz"``)
    when the request allows gzip and the encoding is ready."""
    headers = {"Cache-Control": cache_control, "ETag": f.etag}
    if f.compressible:
        headers["Vary"] = "Accept-Encoding"
        if accepts_gzip(accept_encoding) and (gz := gzip_body(f)) is not None:
            return HttpResponse(200, f.content_type, gz, {**headers, "ETag": f.gzip_etag, "Content-Encoding": "gzip"})
    return HttpResponse(200, f.content_type, f.body, headers)
