"""Admission control on the real WebSocket transport, on loopback (issue 13 F1, F11, F18): the small frame limit
until authenticated, the global cap on buffered bytes, message rates, connection caps and allowed origins."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
import websockets
from admission_support import RawPeer, authenticate, frames, session, ws_service
from websockets.exceptions import ConnectionClosed, InvalidStatus

from coordinator.service.admission import LimitSettings

KIB = 1024


async def _eventually(predicate, timeout: float = 8.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def _closed_with(ws) -> int | None:
    try:
        async with asyncio.timeout(8):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None


def test_a_real_hello_fits_the_pre_auth_limit_many_times_over() -> None:
    (hello,) = frames(session().start())
    assert len(hello) * 16 < LimitSettings().pre_auth_max_bytes, len(hello)


def test_f1_a_partial_64_mib_frame_before_auth_is_refused_at_its_header() -> None:
    async def main() -> tuple[int | None, int]:
        async with ws_service() as (t, port):
            peer = RawPeer(port)
            assert await peer.open() == 101
            await peer.send(peer.header(64 << 20) + b"x" * (256 * KIB))  # the header announces 64 MiB
            code = await peer.close_code()
            peer.abort()
            await _eventually(lambda: t.admission.buffered == 0 and t.admission.connections == 0)
            return code, t.admission.counters.get("frame_size", 0)

    code, counted = asyncio.run(main())
    assert code == 1009 and counted == 1


def test_f1_fin_0_fragments_with_pongs_before_auth_are_refused_after_the_small_limit() -> None:
    async def main() -> tuple[int | None, int]:
        async with ws_service() as (t, port):
            peer = RawPeer(port)
            assert await peer.open() == 101
            chunk = b"y" * (8 * KIB)
            out = peer.frame(chunk, opcode=2, fin=False)
            for _ in range(40):  # 328 KiB in FIN=0 continuation frames, a pong between each
                out += peer.frame(b"p", opcode=0xA) + peer.frame(chunk, opcode=0, fin=False)
            with contextlib.suppress(ConnectionError):
                await peer.send(out)
            code = await peer.close_code()
            peer.abort()
            await _eventually(lambda: t.admission.connections == 0)
            return code, t.admission.counters.get("frame_size", 0)

    code, counted = asyncio.run(main())
    assert code == 1009 and counted == 1


def test_f1_the_full_message_size_only_after_authentication() -> None:
    limits = LimitSettings(pre_auth_max_frame_kb=64)

    async def main() -> tuple[bytes, int | None]:
        async with ws_service(limits, max_message_bytes=4 << 20) as (_, port):
            url = f"ws://127.0.0.1:{port}/ws"
            async with websockets.connect(url, max_size=None) as ws:
                await authenticate(ws)
                await ws.send(b"\0" * (1 << 20))  # 1 MiB after auth: reaches the engine (an error reply)
                answer = await ws.recv()
            async with websockets.connect(url, max_size=None) as ws:
                await ws.send(b"\0" * (65 * KIB))  # the same before auth: 1009
                return answer, await _closed_with(ws)

    answer, code = asyncio.run(main())
    assert b"bad_format" in answer and code == 1009


def test_f1_the_global_cap_on_buffered_bytes_closes_the_connection_that_crosses_it() -> None:
    limits = LimitSettings(pre_auth_max_frame_kb=64, max_buffered_mb=100 / 1024)  # 100 KiB in all

    async def main() -> tuple[int | None, int, int]:
        async with ws_service(limits) as (t, port):
            a, b = RawPeer(port), RawPeer(port)
            assert await a.open() == 101 and await b.open() == 101
            await a.send(a.header(60 * KIB) + b"a" * (50 * KIB))  # a partial frame: 50 KiB held
            await _eventually(lambda: t.admission.buffered >= 50 * KIB)
            await b.send(b.header(60 * KIB) + b"b" * (60 * KIB - 1))  # 110 KiB in all
            code = await b.close_code()
            held = t.admission.buffered
            a.abort(), b.abort()
            await _eventually(lambda: t.admission.buffered == 0)
            return code, held, t.admission.counters.get("buffered_bytes", 0)

    code, held, counted = asyncio.run(main())
    assert code == 1009 and held <= 100 * KIB and counted >= 1


def test_a_message_that_arrives_with_the_peers_close_frame_still_reaches_the_engine(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with ws_service() as (t, port):
            peer, s = RawPeer(port), session()
            assert await peer.open() == 101
            await peer.send(peer.frame(frames(s.start())[0]))
            _, challenge = await peer.read_frame()
            (auth,) = frames(s.receive(challenge))
            await peer.send(peer.frame(auth) + peer.frame(b"\x03\xe8", opcode=8))  # auth + close, one write
            assert await peer.close_code() == 1000
            peer.abort()
            await _eventually(lambda: t.admission.connections == 0)

    with caplog.at_level(logging.INFO, "fl-coordinator"):
        asyncio.run(main())
    assert any("authenticated" in r.getMessage() for r in caplog.records)


def test_f11_a_replayed_hello_sent_2000_times_closes_the_connection() -> None:
    async def main() -> tuple[int | None, int, int]:
        async with ws_service() as (t, port):
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
                (hello,) = frames(session().start())
                try:
                    for _ in range(2000):
                        await ws.send(hello)
                except ConnectionClosed:
                    pass
                code = await _closed_with(ws)
            # the engine answered at most the burst (plus what was in flight), not 2,000 hellos
            return code, t.driver.engine.conns.__len__(), t.admission.counters.get("message_rate", 0)

    code, _, counted = asyncio.run(main())
    assert code == 1008 and counted >= 1


def test_f11_the_per_ip_message_rate_is_shared_by_its_connections() -> None:
    limits = LimitSettings(exempt_loopback=False, conn_msg_burst=100, ip_msg_burst=30, ip_msg_rate=1.0)

    async def main() -> tuple[int | None, int]:
        async with ws_service(limits) as (t, port):
            url = f"ws://127.0.0.1:{port}/ws"
            async with websockets.connect(url) as a, websockets.connect(url) as b:
                (hello,) = frames(session().start())
                for _ in range(20):
                    await a.send(hello)
                for _ in range(20):  # 40 from one IP: over its burst of 30
                    await b.send(hello)
                code = await _closed_with(b)
            return code, t.admission.counters.get("message_rate_per_ip", 0)

    code, counted = asyncio.run(main())
    assert code == 1008 and counted >= 1


@pytest.mark.parametrize("kind", ["per_ip", "global"])
def test_f11_connection_caps(kind: str) -> None:
    limits = (LimitSettings(exempt_loopback=False, max_connections_per_ip=3) if kind == "per_ip"
              else LimitSettings(max_connections=3))  # loopback is exempt from the per-IP rule, not the global one

    async def main() -> tuple[list[bool], bool, int]:
        async with ws_service(limits) as (t, port):
            url = f"ws://127.0.0.1:{port}/ws"
            held, opened = [], []
            for _ in range(5):
                try:
                    held.append(await websockets.connect(url, open_timeout=5))
                    opened.append(True)
                except (OSError, InvalidStatus, websockets.exceptions.InvalidHandshake, TimeoutError):
                    opened.append(False)
            await held.pop().close()
            await _eventually(lambda: t.admission.connections == 2)
            again = await websockets.connect(url, open_timeout=5)  # a freed slot is usable again
            await again.close()
            for ws in held:
                await ws.close()
            return opened, True, t.admission.counters.get("connections_per_ip" if kind == "per_ip"
                                                          else "connections", 0)

    opened, again, counted = asyncio.run(main())
    assert opened == [True, True, True, False, False] and again and counted == 2


@pytest.mark.parametrize(("origin", "allowed", "status"), [
    ("http://evil.example", (), 403),
    (None, (), 101),  # native clients send no Origin
    ("same", (), 101),  # the coordinator's own page
    ("https://app.example", ("https://app.example",), 101),
    ("same", ("https://app.example",), 403),
    ("http://evil.example", ("*",), 101),
])
def test_f18_allowed_origins_on_ws(origin: str | None, allowed: tuple[str, ...], status: int) -> None:
    async def main() -> tuple[int, int]:
        async with ws_service(allowed_origins=allowed) as (t, port):
            o = f"http://127.0.0.1:{port}" if origin == "same" else origin
            peer = RawPeer(port, headers={"Origin": o} if o else {})
            got = await peer.open()
            peer.abort()
            return got, t.admission.counters.get("origin", 0)

    got, counted = asyncio.run(main())
    assert got == status and counted == (1 if status == 403 else 0)
