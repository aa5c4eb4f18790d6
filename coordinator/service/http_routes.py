"""The coordinator's HTTP endpoints (served on the WebSocket port): health, status JSON, static files.

Pure request → response functions; :mod:`coordinator.service.transport_ws` adapts them to the ``websockets`` server.

``/status`` is public and shows federation-level aggregates only (:func:`coordinator.service.status_view.public_status`);
``/status/operator`` shows the engine's full status (every client's id, trust, state) to a request carrying
``Authorization: Bearer <operator token>``; it is 404 when no operator token is configured. The token is only
accepted in that header – never from the query string, which ends up in access logs, proxies and browser history.
``operator_routes`` puts more paths behind the same check (``/metrics``, ``/status/operator/rounds`` and
``/status/operator/events``: :mod:`coordinator.service.dashboard`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from coordinator.service.status_view import operator_status, public_status

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")


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


# a generated route: (path after the prefix, query string) → response, or None for 404
Handler = Callable[[str, str], "HttpResponse | None"]


@dataclass
class HttpRoutes:
    """``status`` returns the engine's full status dict (``/status`` publishes its public view only);
    ``static`` maps URL prefixes (``/sdk/``) to directories; ``handlers`` maps URL prefixes to functions that
    generate the response (checked before ``static``); ``operator_token`` enables ``/status/operator``."""

    status: Callable[[], dict[str, Any]]
    static: dict[str, Path] = field(default_factory=dict)
    index: Path | None = None  # the page served at "/"
    handlers: dict[str, Handler] = field(default_factory=dict)
    operator_token: str | None = field(default=None, repr=False)  # None: /status/operator is 404
    # more paths behind the operator token (/metrics, /status/operator/events, …): path → response
    operator_routes: dict[str, Callable[[], HttpResponse]] = field(default_factory=dict)

    def handle(self, method: str, path: str, if_none_match: str | None = None,
               authorization: str | None = None) -> HttpResponse:
        """The response to ``method path``; a static file whose ETag is in ``if_none_match`` gives 304;
        ``authorization`` is the request's ``Authorization`` header (only ``/status/operator`` reads it)."""
        r = self._handle(method, path, authorization)
        etag = r.headers.get("ETag")
        if etag and if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
            return HttpResponse(304, r.content_type, b"", {"ETag": etag, "Cache-Control": "no-cache"})
        return r

    def _handle(self, method: str, path: str, authorization: str | None) -> HttpResponse:
        path, _, query = path.partition("?")
        if method != "GET":
            return json_response({"error": "method_not_allowed"}, 405)
        if path == "/health":
            s = self.status()
            return json_response({"ok": True, "round": s["round"], "finished": s["finished"]})
        if path == "/status":
            return json_response(public_status(self.status()))
        if path == OPERATOR_PATH or path in self.operator_routes:
            return self._operator(authorization, path)
        if path == "/" and self.index is not None:
            return _file(self.index)
        for prefix, handler in self.handlers.items():
            if path.startswith(prefix):
                return handler(path[len(prefix):], query) or not_found(path)
        for prefix, root in self.static.items():
            if path.startswith(prefix):
                return _static(root, path[len(prefix):]) or not_found(path)
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


def _static(root: Path, rel: str) -> HttpResponse | None:
    """A file under ``root`` (no escaping it with ``..`` – also percent-encoded – or symlinks pointing out)."""
    root = root.resolve()
    try:
        target = (root / unquote(rel)).resolve()
        target.relative_to(root)
    except (ValueError, OSError):
        return None
    if not target.is_file():
        return None
    return _file(target)


_CACHE: dict[Path, tuple[tuple[int, int], bytes]] = {}
_CACHE_LIMIT = 256 * 1024 * 1024  # bytes of file contents kept in memory (Pyodide alone is ~13 MB)


def _file(path: Path) -> HttpResponse:
    """A file with an ETag from its size and modification time; contents cached until the file changes (the
    event loop must not re-read Pyodide's 13 MB for every tab)."""
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    st = path.stat()
    key = (st.st_size, st.st_mtime_ns)
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == key:
        body = cached[1]
    else:
        body = path.read_bytes()
        if sum(len(b) for _, b in _CACHE.values()) + len(body) > _CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[path] = (key, body)
    etag = f'"{key[0]:x}-{key[1]:x}"'
    return HttpResponse(200, ctype, body, {"Cache-Control": "no-cache", "ETag": etag})
