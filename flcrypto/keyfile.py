"""Ed25519 identity seeds on disk (coordinator and native client; not used in the browser, which keeps its seed
in IndexedDB)."""

from __future__ import annotations

import os
from pathlib import Path

from flcrypto import default_crypto


def load_or_create_seed(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte seed in ``path``, created (parent directories too, mode 0600, fsync'ed) if missing.

    Raises ``ValueError`` if the file exists but does not hold exactly 32 bytes."""
    path = Path(path)
    if path.exists():
        seed = path.read_bytes()
        if len(seed) != 32:
            raise ValueError(f"{path}: expected a 32-byte Ed25519 seed, found {len(seed)} bytes")
        return seed
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = default_crypto().random_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed)
        f.flush()
        os.fsync(f.fileno())
    return seed
