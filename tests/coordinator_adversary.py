"""A hand-written malicious coordinator that speaks the real wire protocol to a real :class:`ClientSession`.

It holds its own signing key (the client pins it), the identity keys of any number of clients it controls
(Sybils/colluders), and builds every message itself, so a test can send an honest task or any forgery of one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mle
from coordinator.federation.config import FederationConfig
from flcore import assignment
from flcore.modelspec import mlp
from flcore.policy import required_threshold
from flcore.protocol import COORDINATOR_ID, Envelope
from flcore.session import ClientSession, Failed, SendFrame, Train
from flcore.wire import as_u8, client_id_for, decode, encode
from flcrypto import default_crypto
from privacy.secagg import partition

SPEC = mlp([4, 3])


@dataclass
class Controlled:
    """A client identity the coordinator controls (a Sybil or a colluder)."""

    seed: bytes
    secret: bytes

    @property
    def key(self) -> bytes:
        return default_crypto().ed25519_public_key(self.seed)

    @property
    def id(self) -> str:
        return client_id_for(self.key)


@dataclass
class MaliciousCoordinator:
    seed: bytes = b"\x42" * 32
    seq: int = 0
    session_id: str = "ab" * 32
    controlled: list[Controlled] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = default_crypto()
        self.key = c.ed25519_public_key(self.seed)
        self.controlled = [Controlled(c.blake2b(bytes([i]), key=b"s" * 32), c.blake2b(bytes([i]), key=b"r" * 32))
                           for i in range(12)]
        self.model = mle.dumps({n: __import__("numpy").zeros(s, "float32") for n, s in SPEC.parameter_shapes()},
                               {"kind": "model", "round": 0, "model": SPEC.to_dict()}, signing_key=self.seed)

    def frame(self, victim: ClientSession, msg_type: str, body: dict[str, Any], round_: int = -1,
              tensors: dict[str, Any] | None = None) -> bytes:
        env = Envelope(msg_type, COORDINATOR_ID, victim.client_id, self.session_id, self.seq, round_, body)
        self.seq += 1
        return encode(env, self.seed, tensors)

    def connect(self, victim: ClientSession) -> bytes:
        """Handshake; returns the commitment of the victim's ``ready``."""
        victim.start()
        (_auth,) = victim.receive(self.frame(victim, "challenge", {"challenge": self.session_id, "version": 1,
                                                                  "coordinator_key": self.key.hex()}))
        (ready,) = victim.receive(self.frame(victim, "welcome", {"client_id": victim.client_id, "round": 0}))
        env = self.read(ready.data, victim)
        assert env.type == "ready"
        return bytes.fromhex(env.body["commitment"])

    def read(self, data: bytes, victim: ClientSession) -> Envelope:
        env, _ = decode(data, lambda e: victim.public_key)
        return env

    def selection(self, victim: ClientSession, commitment: bytes, n_others: int, round_: int = 1,
                  attempt: str = "a1", group_size: int = 5) -> dict[str, Any]:
        others = self.controlled[:n_others]
        members = {victim.client_id: victim.public_key, **{o.id: o.key for o in others}}
        commits = {victim.client_id: commitment, **{o.id: assignment.commitment(o.secret, o.id) for o in others}}
        return {"round": round_, "attempt": attempt, "group_size": group_size, "members": members,
                "commitments": commits, "others": others}

    def select(self, victim: ClientSession, sel: dict[str, Any]) -> list[Any]:
        body = {"round": sel["round"], "attempt": sel["attempt"], "group_size": sel["group_size"],
                "members": {k: v.hex() for k, v in sel["members"].items()},
                "commitments": {k: v.hex() for k, v in sel["commitments"].items()}}
        return victim.receive(self.frame(victim, "select", body, sel["round"]))

    def honest_task(self, victim: ClientSession, sel: dict[str, Any], victim_reveal: bytes,
                    cfg: FederationConfig | None = None) -> dict[str, Any]:
        """The task an honest engine would send (the caller then forges fields of it)."""
        cfg = cfg or FederationConfig(SPEC, clients_per_round=len(sel["members"]), group_size=sel["group_size"],
                                      noise_multiplier=1.0, epsilon=10.0, delta=1e-6)
        reveals = {victim.client_id: victim_reveal, **{o.id: o.secret for o in sel["others"]}}
        sh = assignment.selection_hash(sel["round"], sel["attempt"], sel["group_size"], sel["members"],
                                       sel["commitments"])
        seed = assignment.round_seed(sh, reveals)
        groups = partition(sorted(sel["members"]), sel["group_size"], seed)
        g = next(i for i, grp in enumerate(groups) if victim.client_id in grp)
        n = len(groups[g])
        t = required_threshold(n, "two-thirds", 1)
        dp = cfg.dp_config(t)
        return {"group": g, "members": groups[g], "attempt": sel["attempt"],
                "reveals": {k: v.hex() for k, v in reveals.items()},
                "identity_keys": {m: sel["members"][m].hex() for m in groups[g]}, "public_seed": seed.hex(),
                "model_sha256": __import__("hashlib").sha256(mle.loads(self.model).body).hexdigest(),
                "degree": n - 1, "threshold": t,
                "dp": {"l2_clip": dp.l2_clip, "noise_multiplier": dp.noise_multiplier, "bits": dp.bits,
                       "modulus_bits": dp.modulus_bits, "min_contributors": dp.min_contributors,
                       "dimension": dp.dimension},
                "train": {"epochs": 1, "batch_size": 8, "lr": 0.1}}

    def task(self, victim: ClientSession, round_: int, config: dict[str, Any]) -> list[Any]:
        return victim.receive(self.frame(victim, "task", {"config": config}, round_,
                                         {"global_model": as_u8(self.model)}))


def outcome(actions: list[Any], victim: ClientSession) -> tuple[str, list[str]]:
    """("train" | failure code, the types of the frames the victim sent)."""
    kinds = []
    for a in actions:
        if isinstance(a, SendFrame):
            env, _ = decode(a.data, lambda e: victim.public_key)
            kinds.append(env.type)
    for a in actions:
        if isinstance(a, Train):
            return "train", kinds
        if isinstance(a, Failed):
            return a.code, kinds
    return "none", kinds
