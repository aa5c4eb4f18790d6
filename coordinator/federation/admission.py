"""Admission control of the sans-I/O engine (issue 13 F4, F12): who may enrol, how fast, when a fresh identity may
be selected, how long a connection may sit without authenticating or saying ``ready``, and what a selected
client that stalls costs it. Pure logic: the engine passes the time in, the service reads files.

Enrolment policies (``AdmissionConfig.enrolment``):

- ``open`` – any key that proves possession enrols, at most ``enrolment_per_minute`` new identities per minute
  (a token bucket of ``enrolment_burst``) so a Sybil flood cannot register thousands of keys per second;
- ``allowlist`` – only the Ed25519 public keys the operator listed (every hello is checked, enrolled or not);
- ``token`` – a key enrols only with an enrolment token the operator issued offline for it
  (:func:`issue_token`, ``fl-coordinator enrol-token``): the coordinator's identity key signs
  ``"fl-enrolment-token-v1\\0" ‖ coordinator key ‖ client key ‖ expiry``; once enrolled it needs no token again.

A refused key gets its challenge like any other (a client that pins the coordinator's key on first use could
not verify an error before it), then an ``error`` as the answer to its ``auth`` – code ``enrolment`` (final) or
``enrolment_busy`` (open enrolment's rate limit: try again later) – and its connection is closed: nothing about
the key is stored.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

from flcrypto import Crypto, default_crypto

ENROLMENT_POLICIES = ("open", "allowlist", "token")
TOKEN_DOMAIN = b"fl-enrolment-token-v1\0"
TOKEN_HEX_CHARS = 2 * (8 + 64)  # expiry (u64, Unix seconds, big-endian) ‖ Ed25519 signature


class TokenError(ValueError):
    """An enrolment token that is malformed, expired, or not signed by this coordinator for this key."""


@dataclass(frozen=True)
class AdmissionConfig:
    """How the engine admits clients. The library defaults keep in-process drivers (simulations, tests) as they
    were: open enrolment without a rate limit, no probation, no stall penalties, no idle deadline – only the
    hello deadline. ``fl-coordinator serve`` runs with the production defaults of its settings
    (coordinator/service/settings.py, docs/operations.md)."""

    enrolment: str = "open"  # "open" | "allowlist" | "token"
    allowlist: frozenset[bytes] = field(default_factory=frozenset)  # Ed25519 public keys (enrolment = allowlist)
    enrolment_per_minute: float = 0.0  # open enrolment: new identities per minute (0: unlimited)
    enrolment_burst: int = 0  # bucket size: new identities accepted at once (0: enrolment_per_minute)
    probation: float = 0.0  # seconds after its enrolment before a new identity can be selected
    hello_timeout: float = 10.0  # a connection must complete hello → auth within this (0: no deadline)
    ready_timeout: float = 0.0  # an authenticated connection idle (not ready, not selected) longer is closed (0: no)
    stall_evidence: float = 0.0  # negative trust evidence per stall, in [0, 1] (a proven deviation is 1)
    stall_ban: int = 0  # ban after this many consecutive stalled selections (0: never)
    # a selected client's reveal (a few bytes, sent on receipt of the selection, before any training) is waited
    # for at most this long (0: phase_timeout) – each silent selected identity costs the round this wait
    reveal_timeout: float = 0.0

    def validate(self) -> None:
        if self.enrolment not in ENROLMENT_POLICIES:
            raise ValueError(f"enrolment must be one of {', '.join(ENROLMENT_POLICIES)}, got {self.enrolment!r}")
        if any(len(k) != 32 for k in self.allowlist):
            raise ValueError("allow-listed keys must be 32-byte Ed25519 public keys")
        for name in ("enrolment_per_minute", "probation", "hello_timeout", "ready_timeout", "reveal_timeout"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.enrolment_burst < 0 or self.stall_ban < 0:
            raise ValueError("enrolment_burst and stall_ban must be >= 0")
        if not 0 <= self.stall_evidence <= 1:
            raise ValueError(f"stall_evidence must be in [0, 1], got {self.stall_evidence!r}")

    @property
    def sweep_interval(self) -> float:
        """Deadlines are checked by one timer at most this often (a sweep costs O(connections))."""
        used = [t for t in (self.hello_timeout, self.ready_timeout) if t > 0]
        return max(0.5, min(used) / 4) if used else math.inf


@dataclass
class EnrolmentBucket:
    """A token bucket over new identities: ``per_minute`` refill, ``burst`` capacity (the injected clock)."""

    per_minute: float
    burst: int
    tokens: float = -1.0
    at: float = -math.inf

    def _refill(self, now: float) -> None:
        cap = float(self.burst or max(1.0, self.per_minute))
        if self.tokens < 0:
            self.tokens, self.at = cap, now
        self.tokens = min(cap, self.tokens + max(0.0, now - self.at) * self.per_minute / 60.0)
        self.at = max(self.at, now)

    def available(self, now: float) -> bool:
        if self.per_minute <= 0:
            return True
        self._refill(now)
        return self.tokens >= 1.0

    def take(self, now: float) -> bool:
        if not self.available(now):
            return False
        if self.per_minute > 0:
            self.tokens -= 1.0
        return True


def _token_message(coordinator_key: bytes, client_key: bytes, expires: int) -> bytes:
    return TOKEN_DOMAIN + bytes(coordinator_key) + bytes(client_key) + struct.pack(">Q", expires)


def issue_token(coordinator_seed: bytes, client_key: bytes, expires: int, crypto: Crypto | None = None) -> str:
    """The enrolment token (hex) for ``client_key`` (32-byte Ed25519 public key), valid until ``expires``
    (Unix seconds), signed with the coordinator's identity seed."""
    crypto = crypto or default_crypto()
    if len(client_key) != 32:
        raise ValueError("the client key must be a 32-byte Ed25519 public key (64 hex characters)")
    if not 0 < expires < 2**63:
        raise ValueError("expiry out of range")
    sig = crypto.ed25519_sign(coordinator_seed, _token_message(crypto.ed25519_public_key(coordinator_seed),
                                                                client_key, expires))
    return (struct.pack(">Q", expires) + sig).hex()


def check_token(coordinator_key: bytes, client_key: bytes, token: str, now: float,
                crypto: Crypto | None = None) -> int:
    """The token's expiry if ``token`` enrols ``client_key`` with the coordinator ``coordinator_key`` at time
    ``now``; else :class:`TokenError` saying why."""
    crypto = crypto or default_crypto()
    if not isinstance(token, str) or len(token) != TOKEN_HEX_CHARS:
        raise TokenError(f"an enrolment token is {TOKEN_HEX_CHARS} hex characters")
    try:
        raw = bytes.fromhex(token)
    except ValueError:
        raise TokenError("the enrolment token is not hex") from None
    (expires,) = struct.unpack(">Q", raw[:8])
    try:
        crypto.ed25519_verify(coordinator_key, _token_message(coordinator_key, client_key, expires), raw[8:])
    except Exception:
        raise TokenError("the enrolment token was not issued by this coordinator for this key") from None
    if now >= expires:
        raise TokenError("the enrolment token has expired")
    return expires


def parse_allowlist(text: str) -> frozenset[bytes]:
    """An allow-list file: one Ed25519 public key (64 hex characters) per line; ``#`` starts a comment."""
    keys = set()
    for n, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        try:
            key = bytes.fromhex(item)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ValueError(f"line {n}: expected an Ed25519 public key (64 hex characters), got {item[:80]!r}")
        keys.add(key)
    return frozenset(keys)
