"""Admission control on the real gRPC transport, on loopback (issue 13 F1, F4, F11): concurrent streams per HTTP/2
connection, per-IP sessions, the pre-authentication message size and the message rate – RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from admission_support import engine, frames, session

from coordinator.service.admission import Admission, LimitSettings
from coordinator.service.driver import EngineDriver
from coordinator.service.transport_grpc import GrpcTransport
from flcore.protocol import GRPC_METHOD, grpc_channel_options


@asynccontextmanager
async def grpc_service(limits: LimitSettings | None = None) -> AsyncIterator[tuple[GrpcTransport, grpc.aio.Channel]]:
    t = GrpcTransport(EngineDriver(engine()), 64 << 20, Admission(limits or LimitSettings()))
    port = await t.start("127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=grpc_channel_options(64 << 20))
    try:
        yield t, channel
    finally:
        await channel.close()
        await t.stop(0)


async def _status(call: grpc.aio.StreamStreamCall) -> grpc.StatusCode:
    try:
        async with asyncio.timeout(8):
            while await call.read() != grpc.aio.EOF:
                pass
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return await call.code()


def test_f4_at_most_4_concurrent_sessions_on_one_grpc_connection() -> None:
    """A stream beyond grpc_max_streams_per_connection waits for a free one (HTTP/2 MAX_CONCURRENT_STREAMS): 500
    identities cannot be held over one connection."""
    async def main() -> tuple[int, bool, int]:
        async with grpc_service(LimitSettings(grpc_max_streams_per_connection=4)) as (t, channel):
            calls = []
            for _ in range(4):
                call = channel.stream_stream(GRPC_METHOD)()
                await asyncio.wait_for(call.write(frames(session().start())[0]), 8)
                await asyncio.wait_for(call.read(), 8)  # its challenge: 4 sessions held
                calls.append(call)
            fifth = channel.stream_stream(GRPC_METHOD)()
            hello = asyncio.ensure_future(fifth.write(frames(session().start())[0]))
            answer = asyncio.ensure_future(fifth.read())
            await asyncio.wait([answer], timeout=0.5)  # every chance to be (wrongly) served at once
            held, served_early = len(t.driver.engine.conns), answer.done()
            calls[0].cancel()  # one session ends: the waiting stream gets its turn
            await asyncio.wait_for(asyncio.gather(hello, answer), 8)
            later = len(t.driver.engine.conns)
            for call in [*calls[1:], fifth]:
                call.cancel()
            return held, served_early, later

    held, served_early, later = asyncio.run(main())
    assert held == 4 and not served_early and later == 4


def test_f11_per_ip_sessions_over_grpc() -> None:
    async def main() -> list[grpc.StatusCode | None]:
        async with grpc_service(LimitSettings(exempt_loopback=False, max_connections_per_ip=2)) as (t, channel):
            calls = []
            for _ in range(2):
                calls.append(channel.stream_stream(GRPC_METHOD)())
                await calls[-1].write(frames(session().start())[0])
                await calls[-1].read()  # the challenge: this session is open and counted
            third = await _status(channel.stream_stream(GRPC_METHOD)())
            for call in calls[:2]:
                call.cancel()
            return [third, t.admission.counters.get("connections_per_ip")]

    assert asyncio.run(main()) == [grpc.StatusCode.RESOURCE_EXHAUSTED, 1]


def test_f1_a_large_message_before_authentication_ends_the_stream() -> None:
    async def main() -> tuple[grpc.StatusCode, int]:
        async with grpc_service() as (t, channel):
            call = channel.stream_stream(GRPC_METHOD)()
            await call.write(b"\0" * (65 * 1024))
            return await _status(call), t.admission.counters.get("frame_size", 0)

    assert asyncio.run(main()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 1)


def test_f11_a_replayed_hello_sent_2000_times_ends_the_stream() -> None:
    async def main() -> int:
        async with grpc_service() as (t, channel):
            call = channel.stream_stream(GRPC_METHOD)()
            (hello,) = frames(session().start())
            try:
                for _ in range(2000):
                    await call.write(hello)
            except grpc.aio.AioRpcError:  # the server ended the stream (the client sees INTERNAL: its write failed)
                pass
            await _status(call)
            async with asyncio.timeout(8):  # the session ended on the server: no longer counted
                while t.admission.connections:
                    await asyncio.sleep(0.01)
            return t.admission.counters.get("message_rate", 0)

    assert asyncio.run(main()) == 1


def test_f11_the_message_after_the_burst_ends_the_stream_with_resource_exhausted() -> None:
    limits = LimitSettings(conn_msg_burst=20, conn_msg_rate=0.01)

    async def main() -> tuple[grpc.StatusCode, int]:
        async with grpc_service(limits) as (_, channel):
            call = channel.stream_stream(GRPC_METHOD)()
            (hello,) = frames(session().start())
            for _ in range(21):  # 21 small messages fit gRPC's flow-control window: all written before the end
                await call.write(hello)
            answers = 0
            try:
                async with asyncio.timeout(8):
                    while await call.read() != grpc.aio.EOF:
                        answers += 1
            except grpc.aio.AioRpcError as exc:
                return exc.code(), answers
            return await call.code(), answers

    code, answers = asyncio.run(main())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and answers == 20
