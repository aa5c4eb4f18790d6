"""Large static files and readers that never read (issue 13, F13), over the real WebSocket/HTTP port: responses are
streamed with bounded buffers (coordinator.service.http_server), so 100 peers that request a Pyodide-sized body
(pyodide.asm.wasm is 9.6 MB) and never read pin about 128 KiB each – not 100 copies of the body (when
``websockets`` answered HTTP with one buffered body they pinned 665 MiB) – while /health keeps answering and an
honest reader still gets the whole file. Also: slow work (a Deferred handler, as the demo shards use) runs off the
event loop, and too much of it at once is 503."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import os
import select
import socket
import threading
import time
from pathlib import Path

from coordinator.service.http_routes import Deferred, HttpResponse, HttpRoutes
from coordinator.service.http_server import HttpLimits
from coordinator.service.transport_ws import WebSocketTransport

SIZE = 9_600_000  # pyodide.asm.wasm
READERS = 100
MIB = 1 << 20


def _status() -> dict:
    return {"round": 0, "finished": False}


def _rss() -> int:
    """This process's resident set size in bytes (/proc/self/status VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _request(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes, float]:
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(), time.monotonic() - t0
    finally:
        c.close()


def _never_reads(port: int, path: str) -> socket.socket:
    """A client that sends a GET and then never reads (a tiny receive window)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return s


def _status_lines(socks: list[socket.socket], timeout: float = 30.0) -> list[bytes]:
    """The status line each reader got – peeked, so nothing more is read from the big bodies."""
    got: dict[int, bytes] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(socks) and time.monotonic() < deadline:
        ready, _, _ = select.select([s for i, s in enumerate(socks) if i not in got], [], [], 0.5)
        for s in ready:
            head = s.recv(12, socket.MSG_PEEK)
            if len(head) == 12:
                got[socks.index(s)] = head
    assert len(got) == len(socks), f"only {len(got)} of {len(socks)} readers got a response"
    return [got[i] for i in range(len(socks))]


def test_readers_that_never_read_pin_bounded_memory_and_health_answers(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    big = os.urandom(SIZE)
    (root / "pyodide.asm.wasm").write_bytes(big)
    routes = HttpRoutes(_status, {"/sdk/": root})
    limits = HttpLimits()  # the defaults: 64 KiB slices, 64 KiB high water, 60 s without progress

    async def scenario() -> dict:
        t = WebSocketTransport(driver=None, routes=routes, max_message_bytes=1 << 20)  # type: ignore[arg-type]
        port = await t.start("127.0.0.1", 0)
        out: dict = {}
        socks: list[socket.socket] = []
        try:
            # the file is read into the cache once (by a complete download), then the baseline is taken
            status, _, body, _ = await asyncio.to_thread(_request, port, "GET", "/sdk/pyodide.asm.wasm")
            assert status == 200 and body == big
            del body
            await asyncio.sleep(0.2)
            out["rss_before"] = _rss()
            for _ in range(READERS):
                socks.append(await asyncio.to_thread(_never_reads, port, "/sdk/pyodide.asm.wasm"))
            out["lines"] = await asyncio.to_thread(_status_lines, socks)
            await asyncio.sleep(1.0)  # every response has filled what the socket takes and paused
            out["connections"] = len(t.http)
            out["buffered"] = max(c.transport.get_write_buffer_size() for c in t.http if c.transport is not None)
            out["buffered_total"] = sum(c.transport.get_write_buffer_size() for c in t.http if c.transport)
            out["rss_during"] = _rss()
            # while they hold their connections: /health answers at once, an honest reader gets the whole file
            out["health"] = await asyncio.to_thread(_request, port, "GET", "/health")
            out["honest"] = await asyncio.to_thread(_request, port, "GET", "/sdk/pyodide.asm.wasm")
            out["rss_after_honest"] = _rss()
            for s in socks:
                s.close()
            socks.clear()
            for _ in range(200):  # the connections are gone once the server has seen the closes
                if not t.http and t.admission.connections == 0:
                    break
                await asyncio.sleep(0.05)
            out["left"] = len(t.http), t.admission.connections, t.admission.buffered
            return out
        finally:
            for s in socks:
                s.close()
            await t.stop()

    out = asyncio.run(scenario())
    assert all(line.startswith(b"HTTP/1.1 200") for line in out["lines"]), set(out["lines"])
    assert out["connections"] == READERS  # all served, none refused: there is no budget to run out of
    # what one reader pins: under the high-water mark plus one slice, whatever the body's size
    assert out["buffered"] <= limits.write_high + limits.chunk_bytes, out["buffered"]
    assert out["buffered_total"] <= READERS * (limits.write_high + limits.chunk_bytes)
    growth = out["rss_during"] - out["rss_before"]
    assert growth < 48 * MIB, f"RSS grew by {growth / MIB:.1f} MiB for {READERS} readers (unbounded: ~{READERS * SIZE / MIB:.0f})"
    status, _, _, latency = out["health"]
    assert status == 200 and latency < 2.0, latency
    status, headers, body, _ = out["honest"]
    assert status == 200 and int(headers["content-length"]) == SIZE
    assert hashlib.sha256(body).digest() == hashlib.sha256(big).digest()
    assert out["left"] == (0, 0, 0)  # every connection and its admission slot released


def test_deferred_work_runs_off_the_event_loop_and_is_bounded() -> None:
    started, release = threading.Event(), threading.Event()
    threads: list[str] = []

    def slow() -> HttpResponse:
        threads.append(threading.current_thread().name)
        started.set()
        release.wait(30)
        return HttpResponse(200, "text/plain", b"done")

    routes = HttpRoutes(_status, handlers={"/slow": lambda rest, q: Deferred(slow)}, max_deferred=1)

    async def scenario() -> dict:
        t = WebSocketTransport(driver=None, routes=routes, max_message_bytes=1 << 20)  # type: ignore[arg-type]
        port = await t.start("127.0.0.1", 0)
        try:
            pending = asyncio.create_task(asyncio.to_thread(_request, port, "GET", "/slow"))
            await asyncio.to_thread(started.wait, 30)
            out = {"health": await asyncio.to_thread(_request, port, "GET", "/health"),  # the loop is free
                   "second": await asyncio.to_thread(_request, port, "GET", "/slow")}  # max_deferred = 1
            release.set()
            out["first"] = await pending
            return out
        finally:
            release.set()
            await t.stop()
            routes.close()

    out = asyncio.run(scenario())
    assert out["health"][0] == 200
    assert out["second"][0] == 503 and out["second"][1]["retry-after"] == "2"
    assert out["first"][0] == 200 and out["first"][2] == b"done"
    assert threads == ["fl-http_0"]  # the worker thread, not the event loop's
    assert routes.handle("GET", "/slow").body == b"done"  # the synchronous API runs it inline
