"""gRPC transport (``grpcio`` asyncio) for native clients: one bidirectional stream per client session.

Service ``flcoordinator.v1.Federation``, method ``Session`` (stream bytes → stream bytes); each gRPC message is
one protocol message (a signed .mle file), so no .proto compilation is needed – the payloads are the schema.
Messages above ``max_message_bytes`` are refused by gRPC itself with status RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from coordinator.service.driver import EngineDriver, QueueLink
from flcore.protocol import GRPC_SERVICE as SERVICE
from flcore.protocol import grpc_channel_options as channel_options

log = logging.getLogger("fl-coordinator.grpc")


class GrpcTransport:
    def __init__(self, driver: EngineDriver, max_message_bytes: int) -> None:
        self.driver, self.max_message_bytes = driver, max_message_bytes
        self.server: grpc.aio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = grpc.aio.server(options=channel_options(self.max_message_bytes))
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Session": grpc.stream_stream_rpc_method_handler(self._session)})  # no (de)serializers: raw bytes
        self.server.add_generic_rpc_handlers((handler,))
        bound = self.server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"gRPC: cannot bind {host}:{port}")
        await self.server.start()
        return bound

    async def stop(self, grace: float = 1.0) -> None:
        if self.server is not None:
            await self.server.stop(grace)

    async def _session(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[bytes]:
        link = QueueLink()
        conn = self.driver.open("grpc", link, context.peer())

        async def reader() -> None:
            try:
                async for data in requests:
                    self.driver.receive(conn, bytes(data))
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
            finally:
                link.queue.put_nowait(None)  # the client half-closed or went away: end the stream

        task = asyncio.create_task(reader())
        try:
            while True:
                data = await link.queue.get()
                if data is None:
                    break
                yield data
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.driver.closed(conn)
