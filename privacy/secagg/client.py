"""The SecAgg+ client state machine for one group (sans-I/O).

Phases (Bonawitz et al. CCS'17 §4, with the sparse neighbour graph of Bell et al. CCS'20):

0. :meth:`SecAggClient.start` → *advertise*: two fresh X25519 public keys (c: share encryption, s: mask
   agreement) and a commitment to the self-mask seed b, signed with the identity key.
1. on *keys* (the neighbours' signed advertisements, forwarded by the server): verify them; Shamir-share b and
   the s private key t-of-(k+1) among the neighbours that advertised and itself; encrypt each neighbour's two
   shares to it → *shares*.
2. on *shares_in* (ciphertexts from neighbours): decrypt and keep them; their senders are the neighbours still
   alive (U2). Send y = x + PRG(b) + Σ_{v ∈ U2 ∩ N(u)} ±PRG(s_uv) mod 2^m as a .mle field tensor → *masked*.
3. on *survivors* (U3, the clients whose masked input arrived): check it, sign it → *consistency*.
4. on *unmask_request* (the consistency messages of this client's share holders): require ≥ t valid signatures on
   the same U3, then reveal, for each peer u whose shares it holds: the b-share if u ∈ U3, the s-share if
   u ∉ U3 – never both → *unmask*. The client is then done.

Each method returns the messages (bytes) the caller must send to the server, then the caller waits for the
server's next message and feeds it to :meth:`SecAggClient.handle`. A bad or unexpected message raises
:class:`ProtocolError` / :class:`SecAggSignatureError` (the client's state is unchanged: the caller may drop the
message and keep waiting, or abandon the round); :class:`ThresholdError` means the round failed for this group
(the client is then in phase ``"failed"`` and reveals nothing more).
"""

from __future__ import annotations

import itertools
from typing import Any

from flcrypto import Crypto, CryptoError, DecryptionError, default_crypto
from privacy.secagg import shamir
from privacy.secagg.config import (
    GroupConfig,
    expand_mask,
    pair_seed,
    self_commitment,
    self_seed,
    share_ad,
    share_key,
)
from privacy.secagg.errors import ProtocolError, ThresholdError
from privacy.secagg.messages import Message
from privacy.secagg.wire import encode_masked

SERVER_ID = "server"
NONCE_BYTES = 24
ADVERTISE_ITEMS = frozenset({"b_commit", "c_pk", "s_pk"})
_PHASES = frozenset({"init", "advertised", "shared", "masked", "consistent", "done", "failed"})


def encode_survivors(u3: tuple[str, ...]) -> bytes:
    """Canonical encoding of a survivor set: sorted ids, each ``u16 length ‖ UTF-8`` (what clients sign)."""
    return b"".join(len(u.encode("utf-8")).to_bytes(2, "little") + u.encode("utf-8") for u in sorted(u3))


def decode_survivors(data: bytes) -> tuple[str, ...]:
    """Inverse of :func:`encode_survivors`; raises :class:`ProtocolError` on a malformed or unsorted list."""
    out: list[str] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise ProtocolError("survivor list truncated")
        n = int.from_bytes(data[pos: pos + 2], "little")
        if pos + 2 + n > len(data):
            raise ProtocolError("survivor list truncated")
        try:
            out.append(data[pos + 2: pos + 2 + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError("survivor id is not UTF-8") from None
        pos += 2 + n
    if any(a >= b for a, b in itertools.pairwise(out)):
        raise ProtocolError("survivor list must be sorted and without duplicates")
    return tuple(out)


class SecAggClient:
    """One client of one group. ``masked_input``: this client's input as d field elements mod 2^m (e.g. from
    :func:`privacy.fixedpoint.encode` or :func:`privacy.client_pipeline.prepare_update`); ``identity_seed``: its
    32-byte Ed25519 identity seed (the server knows the public key). Randomness: ``crypto.random_bytes``."""

    def __init__(self, cfg: GroupConfig, me: str, identity_seed: bytes, masked_input: Any, backend: Any,
                 crypto: Crypto | None = None) -> None:
        if me not in cfg.members:
            raise ValueError(f"{me!r} is not a member of group {cfg.group}")
        if len(masked_input) != cfg.vector_length:
            raise ValueError(f"input has {len(masked_input)} elements, the group expects {cfg.vector_length}")
        self.cfg, self.me, self.backend = cfg, me, backend
        self.crypto = crypto or default_crypto()
        if self.crypto.ed25519_public_key(identity_seed) != cfg.identity_keys[me]:
            raise ValueError(f"identity seed of {me!r} does not match its registered public key")
        self._id_seed = identity_seed
        self._x: Any = masked_input
        self.phase = "init"
        self._c_sk = self.crypto.random_bytes(32)
        self._s_sk = self.crypto.random_bytes(32)
        self._b = self.crypto.random_bytes(32)
        self._peer_c: dict[str, bytes] = {}
        self._peer_s: dict[str, bytes] = {}
        self._shares_b: dict[str, tuple[int, int]] = {}  # as a holder: shares of u's secrets, by owner u
        self._shares_s: dict[str, tuple[int, int]] = {}
        self._u2: set[str] = set()
        self._u3: tuple[str, ...] = ()

    # ── state across processes ───────────────────────────────────────────────────────────────────────
    def export_state(self) -> dict[str, Any]:
        """Everything this client must remember between two server messages, as JSON-safe values – for
        runtimes that rebuild the client for every message (Flower's ClientApp runs each message in a fresh
        call, keeping only the node's context). It holds this round's secrets: keep it where the identity key
        is kept. The group configuration and identity seed are not included (pass them to :meth:`restore`)."""
        def shares(d: dict[str, tuple[int, int]]) -> dict[str, str]:
            return {u: shamir.encode_share(s).hex() for u, s in d.items()}

        return {"phase": self.phase, "me": self.me,
                "x": None if self._x is None else bytes(self._x.tobytes()).hex(),
                "c_sk": self._c_sk.hex(), "s_sk": self._s_sk.hex(), "b": self._b.hex(),
                "peer_c": {u: k.hex() for u, k in self._peer_c.items()},
                "peer_s": {u: k.hex() for u, k in self._peer_s.items()},
                "shares_b": shares(self._shares_b), "shares_s": shares(self._shares_s),
                "u2": sorted(self._u2), "u3": list(self._u3)}

    @classmethod
    def restore(cls, cfg: GroupConfig, identity_seed: bytes, state: dict[str, Any], backend: Any,
                crypto: Crypto | None = None) -> SecAggClient:
        """The client :meth:`export_state` described, in the same phase (``ValueError`` on a malformed state)."""
        try:
            me = str(state["me"])
            x = None if state["x"] is None else backend.field_from_bytes(bytes.fromhex(state["x"]),
                                                                         cfg.vector_length, cfg.modulus_bits)
            client = cls(cfg, me, identity_seed, x if x is not None else [0] * cfg.vector_length, backend, crypto)
            client._x = x
            client.phase = str(state["phase"])
            client._c_sk, client._s_sk, client._b = (bytes.fromhex(state[k]) for k in ("c_sk", "s_sk", "b"))
            client._peer_c = {u: bytes.fromhex(k) for u, k in state["peer_c"].items()}
            client._peer_s = {u: bytes.fromhex(k) for u, k in state["peer_s"].items()}
            client._shares_b = {u: shamir.decode_share(bytes.fromhex(v)) for u, v in state["shares_b"].items()}
            client._shares_s = {u: shamir.decode_share(bytes.fromhex(v)) for u, v in state["shares_s"].items()}
            client._u2, client._u3 = set(state["u2"]), tuple(state["u3"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed secure-aggregation client state: {exc!r}") from None
        if client.phase not in _PHASES or any(len(k) != 32 for k in (client._c_sk, client._s_sk, client._b)):
            raise ValueError("malformed secure-aggregation client state: phase or key sizes")
        return client

    # ── helpers ──────────────────────────────────────────────────────────────────────────────────────
    def _msg(self, phase: str, items: dict[str, bytes]) -> bytes:
        m = Message(phase, self.cfg.round, self.cfg.group, self.me, SERVER_ID, items)
        return m.sign(self.crypto, self._id_seed, self.cfg.binding).to_bytes()

    def _parse_server(self, data: bytes, phase: str) -> Message:
        msg = Message.from_bytes(data)
        if (msg.round, msg.group, msg.sender, msg.recipient) != (self.cfg.round, self.cfg.group, SERVER_ID, self.me):
            raise ProtocolError(f"expected a server message for round {self.cfg.round} group {self.cfg.group} to "
                                f"{self.me!r}, got round {msg.round} group {msg.group} from {msg.sender!r} to "
                                f"{msg.recipient!r}")
        if msg.phase == "failed":
            self.phase = "failed"
            raise ThresholdError(f"group {self.cfg.group}: server reports failure: "
                                 f"{msg.items.get('reason', b'').decode(errors='replace')}")
        if msg.phase != phase:
            raise ProtocolError(f"expected {phase}, got {msg.phase}")
        return msg

    def _expect(self, phase: str) -> None:
        if self.phase != phase:
            raise ProtocolError(f"client {self.me!r} is in phase {self.phase!r}, not {phase!r}")

    def _fail(self, reason: str) -> ThresholdError:
        self.phase = "failed"
        self._x = None
        return ThresholdError(f"group {self.cfg.group}, client {self.me!r}: {reason}")

    # ── phases ───────────────────────────────────────────────────────────────────────────────────────
    def start(self) -> bytes:
        """The *advertise* message. Send it to the server, then feed the server's *keys* message to :meth:`handle`."""
        self._expect("init")
        self.phase = "advertised"
        return self._msg("advertise", {"c_pk": self.crypto.x25519_public_key(self._c_sk),
                                       "s_pk": self.crypto.x25519_public_key(self._s_sk),
                                       "b_commit": self_commitment(self.crypto, self._b, self.cfg, self.me)})

    def handle(self, data: bytes) -> list[bytes]:
        """Feed one server message; returns the messages to send to the server (empty once done or failed)."""
        phase = Message.from_bytes(data).phase
        handler = {"keys": self._on_keys, "shares_in": self._on_shares, "survivors": self._on_survivors,
                   "unmask_request": self._on_unmask, "failed": self._on_failed}.get(phase)
        if handler is None:
            raise ProtocolError(f"unexpected server message {phase!r}")
        return handler(data)

    def _on_failed(self, data: bytes) -> list[bytes]:
        self._parse_server(data, "failed")  # raises ThresholdError with the server's reason
        return []

    def _on_keys(self, data: bytes) -> list[bytes]:
        self._expect("advertised")
        msg = self._parse_server(data, "keys")
        neighbours = self.cfg.neighbours(self.me)
        peer_c: dict[str, bytes] = {}
        peer_s: dict[str, bytes] = {}
        for sender, raw in msg.items.items():
            adv = Message.from_bytes(raw)
            if sender not in neighbours or adv.sender != sender:
                raise ProtocolError(f"keys: {sender!r} is not a neighbour of {self.me!r}")
            if (adv.phase, adv.round, adv.group, adv.recipient) != ("advertise", self.cfg.round, self.cfg.group,
                                                                    SERVER_ID):
                raise ProtocolError(f"keys: advertisement of {sender!r} is for another phase/round/group")
            adv.verify(self.crypto, self.cfg.identity_keys[sender], self.cfg.binding)
            if set(adv.items) != ADVERTISE_ITEMS or any(len(v) != 32 for v in adv.items.values()):
                raise ProtocolError(f"keys: malformed advertisement from {sender!r}")
            peer_c[sender], peer_s[sender] = adv.items["c_pk"], adv.items["s_pk"]
        alive = sorted(peer_c)
        if len(alive) + 1 < self.cfg.t:
            raise self._fail(f"only {len(alive)} neighbours advertised keys; threshold {self.cfg.t} needs "
                             f"{self.cfg.t - 1}")
        holders = [*alive, self.me]
        xs = {h: self.cfg.share_x(h) for h in holders}
        b_shares = dict(shamir.split_at(self._b, [xs[h] for h in holders], self.cfg.t, self.crypto.random_bytes))
        s_shares = dict(shamir.split_at(self._s_sk, [xs[h] for h in holders], self.cfg.t, self.crypto.random_bytes))
        items: dict[str, bytes] = {}
        for v in alive:
            x = xs[v]
            plain = shamir.encode_share((x, b_shares[x])) + shamir.encode_share((x, s_shares[x]))
            try:
                point = self.crypto.x25519(self._c_sk, peer_c[v])
            except CryptoError:
                raise ProtocolError(f"keys: encryption key of {v!r} is invalid") from None
            key = share_key(self.crypto, point, self.cfg, self.me, v)
            nonce = self.crypto.random_bytes(NONCE_BYTES)
            items[v] = nonce + self.crypto.aead_encrypt(key, nonce, plain, share_ad(self.cfg, self.me, v))
        self._peer_c, self._peer_s = peer_c, peer_s
        self._shares_b[self.me] = (xs[self.me], b_shares[xs[self.me]])
        self._shares_s[self.me] = (xs[self.me], s_shares[xs[self.me]])
        self.phase = "shared"
        return [self._msg("shares", items)]

    def _on_shares(self, data: bytes) -> list[bytes]:
        self._expect("shared")
        msg = self._parse_server(data, "shares_in")
        share_len = 2 + shamir.ELEMENT_BYTES
        got_b: dict[str, tuple[int, int]] = {}
        got_s: dict[str, tuple[int, int]] = {}
        for sender, blob in msg.items.items():
            if sender not in self._peer_c:
                raise ProtocolError(f"shares_in: shares from {sender!r}, who advertised no keys to us")
            key = share_key(self.crypto, self.crypto.x25519(self._c_sk, self._peer_c[sender]), self.cfg,
                            sender, self.me)
            if len(blob) < NONCE_BYTES:
                raise ProtocolError(f"shares_in: ciphertext from {sender!r} is truncated")
            try:
                plain = self.crypto.aead_decrypt(key, blob[:NONCE_BYTES], blob[NONCE_BYTES:],
                                                 share_ad(self.cfg, sender, self.me))
            except DecryptionError:
                raise ProtocolError(f"shares_in: ciphertext from {sender!r} does not authenticate") from None
            if len(plain) != 2 * share_len:
                raise ProtocolError(f"shares_in: malformed shares from {sender!r}")
            try:
                sb, ss = shamir.decode_share(plain[:share_len]), shamir.decode_share(plain[share_len:])
            except ValueError as exc:
                raise ProtocolError(f"shares_in: {exc}") from None
            if sb[0] != self.cfg.share_x(self.me) or ss[0] != self.cfg.share_x(self.me):
                raise ProtocolError(f"shares_in: share from {sender!r} has the wrong x-coordinate")
            got_b[sender], got_s[sender] = sb, ss
        if len(got_b) + 1 < self.cfg.t:
            raise self._fail(f"only {len(got_b)} neighbours sent shares; threshold {self.cfg.t}")
        pair_points: dict[str, bytes] = {}
        for v in got_b:
            try:
                pair_points[v] = self.crypto.x25519(self._s_sk, self._peer_s[v])
            except CryptoError:
                raise ProtocolError(f"shares_in: mask key of {v!r} is invalid") from None
        self._shares_b.update(got_b)
        self._shares_s.update(got_s)
        self._u2 = set(got_b)
        be, m, cfg = self.backend, self.cfg.modulus_bits, self.cfg
        y = be.add_mod(self._x, expand_mask(self.crypto, self_seed(self.crypto, self._b, cfg, self.me), cfg, be), m)
        for v in sorted(self._u2):
            mask = expand_mask(self.crypto, pair_seed(self.crypto, pair_points[v], cfg, self.me, v), cfg, be)
            y = be.iadd_mod(y, mask, m) if self.me < v else be.isub_mod(y, mask, m)
        blob = encode_masked(y, m, cfg.round, cfg.group)  # a .mle field-element tensor
        self._x = None  # the plaintext input is no longer needed
        self.phase = "masked"
        return [self._msg("masked", {"y": blob})]

    def _on_survivors(self, data: bytes) -> list[bytes]:
        self._expect("masked")
        msg = self._parse_server(data, "survivors")
        if set(msg.items) != {"u3"}:
            raise ProtocolError("survivors: needs exactly one item 'u3'")
        u3 = decode_survivors(msg.items["u3"])
        if self.me not in u3 or any(u not in self.cfg.members for u in u3):
            raise ProtocolError(f"survivors: invalid survivor set {u3}")
        if len(u3) < self.cfg.t:
            raise self._fail(f"only {len(u3)} inputs survived; threshold {self.cfg.t}: refusing to unmask")
        if any(u not in self._u2 for u in u3 if u in self.cfg.neighbours(self.me)):
            raise ProtocolError("survivors: a neighbour is listed as survivor but never sent us shares")
        self._u3 = u3
        self.phase = "consistent"
        return [self._msg("consistency", {"u3": encode_survivors(u3)})]

    def _on_unmask(self, data: bytes) -> list[bytes]:
        self._expect("consistent")
        msg = self._parse_server(data, "unmask_request")
        want = encode_survivors(self._u3)
        holders = self.cfg.holders(self.me)
        valid = set()
        for sender, raw in msg.items.items():
            c = Message.from_bytes(raw)
            if (c.phase, c.round, c.group, c.sender, c.recipient) != ("consistency", self.cfg.round, self.cfg.group,
                                                                      sender, SERVER_ID):
                raise ProtocolError(f"unmask_request: bad consistency message from {sender!r}")
            if sender not in holders or sender not in self._u3:
                raise ProtocolError(f"unmask_request: {sender!r} is not a surviving holder of our shares")
            c.verify(self.crypto, self.cfg.identity_keys[sender], self.cfg.binding)
            if c.items != {"u3": want}:
                raise ProtocolError(f"unmask_request: {sender!r} signed a different survivor set")
            valid.add(sender)
        if len(valid) < self.cfg.t:
            raise self._fail(f"only {len(valid)} consistency signatures from our holders; threshold {self.cfg.t}")
        items: dict[str, bytes] = {}
        for u in sorted(self._shares_b):
            if u in self._u3:
                items["b:" + u] = shamir.encode_share(self._shares_b[u])
            elif u != self.me:  # a neighbour that sent us shares but no masked input: reveal its s-share only
                items["s:" + u] = shamir.encode_share(self._shares_s[u])
        self.phase = "done"
        return [self._msg("unmask", items)]
