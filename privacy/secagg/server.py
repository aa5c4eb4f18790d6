"""The SecAgg+ server state machine for one group (sans-I/O).

The coordinator feeds it every client message of the group (:meth:`receive`) and calls :meth:`close_phase`
when every expected client has answered (:attr:`phase_complete`) or the phase's deadline has passed – whoever
has not answered by then has dropped. ``close_phase`` returns ``{client_id: message bytes}`` to deliver. After
the unmasking phase closes, :attr:`result` holds the group sum (field elements) and the survivors; if the
threshold is not met, ``close_phase`` raises :class:`ThresholdError`, sends ``failed`` to the clients still in
the protocol, and nothing but the masked inputs (uniformly random to the server) has been learned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flcrypto import Crypto, CryptoError, default_crypto
from privacy.secagg import shamir
from privacy.secagg.client import SERVER_ID
from privacy.secagg.config import GroupConfig, expand_mask, pair_seed, self_seed
from privacy.secagg.errors import ProtocolError, ReplayError, ThresholdError
from privacy.secagg.messages import Message
from privacy.secagg.wire import decode_masked

PHASE_ORDER = ("advertise", "shares", "masked", "consistency", "unmask")
_REPLY = {"advertise": "keys", "shares": "shares_in", "masked": "survivors", "consistency": "unmask_request"}


@dataclass(frozen=True)
class GroupResult:
    sum: Any  # field elements mod 2^m: Σ of the survivors' inputs
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]


class SecAggServer:
    def __init__(self, cfg: GroupConfig, backend: Any, crypto: Crypto | None = None) -> None:
        self.cfg, self.backend = cfg, backend
        self.crypto = crypto or default_crypto()
        self.phase = "advertise"
        self.received: dict[str, dict[str, Message]] = {p: {} for p in PHASE_ORDER}
        self.expected: set[str] = set(cfg.members)
        self.u1: set[str] = set()
        self.u2: set[str] = set()
        self.u3: tuple[str, ...] = ()
        self._masked: dict[str, Any] = {}
        self.result: GroupResult | None = None
        self.failed: str | None = None

    @property
    def phase_complete(self) -> bool:
        return self.expected <= set(self.received.get(self.phase, {}))

    def receive(self, data: bytes) -> None:
        """Verify and record one client message. Raises ProtocolError/ReplayError/SecAggSignatureError on a bad
        message (record nothing; the caller reports the error to that client)."""
        msg = Message.from_bytes(data)
        if msg.sender not in self.cfg.members:
            raise ProtocolError(f"{msg.sender!r} is not a member of group {self.cfg.group}")
        if (msg.round, msg.group, msg.recipient) != (self.cfg.round, self.cfg.group, SERVER_ID):
            raise ProtocolError(f"message for round {msg.round} group {msg.group} to {msg.recipient!r}; this is "
                                f"round {self.cfg.round} group {self.cfg.group}")
        msg.verify(self.crypto, self.cfg.identity_keys[msg.sender])
        if msg.phase not in PHASE_ORDER:
            raise ProtocolError(f"unexpected {msg.phase!r} message from a client")
        if msg.sender in self.received[msg.phase]:
            raise ReplayError(f"duplicate {msg.phase} message from {msg.sender!r}")
        if msg.phase != self.phase:
            raise ProtocolError(f"{msg.phase} message from {msg.sender!r} while the group is in {self.phase}")
        if msg.sender not in self.expected:
            raise ProtocolError(f"{msg.sender!r} already dropped out of group {self.cfg.group}")
        self._validate(msg)
        self.received[msg.phase][msg.sender] = msg

    def _validate(self, msg: Message) -> None:
        if msg.phase == "advertise":
            if set(msg.items) != {"c_pk", "s_pk"} or any(len(v) != 32 for v in msg.items.values()):
                raise ProtocolError("advertise: needs exactly 32-byte c_pk and s_pk")
        elif msg.phase == "shares":
            allowed = self.cfg.neighbours(msg.sender) & self.u1
            if not set(msg.items) <= allowed:
                raise ProtocolError(f"shares: addressed to non-neighbours {sorted(set(msg.items) - allowed)}")
        elif msg.phase == "masked":
            if set(msg.items) != {"y"}:
                raise ProtocolError("masked: needs exactly one item 'y'")
            self._masked[msg.sender] = self._decode_masked(msg.items["y"])
        elif msg.phase == "consistency":
            if msg.items.get("u3") != "\n".join(self.u3).encode("utf-8") or set(msg.items) != {"u3"}:
                raise ProtocolError("consistency: signed a different survivor set")
        elif msg.phase == "unmask":
            for key, value in msg.items.items():
                kind, _, who = key.partition(":")
                if kind not in ("b", "s") or who not in self.cfg.members:
                    raise ProtocolError(f"unmask: bad item {key!r}")
                if (kind == "b") != (who in self.u3) or who not in self.u2:
                    raise ProtocolError(f"unmask: {key!r} is not a share the server may ask for")
                try:
                    x, _y = shamir.decode_share(value)
                except ValueError as exc:
                    raise ProtocolError(f"unmask: {exc}") from None
                if x != self.cfg.share_x(msg.sender):
                    raise ProtocolError("unmask: share x-coordinate does not match its holder")

    def _decode_masked(self, blob: bytes) -> Any:
        import mle

        try:
            bits, values = decode_masked(blob, "numpy" if self.backend.name == "numpy" else "pure")
        except (mle.FormatError, KeyError) as exc:
            raise ProtocolError(f"masked: not a valid .mle field-element tensor: {exc}") from None
        if bits != self.cfg.modulus_bits or len(values) != self.cfg.vector_length:
            raise ProtocolError(f"masked: expected {self.cfg.vector_length} elements mod 2^{self.cfg.modulus_bits}")
        if self.backend.name == "numpy":
            return values.copy()
        import array

        return array.array(values.format, values)

    def _fail(self, reason: str) -> dict[str, bytes]:
        self.failed = reason
        self.phase = "failed"
        out = {u: Message("failed", self.cfg.round, self.cfg.group, SERVER_ID, u,
                          {"reason": reason.encode()}).to_bytes() for u in sorted(self.expected)}
        self._failure_messages = out
        return out

    def close_phase(self) -> dict[str, bytes]:
        """End the current phase: absent clients have dropped. Returns the messages to deliver."""
        got = self.received[self.phase]
        responders = set(got) & self.expected
        self.expected = responders
        c = self.cfg
        if self.phase == "advertise":
            self.u1 = responders
            if len(self.u1) < c.t:
                self._fail(f"only {len(self.u1)} clients advertised keys; threshold {c.t}")
                raise ThresholdError(self.failed or "")
            out = {u: self._reply(u, {v: got[v].to_bytes() for v in c.neighbours(u) & self.u1})
                   for u in sorted(self.u1)}
            self.phase = "shares"
        elif self.phase == "shares":
            self.u2 = responders
            if len(self.u2) < c.t:
                self._fail(f"only {len(self.u2)} clients shared keys; threshold {c.t}")
                raise ThresholdError(self.failed or "")
            out = {u: self._reply(u, {v: got[v].items[u] for v in sorted(self.u2) if u in got[v].items})
                   for u in sorted(self.u2)}
            self.phase = "masked"
        elif self.phase == "masked":
            self.u3 = tuple(sorted(responders))
            if len(self.u3) < c.t:
                self._fail(f"only {len(self.u3)} masked inputs arrived; threshold {c.t}")
                raise ThresholdError(self.failed or "")
            out = {u: self._reply(u, {"u3": "\n".join(self.u3).encode("utf-8")}) for u in self.u3}
            self.phase = "consistency"
        elif self.phase == "consistency":
            if len(responders) < c.t:
                self._fail(f"only {len(responders)} consistency signatures; threshold {c.t}")
                raise ThresholdError(self.failed or "")
            out = {u: self._reply(u, {v: got[v].to_bytes() for v in sorted(responders)}) for u in sorted(responders)}
            self.phase = "unmask"
        elif self.phase == "unmask":
            self.result = self._unmask(got)
            self.phase = "done"
            out = {}
        else:
            raise ProtocolError(f"no phase to close (phase {self.phase!r})")
        return out

    def _reply(self, recipient: str, items: dict[str, bytes]) -> bytes:
        return Message(_REPLY[self.phase], self.cfg.round, self.cfg.group, SERVER_ID, recipient, items).to_bytes()

    def _collect(self, got: dict[str, Message], kind: str, owner: str) -> list[tuple[int, int]]:
        shares = []
        for msg in got.values():
            raw = msg.items.get(f"{kind}:{owner}")
            if raw is not None:
                shares.append(shamir.decode_share(raw))
        return shares

    def _unmask(self, got: dict[str, Message]) -> GroupResult:
        c, be, m = self.cfg, self.backend, self.cfg.modulus_bits
        total = be.zeros_field(c.vector_length, m)
        for u in self.u3:
            total = be.add_mod(total, self._masked[u], m)
        dropped = sorted(self.u2 - set(self.u3))
        # 1. self masks of survivors
        for u in self.u3:
            shares = self._collect(got, "b", u)
            if len(shares) < c.t:
                self._fail(f"only {len(shares)} shares of {u!r}'s self-mask seed; threshold {c.t}")
                raise ThresholdError(self.failed or "")
            b = shamir.combine(shares, c.t)
            total = be.sub_mod(total, expand_mask(self.crypto, self_seed(self.crypto, b, c, u), c, be), m)
        # 2. pairwise masks between survivors and clients that dropped after sharing keys
        adverts = self.received["advertise"]
        sent_shares = self.received["shares"]
        for u in dropped:
            shares = self._collect(got, "s", u)
            if len(shares) < c.t:
                self._fail(f"only {len(shares)} shares of dropped {u!r}'s mask key; threshold {c.t}")
                raise ThresholdError(self.failed or "")
            s_sk = shamir.combine(shares, c.t)
            for v in self.u3:
                if v not in sent_shares[u].items:  # v never received u's shares, so v did not mask with u
                    continue
                try:
                    point = self.crypto.x25519(s_sk, adverts[v].items["s_pk"])
                except CryptoError:
                    raise ProtocolError(f"mask key of {v!r} is invalid") from None
                mask = expand_mask(self.crypto, pair_seed(self.crypto, point, c, u, v), c, be)
                # v added +mask if v < u, −mask otherwise: undo it
                total = be.sub_mod(total, mask, m) if v < u else be.add_mod(total, mask, m)
        return GroupResult(total, self.u3, tuple(sorted(set(c.members) - set(self.u3))))
