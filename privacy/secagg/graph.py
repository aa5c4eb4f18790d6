"""Public randomness: the SecAgg+ neighbour graph and the partition of a round's clients into groups.

Both derive from a public seed with the ChaCha20 PRG, so the coordinator cannot choose them.

- Neighbour graph (Bell et al., CCS'20, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead"):
  a Harary graph H(k, n) – position i is adjacent to positions i ± 1, …, i ± k/2 (mod n) – with the clients
  placed on positions by a seeded random permutation, i.e. a random k-regular graph from a public seed.
  k = n − 1 (the complete graph, plain SecAgg) when n − 1 ≤ k.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from flcrypto import default_crypto


def _permutation(items: Sequence[str], seed: bytes, context: bytes) -> list[str]:
    """Fisher–Yates shuffle of ``sorted(items)`` driven by ChaCha20(BLAKE2b(seed, context))."""
    c = default_crypto()
    stream_seed = c.blake2b(context, key=seed)
    out = sorted(items)
    n = len(out)
    randomness = c.prg(stream_seed, 8 * 4 * max(n, 1))
    pos = 0
    for i in range(n - 1, 0, -1):
        bound = i + 1
        limit = (1 << 32) - ((1 << 32) % bound)
        while True:  # rejection sampling for an unbiased index
            if pos + 4 > len(randomness):
                randomness += c.prg(c.blake2b(randomness[-32:], key=stream_seed), 4 * n)
            (r,) = struct.unpack_from("<I", randomness, pos)
            pos += 4
            if r < limit:
                break
        j = r % bound
        out[i], out[j] = out[j], out[i]
    return out


def default_degree(n: int) -> int:
    """Smallest even k ≥ 2·⌈log2 n⌉, or n − 1 (complete graph) if that is smaller."""
    if n <= 1:
        return 0
    k = 2 * math.ceil(math.log2(n))
    k += k % 2
    return min(k, n - 1)


def neighbour_graph(members: Sequence[str], k: int, seed: bytes) -> dict[str, frozenset[str]]:
    """Each member's neighbours in a random k-regular (Harary) graph derived from ``seed``."""
    n = len(members)
    if len(set(members)) != n:
        raise ValueError("group members must be distinct")
    if k >= n - 1:
        return {m: frozenset(x for x in members if x != m) for m in members}
    if k < 2 or k % 2:
        raise ValueError(f"degree k must be even and >= 2 (or >= n-1), got {k}")
    order = _permutation(members, seed, b"secagg-graph")
    index = {m: i for i, m in enumerate(order)}
    half = k // 2
    return {m: frozenset(order[(index[m] + off) % n] for off in range(-half, half + 1) if off) for m in members}


def partition(clients: Sequence[str], group_size: int, seed: bytes) -> list[list[str]]:
    """Split the round's clients into ⌊n/s⌋ groups of s (the first n mod s groups get one extra member),
    in an order fixed by the public ``seed``. Fewer than s clients form one group."""
    if group_size < 1:
        raise ValueError(f"group size must be >= 1, got {group_size}")
    if len(set(clients)) != len(clients):
        raise ValueError("client ids must be distinct")
    order = _permutation(clients, seed, b"group-partition")
    n = len(order)
    g = max(1, n // group_size)
    base, extra = divmod(n, g)
    groups, pos = [], 0
    for i in range(g):
        size = base + (1 if i < extra else 0)
        groups.append(order[pos: pos + size])
        pos += size
    return groups
