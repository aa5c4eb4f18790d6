"""Shamir t-of-n secret sharing (Shamir, CACM 1979) over the prime field GF(2^521 − 1).

The Mersenne prime 2^521 − 1 holds a 32-byte secret (the self-mask seed or an X25519 private key) in a single
field element. Shares are (x, y) with x = 1..n; randomness comes from the caller's CSPRNG-backed stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

PRIME = (1 << 521) - 1
ELEMENT_BYTES = 66


def split(secret: bytes, n: int, t: int, random_bytes: Callable[[int], bytes]) -> list[tuple[int, int]]:
    """Shares ``(x, f(x))`` for x = 1..n of a random degree-(t−1) polynomial with f(0) = secret."""
    return split_at(secret, list(range(1, n + 1)), t, random_bytes)


def split_at(secret: bytes, xs: list[int], t: int, random_bytes: Callable[[int], bytes]) -> list[tuple[int, int]]:
    """Shares at the given distinct non-zero x-coordinates (SecAgg+ evaluates only at the k+1 holders)."""
    n = len(xs)
    if not 1 <= t <= n:
        raise ValueError(f"need 1 <= t <= n, got t={t}, n={n}")
    if len(set(xs)) != n or any(not 0 < x < PRIME for x in xs):
        raise ValueError("x-coordinates must be distinct and non-zero")
    if len(secret) > 64:
        raise ValueError("secret must be at most 64 bytes")
    coeffs = [int.from_bytes(secret, "little")]
    for _ in range(t - 1):
        coeffs.append(int.from_bytes(random_bytes(ELEMENT_BYTES), "little") % PRIME)
    shares = []
    for x in xs:
        y = 0
        for c in reversed(coeffs):
            y = (y * x + c) % PRIME
        shares.append((x, y))
    return shares


def combine(shares: Sequence[tuple[int, int]], t: int, length: int = 32) -> bytes:
    """Lagrange interpolation at 0 from at least t shares with distinct x."""
    if len(shares) < t:
        raise ValueError(f"need {t} shares, got {len(shares)}")
    pts = list(shares)[:t]
    xs = [x for x, _ in pts]
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share x-coordinates must be distinct and non-zero")
    secret = 0
    for i, (xi, yi) in enumerate(pts):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * length):
        raise ValueError("reconstructed value does not fit: inconsistent shares")
    return secret.to_bytes(length, "little")


def encode_share(share: tuple[int, int]) -> bytes:
    x, y = share
    return x.to_bytes(2, "little") + y.to_bytes(ELEMENT_BYTES, "little")


def decode_share(data: bytes) -> tuple[int, int]:
    if len(data) != 2 + ELEMENT_BYTES:
        raise ValueError(f"a share is {2 + ELEMENT_BYTES} bytes, got {len(data)}")
    x, y = int.from_bytes(data[:2], "little"), int.from_bytes(data[2:], "little")
    if not x > 0 or y >= PRIME:
        raise ValueError("share out of range")
    return x, y
