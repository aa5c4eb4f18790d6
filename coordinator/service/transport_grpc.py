"""gRPC transport (``grpcio`` asyncio) for native clients: one bidirectional stream per client session.

Service ``flcoordinator.v1.Federation``, method ``Session`` (stream bytes → stream bytes); each gRPC message is
one protocol message (a signed .mle file), so no .proto compilation is needed – the payloads are the schema.
Messages above ``max_message_bytes`` are refused by gRPC itself with status RESOURCE_EXHAUSTED.

Admission control (issue 13 F1, F4, F11; :mod:`coordinator.service.admission`): at most
``grpc_max_streams_per_connection`` (32) concurrent streams on one HTTP/2 connection (``grpc.max_concurrent_streams``:
500 identities over one connection are not possible; the others wait for a free stream); each session counts towards ``max_connections`` and
``max_connections_per_ip`` like a WebSocket connection; every message takes a token from the session's and the
IP's bucket; before the engine has authenticated the session a message may not exceed ``pre_auth_max_frame_kb``.
gRPC applies one receive limit per server, so that check runs once the message has arrived (gRPC itself bounds it
by ``max_message_bytes``). Any refusal ends the stream with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from coordinator.service.admission import Admission, LimitSettings, peer_ip
from coordinator.service.driver import EngineDriver, QueueLink
from flcore.protocol import GRPC_SERVICE as SERVICE
from flcore.protocol import grpc_channel_options as channel_options

log = logging.getLogger("fl-coordinator.grpc")


class GrpcTransport:
    def __init__(self, driver: EngineDriver, max_message_bytes: int, admission: Admission | None = None) -> None:
        self.driver, self.max_message_bytes = driver, max_message_bytes
        self.admission = admission or Admission(LimitSettings())
        self.server: grpc.aio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        options = [*channel_options(self.max_message_bytes),
                   ("grpc.max_concurrent_streams", self.admission.limits.grpc_max_streams_per_connection)]
        self.server = grpc.aio.server(options=options)
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
        ip = peer_ip(context.peer())
        refused = self.admission.open(ip)
        if refused is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
        link = QueueLink()
        conn = self.driver.open("grpc", link, context.peer())
        bucket = self.admission.connection_bucket()
        pre_auth_max = self.admission.limits.pre_auth_max_bytes
        abort: list[str] = []

        async def reader() -> None:
            try:
                async for data in requests:
                    reason = self.admission.allow_message(bucket, ip)
                    if reason is None and len(data) > pre_auth_max and not self.driver.is_authenticated(conn):
                        reason = self.admission.refused(
                            "frame_size", f"{conn}: a {len(data)}-byte message before authentication (limit "
                            f"{pre_auth_max})")
                    if reason is not None:
                        abort.append(reason)
                        return
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
            self.admission.close(ip)
        if abort:  # (context.abort() after messages were yielded ends the call as INTERNAL: set the status instead)
            context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
            context.set_details(abort[0][:200])
