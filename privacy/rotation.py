"""A public-seed random rotation applied before quantization, so that fewer bits per coordinate suffice.

Distributed DP with secure aggregation quantizes every coordinate onto an integer grid that must hold the largest
coordinate a client may send. After L2 clipping to C, one coordinate can be as large as C; after a random rotation
every coordinate is about C/√L with overwhelming probability, so the per-coordinate range – and with it the
bits of the grid and of the modulus – shrinks by a factor ≈ √L / k. This is the *flattening* step of Kairouz,
Liu & Steinke, ICML'21, "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
Aggregation" (Section 4: randomized Hadamard transform), as TensorFlow Federated's distributed DP does.

The transform (orthogonal, so L2 norms – and the DP sensitivity – are unchanged):
  x (length n) → zero-pad to L = nblocks·b → multiply by random signs D → permute by a random permutation P
  → Walsh–Hadamard transform of each block of b coordinates, scaled by 1/√b.
TFF pads to one power of two (up to 2× the length); blocks of b (the largest power of two whose padding costs at
most 1/8 of n) keep the padding small, and the random permutation in front spreads the energy over all blocks
before each is flattened. Signs and permutation come from ChaCha20 (:class:`privacy.randomness.RandomStream`)
keyed with a public seed: every member of a group applies the same rotation, the server inverts it on the group
sum (``R⁻¹ = Dᵀ Pᵀ H/√b``; H/√b is its own inverse).

The numpy and pure-Python paths perform the same IEEE operations in the same order (sign multiplications,
permutation, butterflies a ± b stage by stage, one final multiplication by 1/√b): their results are bit-identical
(tests/test_rotation.py). Pure Python (stdlib) at import: runs in the browser.
"""

from __future__ import annotations

import array
import math
import struct
import sys
from dataclasses import dataclass
from typing import Any

from flcrypto import Crypto, default_crypto
from privacy.randomness import RandomStream

MAX_PAD_FRACTION = 0.125  # the largest block b whose zero padding costs at most n/8 coordinates


def block_size(n: int) -> int:
    """The Hadamard block b for a vector of n coordinates: the largest power of two ≤ the next power of two of n
    whose padding ``ceil(n/b)·b − n`` is at most ``n/8`` (b = 1 for n = 1)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    b = 1 << (n - 1).bit_length()
    while b > 1 and (-(-n // b) * b - n) > MAX_PAD_FRACTION * n:
        b //= 2
    return b


def padded_length(n: int) -> int:
    """L: the rotated vector's length for n coordinates."""
    b = block_size(n)
    return -(-n // b) * b


def rotation_seed(public_seed: bytes, crypto: Crypto | None = None) -> bytes:
    """The rotation's 32-byte seed for a round whose public (commit–reveal) seed is ``public_seed``: a keyed
    BLAKE2b under its own context, so it is as unpredictable to the coordinator as the partition and every client
    recomputes it."""
    if len(public_seed) != 32:
        raise ValueError("public_seed must be 32 bytes")
    return (crypto or default_crypto()).blake2b(b"fl-rotation-v1", key=public_seed)


def _is_numpy(x: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.ndarray)


@dataclass(frozen=True)
class Rotation:
    """The randomized block Hadamard rotation of n-vectors under ``seed`` (see the module docstring)."""

    seed: bytes
    n: int

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("rotation seed must be 32 bytes")
        if self.n < 1:
            raise ValueError("n must be >= 1")

    @property
    def block(self) -> int:
        return block_size(self.n)

    @property
    def length(self) -> int:
        return padded_length(self.n)

    def _signs_and_permutation(self) -> tuple[list[float], list[int]]:
        """±1.0 per padded coordinate (one bit each) and a permutation of range(L): the stable order of 64-bit
        keys (ties keep index order, identical in Python's ``sorted`` and numpy's stable argsort)."""
        cached = _CACHE.get((self.seed, self.n))
        if cached is not None:
            return cached
        L = self.length
        stream = RandomStream(self.seed)
        bits = stream.bytes((L + 7) // 8)
        signs = [-1.0 if (bits[i >> 3] >> (i & 7)) & 1 else 1.0 for i in range(L)]
        keys = struct.unpack(f"<{L}Q", stream.bytes(8 * L))
        perm = sorted(range(L), key=keys.__getitem__)
        if len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[(self.seed, self.n)] = (signs, perm)
        return signs, perm

    def forward(self, x: Any) -> Any:
        """R·x for x of n coordinates: an L-vector (numpy float64 for numpy input, else ``array('d')``)."""
        if len(x) != self.n:
            raise ValueError(f"rotation of {self.n} coordinates given {len(x)}")
        if _is_numpy(x):
            return self.forward_rows(x.reshape(1, -1))[0]
        signs, perm = self._signs_and_permutation()
        L = self.length
        padded = [float(v) for v in x] + [0.0] * (L - self.n)
        y = [padded[p] * signs[p] for p in perm]
        return array.array("d", _fwht_pure(y, self.block))

    def forward_rows(self, x: Any) -> Any:
        """R·x for every row of a numpy (k, n) array: (k, L) float64, each row bit-identical to :meth:`forward`
        (the same elementwise operations)."""
        import numpy as np

        signs, perm = self._signs_and_permutation()
        k, n = x.shape
        if n != self.n:
            raise ValueError(f"rotation of {self.n} coordinates given rows of {n}")
        y = np.zeros((k, self.length), np.float64)
        y[:, :n] = x
        y *= np.asarray(signs)
        return _fwht_numpy(y[:, np.asarray(perm)], self.block)

    def inverse(self, y: Any) -> Any:
        """R⁻¹·y for y of L coordinates, truncated to the first n (numpy float64 or ``array('d')``)."""
        L = self.length
        if len(y) != L:
            raise ValueError(f"inverse rotation of {L} coordinates given {len(y)}")
        signs, perm = self._signs_and_permutation()
        if _is_numpy(y):
            import numpy as np

            z = _fwht_numpy(np.asarray(y, np.float64), self.block)
            out = np.empty(L, np.float64)
            out[np.asarray(perm)] = z
            return (out * np.asarray(signs))[:self.n]
        z = _fwht_pure([float(v) for v in y], self.block)
        out = [0.0] * L
        for i, p in enumerate(perm):
            out[p] = z[i]
        return array.array("d", (out[i] * signs[i] for i in range(self.n)))


_CACHE: dict[tuple[bytes, int], tuple[list[float], list[int]]] = {}


def _fwht_numpy(y: Any, b: int) -> Any:
    """Blockwise fast Walsh–Hadamard transform of y (a vector or rows, length a multiple of b), scaled by 1/√b."""
    import numpy as np

    shape = np.shape(y)
    blocks = np.array(y, np.float64).reshape(-1, b)
    h = 1
    while h < b:
        v = blocks.reshape(blocks.shape[0], -1, 2, h)
        a, c = v[:, :, 0, :].copy(), v[:, :, 1, :]
        v[:, :, 0, :] += c
        v[:, :, 1, :] = a - c
        h *= 2
    return (blocks * (1.0 / math.sqrt(b))).reshape(shape)


def _fwht_pure(y: list[float], b: int) -> list[float]:
    """The same butterflies as :func:`_fwht_numpy`, in the same order, in pure Python."""
    L = len(y)
    h = 1
    while h < b:
        for start in range(0, L, 2 * h):
            for i in range(start, start + h):
                a, c = y[i], y[i + h]
                y[i], y[i + h] = a + c, a - c
        h *= 2
    s = 1.0 / math.sqrt(b)
    return [v * s for v in y]
