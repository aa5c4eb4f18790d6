"""Static files for the HTTP side of the WebSocket port: one cached ``bytes`` object per file, allow-lists, and a
budget of the static bytes being sent at once.

Why a budget: ``websockets`` answers an HTTP request (``process_request``) by serializing the whole response and
handing it to the asyncio transport, which keeps what the peer has not read yet in its own buffer (a copy per
connection). A peer that requests Pyodide's 9.6 MB ``pyodide.asm.wasm`` and never reads pins ~9.6 MB until the
handshake timeout aborts it; 100 of them pinned 665 MiB (issue 13, F13). :class:`InflightBudget` counts the body
bytes of every large response from when it is handed to the transport until that connection is gone; a response
that would take the total (or one peer's share) over the limit waits a little for room (a burst of tabs loading
Pyodide at once queues instead of failing – a waiting request holds no body) and is then refused with 503 and
``Retry-After``. True streaming would need a second HTTP stack beside ``websockets`` (its ``Response`` is one
``bytes`` body, sent whole within its ``open_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")

# bytes of file contents kept in memory (the whole browser client is ~15 MB); over it the cache starts afresh
CACHE_LIMIT = 256 * 1024 * 1024


@dataclass(frozen=True)
class FileData:
    body: bytes
    content_type: str
    etag: str


_CACHE: dict[Path, tuple[tuple[int, int], FileData]] = {}


def read_file(path: Path) -> FileData:
    """``path``'s contents, content type and ETag (size and mtime); read once and kept until the file changes, so
    every response for one file shares one ``bytes`` object (the event loop never re-reads Pyodide per tab)."""
    st = path.stat()
    key = (st.st_size, st.st_mtime_ns)
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = FileData(path.read_bytes(), ctype, f'"{key[0]:x}-{key[1]:x}"')
    if sum(len(d.body) for _, d in _CACHE.values()) + len(data.body) > CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[path] = (key, data)
    return data


def under_root(root: Path, rel: str) -> Path | None:
    """A regular file under ``root`` (no escaping it with ``..`` – also percent-encoded – or symlinks pointing out)."""
    root = root.resolve()
    try:
        target = (root / unquote(rel)).resolve()
        target.relative_to(root)
    except (ValueError, OSError):
        return None
    return target if target.is_file() else None


def normalize(rel: str) -> str | None:
    """The percent-decoded, POSIX-normalized relative path, or ``None`` if it is empty, absolute or leaves the
    root (``..``) or holds a NUL byte."""
    rel = unquote(rel)
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        return None
    norm = posixpath.normpath(rel)
    if norm != rel or norm.startswith("..") or norm == ".":
        return None  # only canonical paths: "a/./b", "a//b" and "a/../b" are not how the SDK names its files
    return norm


def allowed_file(root: Path, rel: str, allow: frozenset[str]) -> Path | None:
    """A file of the allow-list ``allow`` (paths relative to ``root``): exactly those, nothing else. Symlinks on
    the way are followed – the list names the files, so a symlinked ``node_modules`` (a pnpm layout, a worktree)
    works, and nothing outside the list is reachable whatever the links."""
    norm = normalize(rel)
    if norm is None or norm not in allow:
        return None
    path = root / norm
    return path if path.is_file() else None


def expand(root: Path, patterns: Iterable[str]) -> frozenset[str]:
    """The files under ``root`` matching the glob ``patterns`` (relative POSIX paths; a plain name is taken as
    is when it exists)."""
    out: set[str] = set()
    for pattern in patterns:
        for p in root.glob(pattern):
            if p.is_file():
                out.add(p.relative_to(root).as_posix())
    return frozenset(out)


@dataclass
class InflightBudget:
    """Static body bytes being sent at once: in total (``limit``) and per peer address (``per_peer_limit``)."""

    limit: int
    per_peer_limit: int
    wait: float = 3.0  # seconds acquire_wait waits for room
    total: int = 0
    by_peer: dict[str, int] = field(default_factory=dict)
    refused: int = 0  # responses refused with 503 so far
    _waiters: set[asyncio.Future[None]] = field(default_factory=set, repr=False)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def acquire(self, peer: str, n: int) -> bool:
        """Count ``n`` more bytes for ``peer``; ``False`` (nothing counted) if a limit would be exceeded – except
        that a single response is never refused when nothing else is in flight (a file above the limit would
        otherwise never be served)."""
        mine = self.by_peer.get(peer, 0)
        if (self.total and self.total + n > self.limit) or (mine and mine + n > self.per_peer_limit):
            return False
        self.total += n
        self.by_peer[peer] = mine + n
        return True

    async def acquire_wait(self, peer: str, n: int) -> bool:
        """:meth:`acquire`, waiting up to ``wait`` seconds for room (woken by every :meth:`release`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while not self.acquire(peer, n):
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.refused += 1
                return False
            waiter = loop.create_future()
            self._waiters.add(waiter)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, remaining)
            finally:
                self._waiters.discard(waiter)
        return True

    def release(self, peer: str, n: int) -> None:
        self.total -= n
        left = self.by_peer.get(peer, 0) - n
        if left > 0:
            self.by_peer[peer] = left
        else:
            self.by_peer.pop(peer, None)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


__all__ = ["FileData", "InflightBudget", "allowed_file", "expand", "normalize", "read_file", "under_root"]
