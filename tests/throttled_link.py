"""A slow network link for browser tests: a TCP proxy on loopback whose downstream (server → browser) is limited to
``rate`` bytes per second in total, shared by all connections, like one home uplink.

The proxy reads from the server only as fast as it forwards, so the server sees a slow reader (its socket buffers
fill) exactly as it would behind a real slow link – which is what cut off Pyodide's 9.6 MB download when the
coordinator's HTTP path had a 10 s deadline (issue 14). The browser connects to ``link.port``; a server that is down
gives the browser a closed connection, as a refused one would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time


class ThrottledLink:
    def __init__(self, target_port: int, rate: float, host: str = "127.0.0.1") -> None:
        self.target_port, self.rate, self.host = target_port, rate, host
        self.port = 0
        self.bytes_down = 0  # forwarded to the browser so far
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tokens = 0.0
        self._last = time.monotonic()
        self._lock: asyncio.Lock | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def start(self) -> ThrottledLink:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def cut(self) -> None:
        """Drop every open connection at once, both ways, and what the proxy holds of them – as when the server's
        machine goes away: data already in the server's socket buffers never arrives (a killed process's
        kernel would still deliver it)."""
        async def cut() -> None:
            for w in list(self._open):
                w.transport.abort()
        asyncio.run_coroutine_threadsafe(cut(), self._loop).result(5)

    async def _start(self) -> int:
        self._lock = asyncio.Lock()
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        return self._server.sockets[0].getsockname()[1]

    async def _take(self, n: int) -> None:
        """Wait until the shared link may carry ``n`` more bytes."""
        assert self._lock is not None
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.rate / 4, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= n:
                    self._tokens -= n
                    return
                await asyncio.sleep((n - self._tokens) / self.rate)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        chunk = max(1024, min(16384, int(self.rate / 20)))
        self._open |= {writer, up_writer}

        async def upstream() -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()
            with contextlib.suppress(OSError):
                up_writer.write_eof()

        async def downstream() -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await up_reader.read(chunk):
                    await self._take(len(data))
                    writer.write(data)
                    await writer.drain()
                    self.bytes_down += len(data)

        up = asyncio.ensure_future(upstream())
        await downstream()
        up.cancel()
        self._open -= {writer, up_writer}
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()


__all__ = ["ThrottledLink"]
