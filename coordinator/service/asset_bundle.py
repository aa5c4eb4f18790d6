"""The browser runtime's large files under content-hashed URLs, cached for a year (issue 14).

A browser tab needs ≈ 14 MB before it can train: Pyodide (``pyodide.asm.wasm`` 9.6 MB, ``python_stdlib.zip``
2.5 MB, its JS), libsodium and our WASM kernel. Under ``/sdk/…`` they are revalidated on every load (``no-cache`` +
ETag: one round trip each, and a tab that cannot reach the coordinator cannot start). Here every *group* of
files (a directory whose files refer to each other by relative URL: Pyodide's ``indexURL``, libsodium's two
modules, the kernel) gets a URL prefix ``/assets/<hash>/<group>/`` where ``hash`` is the first 16 hex digits of the
SHA-256 over the group's file names and contents. A URL therefore never changes meaning: it is served with
``Cache-Control: public, max-age=31536000, immutable``, and a new version of a group gets new URLs.

``/sdk/assets.json`` (``no-cache`` + ETag) maps the runtime's parts to those URLs (relative to itself, so a page on
another origin resolves them against the coordinator) and gives every file's SHA-256 and size: the loader
(``client_web/js/loader.js``) checks each download against it wherever the files are served from.

One change to a third-party file: ``libsodium-wrappers.mjs`` imports the bare specifier ``"libsodium"``, which only
an import map resolves – and module workers have none. Its copy here imports ``"./libsodium.mjs"`` (the same
group) instead; nothing else differs (``rewritten`` in the table, tested).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from coordinator.service.static_files import FileData, normalize

ASSETS_PREFIX = "/assets/"
IMMUTABLE = "public, max-age=31536000, immutable"
BARE_SODIUM_IMPORT = b'from"libsodium"'
# served name (group/file) → path relative to client_web/
ASSET_FILES: dict[str, str] = {
    "pyodide/pyodide.mjs": "node_modules/pyodide/pyodide.mjs",
    "pyodide/pyodide.asm.mjs": "node_modules/pyodide/pyodide.asm.mjs",
    "pyodide/pyodide.asm.wasm": "node_modules/pyodide/pyodide.asm.wasm",
    "pyodide/python_stdlib.zip": "node_modules/pyodide/python_stdlib.zip",
    "pyodide/pyodide-lock.json": "node_modules/pyodide/pyodide-lock.json",
    "sodium/libsodium-wrappers.mjs": "node_modules/libsodium-wrappers/dist/modules-esm/libsodium-wrappers.mjs",
    "sodium/libsodium.mjs": "node_modules/libsodium/dist/modules-esm/libsodium.mjs",
    "kernel/flkernel.wasm": "kernel/flkernel.wasm",
}
# the runtime's entry points, by part (what client_web/js/runtime.js imports or fetches)
ENTRY_POINTS = {"pyodide": "pyodide/pyodide.mjs", "sodium": "sodium/libsodium-wrappers.mjs",
                "kernel": "kernel/flkernel.wasm"}
# the files the loader downloads itself (with progress, resume and a hash check) before Pyodide asks for them
PRELOAD = ("pyodide/pyodide.asm.wasm", "pyodide/python_stdlib.zip", "pyodide/pyodide-lock.json",
           "kernel/flkernel.wasm")


def rewritten(name: str, body: bytes) -> bytes:
    """The bytes served for asset ``name``: the file itself, except for the one bare import described above."""
    if name == "sodium/libsodium-wrappers.mjs":
        if body.count(BARE_SODIUM_IMPORT) != 1:
            raise ValueError("libsodium-wrappers.mjs: expected exactly one import of \"libsodium\"")
        return body.replace(BARE_SODIUM_IMPORT, b'from"./libsodium.mjs"')
    return body


@dataclass(frozen=True)
class Asset:
    """An asset's bytes as served (a :class:`FileData`, whose gzip encoding the HTTP layer makes once) and their
    SHA-256."""

    file: FileData
    sha256: str

    @property
    def body(self) -> bytes:
        return self.file.body


@dataclass(frozen=True)
class AssetBundle:
    """Every asset (by served name), each group's hash, and ``/sdk/assets.json`` (its ETag made once)."""

    assets: dict[str, Asset]
    group_hash: dict[str, str]
    index_file: FileData

    @property
    def index(self) -> bytes:
        return self.index_file.body

    def url(self, name: str) -> str:
        """The absolute path of asset ``name`` (``/assets/<hash>/<group>/<file>``)."""
        return f"{ASSETS_PREFIX}{self.group_hash[name.split('/', 1)[0]]}/{name}"

    def lookup(self, rest: str) -> Asset | None:
        """The asset at ``/assets/<rest>``, or ``None`` (unknown name, or a hash that is not the current one's)."""
        digest, _, name = rest.partition("/")
        norm = normalize(name)
        if norm is None or norm not in self.assets:
            return None
        return self.assets[norm] if self.group_hash[norm.split("/", 1)[0]] == digest else None


def _content_type(name: str) -> str:
    if name.endswith(".wasm"):
        return "application/wasm"
    if name.endswith(".mjs"):
        return "text/javascript"
    if name.endswith(".json"):
        return "application/json"
    return "application/zip" if name.endswith(".zip") else "application/octet-stream"


def build(client_web: Path) -> AssetBundle:
    """Read, rewrite and hash the assets of ``client_web`` (≈ 14 MB; SHA-256 of it takes ≈ 40 ms)."""
    assets: dict[str, Asset] = {}
    for name, rel in ASSET_FILES.items():
        body = rewritten(name, (client_web / rel).read_bytes())
        digest = hashlib.sha256(body).hexdigest()
        assets[name] = Asset(FileData(body, _content_type(name), f'"{digest[:32]}"'), digest)
    groups: dict[str, hashlib._Hash] = {}
    for name in sorted(assets):
        h = groups.setdefault(name.split("/", 1)[0], hashlib.sha256())
        h.update(f"{name}\0{assets[name].sha256}\n".encode())
    group_hash = {g: h.hexdigest()[:16] for g, h in groups.items()}
    partial = AssetBundle(assets, group_hash, FileData(b"", "application/json", '""'))
    index = {
        "version": 1,
        # relative to /sdk/assets.json: a page on another origin resolves them against the coordinator
        "entry": {part: ".." + partial.url(name) for part, name in ENTRY_POINTS.items()},
        "preload": [".." + partial.url(name) for name in PRELOAD],
        "files": {".." + partial.url(name): {"sha256": a.sha256, "size": len(a.body)} for name, a in assets.items()},
    }
    body = json.dumps(index, indent=1, sort_keys=True).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return AssetBundle(assets, group_hash, FileData(body, "application/json", etag))


_CACHE: dict[Path, tuple[tuple[tuple[int, int], ...], AssetBundle]] = {}


def bundle(client_web: Path) -> AssetBundle:
    """:func:`build`, kept until one of the files changes (size or modification time)."""
    stats = [(client_web / r).stat() for r in ASSET_FILES.values()]
    key = tuple((st.st_size, st.st_mtime_ns) for st in stats)
    cached = _CACHE.get(client_web)
    if cached is None or cached[0] != key:
        cached = (key, build(client_web))
        _CACHE[client_web] = cached
    return cached[1]


__all__ = ["ASSETS_PREFIX", "ASSET_FILES", "IMMUTABLE", "Asset", "AssetBundle", "build", "bundle", "rewritten"]
