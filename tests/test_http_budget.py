"""Large static files and slow readers (issue 13, F13), over the real WebSocket/HTTP port: the static bytes being
sent at once are bounded (coordinator.service.static_files.InflightBudget) – readers that never read get 503 with
Retry-After once the budget is spent (after a short wait for room), the accounted bytes stay under the limit,
/health and small files still answer, HEAD is not counted, and the budget comes back when the readers go away; a
request waiting for room is served as soon as there is some. Also: slow work (a Deferred
handler, as the demo shards use) runs off the event loop, and too much of it at once is 503."""

from __future__ import annotations

import asyncio
import http.client
import select
import socket
import threading
import time
from pathlib import Path

from coordinator.service.http_routes import Deferred, HttpResponse, HttpRoutes
from coordinator.service.static_files import InflightBudget
from coordinator.service.transport_ws import WebSocketTransport

SIZE = 4 << 20  # the "large file" (Pyodide's pyodide.asm.wasm is 9.6 MB)
READERS = 10
LIMIT = 3 * SIZE + 1024  # room for three bodies in flight


def _status() -> dict:
    return {"round": 0, "finished": False}


def _request(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _slow_reader(port: int, path: str) -> socket.socket:
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


def test_slow_readers_of_a_large_file_are_bounded_and_health_answers(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    big = bytes(range(256)) * (SIZE // 256)
    (root / "big.wasm").write_bytes(big)
    (root / "small.js").write_text("export const x = 1;\n")
    budget = InflightBudget(LIMIT, LIMIT, wait=0.2)
    routes = HttpRoutes(_status, {"/sdk/": root}, inflight=budget)

    async def scenario() -> dict:
        t = WebSocketTransport(driver=None, routes=routes, max_message_bytes=1 << 20)  # type: ignore[arg-type]
        port = await t.start("127.0.0.1", 0)
        out: dict = {}
        socks: list[socket.socket] = []
        try:
            for _ in range(READERS):
                socks.append(await asyncio.to_thread(_slow_reader, port, "/sdk/big.wasm"))
            out["lines"] = await asyncio.to_thread(_status_lines, socks)
            out["total"], out["refused"] = budget.total, budget.refused
            # a refused reader's whole answer: a small 503 with Retry-After
            refused = socks[next(i for i, line in enumerate(out["lines"]) if b" 503" in line)]
            out["503"] = await asyncio.to_thread(refused.recv, 65536)
            # while the budget is spent: /health, a small file and HEAD of the big one answer
            out["health"] = await asyncio.to_thread(_request, port, "GET", "/health")
            out["small"] = await asyncio.to_thread(_request, port, "GET", "/sdk/small.js")
            out["head"] = await asyncio.to_thread(_request, port, "HEAD", "/sdk/big.wasm")
            for s in socks:
                s.close()
            socks.clear()
            for _ in range(200):  # the connections are gone once the server has seen the resets
                if budget.total == 0:
                    break
                await asyncio.sleep(0.05)
            out["after"] = budget.total, dict(budget.by_peer)
            out["again"] = await asyncio.to_thread(_request, port, "GET", "/sdk/big.wasm")
            return out
        finally:
            for s in socks:
                s.close()
            await t.stop()

    out = asyncio.run(scenario())
    lines = out["lines"]
    ok = [line for line in lines if line.startswith(b"HTTP/1.1 200")]
    busy = [line for line in lines if line.startswith(b"HTTP/1.1 503")]
    assert len(ok) == 3 and len(busy) == READERS - 3, lines  # three bodies fit in the budget, no more
    assert out["total"] == 3 * SIZE <= LIMIT and out["refused"] == READERS - 3
    head, _, body = out["503"].partition(b"\r\n\r\n")
    assert b"\r\nretry-after: 2" in head.lower() and b'"unavailable"' in body and len(out["503"]) < 4096
    assert out["health"][0] == 200 and out["small"][0] == 200
    status, headers, body = out["head"]
    assert status == 200 and body == b"" and int(headers["content-length"]) == SIZE  # HEAD is not counted
    assert out["after"] == (0, {})  # every accounted byte released when its connection went
    status, _, body = out["again"]
    assert status == 200 and body == big


def test_one_peer_cannot_take_the_whole_budget(tmp_path: Path) -> None:
    """The per-peer limit: the second large download of one address waits while another address still gets one."""
    budget = InflightBudget(limit=10 * SIZE, per_peer_limit=SIZE + 1)
    assert budget.acquire("10.0.0.1", SIZE)
    assert not budget.acquire("10.0.0.1", SIZE)  # this peer's share is taken
    assert budget.acquire("10.0.0.2", SIZE)  # another peer still gets its file
    budget.release("10.0.0.1", SIZE)
    assert budget.acquire("10.0.0.1", SIZE) and budget.total == 2 * SIZE
    solo = InflightBudget(limit=1, per_peer_limit=1)
    assert solo.acquire("p", SIZE)  # a file above the limit is still served when nothing else is in flight


def test_a_request_waiting_for_room_is_served_when_a_reader_goes(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    big = b"\x01" * SIZE
    (root / "big.wasm").write_bytes(big)
    budget = InflightBudget(SIZE + 1024, SIZE + 1024, wait=30)
    routes = HttpRoutes(_status, {"/sdk/": root}, inflight=budget)

    async def scenario() -> tuple:
        t = WebSocketTransport(driver=None, routes=routes, max_message_bytes=1 << 20)  # type: ignore[arg-type]
        port = await t.start("127.0.0.1", 0)
        try:
            hog = await asyncio.to_thread(_slow_reader, port, "/sdk/big.wasm")
            (line,) = await asyncio.to_thread(_status_lines, [hog])
            queued = asyncio.create_task(asyncio.to_thread(_request, port, "GET", "/sdk/big.wasm"))
            for _ in range(600):  # until the second request waits for room
                if budget.waiting:
                    break
                await asyncio.sleep(0.05)
            waiting = budget.waiting
            hog.close()  # the slow reader goes: its bytes are released, the waiting request proceeds
            return line, waiting, await queued
        finally:
            await t.stop()

    line, waiting, (status, _, body) = asyncio.run(scenario())
    assert line.startswith(b"HTTP/1.1 200") and waiting == 1
    assert status == 200 and body == big and budget.refused == 0 and budget.total == 0


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
