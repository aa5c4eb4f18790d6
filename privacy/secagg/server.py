"""The SecAgg+ server state machine for one group (sans-I/O), after Bonawitz et al. (CCS'17 §4) with the
neighbour graph of Bell et al. (CCS'20).

How the coordinator drives it:

1. Deliver the group's client messages to :meth:`SecAggServer.receive` as they arrive. A bad message raises
   (:class:`ProtocolError`, :class:`ReplayError`, :class:`SecAggSignatureError`) and changes nothing: report it
   and carry on.
2. When :attr:`phase_complete` is true (everyone still in the protocol answered) or the phase's deadline has
   passed, call :meth:`close_phase`: whoever has not answered has dropped. It returns
   ``{client_id: message bytes}``: deliver each to its client and go back to 1.
3. After the unmasking phase closes, :attr:`phase` is ``"done"`` and :attr:`result` holds the group sum (field
   elements mod 2^m) and the survivors. If a threshold is not met, ``close_phase`` raises
   :class:`ThresholdError`; the ``failed`` notices to deliver to the clients still in the protocol are then in
   :attr:`failure_messages`, and nothing but the masked inputs (uniformly random to the server) was learned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flcrypto import Crypto, CryptoError, default_crypto
from privacy.secagg import shamir
from privacy.secagg.client import ADVERTISE_ITEMS, SERVER_ID, encode_survivors
from privacy.secagg.config import GroupConfig, expand_mask, pair_seed, self_commitment, self_seed
from privacy.secagg.errors import ProtocolError, ReplayError, ThresholdError
from privacy.secagg.messages import Message
from privacy.secagg.wire import decode_masked

PHASE_ORDER = ("advertise", "shares", "masked", "consistency", "unmask")
_REPLY = {"advertise": "keys", "shares": "shares_in", "masked": "survivors", "consistency": "unmask_request"}


@dataclass(frozen=True)
class GroupResult:
    sum: Any  # field elements mod 2^m: Σ of the survivors' inputs
    survivors: tuple[str, ...]  # U3: the clients whose inputs are in the sum
    dropped: tuple[str, ...]  # members whose inputs are not in the sum
    faulty: tuple[str, ...] = ()  # holders that sent a share inconsistent with the owner's commitment/public key


class SecAggServer:
    """The server side of one group. ``backend`` does the vector arithmetic (numpy on the coordinator)."""

    def __init__(self, cfg: GroupConfig, backend: Any, crypto: Crypto | None = None) -> None:
        self.cfg, self.backend = cfg, backend
        self.crypto = crypto or default_crypto()
        self.phase = "advertise"
        self.received: dict[str, dict[str, Message]] = {p: {} for p in PHASE_ORDER}
        self.expected: set[str] = set(cfg.members)
        self.u1: set[str] = set()
        self.u2: set[str] = set()
        self.u3: tuple[str, ...] = ()
        self._masked_sum: Any = None  # running Σ y_u over the masked inputs received
        self.result: GroupResult | None = None
        self.failed: str | None = None
        self.failure_messages: dict[str, bytes] = {}
        self._failure_messages = self.failure_messages

    @property
    def phase_complete(self) -> bool:
        """True when every client still in the protocol has answered the current phase."""
        return self.phase in PHASE_ORDER and self.expected <= set(self.received[self.phase])

    def drop(self, member: str) -> None:
        """``member`` has left the protocol (e.g. its policy declined the task): stop waiting for it in the
        current phase. Nothing it already sent is forgotten."""
        if member in self.expected and member not in self.received.get(self.phase, {}):
            # a new set: after a phase closes, ``expected`` is the same object as that phase's survivor set (u1, u2),
            # which must keep the member – its keys and shares are part of the protocol's record
            self.expected = self.expected - {member}

    def receive(self, data: bytes) -> None:
        """Verify and record one client message. Raises ProtocolError/ReplayError/SecAggSignatureError on a bad
        message and records nothing (the caller reports the error to that client)."""
        msg = Message.from_bytes(data)
        if msg.sender not in self.cfg.members:
            raise ProtocolError(f"{msg.sender!r} is not a member of group {self.cfg.group}")
        if (msg.round, msg.group, msg.recipient) != (self.cfg.round, self.cfg.group, SERVER_ID):
            raise ProtocolError(f"message for round {msg.round} group {msg.group} to {msg.recipient!r}; this is "
                                f"round {self.cfg.round} group {self.cfg.group}")
        if msg.phase not in PHASE_ORDER:
            raise ProtocolError(f"unexpected {msg.phase!r} message from a client")
        msg.verify(self.crypto, self.cfg.identity_keys[msg.sender], self.cfg.binding)
        if msg.sender in self.received[msg.phase]:
            raise ReplayError(f"duplicate {msg.phase} message from {msg.sender!r}")
        if msg.phase != self.phase:
            raise ProtocolError(f"{msg.phase} message from {msg.sender!r} while the group is in {self.phase}")
        if msg.sender not in self.expected:
            raise ProtocolError(f"{msg.sender!r} already dropped out of group {self.cfg.group}")
        if msg.phase == "masked":
            if set(msg.items) != {"y"}:
                raise ProtocolError("masked: needs exactly one item 'y'")
            y = self._decode_masked(msg.items["y"])
            m = self.cfg.modulus_bits
            if self._masked_sum is None:
                self._masked_sum = self.backend.add_mod(self.backend.zeros_field(self.cfg.vector_length, m), y, m)
            else:
                self._masked_sum = self.backend.iadd_mod(self._masked_sum, y, m)
            msg = Message(msg.phase, msg.round, msg.group, msg.sender, msg.recipient, {}, msg.signature)  # drop y
        else:
            self._validate(msg)
        self.received[msg.phase][msg.sender] = msg

    def _validate(self, msg: Message) -> None:
        c = self.cfg
        if msg.phase == "advertise":
            if set(msg.items) != ADVERTISE_ITEMS or any(len(v) != 32 for v in msg.items.values()):
                raise ProtocolError(f"advertise: needs exactly the 32-byte items {sorted(ADVERTISE_ITEMS)}")
        elif msg.phase == "shares":
            want = c.neighbours(msg.sender) & self.u1
            if set(msg.items) != want:
                raise ProtocolError(f"shares: {msg.sender!r} must address exactly its live neighbours {sorted(want)}")
        elif msg.phase == "consistency":
            if msg.items != {"u3": encode_survivors(self.u3)}:
                raise ProtocolError("consistency: signed a different survivor set")
        elif msg.phase == "unmask":
            x_sender = c.share_x(msg.sender)
            for key, value in msg.items.items():
                kind, _, who = key.partition(":")
                if kind not in ("b", "s") or who not in c.members:
                    raise ProtocolError(f"unmask: bad item {key!r}")
                if msg.sender not in c.holders(who) or who not in self.u2:
                    raise ProtocolError(f"unmask: {msg.sender!r} holds no share of {who!r}")
                if (kind == "b") != (who in self.u3) or (kind == "s" and who == msg.sender):
                    raise ProtocolError(f"unmask: {key!r} is not a share the server may ask for")
                try:
                    x, _y = shamir.decode_share(value)
                except ValueError as exc:
                    raise ProtocolError(f"unmask: {exc}") from None
                if x != x_sender:
                    raise ProtocolError("unmask: share x-coordinate does not match its holder")

    def _decode_masked(self, blob: bytes) -> Any:
        import mle

        try:
            bits, values = decode_masked(blob, "numpy" if self.backend.name == "numpy" else "pure", self.cfg.round,
                                         self.cfg.group)
        except (mle.FormatError, KeyError, ValueError) as exc:
            raise ProtocolError(f"masked: not a valid .mle field-element tensor: {exc}") from None
        if bits != self.cfg.modulus_bits or len(values) != self.cfg.vector_length:
            raise ProtocolError(f"masked: expected {self.cfg.vector_length} elements mod 2^{self.cfg.modulus_bits}")
        if self.backend.name != "numpy":
            import array

            values = array.array(values.format, values)
        m = self.cfg.modulus_bits
        if m not in (16, 32) and len(values) and int(values.max() if hasattr(values, "max") else max(values)) >> m:
            raise ProtocolError(f"masked: element out of range for modulus 2^{self.cfg.modulus_bits}")
        return values

    def _fail(self, reason: str) -> ThresholdError:
        self.failed = reason
        self.phase = "failed"
        self._masked_sum = None
        self.failure_messages = {
            u: Message("failed", self.cfg.round, self.cfg.group, SERVER_ID, u, {"reason": reason.encode()}).to_bytes()
            for u in sorted(self.expected)}
        self._failure_messages = self.failure_messages  # older name, still read by the coordinator engine
        return ThresholdError(f"group {self.cfg.group}: {reason}")

    def close_phase(self) -> dict[str, bytes]:
        """End the current phase: absent clients have dropped. Returns ``{client_id: bytes}`` to deliver."""
        if self.phase not in PHASE_ORDER:
            raise ProtocolError(f"no phase to close (phase {self.phase!r})")
        got = self.received[self.phase]
        responders = set(got) & self.expected
        self.expected = responders
        c = self.cfg
        if self.phase == "advertise":
            self.u1 = responders
            if len(self.u1) < c.t:
                raise self._fail(f"only {len(self.u1)} clients advertised keys; threshold {c.t}")
            out = {u: self._reply(u, {v: got[v].to_bytes() for v in c.neighbours(u) & self.u1})
                   for u in sorted(self.u1)}
            self.phase = "shares"
        elif self.phase == "shares":
            self.u2 = responders
            if len(self.u2) < c.t:
                raise self._fail(f"only {len(self.u2)} clients shared keys; threshold {c.t}")
            out = {u: self._reply(u, {v: got[v].items[u] for v in sorted(self.u2) if u in got[v].items})
                   for u in sorted(self.u2)}
            self.phase = "masked"
        elif self.phase == "masked":
            self.u3 = tuple(sorted(responders))
            if len(self.u3) < c.t:
                raise self._fail(f"only {len(self.u3)} masked inputs arrived; threshold {c.t}")
            out = {u: self._reply(u, {"u3": encode_survivors(self.u3)}) for u in self.u3}
            self.phase = "consistency"
        elif self.phase == "consistency":
            if len(responders) < c.t:
                raise self._fail(f"only {len(responders)} consistency signatures; threshold {c.t}")
            # each client gets the signatures of its own share holders: O(k) per client (Bell et al.'s locality)
            out = {u: self._reply(u, {v: got[v].to_bytes() for v in sorted(c.holders(u) & responders)})
                   for u in sorted(responders)}
            self.phase = "unmask"
        else:  # unmask
            self.result = self._unmask(got)
            self.phase = "done"
            out = {}
        return out

    def _reply(self, recipient: str, items: dict[str, bytes]) -> bytes:
        return Message(_REPLY[self.phase], self.cfg.round, self.cfg.group, SERVER_ID, recipient, items).to_bytes()

    def _reconstruct(self, got: dict[str, Message], kind: str, owner: str, is_valid: Any, what: str,
                     faulty: set[str]) -> bytes:
        holder_of = {}
        shares = []
        for sender, msg in sorted(got.items()):
            raw = msg.items.get(f"{kind}:{owner}")
            if raw is not None:
                share = shamir.decode_share(raw)
                holder_of[share[0]] = sender
                shares.append(share)
        t = self.cfg.t
        if len(shares) < t:
            raise self._fail(f"only {len(shares)} shares of the {what} of {owner!r}; threshold {t}")
        try:
            secret, bad_x = shamir.reconstruct(shares, t, is_valid)
        except ValueError as exc:
            raise self._fail(f"cannot reconstruct the {what} of {owner!r}: {exc}") from None
        faulty.update(holder_of[x] for x in bad_x)
        return secret

    def _unmask(self, got: dict[str, Message]) -> GroupResult:
        c, be, m, cr = self.cfg, self.backend, self.cfg.modulus_bits, self.crypto
        adverts = self.received["advertise"]
        sent_shares = self.received["shares"]
        total = self._masked_sum
        faulty: set[str] = set()
        # 1. the survivors' self masks, each seed checked against its owner's published commitment
        for u in self.u3:
            commit = adverts[u].items["b_commit"]
            b = self._reconstruct(got, "b", u, lambda s, u=u, commit=commit: self_commitment(cr, s, c, u) == commit,
                                  "self-mask seed", faulty)
            total = be.isub_mod(total, expand_mask(cr, self_seed(cr, b, c, u), c, be), m)
        # 2. pairwise masks between survivors and the clients that dropped after sharing their keys
        for u in sorted(self.u2 - set(self.u3)):
            s_pk = adverts[u].items["s_pk"]
            s_sk = self._reconstruct(got, "s", u, lambda s, s_pk=s_pk: cr.x25519_public_key(s) == s_pk,
                                     "mask key", faulty)
            for v in self.u3:
                if v not in sent_shares[u].items:  # not a neighbour: v did not mask with u
                    continue
                try:
                    point = cr.x25519(s_sk, adverts[v].items["s_pk"])
                except CryptoError:
                    raise ProtocolError(f"mask key of {v!r} is invalid") from None
                mask = expand_mask(cr, pair_seed(cr, point, c, u, v), c, be)
                # v added +mask if v < u, −mask otherwise: undo it
                total = be.isub_mod(total, mask, m) if v < u else be.iadd_mod(total, mask, m)
        self._masked_sum = None
        return GroupResult(total, self.u3, tuple(sorted(set(c.members) - set(self.u3))), tuple(sorted(faulty)))

