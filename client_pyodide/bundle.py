"""The Python files the browser client loads into Pyodide: the repository's own client-core packages, not copies.

A server (the coordinator's HTTP transport, or the test fixture) serves :func:`manifest` as
``<python base>/manifest.json`` and each listed file at ``<python base>/<path>``; ``client_web/js/runtime.js``
fetches them into Pyodide's file system. Only listed files may be served (:func:`resolve`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flcrypto", "mle", "flcore", "privacy", "client_pyodide")
# server-side or CPython-only modules that the browser never imports
EXCLUDE = frozenset({"flcrypto/pynacl_impl.py", "flcrypto/keyfile.py", "mle/cli.py", "privacy/dp/server.py"})


def python_files(root: Path = REPO_ROOT) -> list[str]:
    """Repository-relative POSIX paths of every ``.py`` file the browser loads, sorted."""
    out = []
    for pkg in PACKAGES:
        for p in sorted((root / pkg).rglob("*.py")):
            rel = p.relative_to(root).as_posix()
            if "__pycache__" not in rel and rel not in EXCLUDE:
                out.append(rel)
    return out


def manifest(root: Path = REPO_ROOT) -> dict:
    """``{"files": [path, …], "sha256": {path: hex}}`` – the loader checks every file against its hash."""
    files = python_files(root)
    return {"files": files, "sha256": {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in files}}


def resolve(path: str, root: Path = REPO_ROOT) -> Path | None:
    """The file to serve for a requested manifest path, or ``None`` if it is not part of the bundle."""
    return root / path if path in set(python_files(root)) else None
