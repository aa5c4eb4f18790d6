"""Static files for the HTTP side of the WebSocket port: one cached ``bytes`` object per file and allow-lists.

Every response for one file shares its cached ``bytes``; :class:`coordinator.service.http_server.HttpConnection`
sends it in ``memoryview`` slices with flow control, so a peer that requests Pyodide's 9.6 MB ``pyodide.asm.wasm``
and never reads pins about 128 KiB of the process, not a copy of the file (issue 13, F13: when ``websockets``
answered HTTP with one buffered body, 100 such peers pinned 665 MiB; ``tests/test_http_budget.py``).
"""

from __future__ import annotations

import mimetypes
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
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


__all__ = ["FileData", "allowed_file", "expand", "normalize", "read_file", "under_root"]
