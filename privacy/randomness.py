"""Uniform randomness from a ChaCha20 stream (libsodium's ``randombytes_buf_deterministic``) seeded by the OS
CSPRNG. Never ``random``/``numpy.random`` for masks, rounding or DP noise.

The stream is deterministic given its 32-byte seed (tests and reproducible experiments pass a seed;
production uses :meth:`RandomStream.from_os`). Each request draws from a fresh sub-seed
``BLAKE2b(key=seed, msg="fl-rand" ‖ counter)``, so requests of any size are independent and cheap.
"""

from __future__ import annotations

import array
import struct
import sys
from typing import Any

from flcrypto import Crypto, default_crypto


class RandomStream:
    """Uniform randomness from libsodium's ChaCha20 PRG (through the :mod:`flcrypto` interface), deterministic
    given its 32-byte seed. Request i returns ``PRG(BLAKE2b(key=seed, "fl-rand" ‖ u64le(i)), n)``."""

    def __init__(self, seed: bytes, crypto: Crypto | None = None) -> None:
        if len(seed) != 32:
            raise ValueError(f"RandomStream seed must be 32 bytes, got {len(seed)}")
        self._seed = bytes(seed)
        self._crypto = crypto or default_crypto()
        self._counter = 0

    @classmethod
    def from_os(cls, crypto: Crypto | None = None) -> RandomStream:
        """A stream seeded with 32 bytes from the OS CSPRNG (``crypto.random_bytes``)."""
        c = crypto or default_crypto()
        return cls(c.random_bytes(32), c)

    def bytes(self, n: int) -> bytes:
        """The next ``n`` bytes."""
        if n < 0:
            raise ValueError("n must be >= 0")
        sub = self._crypto.blake2b(b"fl-rand" + struct.pack("<Q", self._counter), key=self._seed)
        self._counter += 1
        return self._crypto.prg(sub, n)

    def uint32(self, n: int, backend: Any = None) -> Any:
        """``n`` uniform 32-bit unsigned integers (little endian from the stream)."""
        raw = self.bytes(4 * n)
        if backend is not None and backend.name == "numpy":
            import numpy as np

            return np.frombuffer(raw, dtype="<u4")
        out = array.array("I", raw) if array.array("I").itemsize == 4 else array.array("L", raw)
        if sys.byteorder != "little":
            out.byteswap()
        return out

    def uniforms(self, n: int, backend: Any = None) -> Any:
        """``n`` floats uniform in [0, 1) with 53 random bits each."""
        raw = self.bytes(8 * n)
        if backend is not None and backend.name == "numpy":
            import numpy as np

            return (np.frombuffer(raw, dtype="<u8") >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
        return [(v >> 11) * (1.0 / (1 << 53)) for v in struct.unpack(f"<{n}Q", raw)]

    def uniforms_open(self, n: int, backend: Any = None) -> Any:
        """``n`` floats uniform in (0, 1] (safe for logarithms)."""
        u = self.uniforms(n, backend)
        if backend is not None and backend.name == "numpy":
            return 1.0 - u
        return [1.0 - v for v in u]
