"""Static files over the real WebSocket/HTTP port: ETag revalidation (304) and percent-encoded names."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

from coordinator.service.http_routes import HttpRoutes
from coordinator.service.transport_ws import WebSocketTransport


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_etag_revalidation_and_percent_encoded_names(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "a file.js").write_text("export const x = 1;\n")
    (tmp_path / "secret.txt").write_text("no")
    routes = HttpRoutes(lambda: {"round": 0, "finished": False}, {"/sdk/": root})

    async def scenario() -> list:
        t = WebSocketTransport(driver=None, routes=routes, max_message_bytes=1 << 20)  # type: ignore[arg-type]
        port = await t.start("127.0.0.1", 0)
        try:
            base = f"http://127.0.0.1:{port}"
            first = await asyncio.to_thread(_get, f"{base}/sdk/a%20file.js")
            etag = first[1]["ETag"]
            again = await asyncio.to_thread(_get, f"{base}/sdk/a%20file.js", {"If-None-Match": etag})
            other = await asyncio.to_thread(_get, f"{base}/sdk/a%20file.js", {"If-None-Match": '"nope"'})
            escape = await asyncio.to_thread(_get, f"{base}/sdk/%2e%2e/secret.txt")
            return [first, again, other, escape]
        finally:
            await t.stop()

    first, again, other, escape = asyncio.run(scenario())
    assert first[0] == 200 and first[2] == b"export const x = 1;\n" and "javascript" in first[1]["Content-Type"]
    assert again[0] == 304 and again[2] == b"" and again[1]["ETag"] == first[1]["ETag"]
    assert other[0] == 200 and other[2] == first[2]
    assert escape[0] == 404
    (root / "a file.js").write_text("export const x = 22;\n")  # a changed file gets a new ETag
    assert routes.handle("GET", "/sdk/a%20file.js").headers["ETag"] != first[1]["ETag"]
