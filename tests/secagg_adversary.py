"""A hand-written malicious SecAgg+ server driving the real :class:`SecAggClient` state machines.

It plays the coordinator of one group and may: withhold chosen share ciphertexts from a client (so the client's
U2, the neighbours it masks with, is what the adversary chose), show different survivor sets to different
clients, sign anything on behalf of colluding members (it holds their identity seeds and their SecAgg+ state),
and then collect every share the honest clients release. :meth:`SplitViewAdversary.recover` then tries to
reconstruct the target's input exactly from what it learned – the attacks of docs/threat-model.md, routes 3a/3b.
"""

from __future__ import annotations

from typing import Any

from flcrypto import default_crypto
from privacy.backends import numpy_backend
from privacy.secagg import GroupConfig, SecAggClient, SecAggError, shamir
from privacy.secagg.client import SERVER_ID, encode_survivors
from privacy.secagg.config import expand_mask, pair_seed, self_commitment, self_seed
from privacy.secagg.messages import Message


class SplitViewAdversary:
    def __init__(self, cfg: GroupConfig, inputs: dict[str, Any], seeds: dict[str, bytes], colluders: set[str]
                 ) -> None:
        self.cfg, self.seeds, self.colluders = cfg, seeds, set(colluders)
        self.crypto = default_crypto()
        self.be = numpy_backend()
        self.clients = {u: SecAggClient(cfg, u, seeds[u], inputs[u], self.be) for u in cfg.members}
        self.adverts: dict[str, Message] = {}
        self.masked: dict[str, Any] = {}
        self.released_b: dict[str, list[tuple[int, int]]] = {u: [] for u in cfg.members}
        self.released_s: dict[str, list[tuple[int, int]]] = {u: [] for u in cfg.members}
        self.refused: dict[str, str] = {}

    def _server_msg(self, phase: str, to: str, items: dict[str, bytes]) -> bytes:
        return Message(phase, self.cfg.round, self.cfg.group, SERVER_ID, to, items).to_bytes()

    def _consistency(self, signer: str, view: tuple[str, ...]) -> bytes:
        return Message("consistency", self.cfg.round, self.cfg.group, signer, SERVER_ID,
                       {"u3": encode_survivors(view)}).sign(self.crypto, self.seeds[signer], self.cfg.binding).to_bytes()

    def run(self, views: dict[str, tuple[str, ...]], shares_from: dict[str, set[str]] | None = None) -> None:
        """Run the protocol; ``views[u]`` is the survivor set shown to honest client u; ``shares_from[u]``
        the senders whose share ciphertexts u receives (default: all)."""
        cfg = self.cfg
        for u, cl in self.clients.items():
            self.adverts[u] = Message.from_bytes(cl.start())
        shares: dict[str, Message] = {}
        for u, cl in self.clients.items():
            items = {v: self.adverts[v].to_bytes() for v in cfg.neighbours(u)}
            (out,) = cl.handle(self._server_msg("keys", u, items))
            shares[u] = Message.from_bytes(out)
        for u, cl in self.clients.items():
            allowed = (shares_from or {}).get(u, set(cfg.members))
            items = {v: shares[v].items[u] for v in cfg.members if u in shares[v].items and v in allowed}
            try:
                (out,) = cl.handle(self._server_msg("shares_in", u, items))
            except SecAggError as exc:
                self.refused[u] = str(exc)
                continue
            self.masked[u] = Message.from_bytes(out).items["y"]
        signed: dict[str, tuple[str, ...]] = {}
        for u in sorted(views):
            if u in self.colluders or u not in self.masked:
                continue
            try:
                self.clients[u].handle(self._server_msg("survivors", u, {"u3": encode_survivors(views[u])}))
                signed[u] = views[u]
            except SecAggError as exc:
                self.refused[u] = str(exc)
        for u in sorted(signed):
            view = signed[u]
            items = {v: self._consistency(v, view) for v in sorted(cfg.holders(u))
                     if v in view and (v in self.colluders or signed.get(v) == view)}
            try:
                (out,) = self.clients[u].handle(self._server_msg("unmask_request", u, items))
            except SecAggError as exc:
                self.refused[u] = str(exc)
                continue
            for key, value in Message.from_bytes(out).items.items():
                kind, _, owner = key.partition(":")
                (self.released_b if kind == "b" else self.released_s)[owner].append(shamir.decode_share(value))
        for c in self.colluders:  # colluders hand over every share they hold
            cl = self.clients[c]
            for owner, share in cl._shares_b.items():
                self.released_b[owner].append(share)
            for owner, share in cl._shares_s.items():
                if owner != c:
                    self.released_s[owner].append(share)
            self.released_s[c].append(cl._shares_s[c])

    def _secret(self, shares: list[tuple[int, int]], valid: Any) -> bytes | None:
        uniq = sorted(dict(shares).items())
        if len(uniq) < self.cfg.t:
            return None
        try:
            secret, _bad = shamir.reconstruct(uniq, self.cfg.t, valid)
        except ValueError:
            return None
        return secret

    def recover(self, target: str) -> Any | None:
        """The target's exact input if the released shares allow it, else ``None``."""
        from privacy.secagg.wire import decode_masked

        cfg, cr, be, m = self.cfg, self.crypto, self.be, self.cfg.modulus_bits
        if target not in self.masked:
            return None
        adv = {u: a.items for u, a in self.adverts.items()}
        b = self._secret(self.released_b[target],
                         lambda s: self_commitment(cr, s, cfg, target) == adv[target]["b_commit"])
        if b is None:
            return None
        _bits, y = decode_masked(self.masked[target], "numpy", cfg.round, cfg.group)
        x = be.isub_mod(be.add_mod(be.zeros_field(cfg.vector_length, m), y, m),
                        expand_mask(cr, self_seed(cr, b, cfg, target), cfg, be), m)
        s_target = self._secret(self.released_s[target], lambda s: cr.x25519_public_key(s) == adv[target]["s_pk"])
        for w in sorted(self.clients[target]._u2):
            if s_target is not None:
                point = cr.x25519(s_target, adv[w]["s_pk"])
            else:
                s_w = self._secret(self.released_s[w], lambda s, w=w: cr.x25519_public_key(s) == adv[w]["s_pk"])
                if s_w is None:
                    return None
                point = cr.x25519(s_w, adv[target]["s_pk"])
            mask = expand_mask(cr, pair_seed(cr, point, cfg, target, w), cfg, be)
            x = be.isub_mod(x, mask, m) if target < w else be.iadd_mod(x, mask, m)
        return x


def make_group(n: int, d: int = 64, modulus_bits: int = 32, degree: int | None = None, threshold: int | None = None,
               binding: bytes = b"") -> tuple[GroupConfig, dict[str, Any], dict[str, bytes]]:
    import numpy as np

    c = default_crypto()
    ids = [f"c{i:02d}" for i in range(n)]
    seeds = {u: c.blake2b(u.encode(), key=b"adversary-test-key-000000000000!") for u in ids}
    cfg = GroupConfig(3, 0, tuple(ids), {u: c.ed25519_public_key(s) for u, s in seeds.items()}, d, modulus_bits,
                      b"p" * 32, degree, threshold, binding)
    rng = np.random.default_rng(n)
    inputs = {u: rng.integers(0, 1 << modulus_bits, d, dtype=np.uint64).astype(np.uint32) for u in ids}
    return cfg, inputs, seeds
