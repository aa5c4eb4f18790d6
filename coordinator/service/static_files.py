"""Static files for the HTTP side of the WebSocket port: one cached ``bytes`` object per file and allow-lists.

Every response for one file shares its cached ``bytes``; :class:`coordinator.service.http_server.HttpConnection`
sends it in ``memoryview`` slices with flow control, so a peer that requests Pyodide's 9.6 MB ``pyodide.asm.wasm``
and never reads pins about 128 KiB of the process, not a copy of the file (issue 13, F13: when ``websockets``
answered HTTP with one buffered body, 100 such peers pinned 665 MiB; ``tests/test_http_budget.py``).

Compressible files (:data:`GZIP_TYPES`, at least :data:`GZIP_MIN_BYTES`: Pyodide's wasm 9.6 MB → 3.5 MB, its
``.mjs`` 1.25 MB → 0.26 MB) also get a gzip encoding, made once per file in a worker thread (``zlib`` releases the
GIL; the 9.6 MB wasm takes about a second) and kept beside the identity bytes: :func:`gzip_body` returns it once it
is ready and starts it otherwise – the requests before it is ready get the identity encoding, none waits or is
refused. HTML is never compressed here: its CSP hashes its inline scripts from the identity body.
"""

from __future__ import annotations

import logging
import mimetypes
import posixpath
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

log = logging.getLogger("fl-coordinator.http")

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")

# bytes of file contents kept in memory (the whole browser client is ~15 MB); over it the cache starts afresh
CACHE_LIMIT = 256 * 1024 * 1024
# content types worth a gzip encoding (not HTML – see the module docstring – nor zip, PNG … which are compressed)
GZIP_TYPES = frozenset({"application/wasm", "text/javascript", "application/json", "text/css", "text/plain",
                        "text/x-python", "image/svg+xml"})
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 6
GZIP_MAX_RATIO = 0.9  # an encoding that saves less than 10 % is not used


@dataclass(eq=False)
class FileData:
    """A cached file: its bytes, content type and ETag; ``gzip`` its gzip encoding once made (``gzip_state``:
    ``""`` not started, ``"running"``, ``"done"`` – ``gzip`` stays None when it was not worth it)."""

    body: bytes
    content_type: str
    etag: str
    gzip: bytes | None = field(default=None, repr=False)
    gzip_state: str = ""

    @property
    def compressible(self) -> bool:
        return self.content_type in GZIP_TYPES and len(self.body) >= GZIP_MIN_BYTES

    @property
    def gzip_etag(self) -> str:
        """The ETag of the gzip encoding (another representation: another ETag)."""
        return self.etag[:-1] + '-gz"'


_CACHE: dict[Path, tuple[tuple[int, int], FileData]] = {}
_compressor: ThreadPoolExecutor | None = None


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
    if sum(len(d.body) + len(d.gzip or b"") for _, d in _CACHE.values()) + len(data.body) > CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[path] = (key, data)
    return data


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` allows gzip: ``gzip`` (or ``x-gzip``, else ``*``) with a q-value above 0."""
    if not accept_encoding:
        return False
    q_gzip: float | None = None
    q_any: float | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            q_gzip = q if q_gzip is None else max(q_gzip, q)
        elif coding == "*":
            q_any = q
    q_final = q_gzip if q_gzip is not None else q_any
    return q_final is not None and q_final > 0


def gzip_body(f: FileData) -> bytes | None:
    """``f``'s gzip encoding if it is ready; otherwise None, and its compression is started (once) in a worker
    thread. None for files not worth compressing."""
    if f.gzip is not None or not f.compressible or f.gzip_state:
        return f.gzip
    global _compressor
    if _compressor is None:
        _compressor = ThreadPoolExecutor(1, thread_name_prefix="fl-gzip")
    f.gzip_state = "running"
    _compressor.submit(_compress, f)
    return None


def _compress(f: FileData) -> None:
    try:
        c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: a gzip stream (mtime 0: reproducible)
        z = c.compress(f.body) + c.flush()
        if len(z) <= GZIP_MAX_RATIO * len(f.body):
            f.gzip = z
    except Exception:  # pragma: no cover - zlib does not fail on bytes
        log.exception("gzip of a static file failed")
    finally:
        f.gzip_state = "done"


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


__all__ = ["GZIP_MIN_BYTES", "GZIP_TYPES", "FileData", "accepts_gzip", "allowed_file", "expand", "gzip_body",
           "normalize", "read_file", "under_root"]
