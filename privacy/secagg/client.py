"""The SecAgg+ client state machine for one group (sans-I/O).

Phases (Bonawitz et al. CCS'17, with the neighbour graph of Bell et al. CCS'20):

0. ``start()`` → *advertise*: two fresh X25519 key pairs (c: share encryption, s: mask agreement), signed.
1. on *keys* (the neighbours' signed advertisements): verify them, draw the self-mask seed b, Shamir-share b and
   the s private key t-of-(k+1) among the neighbours and itself, encrypt each neighbour's shares → *shares*.
2. on *shares_in* (ciphertexts from neighbours): decrypt and keep them; the senders are the neighbours still
   alive (U2). Send y = x + PRG(b) + Σ_{v∈U2∩N} ±PRG(s_uv) mod 2^m → *masked*.
3. on *survivors* (U3, the clients whose masked input arrived): check it, sign it → *consistency*.
4. on *unmask_request* (the survivors' signed consistency messages): require ≥ t valid ones for the same U3,
   then reveal, for each holder-set member u: the b-share if u ∈ U3, the s-share if u ∈ U2 \\ U3 – never both
   → *unmask*.

Every method returns the messages to send (bytes) and raises a typed error on bad input; the caller (the
client session) sends them and feeds the next server message.
"""

from __future__ import annotations

from typing import Any

from flcrypto import Crypto, CryptoError, DecryptionError, default_crypto
from privacy.secagg import shamir
from privacy.secagg.config import (
    GroupConfig,
    expand_mask,
    pair_seed,
    self_seed,
    share_ad,
    share_key,
)
from privacy.secagg.errors import ProtocolError, ThresholdError
from privacy.secagg.messages import Message
from privacy.secagg.wire import encode_masked

SERVER_ID = "server"


class SecAggClient:
    def __init__(self, cfg: GroupConfig, me: str, identity_seed: bytes, masked_input: Any, backend: Any,
                 crypto: Crypto | None = None) -> None:
        """``masked_input``: this client's input, already field elements mod 2^m of length d."""
        if me not in cfg.members:
            raise ValueError(f"{me!r} is not a member of group {cfg.group}")
        if len(masked_input) != cfg.vector_length:
            raise ValueError(f"input has {len(masked_input)} elements, the group expects {cfg.vector_length}")
        self.cfg, self.me, self.backend = cfg, me, backend
        self.crypto = crypto or default_crypto()
        self._id_seed = identity_seed
        self._x = masked_input
        self.phase = "init"
        self._c_sk = self.crypto.random_bytes(32)
        self._s_sk = self.crypto.random_bytes(32)
        self._b = self.crypto.random_bytes(32)
        self._peer_c: dict[str, bytes] = {}
        self._peer_s: dict[str, bytes] = {}
        self._shares_b: dict[str, tuple[int, int]] = {}  # holder view: secrets of u I hold
        self._shares_s: dict[str, tuple[int, int]] = {}
        self._u2: set[str] = set()
        self._u3: tuple[str, ...] = ()

    # ── helpers ──────────────────────────────────────────────────────────────────────────────────────
    def _msg(self, phase: str, items: dict[str, bytes]) -> bytes:
        m = Message(phase, self.cfg.round, self.cfg.group, self.me, SERVER_ID, items)
        return m.sign(self.crypto, self._id_seed).to_bytes()

    def _parse_server(self, data: bytes, phase: str) -> Message:
        msg = Message.from_bytes(data)
        if msg.phase == "failed":
            self.phase = "failed"
            raise ThresholdError(f"group {self.cfg.group}: server reports failure: "
                                 f"{msg.items.get('reason', b'').decode(errors='replace')}")
        if (msg.phase, msg.round, msg.group, msg.recipient) != (phase, self.cfg.round, self.cfg.group, self.me):
            raise ProtocolError(f"expected {phase} for round {self.cfg.round} group {self.cfg.group} to "
                                f"{self.me!r}, got {msg.phase} round {msg.round} group {msg.group} to {msg.recipient!r}")
        return msg

    def _expect(self, phase: str) -> None:
        if self.phase != phase:
            raise ProtocolError(f"client {self.me!r} is in phase {self.phase!r}, not {phase!r}")

    # ── phases ───────────────────────────────────────────────────────────────────────────────────────
    def start(self) -> bytes:
        self._expect("init")
        self.phase = "advertised"
        return self._msg("advertise", {"c_pk": self.crypto.x25519_public_key(self._c_sk),
                                       "s_pk": self.crypto.x25519_public_key(self._s_sk)})

    def handle(self, data: bytes) -> list[bytes]:
        """Feed one server message; returns the messages to send to the server."""
        phase = Message.from_bytes(data).phase
        handler = {"keys": self._on_keys, "shares_in": self._on_shares, "survivors": self._on_survivors,
                   "unmask_request": self._on_unmask, "failed": self._on_failed}.get(phase)
        if handler is None:
            raise ProtocolError(f"unexpected server message {phase!r}")
        return handler(data)

    def _on_failed(self, data: bytes) -> list[bytes]:
        self._parse_server(data, "failed")
        return []

    def _on_keys(self, data: bytes) -> list[bytes]:
        self._expect("advertised")
        msg = self._parse_server(data, "keys")
        neighbours = self.cfg.neighbours(self.me)
        for sender, raw in msg.items.items():
            adv = Message.from_bytes(raw)
            if sender not in neighbours or adv.sender != sender:
                raise ProtocolError(f"keys: {sender!r} is not a neighbour of {self.me!r}")
            if (adv.phase, adv.round, adv.group) != ("advertise", self.cfg.round, self.cfg.group):
                raise ProtocolError(f"keys: advertisement of {sender!r} is for another phase/round/group")
            adv.verify(self.crypto, self.cfg.identity_keys[sender])
            if len(adv.items.get("c_pk", b"")) != 32 or len(adv.items.get("s_pk", b"")) != 32:
                raise ProtocolError(f"keys: malformed advertisement from {sender!r}")
            self._peer_c[sender], self._peer_s[sender] = adv.items["c_pk"], adv.items["s_pk"]
        alive = sorted(self._peer_c)
        if len(alive) + 1 < self.cfg.t:
            self.phase = "failed"
            raise ThresholdError(f"only {len(alive)} neighbours advertised keys; threshold {self.cfg.t} "
                                 f"needs {self.cfg.t - 1}")
        holders = [*alive, self.me]
        xs = {h: self.cfg.share_x(h) for h in holders}
        points = sorted(xs.values())
        b_poly = shamir.split_at(self._b, points, self.cfg.t, self.crypto.random_bytes)
        s_poly = shamir.split_at(self._s_sk, points, self.cfg.t, self.crypto.random_bytes)
        by_x_b, by_x_s = dict(b_poly), dict(s_poly)
        items: dict[str, bytes] = {}
        for v in alive:
            share = shamir.encode_share((xs[v], by_x_b[xs[v]])) + shamir.encode_share((xs[v], by_x_s[xs[v]]))
            key = share_key(self.crypto, self.crypto.x25519(self._c_sk, self._peer_c[v]), self.cfg, self.me, v)
            nonce = self.crypto.random_bytes(24)
            items[v] = nonce + self.crypto.aead_encrypt(key, nonce, share, share_ad(self.cfg, self.me, v))
        self._shares_b[self.me] = (xs[self.me], by_x_b[xs[self.me]])
        self._shares_s[self.me] = (xs[self.me], by_x_s[xs[self.me]])
        self.phase = "shared"
        return [self._msg("shares", items)]

    def _on_shares(self, data: bytes) -> list[bytes]:
        self._expect("shared")
        msg = self._parse_server(data, "shares_in")
        half = 2 + shamir.ELEMENT_BYTES
        for sender, blob in msg.items.items():
            if sender not in self._peer_c:
                raise ProtocolError(f"shares_in: shares from {sender!r}, who advertised no keys to us")
            key = share_key(self.crypto, self.crypto.x25519(self._c_sk, self._peer_c[sender]), self.cfg,
                            sender, self.me)
            try:
                plain = self.crypto.aead_decrypt(key, blob[:24], blob[24:], share_ad(self.cfg, sender, self.me))
            except DecryptionError:
                raise ProtocolError(f"shares_in: ciphertext from {sender!r} does not authenticate") from None
            if len(plain) != 2 * half:
                raise ProtocolError(f"shares_in: malformed shares from {sender!r}")
            try:
                sb, ss = shamir.decode_share(plain[:half]), shamir.decode_share(plain[half:])
            except ValueError as exc:
                raise ProtocolError(f"shares_in: {exc}") from None
            if sb[0] != self.cfg.share_x(self.me) or ss[0] != self.cfg.share_x(self.me):
                raise ProtocolError(f"shares_in: share from {sender!r} has the wrong x-coordinate")
            self._shares_b[sender], self._shares_s[sender] = sb, ss
        self._u2 = set(msg.items)
        if len(self._u2) + 1 < self.cfg.t:
            self.phase = "failed"
            raise ThresholdError(f"only {len(self._u2)} neighbours sent shares; threshold {self.cfg.t}")
        be, m = self.backend, self.cfg.modulus_bits
        y = be.add_mod(self._x, expand_mask(self.crypto, self_seed(self.crypto, self._b, self.cfg, self.me),
                                            self.cfg, be), m)
        for v in sorted(self._u2):
            try:
                point = self.crypto.x25519(self._s_sk, self._peer_s[v])
            except CryptoError:
                raise ProtocolError(f"mask key of {v!r} is invalid") from None
            mask = expand_mask(self.crypto, pair_seed(self.crypto, point, self.cfg, self.me, v), self.cfg, be)
            y = be.add_mod(y, mask, m) if self.me < v else be.sub_mod(y, mask, m)
        blob = encode_masked(y, m, self.cfg.round, self.cfg.group)  # a .mle field-element tensor
        self._x = None  # the plaintext input is no longer needed
        self.phase = "masked"
        return [self._msg("masked", {"y": blob})]

    def _on_survivors(self, data: bytes) -> list[bytes]:
        self._expect("masked")
        msg = self._parse_server(data, "survivors")
        u3 = tuple(sorted(msg.items.get("u3", b"").decode("utf-8").split("\n"))) if msg.items.get("u3") else ()
        if self.me not in u3 or any(u not in self.cfg.members for u in u3) or len(set(u3)) != len(u3):
            raise ProtocolError(f"survivors: invalid survivor set {u3}")
        if len(u3) < self.cfg.t:
            self.phase = "failed"
            raise ThresholdError(f"only {len(u3)} inputs survived; threshold {self.cfg.t}: refusing to unmask")
        neighbours_in_u3 = [u for u in u3 if u in self.cfg.neighbours(self.me)]
        if any(u not in self._u2 for u in neighbours_in_u3):
            raise ProtocolError("survivors: a neighbour is listed as survivor but never sent us shares")
        self._u3 = u3
        self.phase = "consistent"
        return [self._msg("consistency", {"u3": "\n".join(u3).encode("utf-8")})]

    def _on_unmask(self, data: bytes) -> list[bytes]:
        self._expect("consistent")
        msg = self._parse_server(data, "unmask_request")
        want = "\n".join(self._u3).encode("utf-8")
        valid = set()
        for sender, raw in msg.items.items():
            c = Message.from_bytes(raw)
            if (c.phase, c.round, c.group, c.sender) != ("consistency", self.cfg.round, self.cfg.group, sender):
                raise ProtocolError(f"unmask_request: bad consistency message from {sender!r}")
            if sender not in self._u3:
                raise ProtocolError(f"unmask_request: {sender!r} is not a survivor")
            c.verify(self.crypto, self.cfg.identity_keys[sender])
            if c.items.get("u3") != want:
                raise ProtocolError(f"unmask_request: {sender!r} signed a different survivor set")
            valid.add(sender)
        if len(valid) < self.cfg.t:
            self.phase = "failed"
            raise ThresholdError(f"only {len(valid)} consistency signatures; threshold {self.cfg.t}")
        items: dict[str, bytes] = {}
        for u in sorted(set(self._shares_b)):
            if u in self._u3:
                items["b:" + u] = shamir.encode_share(self._shares_b[u])
            elif u != self.me:  # a neighbour that shared keys but sent no masked input: reveal its s-share
                items["s:" + u] = shamir.encode_share(self._shares_s[u])
        self.phase = "done"
        return [self._msg("unmask", items)]
