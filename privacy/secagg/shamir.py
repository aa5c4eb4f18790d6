"""Shamir t-of-n secret sharing (Shamir, CACM 1979) over the prime field GF(2^521 − 1).

The Mersenne prime 2^521 − 1 holds a 32-byte secret (the self-mask seed or an X25519 private key) in a single
field element. Shares are (x, y) with x = 1..n; randomness comes from the caller's CSPRNG-backed stream.
"""

from __future__ import annotations

import itertools
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


def _lagrange_at(pts: Sequence[tuple[int, int]], x0: int) -> int:
    """Value at ``x0`` of the unique polynomial of degree < len(pts) through ``pts`` (Lagrange interpolation)."""
    xs = [x for x, _ in pts]
    total = 0
    for i, (xi, yi) in enumerate(pts):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (x0 - xj) % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    return total


def _check_points(pts: Sequence[tuple[int, int]]) -> None:
    xs = [x for x, _ in pts]
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share x-coordinates must be distinct and non-zero")


def combine(shares: Sequence[tuple[int, int]], t: int, length: int = 32) -> bytes:
    """Lagrange interpolation at 0 from the first t of at least t shares with distinct x."""
    if len(shares) < t:
        raise ValueError(f"need {t} shares, got {len(shares)}")
    pts = list(shares)[:t]
    _check_points(pts)
    secret = _lagrange_at(pts, 0)
    if secret >= 1 << (8 * length):
        raise ValueError("reconstructed value does not fit: inconsistent shares")
    return secret.to_bytes(length, "little")


def reconstruct(shares: Sequence[tuple[int, int]], t: int, is_valid: Callable[[bytes], bool], length: int = 32,
                max_attempts: int = 2000) -> tuple[bytes, list[int]]:
    """Robust reconstruction: a secret that ``is_valid`` accepts (e.g. matches a published commitment or public
    key), and the x-coordinates of the shares that do not lie on its polynomial (wrong shares).

    Tries the first t shares, then other t-subsets (at most ``max_attempts`` interpolations), so up to
    ``len(shares) − t`` wrong shares are tolerated. Raises ``ValueError`` if no subset gives a valid secret."""
    pts = list(shares)
    if len(pts) < t:
        raise ValueError(f"need {t} shares, got {len(pts)}")
    _check_points(pts)
    for attempt, subset in enumerate(itertools.combinations(pts, t)):
        if attempt >= max_attempts:
            break
        value = _lagrange_at(subset, 0)
        if value >= 1 << (8 * length):
            continue
        secret = value.to_bytes(length, "little")
        if is_valid(secret):
            chosen = {x for x, _ in subset}
            bad = [x for x, y in pts if x not in chosen and _lagrange_at(subset, x) != y]
            return secret, bad
    raise ValueError(f"no {t} of the {len(pts)} shares reconstruct a valid secret: too many wrong shares")


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
