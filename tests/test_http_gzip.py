"""gzip ``Content-Encoding`` of compressible static files over the real WebSocket/HTTP port: made once per file in a
worker thread (the event loop keeps answering meanwhile, and the requests before it is ready get the identity
bytes), ``Vary: Accept-Encoding`` on both encodings, a distinct ETag per encoding (304 per encoding), q-values
honoured, incompressible and small files never encoded, HTML never encoded (its CSP hashes the identity body).
Range requests get the identity encoding: a download that was received gzip-encoded and decoded (as fetch()
does) resumes from its decoded byte count correctly; If-Range with the gzip ETag then gets the whole body."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import os
import time
from pathlib import Path

import pytest

from coordinator.service.http_routes import HttpRoutes
from coordinator.service.static_files import accepts_gzip
from coordinator.service.transport_ws import WebSocketTransport

PYODIDE_WASM = Path(__file__).resolve().parent.parent / "client_web/node_modules/pyodide/pyodide.asm.wasm"


def _text(n: int) -> bytes:
    """n bytes of JavaScript-like text: compressible, but not trivially."""
    words = [os.urandom(3).hex() for _ in range(400)]
    out = bytearray()
    i = 0
    while len(out) < n:
        out += f"export const v{i} = '{words[i % 400]}{words[(i * 7) % 400]}';\n".encode()
        i += 1
    return bytes(out[:n])


def _request(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
             ) -> tuple[int, dict[str, str], bytes, float]:
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(), time.monotonic() - t0
    finally:
        c.close()


def test_accepts_gzip() -> None:
    for yes in ("gzip", "gzip, deflate, br, zstd", "br;q=1.0, gzip;q=0.8", "*", "identity, *;q=0.5", "x-gzip",
                "GZIP", "gzip;q=0.001"):
        assert accepts_gzip(yes), yes
    for no in (None, "", "identity", "br", "gzip;q=0", "gzip;q=0, *", "*;q=0", "deflate, gzip;q=0.0", "gzip;q=x"):
        assert not accepts_gzip(no), no


def test_gzip_encoding_of_static_files(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    files = {"big.mjs": _text(6 << 20), "lock.json": b'{"packages": {' + b'"a": 1, ' * 5000 + b'"z": 2}}',
             "tiny.js": b"export const x = 1;\n", "data.zip": os.urandom(200_000), "page.html": _text(50_000)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    routes = HttpRoutes(lambda: {"round": 0, "finished": False}, {"/sdk/": root})
    gz = {"Accept-Encoding": "gzip, deflate, br"}

    async def scenario() -> dict:
        t = WebSocketTransport(driver=None, routes=routes, max_message_bytes=1 << 20)  # type: ignore[arg-type]
        port = await t.start("127.0.0.1", 0)
        out: dict = {}
        try:
            # the first request starts the compression and gets the identity bytes; the loop is not blocked
            out["first"] = await asyncio.to_thread(_request, port, "/sdk/big.mjs", gz)
            out["health"] = await asyncio.to_thread(_request, port, "/health")
            for _ in range(200):
                r = await asyncio.to_thread(_request, port, "/sdk/big.mjs", gz)
                if r[1].get("content-encoding") == "gzip":
                    break
                await asyncio.sleep(0.05)
            out["gzip"] = r
            out["identity"] = await asyncio.to_thread(_request, port, "/sdk/big.mjs")  # http.client: identity
            out["refused"] = await asyncio.to_thread(_request, port, "/sdk/big.mjs", {"Accept-Encoding": "gzip;q=0"})
            etag = r[1]["etag"]
            out["304"] = await asyncio.to_thread(_request, port, "/sdk/big.mjs", {**gz, "If-None-Match": etag})
            # a download received gzip-encoded and decoded up to byte 100 000 resumes there
            out["resume"] = await asyncio.to_thread(_request, port, "/sdk/big.mjs", {**gz, "Range": "bytes=100000-"})
            out["if-range"] = await asyncio.to_thread(_request, port, "/sdk/big.mjs",
                                                      {**gz, "Range": "bytes=100-", "If-Range": etag})
            out["head"] = await asyncio.to_thread(_request, port, "/sdk/big.mjs", gz, "HEAD")
            for name in ("lock.json", "tiny.js", "data.zip", "page.html"):
                await asyncio.to_thread(_request, port, f"/sdk/{name}", gz)
            await asyncio.sleep(1.0)  # any compression started is done by now
            for name in ("lock.json", "tiny.js", "data.zip", "page.html"):
                out[name] = await asyncio.to_thread(_request, port, f"/sdk/{name}", gz)
            return out
        finally:
            await t.stop()

    out = asyncio.run(scenario())
    big = files["big.mjs"]
    status, headers, body, _ = out["first"]
    assert status == 200 and body == big and "content-encoding" not in headers
    assert headers["vary"] == "Accept-Encoding"
    assert out["health"][0] == 200 and out["health"][3] < 1.0
    status, headers, body, _ = out["gzip"]
    assert status == 200 and headers["content-encoding"] == "gzip" and headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(body) == big and len(body) < len(big) / 2
    assert int(headers["content-length"]) == len(body) and headers["etag"].endswith('-gz"')
    ident = out["identity"]
    assert ident[2] == big and "content-encoding" not in ident[1] and ident[1]["etag"] != headers["etag"]
    assert ident[1]["vary"] == "Accept-Encoding"
    assert out["refused"][2] == big and "content-encoding" not in out["refused"][1]
    assert out["304"][0] == 304 and out["304"][1]["vary"] == "Accept-Encoding"
    assert out["304"][1]["content-encoding"] == "gzip" and out["304"][1]["etag"] == headers["etag"]
    status, rh, rb, _ = out["resume"]  # identity bytes from the decoded offset
    assert status == 206 and "content-encoding" not in rh and rh["vary"] == "Accept-Encoding"
    assert gzip.decompress(body)[:100_000] + rb == big and rh["content-range"] == f"bytes 100000-{len(big) - 1}/{len(big)}"
    status, rh, rb, _ = out["if-range"]  # the gzip ETag is not the identity encoding's: the whole body
    assert status == 200 and "content-encoding" not in rh and rb == big
    status, hh, hb, _ = out["head"]
    assert status == 200 and hb == b"" and hh["content-length"] == str(len(body)) and hh["content-encoding"] == "gzip"
    lock = out["lock.json"]
    assert lock[1]["content-encoding"] == "gzip" and gzip.decompress(lock[2]) == files["lock.json"]
    for name in ("tiny.js", "data.zip", "page.html"):  # too small, incompressible, HTML
        status, h, b, _ = out[name]
        assert status == 200 and b == files[name] and "content-encoding" not in h and "vary" not in h, name


@pytest.mark.skipif(not PYODIDE_WASM.is_file(), reason="client_web/node_modules not installed (make web-setup)")
def test_pyodide_wasm_is_sent_gzip_encoded_at_about_a_third(tmp_path: Path) -> None:
    routes = HttpRoutes(lambda: {"round": 0, "finished": False}, {"/sdk/": PYODIDE_WASM.parent})

    async def scenario() -> tuple:
        t = WebSocketTransport(driver=None, routes=routes, max_message_bytes=1 << 20)  # type: ignore[arg-type]
        port = await t.start("127.0.0.1", 0)
        try:
            gz = {"Accept-Encoding": "gzip"}
            first = await asyncio.to_thread(_request, port, "/sdk/pyodide.asm.wasm", gz)
            for _ in range(300):
                r = await asyncio.to_thread(_request, port, "/sdk/pyodide.asm.wasm", gz, "HEAD")
                if r[1].get("content-encoding") == "gzip":
                    break
                await asyncio.sleep(0.05)
            return first, await asyncio.to_thread(_request, port, "/sdk/pyodide.asm.wasm", gz)
        finally:
            await t.stop()

    first, (status, headers, body, _) = asyncio.run(scenario())
    wasm = PYODIDE_WASM.read_bytes()
    assert first[2] == wasm
    assert status == 200 and headers["content-type"] == "application/wasm" and headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == wasm and len(body) < 0.45 * len(wasm), len(body)

