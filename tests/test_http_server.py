"""The HTTP/1.1 side of the WebSocket port (coordinator.service.http_server behind transport_ws), over real sockets:
keep-alive and pipelining, Range (206, 416, If-Range, several ranges), 304, HEAD, the parser's limits, slow and
stalling readers of multi-MB files (longer than websockets' old 10 s deadline), resumed downloads, the header, idle
and send-stall timeouts, admission caps for HTTP connections, a bounded stop, and WebSocket clients beside it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import websockets
from admission_support import authenticate, engine
from e2e_support import http_get as get

from coordinator.service.admission import Admission, LimitSettings
from coordinator.service.driver import EngineDriver
from coordinator.service.http_routes import HttpRoutes
from coordinator.service.http_server import HttpLimits, parse_range
from coordinator.service.server import start_service
from coordinator.service.settings import add_serve_arguments, load_settings
from coordinator.service.transport_ws import WebSocketTransport

MIB = 1 << 20
SMALL = b"export const x = 1;\n"


@dataclass
class Served:
    """A WebSocketTransport (real engine) on loopback with its event loop in a thread; the test talks to it with
    blocking sockets."""

    port: int
    transport: WebSocketTransport
    loop: asyncio.AbstractEventLoop
    files: dict[str, bytes]

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` evaluated on the server's loop (its state is only touched there)."""
        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(30)
        s.connect(("127.0.0.1", self.port))
        return s

    def eventually(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.on_loop(predicate):
                return True
            time.sleep(0.02)
        return False

    def connections(self) -> tuple[int, int, int]:
        """(HTTP connections, admitted connections, buffered bytes) as the server sees them."""
        t = self.transport
        return self.on_loop(lambda: (len(t.http), t.admission.connections, t.admission.buffered))


@contextlib.contextmanager
def serve(tmp_path: Path, limits: HttpLimits | None = None, admission: LimitSettings | None = None,
          sizes: dict[str, int] | None = None) -> Iterator[Served]:
    root = tmp_path / "www"
    root.mkdir(exist_ok=True)
    files = {"small.js": SMALL}
    for name, size in (sizes or {"big.wasm": 8 * MIB}).items():
        files[name] = os.urandom(size)
    for name, data in files.items():
        (root / name).write_bytes(data)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    e = engine()
    t = WebSocketTransport(EngineDriver(e), HttpRoutes(e.status, {"/sdk/": root}), 1 << 20,
                           Admission(admission or LimitSettings()), http_limits=limits)
    port = asyncio.run_coroutine_threadsafe(t.start("127.0.0.1", 0), loop).result(10)
    try:
        yield Served(port, t, loop, files)
    finally:
        asyncio.run_coroutine_threadsafe(t.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def read_response(f: BinaryIO, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One response from a socket file (several in a row on a keep-alive connection)."""
    line = f.readline()
    if not line:
        raise EOFError("connection closed")
    status = int(line.split()[1])
    headers: dict[str, str] = {}
    while (h := f.readline()) not in (b"\r\n", b""):
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    n = 0 if head or status == 304 else int(headers.get("content-length", "0"))
    return status, headers, f.read(n)


def closed_by_peer(s: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed ``s`` (EOF or reset), reading and discarding; None if it did not."""
    t0 = time.monotonic()
    s.settimeout(0.2)
    while time.monotonic() - t0 < timeout:
        try:
            if not s.recv(65536):
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except ConnectionError:
            return time.monotonic() - t0
    return None


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ── keep-alive, pipelining, HEAD, 304 ───────────────────────────────────────────────────────────────────────────
def test_keep_alive_serves_several_requests_on_one_socket(tmp_path: Path) -> None:
    with serve(tmp_path, sizes={"big.wasm": 2 * MIB}) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        got, socks = [], set()
        for path in ("/health", "/sdk/small.js", "/sdk/big.wasm", "/nope", "/status", "/sdk/big.wasm"):
            c.request("GET", path)
            r = c.getresponse()
            got.append((r.status, r.read()))
            assert r.getheader("Connection") is None  # stays open
            socks.add(id(c.sock))
        assert srv.on_loop(lambda: [conn.requests for conn in srv.transport.http]) == [6]
        c.close()
    assert [s for s, _ in got] == [200, 200, 200, 404, 200, 200] and len(socks) == 1
    assert got[1][1] == SMALL and got[2][1] == srv.files["big.wasm"] == got[5][1]


def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    with serve(tmp_path, sizes={"big.wasm": 3 * MIB}) as srv, srv.connect() as s:
        etag = get(srv.port, "/sdk/small.js")[1]["etag"]
        s.sendall(b"GET /sdk/big.wasm HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"\r\nHEAD /sdk/small.js HTTP/1.1\r\nHost: x\r\n\r\n"  # an empty line before a request is ignored
                  b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /sdk/small.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag.encode() + b"\r\n\r\n"
                  b"GET /sdk/small.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # after Connection: close: never answered
        f = s.makefile("rb")
        big = read_response(f)
        head = read_response(f, head=True)
        health = read_response(f)
        not_modified = read_response(f)
        last = read_response(f)
        rest = f.read()
    assert big[0] == 200 and big[2] == srv.files["big.wasm"]
    assert head[0] == 200 and head[1]["content-length"] == str(len(SMALL)) and head[1]["accept-ranges"] == "bytes"
    assert health[0] == 200 and b'"ok": true' in health[2]
    assert not_modified[0] == 304 and not_modified[1]["etag"] == etag and "content-length" not in not_modified[1]
    assert last[0] == 200 and last[2] == SMALL and last[1]["connection"] == "close"
    assert rest == b""  # closed after the response that asked for it


def test_head_matches_get_and_the_connection_stays_usable(tmp_path: Path) -> None:
    with serve(tmp_path, sizes={"big.wasm": 1 * MIB}) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        c.request("HEAD", "/sdk/big.wasm")
        h = c.getresponse()
        hb, hh = h.read(), dict(h.getheaders())
        c.request("GET", "/sdk/big.wasm")
        g = c.getresponse()
        gb, gh = g.read(), dict(g.getheaders())
        c.close()
    assert h.status == g.status == 200 and hb == b"" and gb == srv.files["big.wasm"]
    for name in ("Content-Length", "Content-Type", "ETag", "Accept-Ranges", "Cache-Control",
                 "Content-Security-Policy", "X-Frame-Options"):
        assert hh[name] == gh[name], name


# ── ranges ──────────────────────────────────────────────────────────────────────────────────────────────────────
def test_parse_range() -> None:
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=90-1000", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=-1000", 100) == (0, 99)
    assert parse_range("BYTES = 5 - 6", 100) == (5, 6)
    assert parse_range("bytes=100-", 100) == "unsatisfiable"
    assert parse_range("bytes=-0", 100) == "unsatisfiable"
    assert parse_range("bytes=0-", 0) == "unsatisfiable"
    for ignored in ("bytes=5-4", "bytes=0-1,5-6", "items=0-1", "bytes=a-b", "bytes=-", "bytes 0-1", "bytes=1-2-3"):
        assert parse_range(ignored, 100) is None, ignored


def test_range_requests(tmp_path: Path) -> None:
    with serve(tmp_path, sizes={"big.wasm": 1 * MIB}) as srv:
        big = srv.files["big.wasm"]
        n = len(big)
        etag = get(srv.port, "/sdk/big.wasm", method="HEAD")[1]["etag"]
        first = get(srv.port, "/sdk/big.wasm", {"Range": "bytes=0-99"})
        middle = get(srv.port, "/sdk/big.wasm", {"Range": "bytes=1000-"})
        suffix = get(srv.port, "/sdk/big.wasm", {"Range": "bytes=-5"})
        beyond = get(srv.port, "/sdk/big.wasm", {"Range": f"bytes={n}-"})
        several = get(srv.port, "/sdk/big.wasm", {"Range": "bytes=0-1,10-11"})
        same = get(srv.port, "/sdk/big.wasm", {"Range": "bytes=10-19", "If-Range": etag})
        changed = get(srv.port, "/sdk/big.wasm", {"Range": "bytes=10-19", "If-Range": '"an-old-version"'})
        date = get(srv.port, "/sdk/big.wasm", {"Range": "bytes=10-19", "If-Range": "Tue, 01 Dec 2026 10:00:00 GMT"})
        head = get(srv.port, "/sdk/big.wasm", {"Range": "bytes=0-99"}, method="HEAD")
        json = get(srv.port, "/health", {"Range": "bytes=0-1"})  # no ETag: no ranges
        gone = get(srv.port, "/nope", {"Range": "bytes=0-1"})
    assert first[0] == 206 and first[2] == big[:100] and first[1]["content-range"] == f"bytes 0-99/{n}"
    assert first[1]["content-length"] == "100" and first[1]["etag"] == etag and first[1]["accept-ranges"] == "bytes"
    assert middle[0] == 206 and middle[2] == big[1000:] and middle[1]["content-range"] == f"bytes 1000-{n - 1}/{n}"
    assert suffix[0] == 206 and suffix[2] == big[-5:] and suffix[1]["content-range"] == f"bytes {n - 5}-{n - 1}/{n}"
    assert beyond[0] == 416 and beyond[1]["content-range"] == f"bytes */{n}" and beyond[2] == b""
    assert several[0] == 200 and several[2] == big  # several ranges: the whole body (RFC 9110 §14.2)
    assert same[0] == 206 and same[2] == big[10:20]
    assert changed[0] == 200 and changed[2] == big and date[0] == 200 and date[2] == big
    assert head[0] == 200 and head[2] == b"" and head[1]["content-length"] == str(n)  # HEAD ignores Range
    assert json[0] == 200 and "accept-ranges" not in json[1] and gone[0] == 404 and "content-range" not in gone[1]


def test_a_resumed_download_gives_identical_bytes(tmp_path: Path) -> None:
    with serve(tmp_path, sizes={"big.wasm": 8 * MIB}) as srv:
        big = srv.files["big.wasm"]
        with srv.connect() as s:
            s.sendall(b"GET /sdk/big.wasm HTTP/1.1\r\nHost: x\r\n\r\n")
            f = s.makefile("rb")
            status = f.readline()
            headers = {}
            while (h := f.readline()) != b"\r\n":
                k, _, v = h.decode().partition(":")
                headers[k.lower()] = v.strip()
            part = f.read(3 * MIB + 12345)  # the link drops here
        assert status.startswith(b"HTTP/1.1 200") and headers["accept-ranges"] == "bytes"
        rest = get(srv.port, "/sdk/big.wasm", {"Range": f"bytes={len(part)}-", "If-Range": headers["etag"]})
    assert rest[0] == 206 and rest[1]["content-range"] == f"bytes {len(part)}-{len(big) - 1}/{len(big)}"
    assert sha(part + rest[2]) == sha(big)


# ── slow and stalling readers ───────────────────────────────────────────────────────────────────────────────────
def _read_head(f: BinaryIO) -> dict[str, str]:
    assert f.readline().startswith(b"HTTP/1.1 200")
    headers = {}
    while (h := f.readline()) != b"\r\n":
        k, _, v = h.decode().partition(":")
        headers[k.lower()] = v.strip()
    return headers


@pytest.mark.slow
def test_a_reader_that_stalls_15_s_mid_download_gets_the_whole_file(tmp_path: Path) -> None:
    with serve(tmp_path, sizes={"big.wasm": 8 * MIB}) as srv:
        big = srv.files["big.wasm"]
        with srv.connect(rcvbuf=64 * 1024) as s:
            s.sendall(b"GET /sdk/big.wasm HTTP/1.1\r\nHost: x\r\n\r\n")
            f = s.makefile("rb")
            n = int(_read_head(f)["content-length"])
            got = bytearray(f.read(2 * MIB))
            time.sleep(15.0)  # longer than websockets' open_timeout (10 s), which cut such downloads off
            pending = srv.on_loop(lambda: [c.transport.get_write_buffer_size() for c in srv.transport.http])
            got += f.read(n - len(got))
    assert pending and pending[0] > 0  # the server really waited for this reader (its buffer was full)
    assert len(got) == len(big) and sha(bytes(got)) == sha(big)


@pytest.mark.slow
def test_a_slow_reader_at_1_mb_per_s_gets_a_10_mb_file(tmp_path: Path) -> None:
    size = 10 * 1000 * 1000
    with serve(tmp_path, sizes={"big.wasm": size}) as srv, srv.connect(rcvbuf=64 * 1024) as s:
        big = srv.files["big.wasm"]
        s.sendall(b"GET /sdk/big.wasm HTTP/1.1\r\nHost: x\r\n\r\n")
        f = s.makefile("rb", buffering=0)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        got = bytearray()
        t0 = time.monotonic()
        while len(got) < size:  # 64 KB every 64 ms: ~1 MB/s
            chunk = f.read(min(64_000, size - len(got)))
            assert chunk, "connection closed"
            got += chunk
            ahead = len(got) / 1e6 - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        took = time.monotonic() - t0
    assert b"200 OK" in head and sha(bytes(got)) == sha(big)
    assert took > 9.0  # it really was that slow – no deadline cut it off


def test_a_reader_that_stops_is_aborted_after_the_stall_timeout(tmp_path: Path) -> None:
    limits = HttpLimits(send_stall_timeout_s=1.0)
    with serve(tmp_path, limits, sizes={"big.wasm": 8 * MIB}) as srv, srv.connect(rcvbuf=16 * 1024) as s:
        s.sendall(b"GET /sdk/big.wasm HTTP/1.1\r\nHost: x\r\n\r\n")
        assert srv.eventually(lambda: len(srv.transport.http) == 1)
        t0 = time.monotonic()
        assert srv.eventually(lambda: not srv.transport.http, timeout=10)  # aborted on the server's side
        took = time.monotonic() - t0
        assert srv.connections() == (0, 0, 0)
        # the client gets what was sent before, then the reset: never the whole body
        got = 0
        with contextlib.suppress(ConnectionError):
            while chunk := s.recv(1 << 20):
                got += len(chunk)
    assert 0.9 < took < 5.0, took
    assert got < 8 * MIB


def test_a_slow_reader_that_makes_progress_is_not_aborted(tmp_path: Path) -> None:
    """With a 1 s stall timeout, a reader that takes 512 KiB every 0.5 s of a 6 MiB file (more than the kernel's
    socket buffers take on loopback: the server waits for it) is never cut off."""
    limits = HttpLimits(send_stall_timeout_s=1.0)
    with serve(tmp_path, limits, sizes={"big.wasm": 6 * MIB}) as srv, srv.connect(rcvbuf=16 * 1024) as s:
        big = srv.files["big.wasm"]
        s.sendall(b"GET /sdk/big.wasm HTTP/1.1\r\nHost: x\r\n\r\n")
        f = s.makefile("rb", buffering=0)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        got, waited = bytearray(), 0
        while len(got) < len(big):
            time.sleep(0.5)
            waited = max(waited, *srv.on_loop(lambda: [c.transport.get_write_buffer_size()
                                                       for c in srv.transport.http if c.transport]), 0)
            want = min(512 * 1024, len(big) - len(got))
            while want:
                chunk = f.read(want)
                assert chunk, "connection closed"
                got += chunk
                want -= len(chunk)
    assert sha(bytes(got)) == sha(big) and waited > 0  # the server did wait for this reader


# ── timeouts before and between requests ────────────────────────────────────────────────────────────────────────
def _slowloris(s: socket.socket, seconds: float, start: bytes = b"GET / HTTP/1.1\r\nHost: x\r\n") -> float | None:
    """Send a header block one byte every 0.1 s; seconds until the server closed the connection – EOF (it may
    half-close and still read) or a reset – or None if it did not."""
    t0 = time.monotonic()
    s.sendall(start)
    s.settimeout(0.1)
    try:
        while time.monotonic() - t0 < seconds:
            s.sendall(b"X")
            try:
                if not s.recv(65536):
                    return time.monotonic() - t0
            except TimeoutError:
                pass
    except ConnectionError:
        return time.monotonic() - t0
    return None


def test_the_header_timeout_closes_a_slowloris(tmp_path: Path) -> None:
    limits = HttpLimits(header_timeout_s=1.0, idle_timeout_s=30.0)
    with serve(tmp_path, limits) as srv:
        with srv.connect() as s:  # a first request that never completes: closed before it is known to be HTTP
            first = _slowloris(s, 4.0)
        with srv.connect() as s:  # the same as the second request of a keep-alive connection
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s.makefile("rb"))[0] == 200
            second = _slowloris(s, 4.0)
        with srv.connect() as s:  # a connection that says nothing at all
            silent = closed_by_peer(s, 4.0)
        assert srv.eventually(lambda: srv.transport.admission.connections == 0)
    for took in (first, second, silent):
        assert took is not None and 0.9 < took < 2.5, (first, second, silent)


def test_the_idle_timeout_closes_a_quiet_keep_alive_connection(tmp_path: Path) -> None:
    limits = HttpLimits(header_timeout_s=5.0, idle_timeout_s=1.0)
    with serve(tmp_path, limits) as srv:
        with srv.connect() as s, s.makefile("rb") as f:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(f)[0] == 200
            took = closed_by_peer(s, 5.0)
        assert srv.eventually(lambda: not srv.transport.http and srv.transport.admission.connections == 0)
    assert took is not None and 0.8 < took < 2.5, took


def test_the_settings_reach_a_started_service(tmp_path: Path) -> None:
    """``[http] idle_timeout_s`` through ``load_settings`` and ``start_service``: a keep-alive connection of the
    real service closes after it."""
    (tmp_path / "fl.toml").write_text("[http]\nidle_timeout_s = 1\n")
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    settings = load_settings(p.parse_args(["--config", str(tmp_path / "fl.toml"), "--evaluation", "none",
                                           "--data-dir", str(tmp_path / "data"), "--ws-port", "0", "--grpc-port",
                                           "0", "--rounds", "1", "--clients-per-round", "1", "--group-size", "1",
                                           "--aggregator", "mean"]))

    async def main() -> float | None:
        service = await start_service(settings, static={}, index=None)
        try:
            def client() -> float | None:
                with socket.create_connection(("127.0.0.1", service.ws_port), timeout=10) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert read_response(s.makefile("rb"))[0] == 200
                    return closed_by_peer(s, 5.0)

            return await asyncio.to_thread(client)
        finally:
            await service.stop()

    took = asyncio.run(main())
    assert took is not None and 0.8 < took < 2.5, took


# ── malformed requests ──────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"Host: x\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
    (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET / FTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", 400),  # TLS to a plain port
])
def test_malformed_requests_get_an_error_and_the_connection_closes(tmp_path: Path, request_bytes: bytes,
                                                                   status: int) -> None:
    with serve(tmp_path, sizes={}) as srv:
        with srv.connect() as s, s.makefile("rb") as f:
            s.sendall(request_bytes)
            got, headers, _ = read_response(f)
            rest = f.read()  # EOF: the server half-closed after its answer
        assert srv.eventually(lambda: srv.transport.admission.connections == 0)
    assert got == status and headers["connection"] == "close" and rest == b""
    assert headers["x-frame-options"] == "DENY" and "content-security-policy" in headers


def test_a_request_with_a_body_is_answered_and_its_body_never_parsed(tmp_path: Path) -> None:
    smuggled = b"GET /status/operator HTTP/1.1\r\nHost: x\r\n\r\n"
    with serve(tmp_path, sizes={}) as srv, srv.connect() as s:
        s.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled)
        f = s.makefile("rb")
        status, headers, _ = read_response(f)
        rest = f.read()
    assert status == 405 and headers["allow"] == "GET, HEAD" and headers["connection"] == "close" and rest == b""


def test_http_1_0_and_absolute_targets(tmp_path: Path) -> None:
    with serve(tmp_path, sizes={}) as srv:
        with srv.connect() as s:
            s.sendall(b"GET /sdk/small.js HTTP/1.0\r\n\r\n")  # no Host needed; closed after the response
            f = s.makefile("rb")
            old = read_response(f)
            assert f.read() == b""
        with srv.connect() as s:
            s.sendall(b"GET http://127.0.0.1/sdk/small.js?v=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            absolute = read_response(s.makefile("rb"))
    assert old[0] == 200 and old[2] == SMALL and old[1]["connection"] == "close"
    assert absolute[0] == 200 and absolute[2] == SMALL


# ── admission, stop, WebSockets beside HTTP ─────────────────────────────────────────────────────────────────────
def test_connection_caps_count_http_connections(tmp_path: Path) -> None:
    with serve(tmp_path, admission=LimitSettings(max_connections=3), sizes={}) as srv:
        held = [http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10) for _ in range(3)]
        for c in held:
            c.request("GET", "/health")
            assert c.getresponse().read()
        assert srv.connections()[:2] == (3, 3)  # three keep-alive HTTP connections held open
        with srv.connect() as s:  # the fourth is dropped at accept
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            refused = closed_by_peer(s, 5.0)
        held.pop().close()
        assert srv.eventually(lambda: srv.transport.admission.connections == 2)
        again = get(srv.port, "/health")  # the freed slot is usable again
        for c in held:
            c.close()
        assert srv.eventually(lambda: srv.transport.admission.connections == 0)
        counted = srv.on_loop(lambda: srv.transport.admission.counters.get("connections", 0))
    assert refused is not None and again[0] == 200 and counted == 1


def test_stop_is_bounded_with_busy_and_idle_http_connections(tmp_path: Path) -> None:
    async def main() -> float:
        root = tmp_path / "www"
        root.mkdir()
        (root / "big.wasm").write_bytes(os.urandom(8 * MIB))
        e = engine()
        t = WebSocketTransport(EngineDriver(e), HttpRoutes(e.status, {"/sdk/": root}), 1 << 20)
        port = await t.start("127.0.0.1", 0)
        _, idle = await asyncio.open_connection("127.0.0.1", port)
        idle.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # then stays open (keep-alive)
        stuck = socket.create_connection(("127.0.0.1", port))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(b"GET /sdk/big.wasm HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        _, silent = await asyncio.open_connection("127.0.0.1", port)  # no request at all
        async with asyncio.timeout(5):
            while len(t.http) < 2:
                await asyncio.sleep(0.02)
        t0 = time.monotonic()
        await asyncio.wait_for(t.stop(), 8)  # close_timeout is 2 s
        took = time.monotonic() - t0
        assert not t.http and not t.pending and t.admission.connections == 0
        stuck.close()
        idle.close()
        silent.close()
        return took

    assert asyncio.run(main()) < 4.0


def test_websocket_clients_connect_beside_http_traffic(tmp_path: Path) -> None:
    with serve(tmp_path, sizes={"big.wasm": 2 * MIB}) as srv:
        async def client() -> tuple[bool, int]:
            async with websockets.connect(f"ws://127.0.0.1:{srv.port}/ws", max_size=None) as ws:
                s = await authenticate(ws)
                return s is not None, ws.response.status_code

        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        c.request("GET", "/sdk/big.wasm")
        r = c.getresponse()
        partial = r.read(100_000)  # an HTTP download in progress …
        ok, code = asyncio.run(client())  # … and a WebSocket client authenticates
        rest = r.read()
        # on a keep-alive HTTP connection /ws is not a handshake: 400 and closed
        c.request("GET", "/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
        late = c.getresponse()
        late_status, late_close = late.status, late.getheader("Connection")
        late.read()
        c.close()
        plain = get(srv.port, "/ws")  # a first request for /ws that is not an upgrade: websockets' 426
    assert ok and code == 101 and partial + rest == srv.files["big.wasm"]
    assert late_status == 400 and late_close == "close"
    assert plain[0] == 426
