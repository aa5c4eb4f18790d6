"""A small HTTP/1.1 server connection for the coordinator's port (asyncio ``Protocol``, sans-I/O parsing).

:mod:`coordinator.service.transport_ws` hands every connection whose first request is not the WebSocket handshake
to an :class:`HttpConnection`, which serves it and any later requests on it through a handler (``HttpRequest`` →
``HttpReply``; :func:`coordinator.service.http_adapter.respond` → :class:`~coordinator.service.http_routes.
HttpRoutes`). Unlike an HTTP answer from ``websockets``' ``process_request`` (one buffered body that had to reach the
peer within the 10 s ``open_timeout``), bodies here are streamed:

- **Parsing** (:class:`RequestParser`, no I/O): the request line and the header block, at most
  :attr:`HttpLimits.max_header_bytes` (8 KiB; a longer request line is 414, a longer block 431) and
  :attr:`HttpLimits.max_headers` headers (431); malformed lines, obsolete line folding, a missing or repeated
  ``Host`` on HTTP/1.1, conflicting ``Content-Length``\\ s or ``Transfer-Encoding`` with ``Content-Length`` are 400;
  a version other than 1.0/1.1 is 505. Requests carry no body here (GET and HEAD; other methods get the handler's
  405): a request that announces one is answered and the connection closed, its body never parsed as a request.
- **Keep-alive and pipelining**: HTTP/1.1 connections stay open (``Connection: close`` honoured; HTTP/1.0 closes
  after each response); requests already received are answered in order, one at a time. At most
  :attr:`HttpLimits.read_buffer` unparsed bytes are held: past that the transport stops reading.
- **Timeouts**: a request's header block must be complete ``header_timeout_s`` after its first byte (for the
  first request: after the connection was accepted) – a slowloris is closed; an idle keep-alive connection is closed
  after ``idle_timeout_s``. Sending has no total deadline but a *progress* timeout: when the peer accepted no bytes
  for ``send_stall_timeout_s`` (the transport's buffer plus the kernel's unacknowledged send queue did not shrink)
  the connection is aborted – a slow link gets its 9.6 MB at its own pace, a reader that stopped is dropped.
- **Bounded memory**: a body (the cached ``bytes`` of a static file) is written in :attr:`HttpLimits.chunk_bytes`
  ``memoryview`` slices with asyncio flow control (``pause_writing``/``resume_writing``, transport write-buffer high
  water :attr:`HttpLimits.write_high`), so a reader that does not read pins at most about ``write_high +
  chunk_bytes`` (128 KiB) of the process's memory, not the body.
- **Ranges** (RFC 9110 §14, :func:`apply_range`), for every 200 response to GET that has an ``ETag``:
  ``Accept-Ranges: bytes``; one range ``bytes=a-b``, ``a-`` or ``-n`` → 206 with ``Content-Range``; an unsatisfiable
  one → 416 with ``Content-Range: bytes */size``; several ranges → the whole body (200, allowed by §14.2); an
  ``If-Range`` that is not the current (strong) ETag → the whole body. ``If-None-Match`` → 304 is the handler's
  (:meth:`HttpRoutes.finish <coordinator.service.http_routes.HttpRoutes.finish>`).
- **Closing**: after the last response the connection half-closes (``write_eof`` once its buffer is flushed) and
  waits briefly for the peer's EOF, so unread request bytes never reset a response still in flight.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from urllib.parse import urlsplit

try:  # the kernel's send queue (SIOCOUTQ = TIOCOUTQ on Linux); elsewhere only the transport's buffer counts
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - not Linux
    _OUTQ = None

log = logging.getLogger("fl-coordinator.http")

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_FORBIDDEN_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs except HTAB (obs-text ≥ 0x80 is allowed)
_TARGET = re.compile(rb"[\x21-\x7e]+")
_RANGE = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")
LINGER_S = 2.0  # after the last byte was acknowledged: how long a closing connection waits for the peer's EOF


@dataclass(frozen=True)
class HttpLimits:
    """Limits and timeouts of one HTTP connection (``[http]`` settings, docs/operations.md)."""

    header_timeout_s: float = 10.0  # a request's header block must arrive within this (from its first byte)
    idle_timeout_s: float = 30.0  # a keep-alive connection without a request for this long is closed
    send_stall_timeout_s: float = 60.0  # the peer accepted no response bytes for this long: the connection is aborted
    max_header_bytes: int = 8 * 1024  # request line + header fields + the empty line
    max_headers: int = 100
    chunk_bytes: int = 64 * 1024  # a body is written in slices of this size …
    write_high: int = 64 * 1024  # … while the transport's write buffer is under this (pause_writing above it)
    write_low: int = 16 * 1024  # resume_writing once it is under this
    read_buffer: int = 16 * 1024  # unparsed request bytes held before the transport stops reading


class Headers:
    """Request header fields in order, names case-insensitive (``latin-1`` text, as received)."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self.items: list[tuple[str, str]] = list(items)

    def get_all(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.items if k.lower() == n]

    def single(self, name: str) -> str | None:
        """The value of a field sent exactly once, else None (a repeated ``Authorization`` is not credentials)."""
        values = self.get_all(name)
        return values[0] if len(values) == 1 else None

    def joined(self, name: str) -> str | None:
        """A list-valued field (``If-None-Match``, ``Accept-Encoding``): its lines joined with ``", "``."""
        values = self.get_all(name)
        return ", ".join(values) if values else None

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of a field (``Connection``, ``Upgrade``), lower case."""
        return {t.strip().lower() for v in self.get_all(name) for t in v.split(",") if t.strip()}

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str  # as sent (origin-form); an absolute-form target is reduced to its path and query
    version: tuple[int, int]
    headers: Headers = field(default_factory=Headers)
    has_body: bool = False  # Content-Length > 0 or Transfer-Encoding: the body is not read, the connection closes

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 without ``Connection: close`` and without a body (HTTP/1.0: never)."""
        return self.version == (1, 1) and "close" not in self.headers.tokens("Connection") and not self.has_body


@dataclass(frozen=True)
class HttpReply:
    """A response: ``headers`` without ``Content-Length``/``Connection``/``Date``/``Server`` (the connection adds
    them); ``length`` is the ``Content-Length`` of a body-less answer to HEAD (``None``: ``len(body)``)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | memoryview = b""
    length: int | None = None

    def header(self, name: str) -> str | None:
        n = name.lower()
        return next((v for k, v in self.headers if k.lower() == n), None)

    def without(self, *names: str) -> list[tuple[str, str]]:
        drop = {n.lower() for n in names}
        return [(k, v) for k, v in self.headers if k.lower() not in drop]


class ParseError(Exception):
    """A request the server answers with ``status`` and then closes the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def head_end(buf: bytes | bytearray, start: int = 0) -> int | None:
    """The index just past the header block (``\\r\\n\\r\\n``) of the request starting at ``start``, or None."""
    i = buf.find(b"\r\n\r\n", start)
    return None if i < 0 else i + 4


def request_target(line: bytes) -> str | None:
    """The target of a request line (``GET /ws HTTP/1.1`` → ``/ws``), or None if it is not one."""
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        return None
    return parts[1].decode("ascii")


def parse_head(block: bytes, limits: HttpLimits = HttpLimits()) -> HttpRequest:
    """One request's header block (ending with the empty line) → :class:`HttpRequest`; :class:`ParseError`
    (400, 431, 505) if it is not a valid HTTP/1.x request."""
    lines = block[:-4].split(b"\r\n") if block.endswith(b"\r\n\r\n") else block.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise ParseError(400, "malformed request line")
    m = _VERSION.fullmatch(parts[2])
    if m is None:
        raise ParseError(400, "malformed HTTP version")
    version = (int(m.group(1)), int(m.group(2)))
    if version not in ((1, 0), (1, 1)):
        raise ParseError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    if len(lines) - 1 > limits.max_headers:
        raise ParseError(431, f"more than {limits.max_headers} header fields")
    items: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):  # also obs-fold (leading whitespace) and "Name :"
            raise ParseError(400, "malformed header field")
        value = value.strip(b" \t")
        if _FORBIDDEN_VALUE.search(value):
            raise ParseError(400, "control character in a header field")
        items.append((name.decode("ascii"), value.decode("latin-1")))
    headers = Headers(items)
    if version == (1, 1) and len(headers.get_all("Host")) != 1:
        raise ParseError(400, "an HTTP/1.1 request needs exactly one Host header")
    lengths = {v.strip() for v in headers.get_all("Content-Length")}
    if lengths and (len(lengths) > 1 or not all(v.isdigit() for v in lengths)):
        raise ParseError(400, "invalid Content-Length")
    chunked = bool(headers.get_all("Transfer-Encoding"))
    if chunked and lengths:
        raise ParseError(400, "Transfer-Encoding and Content-Length together")
    target = parts[1].decode("ascii")
    if not target.startswith("/"):
        if target.lower().startswith(("http://", "https://")):
            u = urlsplit(target)
            target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        else:
            raise ParseError(400, "unsupported request target")
    return HttpRequest(parts[0].decode("ascii"), target, version, headers,
                       chunked or (bool(lengths) and int(next(iter(lengths))) > 0))


class RequestParser:
    """Sans-I/O: :meth:`feed` received bytes, take complete requests with :meth:`next`."""

    def __init__(self, limits: HttpLimits = HttpLimits()) -> None:
        self.limits = limits
        self.buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> None:
        self.buffer += data

    @property
    def partial(self) -> bool:
        """Bytes of a request that is not complete yet (leading empty lines do not count)."""
        return bool(self.buffer.lstrip(b"\r\n"))

    def next(self) -> HttpRequest | None:
        """The next complete request (removed from the buffer), None if there is none yet; :class:`ParseError`
        if the bytes are not a valid request (or too long)."""
        start = 0
        while self.buffer.startswith(b"\r\n", start):  # RFC 9112 §2.2: ignore empty lines before a request
            start += 2
        if start:
            del self.buffer[:start]
        end = head_end(self.buffer)
        limit = self.limits.max_header_bytes
        if end is None or end > limit:
            if end is not None or len(self.buffer) > limit:
                if self.buffer.find(b"\r\n", 0, limit) < 0:
                    raise ParseError(414, f"request line longer than {limit} bytes")
                raise ParseError(431, f"request header block longer than {limit} bytes")
            return None
        block = bytes(self.buffer[:end])
        del self.buffer[:end]
        return parse_head(block, self.limits)


# ── ranges ─────────────────────────────────────────────────────────────────────────────────────────────────────
def parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """A ``Range`` header against a body of ``size`` bytes: ``(first, last)`` (inclusive) for one satisfiable
    range; ``"unsatisfiable"``; ``None`` when it is to be ignored (not ``bytes``, invalid, or several ranges –
    answered with the whole body)."""
    unit, eq, spec = value.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    specs = spec.split(",")
    if len(specs) != 1:
        return None  # several ranges: 200 with everything (RFC 9110 §14.2 lets a server ignore Range)
    m = _RANGE.fullmatch(specs[0])
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    a, b = m.group(1), m.group(2)
    if a:
        first = int(a)
        last = int(b) if b else size - 1
        if b and last < first:
            return None  # invalid
        if first >= size:
            return "unsatisfiable"
        return first, min(last, size - 1)
    n = int(b)  # suffix: the last n bytes
    if n == 0 or size == 0:
        return "unsatisfiable"
    return max(0, size - n), size - 1


def apply_range(request: HttpRequest, reply: HttpReply) -> HttpReply:
    """Range requests for a 200 response with an ETag (see the module docstring): ``Accept-Ranges`` added;
    206/416 for a GET with a single ``Range`` (and a matching ``If-Range``, if any); every other reply as is."""
    etag = reply.header("ETag")
    if reply.status != 200 or not etag:
        return reply
    reply = replace(reply, headers=[*reply.headers, ("Accept-Ranges", "bytes")])
    value = request.headers.single("Range")
    if request.method != "GET" or value is None:
        return reply
    if_range = request.headers.get_all("If-Range")
    if if_range and (len(if_range) != 1 or if_range[0].strip() != etag or etag.startswith("W/")):
        return reply  # the client's copy is another version (or a date we cannot compare): the whole body
    size = len(reply.body)
    r = parse_range(value, size)
    if r is None:
        return reply
    if r == "unsatisfiable":
        return HttpReply(416, [*reply.without("Content-Type"), ("Content-Range", f"bytes */{size}")])
    first, last = r  # type: ignore[misc]
    return HttpReply(206, [*reply.headers, ("Content-Range", f"bytes {first}-{last}/{size}")],
                     memoryview(reply.body)[first:last + 1])


def error_reply(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> HttpReply:
    body = f"{status} {HTTPStatus(status).phrase}: {message}\n".encode()
    return HttpReply(status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"),
                              *headers], body)


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


def _kernel_unsent(sock: object) -> int:
    """Bytes in the kernel's send queue not yet acknowledged by the peer (Linux ``SIOCOUTQ``); 0 if unknown."""
    if _OUTQ is None or sock is None:
        return 0
    try:
        fd = sock.fileno()  # type: ignore[attr-defined]
        return int(struct.unpack("i", fcntl.ioctl(fd, _OUTQ, b"\0\0\0\0"))[0])
    except (AttributeError, OSError, ValueError):
        return 0


Handler = Callable[[HttpRequest], Awaitable[HttpReply]]


class HttpConnection(asyncio.Protocol):
    """One HTTP/1.1 connection (module docstring). Either a protocol of its own (``connection_made``) or handed an
    accepted transport with the bytes read so far (:meth:`start`, as :mod:`coordinator.service.transport_ws` does).

    ``handler`` answers a request; ``error_headers`` are added to the replies the connection makes itself (400,
    431, 500 …); ``on_buffered(n)`` is told the unparsed bytes held (``False``: too many – the connection is
    aborted); ``on_closed()`` runs once when the connection is gone."""

    def __init__(self, handler: Handler, limits: HttpLimits = HttpLimits(), *,
                 error_headers: Iterable[tuple[str, str]] = (), server_header: str | None = "fl-coordinator",
                 on_buffered: Callable[[int], bool] | None = None, on_closed: Callable[[], None] | None = None,
                 ) -> None:
        self.handler, self.limits = handler, limits
        self.error_headers = list(error_headers)
        self.server_header = server_header
        self.on_buffered, self.on_closed = on_buffered, on_closed
        self.parser = RequestParser(limits)
        self.transport: asyncio.Transport | None = None
        self.requests = 0  # requests answered
        self.lost = False
        self.closed: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._eof = False
        self._reading_paused = False
        self._paused = False  # pause_writing … resume_writing
        self._wakeup: asyncio.Event | None = None  # request bytes, EOF, loss or shutdown
        self._writable: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # no more requests: finish the current response, then close
        self._finishing = False  # the last response is written: half-closed, waiting for the peer
        self._watchdog: asyncio.TimerHandle | None = None
        self._written = 0  # response bytes handed to the transport
        self._last_accepted = 0
        self._last_progress = 0.0
        self._drained_at: float | None = None
        self._first_deadline: float | None = None

    # ── asyncio.Protocol ───────────────────────────────────────────────────────────────────────────────────
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.start(transport)

    def start(self, transport: asyncio.Transport, data: bytes = b"", deadline: float | None = None) -> None:
        """Serve ``transport`` (already connected), ``data`` being the bytes read from it so far; ``deadline``
        (loop time): when the first request's header block must be complete (default: ``header_timeout_s``
        from now)."""
        self._loop = asyncio.get_running_loop()
        self.transport = transport
        self.closed = self._loop.create_future()
        self._wakeup = asyncio.Event()
        transport.set_write_buffer_limits(high=self.limits.write_high, low=self.limits.write_low)
        self._first_deadline = deadline if deadline is not None else self._loop.time() + self.limits.header_timeout_s
        if data:
            self.data_received(data)
        self._task = self._loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self._finishing or self._closing:
            return  # nothing more will be parsed: discard
        self.parser.feed(data)
        held = len(self.parser.buffer)
        if self.on_buffered is not None and not self.on_buffered(held):
            self.abort()
            return
        if held >= self.limits.read_buffer and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        if self._wakeup is not None:
            self._wakeup.set()

    def eof_received(self) -> bool:
        self._eof = True
        if self._wakeup is not None:
            self._wakeup.set()
        return not self._finishing  # keep the write side open to answer what was received

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._wakeup is not None:
            self._wakeup.set()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if self.on_buffered is not None:
            self.on_buffered(0)
        self.parser.buffer = bytearray()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        if self.on_closed is not None:
            callback, self.on_closed = self.on_closed, None
            callback()

    def pause_writing(self) -> None:
        self._paused = True
        self._start_watchdog()

    def resume_writing(self) -> None:
        self._paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # ── control ────────────────────────────────────────────────────────────────────────────────────────────
    def shutdown(self, grace: float) -> None:
        """Stop serving (the service stops): an idle connection closes now, a busy one after its current
        response; either way it is aborted ``grace`` seconds from now at the latest."""
        if self.lost or self.transport is None or self._loop is None:
            return
        self._closing = True
        self._loop.call_later(grace, self.abort)
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is None or self._task.done():
            self._finish()

    def abort(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.abort()

    # ── serving ────────────────────────────────────────────────────────────────────────────────────────────
    async def _serve(self) -> None:
        try:
            while not self.lost and not self._closing:
                request = await self._next_request()
                if request is None:
                    break
                if not await self._answer(request):
                    break
        except Exception:
            log.exception("HTTP connection failed")
            self.abort()
        finally:
            self._finish()

    async def _next_request(self) -> HttpRequest | None:
        """The next complete request, or None when the connection is to close (EOF, a timeout, loss, shutdown,
        or a malformed request – which has then been answered)."""
        assert self._loop is not None and self._wakeup is not None
        deadline, self._first_deadline = self._first_deadline, None
        while True:
            try:
                request = self.parser.next()
            except ParseError as e:
                await self._write_reply(error_reply(e.status, e.reason, self.error_headers), head_only=False,
                                        keep=False)
                return None
            if request is not None:
                self._resume_reading()
                if self.on_buffered is not None:
                    self.on_buffered(len(self.parser.buffer))
                return request
            if self.lost or self._closing or self._eof:
                return None
            self._resume_reading()
            now = self._loop.time()
            if self.parser.partial:
                if deadline is None:
                    deadline = now + self.limits.header_timeout_s
                timeout = deadline - now
            else:
                timeout = deadline - now if deadline is not None else self.limits.idle_timeout_s
            if timeout <= 0:
                return None  # a slowloris, or an idle keep-alive connection: closed without an answer
            self._wakeup.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                return None

    def _resume_reading(self) -> None:
        if self._reading_paused and len(self.parser.buffer) < self.limits.read_buffer and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    async def _answer(self, request: HttpRequest) -> bool:
        """Answer ``request``; True if the connection stays open for the next one."""
        try:
            reply = await self.handler(request)
            reply = apply_range(request, reply)
        except Exception:
            log.exception("HTTP handler failed for %s %s", request.method, request.path[:200])
            reply = error_reply(500, "internal error", self.error_headers)
            keep = False
        else:  # a handler may end the connection with "Connection: close"
            keep = request.keep_alive and not self._closing and (reply.header("Connection") or "").lower() != "close"
        self.requests += 1
        if self.lost:
            return False
        await self._write_reply(reply, head_only=request.method == "HEAD", keep=keep)
        return keep and not self.lost

    async def _write_reply(self, reply: HttpReply, head_only: bool, keep: bool) -> None:
        body = memoryview(reply.body) if reply.body else memoryview(b"")
        lines = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
        if self.server_header:
            lines.append(f"Server: {self.server_header}")
        lines.append(f"Date: {http_date()}")
        for name, value in reply.without("Content-Length", "Connection", "Date", "Server", "Transfer-Encoding"):
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r}: CR/LF in a response header")
            lines.append(f"{name}: {value}")
        no_body = reply.status == 304 or reply.status < 200 or reply.status == 204
        if not no_body:
            length = reply.length if head_only and reply.length is not None else len(body)
            lines.append(f"Content-Length: {length}")
        if not keep:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        chunk = self.limits.chunk_bytes
        if head_only or no_body or len(body) <= chunk:  # one write: head and a small body in one segment
            self._write(head if head_only or no_body else head + body)
            return
        self._write(head)
        for offset in range(0, len(body), chunk):
            if self._paused:
                await self._drain()
            if self.lost:
                return
            self._write(body[offset:offset + chunk])

    async def _drain(self) -> None:
        """Until the transport's buffer is under the low-water mark again (or the connection is gone: the
        watchdog aborts it when the peer makes no progress for ``send_stall_timeout_s``)."""
        assert self._loop is not None
        while self._paused and not self.lost:
            self._writable = self._loop.create_future()
            try:
                await self._writable
            finally:
                self._writable = None

    def _finish(self) -> None:
        """No more responses: half-close once the buffer is flushed, then wait (bounded) for the peer's EOF."""
        if self._finishing or self.lost or self.transport is None:
            return
        self._finishing = True
        self.parser.buffer = bytearray()
        if self.on_buffered is not None:
            self.on_buffered(0)
        self._resume_reading()  # read (and discard) until the peer's EOF
        if self._eof or not self.transport.can_write_eof():
            self.transport.close()  # flushes the buffer first
        else:
            self.transport.write_eof()  # after the buffer: FIN
        self._start_watchdog()

    # ── progress watchdog ──────────────────────────────────────────────────────────────────────────────────
    def _write(self, data: bytes | memoryview) -> None:
        assert self.transport is not None
        self._written += len(data)
        self.transport.write(data)

    def _accepted(self) -> int:
        """Response bytes the peer has accepted: written minus what the transport's buffer and the kernel's
        unacknowledged send queue still hold."""
        if self.transport is None:
            return self._written
        pending = self.transport.get_write_buffer_size() + _kernel_unsent(self.transport.get_extra_info("socket"))
        return self._written - pending

    def _start_watchdog(self) -> None:
        if self._watchdog is not None or self.lost or self._loop is None:
            return
        self._last_accepted = self._accepted()
        self._last_progress = self._loop.time()
        self._drained_at = None
        self._watchdog = self._loop.call_later(self._tick_s(), self._tick)

    def _tick_s(self) -> float:
        return max(0.05, min(1.0, self.limits.send_stall_timeout_s / 4))

    def _tick(self) -> None:
        """While output waits for the peer (writing paused, or the connection closing): abort when it accepted
        nothing for ``send_stall_timeout_s``; a closing connection whose output is all acknowledged gets
        :data:`LINGER_S` for its peer's EOF, then closes."""
        self._watchdog = None
        if self.lost or self._loop is None or self.transport is None:
            return
        if not self._paused and not self._finishing:
            return  # writing again: pause_writing restarts the watchdog
        now = self._loop.time()
        accepted = self._accepted()
        if accepted > self._last_accepted:
            self._last_accepted, self._last_progress = accepted, now
        if accepted >= self._written and self._finishing:
            self._drained_at = self._drained_at if self._drained_at is not None else now
            if now - self._drained_at >= LINGER_S:
                self.transport.close()
                return
        elif now - self._last_progress >= self.limits.send_stall_timeout_s:
            log.debug("HTTP peer accepted no bytes for %.0f s: connection aborted", now - self._last_progress)
            self.abort()
            return
        self._watchdog = self._loop.call_later(self._tick_s(), self._tick)


__all__ = ["LINGER_S", "Headers", "HttpConnection", "HttpLimits", "HttpReply", "HttpRequest", "ParseError",
           "RequestParser", "apply_range", "error_reply", "head_end", "parse_head", "parse_range", "request_target"]

