"""Parameters of one group's secure-aggregation run, shared by its clients and the server."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from flcrypto import Crypto
from privacy.backends import bytes_per_element
from privacy.secagg.graph import neighbour_graph


@dataclass(frozen=True)
class GroupConfig:
    """``members`` are client ids; ``identity_keys`` their Ed25519 public keys (from the coordinator's registry).

    ``degree`` k of the neighbour graph (default: n − 1, the complete graph of plain SecAgg; a smaller even k
    gives SecAgg+'s sparse Harary graph, whose *local* consistency checks a malicious coordinator can split –
    docs/threat-model.md – so clients refuse it by default); ``threshold`` t: how many of the k + 1 holders of a
    client's secret (its neighbours and itself) must answer in the unmasking phase (default: a strict majority,
    so two disjoint sets of holders can never both reach it); also the minimum number of surviving inputs for the
    group to release a sum. ``binding``: 32 bytes that bind the group's whole configuration and the round attempt
    (:func:`flcore.assignment.group_binding`); mixed into every KDF context and every signature, so keys and
    messages of another attempt, group or configuration never decrypt or verify (empty: none)."""

    round: int
    group: int
    members: tuple[str, ...]
    identity_keys: dict[str, bytes]
    vector_length: int
    modulus_bits: int
    public_seed: bytes
    degree: int | None = None
    threshold: int | None = None
    binding: bytes = b""
    _graph: dict[str, frozenset[str]] = field(default_factory=dict, compare=False, repr=False)
    _x: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(set(self.members)) != len(self.members) or len(self.members) < 1:
            raise ValueError("members must be distinct and non-empty")
        if not (0 <= self.round < 1 << 64 and 0 <= self.group < 1 << 32):
            raise ValueError(f"round must fit in u64 and group in u32, got {self.round}, {self.group}")
        for m in self.members:
            if not m or m == "server" or len(m.encode("utf-8")) > 1024:
                raise ValueError(f"member id {m!r} is invalid (empty, 'server', or longer than 1024 bytes)")
        missing = [m for m in self.members if m not in self.identity_keys]
        if missing:
            raise ValueError(f"no identity key for {missing}")
        if any(len(self.identity_keys[m]) != 32 for m in self.members):
            raise ValueError("identity keys must be 32-byte Ed25519 public keys")
        if self.vector_length < 1:
            raise ValueError("vector_length must be >= 1")
        bytes_per_element(self.modulus_bits)
        if len(self.public_seed) != 32:
            raise ValueError("public_seed must be 32 bytes")
        if len(self.binding) not in (0, 32):
            raise ValueError("binding must be empty or 32 bytes")
        k = self.k
        if not 1 <= self.t <= k + 1:
            raise ValueError(f"threshold must be in 1..k+1 = 1..{k + 1}, got {self.t}")
        object.__setattr__(self, "_graph", neighbour_graph(list(self.members), k, self.public_seed))
        object.__setattr__(self, "_x", {u: i + 1 for i, u in enumerate(sorted(self.members))})

    @property
    def k(self) -> int:
        return len(self.members) - 1 if self.degree is None else min(self.degree, len(self.members) - 1)

    @property
    def t(self) -> int:
        return (self.k + 1) // 2 + 1 if self.threshold is None else self.threshold

    def neighbours(self, member: str) -> frozenset[str]:
        return self._graph[member]

    def holders(self, member: str) -> frozenset[str]:
        """The k + 1 holders of ``member``'s Shamir shares: its neighbours and itself."""
        return self._graph[member] | {member}

    def share_x(self, member: str) -> int:
        """The Shamir x-coordinate of ``member``'s shares (its 1-based index in the sorted members)."""
        return self._x[member]

    def context(self) -> bytes:
        return struct.pack("<QI", self.round, self.group) + self.binding


def pair_seed(crypto: Crypto, shared_point: bytes, cfg: GroupConfig, a: str, b: str) -> bytes:
    """Pairwise mask seed: keyed BLAKE2b of the X25519 shared point and (round, group, ordered pair)."""
    lo, hi = sorted((a, b))
    return crypto.blake2b(b"fl-secagg-pair" + cfg.context() + _ids(lo, hi), key=shared_point)


def self_seed(crypto: Crypto, b_seed: bytes, cfg: GroupConfig, member: str) -> bytes:
    return crypto.blake2b(b"fl-secagg-self" + cfg.context() + _ids(member), key=b_seed)


def self_commitment(crypto: Crypto, b_seed: bytes, cfg: GroupConfig, member: str) -> bytes:
    """Published in the advertisement: a keyed BLAKE2b of the self-mask seed b under a different context than
    :func:`self_seed` (a PRF output: reveals nothing about the mask). The server checks the b it reconstructs
    against it, so a wrong share is detected (and its holder named) instead of silently corrupting the sum."""
    return crypto.blake2b(b"fl-secagg-commit" + cfg.context() + _ids(member), key=b_seed)


def share_key(crypto: Crypto, shared_point: bytes, cfg: GroupConfig, a: str, b: str) -> bytes:
    """AEAD key for shares between a and b: keyed BLAKE2b of their X25519 shared point and the context."""
    lo, hi = sorted((a, b))
    return crypto.blake2b(b"fl-secagg-enc" + cfg.context() + _ids(lo, hi), key=shared_point)


def share_ad(cfg: GroupConfig, sender: str, recipient: str) -> bytes:
    return b"fl-secagg-share" + cfg.context() + _ids(sender, recipient)


def _ids(*ids: str) -> bytes:
    out = b""
    for i in ids:
        b = i.encode("utf-8")
        out += struct.pack("<H", len(b)) + b
    return out


def expand_mask(crypto: Crypto, seed: bytes, cfg: GroupConfig, backend: object) -> object:
    """The mask vector: ChaCha20 bytes of ``seed`` read as little-endian u16/u32, reduced mod 2^m."""
    d, m = cfg.vector_length, cfg.modulus_bits
    return backend.field_from_bytes(crypto.prg(seed, d * bytes_per_element(m)), d, m)  # type: ignore[attr-defined]
