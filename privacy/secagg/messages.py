"""Canonical byte encoding of SecAgg+ messages.

Client → server messages are signed by the client's Ed25519 identity key. The signed *body* is everything but
the signature: ``"FLSA1" ‖ phase ‖ round(u64) ‖ group(u32) ‖ sender ‖ recipient ‖ items`` with strings as
``u16 length ‖ UTF-8`` and items as ``u32 count ‖ (u16 len ‖ key ‖ u32 len ‖ value)*`` sorted by key, so a message
from another round, group or phase, or re-addressed, never verifies. The Ed25519 signature is over
``"fl-secagg-sig\0" ‖ BLAKE2b-512(body)`` (a pre-hash, like the .mle signatures: a 4 MB masked vector is hashed
once by BLAKE2b instead of twice by Ed25519's SHA-512). On the wire: ``body ‖ u16 signature length ‖ signature``. Server → client messages carry
client-signed messages (forwarded unchanged) and lists; they need no signature of their own (the transport
authenticates the coordinator).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from flcrypto import Crypto
from privacy.secagg.errors import ProtocolError, SecAggSignatureError

MAGIC = b"FLSA1"
SIG_CONTEXT = b"fl-secagg-sig\0"
CLIENT_PHASES = ("advertise", "shares", "masked", "consistency", "unmask")
SERVER_PHASES = ("keys", "shares_in", "survivors", "unmask_request", "failed")
MAX_ITEMS = 10_000
MAX_FIELD = 1 << 30


def _pack_items(items: dict[str, bytes]) -> bytes:
    out = [struct.pack("<I", len(items))]
    for k in sorted(items):
        kb = k.encode("utf-8")
        out += [struct.pack("<H", len(kb)), kb, struct.pack("<I", len(items[k])), items[k]]
    return b"".join(out)


def _unpack_items(data: bytes, pos: int) -> tuple[dict[str, bytes], int]:
    def need(n: int) -> None:
        if pos + n > len(data):
            raise ProtocolError("message truncated")

    need(4)
    (count,) = struct.unpack_from("<I", data, pos)
    pos += 4
    if count > MAX_ITEMS:
        raise ProtocolError(f"too many items ({count})")
    items: dict[str, bytes] = {}
    prev = None
    for _ in range(count):
        need(2)
        (kl,) = struct.unpack_from("<H", data, pos)
        pos += 2
        need(kl)
        try:
            k = data[pos: pos + kl].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("item key is not UTF-8") from None
        pos += kl
        if prev is not None and k <= prev:
            raise ProtocolError("item keys must be unique and sorted")
        prev = k
        need(4)
        (vl,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if vl > MAX_FIELD:
            raise ProtocolError("item too large")
        need(vl)
        items[k] = data[pos: pos + vl]
        pos += vl
    return items, pos


def _pack_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<H", len(b)) + b


def _unpack_str(data: bytes, pos: int) -> tuple[str, int]:
    if pos + 2 > len(data):
        raise ProtocolError("message truncated")
    (n,) = struct.unpack_from("<H", data, pos)
    pos += 2
    if pos + n > len(data):
        raise ProtocolError("message truncated")
    try:
        return data[pos: pos + n].decode("utf-8"), pos + n
    except UnicodeDecodeError:
        raise ProtocolError("string is not UTF-8") from None


@dataclass(frozen=True)
class Message:
    """A message of the protocol (client → server signed; server → client unsigned)."""

    phase: str
    round: int
    group: int
    sender: str
    recipient: str
    items: dict[str, bytes] = field(default_factory=dict)
    signature: bytes = b""
    _body: bytes | None = field(default=None, compare=False, repr=False)  # cached encoding of the above

    def signed_bytes(self) -> bytes:
        """The canonical body (see the module docstring); cached."""
        if self._body is None:
            body = b"".join([MAGIC, _pack_str(self.phase), struct.pack("<QI", self.round, self.group),
                             _pack_str(self.sender), _pack_str(self.recipient), _pack_items(self.items)])
            object.__setattr__(self, "_body", body)
        return self._body  # type: ignore[return-value]

    def signature_input(self, crypto: Crypto, binding: bytes = b"") -> bytes:
        """What Ed25519 signs: ``"fl-secagg-sig\0" ‖ binding ‖ BLAKE2b-512(body)``; ``binding`` is the group's
        configuration hash (:attr:`GroupConfig.binding`), so a signature never verifies under another attempt,
        group configuration or selection."""
        return SIG_CONTEXT + bytes(binding) + crypto.blake2b(self.signed_bytes(), digest_size=64)

    def sign(self, crypto: Crypto, identity_seed: bytes, binding: bytes = b"") -> Message:
        """This message signed with the Ed25519 key of ``identity_seed`` (bound to ``binding``)."""
        return Message(self.phase, self.round, self.group, self.sender, self.recipient, self.items,
                       crypto.ed25519_sign(identity_seed, self.signature_input(crypto, binding)), self.signed_bytes())

    def verify(self, crypto: Crypto, public_key: bytes, binding: bytes = b"") -> None:
        """Raise :class:`SecAggSignatureError` unless the signature verifies under ``public_key`` and ``binding``."""
        if len(self.signature) != 64:
            raise SecAggSignatureError(f"{self.phase} message from {self.sender!r} is not signed")
        try:
            crypto.ed25519_verify(public_key, self.signature_input(crypto, binding), self.signature)
        except Exception:
            raise SecAggSignatureError(f"{self.phase} message from {self.sender!r}: bad signature") from None

    def to_bytes(self) -> bytes:
        return b"".join([self.signed_bytes(), struct.pack("<H", len(self.signature)), self.signature])

    @classmethod
    def from_bytes(cls, data: bytes) -> Message:
        data = bytes(data)
        if not data.startswith(MAGIC):
            raise ProtocolError("not a SecAgg message (bad magic)")
        pos = len(MAGIC)
        phase, pos = _unpack_str(data, pos)
        if phase not in CLIENT_PHASES + SERVER_PHASES:
            raise ProtocolError(f"unknown phase {phase!r}")
        if pos + 12 > len(data):
            raise ProtocolError("message truncated")
        rnd, grp = struct.unpack_from("<QI", data, pos)
        pos += 12
        sender, pos = _unpack_str(data, pos)
        recipient, pos = _unpack_str(data, pos)
        items, pos = _unpack_items(data, pos)
        if pos + 2 > len(data):
            raise ProtocolError("message truncated")
        (sl,) = struct.unpack_from("<H", data, pos)
        pos += 2
        if pos + sl != len(data) or sl not in (0, 64):
            raise ProtocolError("bad signature length or trailing bytes")
        return cls(phase, rnd, grp, sender, recipient, items, data[pos:], data[: pos - 2])
