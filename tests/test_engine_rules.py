"""Coordinator engine rules, driven in-process (no sockets, no torch): min_clients_per_round, bans, the metrics
message, status(), DP accounting over the selection pool, reconnects. Clients are real ClientSessions (real
crypto, real SecAgg+ in groups of 1) whose "training" returns a fixed small vector."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

import mle
import mle.writer
from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.federation.events import (
    Close,
    Connected,
    DataReceived,
    Disconnected,
    Log,
    Send,
    SetTimer,
    TimerFired,
)
from flcore.modelspec import mlp
from flcore.policy import PrivacyPolicy
from flcore.protocol import COORDINATOR_ID, Envelope
from flcore.session import ClientSession, Failed, SendFrame, Stopped, Train
from flcore.wire import client_id_for, decode, encode
from flcrypto import default_crypto
from privacy.dp import RoundEvent
from privacy.dp.accounting import epsilon_for

SPEC = mlp([4, 3])  # d = 15


def cfg(**kw: Any) -> FederationConfig:
    base: dict[str, Any] = dict(model=SPEC, rounds=3, clients_per_round=2, group_size=1, aggregator="mean",
                                local_epochs=1, l2_clip=1.0, quantization_bits=16, modulus_bits=32)
    base.update(kw)
    return FederationConfig(**base)


def frame_type(data: bytes) -> str:
    return str(mle.loads(data).metadata["fl"]["type"])


class Fed:
    """A federation in one process: the engine plus client sessions keyed by connection id."""

    def __init__(self, config: FederationConfig, evaluator: Any = None, policy: PrivacyPolicy | None = None) -> None:
        self.crypto = default_crypto()
        # these tests are about engine rules (groups of 1 etc.): the clients accept any well-formed task
        self.policy = policy or PrivacyPolicy.permissive()
        self.engine = Engine(config, b"\x11" * 32, seed=1, evaluator=evaluator)
        self.sessions: dict[str, ClientSession] = {}
        self.outbox: list[tuple[str, bytes]] = []
        self.actions: list[Any] = []
        self.got: dict[str, list[Any]] = defaultdict(list)  # conn → session actions and received frame types
        self.hold: set[tuple[str, str]] = set()  # (conn, message type) the client does not send (yet)
        self.held: list[tuple[str, bytes]] = []
        self.train_hold: set[str] = set()  # conns that keep their Train action instead of answering
        self.pending_train: dict[str, Train] = {}
        self.closed: set[str] = set()
        self.now = 0.0
        self.timer: float | None = None

    # ── clients ──────────────────────────────────────────────────────────────────────────────────────
    def connect(self, conn: str, seed: bytes | None = None) -> ClientSession:
        s = ClientSession(seed or self.crypto.random_bytes(32), self.engine.public_key, policy=self.policy)
        self.sessions[conn] = s
        self.feed(Connected(conn, "inprocess", self.now))
        for a in s.start():
            self._client_action(conn, a)
        return s

    def cid(self, conn: str) -> str:
        return self.sessions[conn].client_id

    def _client_action(self, conn: str, a: Any) -> None:
        if isinstance(a, SendFrame):
            if (conn, frame_type(a.data)) in self.hold:
                self.held.append((conn, a.data))
            else:
                self.outbox.append((conn, a.data))
        elif isinstance(a, Train):
            if conn in self.train_hold:
                self.pending_train[conn] = a
            else:
                self.train(conn, a)
        else:
            self.got[conn].append(a)

    def train(self, conn: str, task: Train | None = None) -> None:
        task = task or self.pending_train.pop(conn)
        rng = np.random.default_rng(sum(conn.encode()) + 1000 * task.round)
        delta = 0.2 + 0.02 * rng.normal(size=task.spec.num_parameters())
        for a in self.sessions[conn].training_done(delta.astype(np.float32), loss=0.5, num_samples=10):
            self._client_action(conn, a)

    def release(self, conn: str, msg_type: str) -> None:
        self.hold.discard((conn, msg_type))
        for item in [h for h in self.held if h[0] == conn and frame_type(h[1]) == msg_type]:
            self.held.remove(item)
            self.outbox.append(item)

    # ── engine ───────────────────────────────────────────────────────────────────────────────────────
    def feed(self, event: Any) -> list[Any]:
        acts = self.engine.handle(event)
        self.actions.extend(acts)
        for a in acts:
            if isinstance(a, Send):
                if a.conn in self.closed:
                    continue
                self.got[a.conn].append(("frame", frame_type(a.data)))
                for ca in self.sessions[a.conn].receive(a.data):
                    self._client_action(a.conn, ca)
            elif isinstance(a, SetTimer):
                self.timer = a.at
            elif isinstance(a, Close) and a.conn not in self.closed:
                self.closed.add(a.conn)
                self.feed(Disconnected(a.conn, self.now))  # what the driver does once the transport closed
        return acts

    def send(self, conn: str, data: bytes) -> list[Any]:
        return self.feed(DataReceived(conn, data, self.now))

    def pump(self) -> None:
        while self.outbox:
            conn, data = self.outbox.pop(0)
            if conn not in self.closed:
                self.send(conn, data)

    def fire_timer(self) -> None:
        self.now = max(self.now + 1.0, self.timer or 0.0)
        self.feed(TimerFired("phase", self.now))

    def run_round(self, r: int, max_steps: int = 50) -> None:
        for _ in range(max_steps):
            self.pump()
            if self.engine.round_number >= r:
                return
            self.fire_timer()
        raise AssertionError(f"round {r} did not complete (at {self.engine.round_number})")

    def errors(self, conn: str) -> list[str]:
        return [a.code for a in self.got[conn] if isinstance(a, Failed)]

    def frames(self, conn: str) -> list[str]:
        return [x[1] for x in self.got[conn] if isinstance(x, tuple) and x[0] == "frame"]

    def tasked(self) -> list[str]:
        return sorted(c for c in self.sessions if "task" in self.frames(c))


def error_code(acts: list[Any], key: bytes) -> str | None:
    for a in acts:
        if isinstance(a, Send):
            env, _ = decode(a.data, lambda e: key)
            if env.type == "error":
                return str(env.body["code"])
    return None


# ── min_clients_per_round ─────────────────────────────────────────────────────────────────────────────────
def test_min_clients_starts_a_smaller_round_only_when_every_connected_client_is_ready() -> None:
    fed = Fed(cfg(clients_per_round=4, min_clients_per_round=2))
    for c in ("a", "b", "c"):
        fed.hold.add((c, "ready"))
        fed.train_hold.add(c)
        fed.connect(c)
    fed.pump()
    assert fed.engine.status()["connected"] == 3 and fed.engine.status()["ready"] == 0
    fed.release("a", "ready")
    fed.pump()
    assert fed.engine.round is None  # 1 ready < min 2
    fed.release("b", "ready")
    fed.pump()
    assert fed.engine.round is None  # 2 ready ≥ min, but c is authenticated and could still become ready
    # a client still in the handshake (hello sent, auth not) does not hold the round back
    fed.hold.add(("d", "auth"))
    fed.connect("d")
    fed.pump()
    fed.release("c", "ready")
    fed.pump()
    assert fed.engine.round is not None and fed.engine.round.number == 1
    assert fed.tasked() == ["a", "b", "c"]  # m = the 3 ready clients (< clients_per_round = 4)
    for c in ("a", "b", "c"):
        fed.train(c)
    fed.run_round(1)
    assert fed.engine.history[-1]["survivors"] == 3


def test_without_min_clients_a_round_needs_clients_per_round() -> None:
    fed = Fed(cfg(clients_per_round=3))
    fed.train_hold.update({"a", "b", "c"})
    fed.connect("a")
    fed.connect("b")
    fed.pump()
    assert fed.engine.status()["ready"] == 2 and fed.engine.round is None  # min_clients 0 means m = 3
    fed.connect("c")
    fed.pump()
    assert fed.engine.round is not None and fed.tasked() == ["a", "b", "c"]


def test_full_rounds_still_select_clients_per_round() -> None:
    fed = Fed(cfg(clients_per_round=2, min_clients_per_round=1))
    for c in ("a", "b", "c", "d"):
        fed.train_hold.add(c)
        fed.connect(c)
    fed.pump()
    assert len(fed.pending_train) == 2  # as soon as m are ready, exactly m are selected


def test_banned_authenticated_client_does_not_hold_back_a_min_clients_round() -> None:
    fed = Fed(cfg(clients_per_round=4, min_clients_per_round=2))
    fed.hold.add(("c", "ready"))
    fed.train_hold.update({"a", "b", "c", "e"})
    for c in ("a", "b", "c"):
        fed.connect(c)
    fed.pump()
    assert fed.engine.round is None
    fed.engine.trust.ensure(fed.cid("c")).banned = True
    fed.connect("e")  # any later event re-evaluates: e's ready starts the round without c
    fed.pump()
    assert fed.tasked() == ["a", "b", "e"]


def test_min_clients_round_starts_when_the_last_pending_client_leaves() -> None:
    fed = Fed(cfg(clients_per_round=4, min_clients_per_round=2))
    fed.hold.add(("c", "ready"))
    fed.train_hold.update({"a", "b", "c"})
    for c in ("a", "b", "c"):
        fed.connect(c)
    fed.pump()
    assert fed.engine.round is None
    fed.closed.add("c")
    fed.feed(Disconnected("c", fed.now))
    fed.pump()
    assert fed.engine.round is not None


# ── bans ──────────────────────────────────────────────────────────────────────────────────────────────
def test_banned_client_gets_banned_error_at_auth() -> None:
    fed = Fed(cfg())
    seed = b"\x42" * 32
    cid = client_id_for(default_crypto().ed25519_public_key(seed))
    fed.engine.trust.ensure(cid).banned = True
    fed.connect("x", seed)
    fed.pump()
    assert fed.errors("x") == ["banned"]
    assert fed.frames("x") == ["challenge", "error"]  # no welcome
    assert fed.engine.conns["x"].state == "auth" and cid not in fed.engine.by_client
    assert fed.engine.status()["connected"] == 0


def test_client_banned_after_auth_gets_stop_on_ready_and_is_closed() -> None:
    fed = Fed(cfg())
    fed.hold.add(("x", "ready"))
    fed.connect("x")
    fed.pump()
    assert fed.frames("x") == ["challenge", "welcome"]
    fed.engine.trust.ensure(fed.cid("x")).banned = True
    fed.release("x", "ready")
    fed.pump()
    assert fed.frames("x")[-1] == "stop"
    stopped = [a for a in fed.got["x"] if isinstance(a, Stopped)]
    assert stopped and stopped[0].reason.startswith("banned")
    assert any(isinstance(a, Close) and a.conn == "x" and a.reason == "banned" for a in fed.actions)
    assert "x" not in fed.engine.conns


def test_participants_banned_by_the_round_get_round_end_then_stop() -> None:
    """With λ = 0 and a ban threshold of 0.9 after one observation, any evidence bans (trust ≤ 3/4): every
    participant gets round_end, then stop, and is no longer selectable; the others are unaffected."""
    fed = Fed(cfg(clients_per_round=2, min_clients_per_round=1, trust_decay=0.0, ban_threshold=0.9,
                  trust_min_evidence=1))
    fed.train_hold.update({"a", "b", "c"})
    for c in ("a", "b", "c"):
        fed.connect(c)
    fed.pump()
    selected = sorted(fed.pending_train)
    for c in selected:
        fed.train(c)
    fed.run_round(1)
    for c in selected:
        frames = fed.frames(c)
        i = frames.index("round_end")
        assert frames[i + 1] == "stop", frames  # (a second stop answers the ready the client sent meanwhile)
        assert any(isinstance(a, Close) and a.conn == c and a.reason == "banned" for a in fed.actions)
        assert fed.engine.trust.ensure(fed.cid(c)).banned
        assert any(isinstance(a, Stopped) and a.reason.startswith("banned") for a in fed.got[c])
    (other,) = {"a", "b", "c"} - set(selected)
    assert "stop" not in fed.frames(other)
    # round 2 starts at once with the one non-banned client (min_clients_per_round = 1; banned ones don't count)
    assert fed.engine.round is not None and set(fed.engine.round.group_of) == {fed.cid(other)}


# ── metrics ───────────────────────────────────────────────────────────────────────────────────────────
def _round_in_progress(n: int = 3, m: int = 2) -> Fed:
    fed = Fed(cfg(clients_per_round=m))
    names = [f"c{i}" for i in range(n)]
    for c in names:
        fed.train_hold.add(c)
        fed.connect(c)
    fed.pump()
    assert fed.engine.round is not None and len(fed.pending_train) == m
    return fed


def test_metrics_are_not_a_message_any_more() -> None:
    """Loss and exact sample counts in the clear bypassed DP (docs/threat-model.md, route 6): the client core no
    longer sends them and the coordinator refuses a forged one like any unknown message."""
    fed = _round_in_progress()
    r = fed.engine.round.number
    conn = sorted(fed.pending_train)[0]
    env = Envelope("metrics", fed.cid(conn), COORDINATOR_ID, fed.sessions[conn].session, fed.sessions[conn].seq, r,
                   {"round": r, "loss": 0.5, "num_samples": 10})
    assert error_code(fed.send(conn, encode(env, fed.sessions[conn].identity_seed)), fed.engine.public_key) \
        == "unknown_type"
    for c in list(fed.pending_train):
        fed.train(c)  # training_done(loss=…, num_samples=…) keeps both on the client
    fed.run_round(r)
    assert "train_loss" not in fed.engine.history[-1]


# ── status ────────────────────────────────────────────────────────────────────────────────────────────
def test_status_is_strict_json_and_reports_epsilon_trust_and_counts() -> None:
    fed = Fed(cfg(clients_per_round=2, noise_multiplier=0.5, epsilon=50.0),
              evaluator=lambda p: {"loss": 1.0, "accuracy": 0.5})
    fed.train_hold.update({"a", "b", "c"})
    for c in ("a", "b", "c"):
        fed.connect(c)
    fed.hold.add(("d", "ready"))
    fed.connect("d")
    fed.hold.add(("e", "auth"))
    fed.connect("e")  # mid-handshake: not counted as connected
    fed.pump()
    s0 = json.loads(json.dumps(fed.engine.status(), allow_nan=False))
    assert s0["round_in_progress"] == {"round": 1, "stage": "secagg", "groups": 2, "failed_groups": 0,
                                       "phases": s0["round_in_progress"]["phases"]}
    assert s0["connected"] == 4 and s0["ready"] == 1  # a, b, c ready → 2 busy; d authenticated; e in handshake
    busy = {c["state"] for c in s0["clients"]}
    assert busy == {"busy", "ready", "authenticated"}
    for c in list(fed.pending_train):
        fed.train(c)
    fed.run_round(1)
    st = fed.engine.status()
    text = json.dumps(st, allow_nan=False)  # no NaN/inf anywhere
    st = json.loads(text)
    assert st["round"] == 1 and st["rounds"] == 3 and st["finished"] is False
    assert st["privacy"]["epsilon"] == pytest.approx(fed.engine.epsilon()) and st["privacy"]["epsilon"] > 0
    assert st["privacy"]["epsilon_budget"] == 50.0 and st["privacy"]["noise_multiplier"] == 0.5
    assert st["connected"] == 4 and st["ready"] == sum(c["state"] == "ready" for c in st["clients"])
    ids = {fed.cid(c): c for c in ("a", "b", "c", "d")}
    assert {c["id"] for c in st["clients"]} == set(ids)
    for c in st["clients"]:
        assert 0 < c["trust"] < 1 and c["connected"] is True and c["kind"] == "inprocess" and c["banned"] is False
        assert c["state"] in ("authenticated", "ready", "busy")
    observed = {c["id"] for c in st["clients"] if c["observations"] == 1}
    assert len(observed) == 2  # the two selected clients got evidence
    assert st["metrics"]["round"] == 1 and st["metrics"]["accuracy"] == 0.5 and st["metrics"]["epsilon"] > 0
    assert st["coordinator_key"] == fed.engine.public_key.hex()
    # a client that left is reported offline
    fed.closed.add("a")
    fed.feed(Disconnected("a", fed.now))
    st = json.loads(json.dumps(fed.engine.status(), allow_nan=False))
    a = next(c for c in st["clients"] if c["id"] == fed.cid("a"))
    assert a["connected"] is False and a["state"] == "offline" and a["kind"] is None and st["connected"] == 3


def test_status_stays_json_when_the_evaluator_reports_nan() -> None:
    fed = Fed(cfg(clients_per_round=2), evaluator=lambda p: {"loss": math.nan, "accuracy": 0.1})
    fed.connect("a")
    fed.connect("b")
    fed.run_round(1)
    status = json.loads(json.dumps(fed.engine.status(), allow_nan=False))
    assert status["metrics"]["loss"] is None and status["metrics"]["accuracy"] == 0.1  # non-finite → null


# ── DP accounting over the selection pool ────────────────────────────────────────────────────────────────
def mark_ready(fed: Fed, c: str) -> None:
    """White-box: what the engine records from c's held ``ready`` (its state and seed commitment)."""
    data = next(d for conn, d in fed.held if conn == c and frame_type(d) == "ready")
    conn = fed.engine.conns[c]
    conn.state, conn.commitment = "ready", bytes.fromhex(mle.loads(data).metadata["fl"]["body"]["commitment"])
    fed.engine._said_ready[c] = None  # the engine's index of connections that said ready
    fed.held = [h for h in fed.held if h != (c, data)]


def all_ready_at_once(fed: Fed, names: list[str]) -> None:
    """Authenticate every client with its ready held back, then make them all ready in one step (white-box:
    the engine starts a round as soon as m are ready, so releasing readies one by one never gives a larger pool)."""
    for c in names:
        fed.hold.add((c, "ready"))
        fed.train_hold.add(c)
        fed.connect(c)
    fed.pump()
    for c in names[:-1]:
        mark_ready(fed, c)
    fed.release(names[-1], "ready")
    fed.pump()


def test_dp_accounting_uses_q_of_the_selection_pool() -> None:
    fed = Fed(cfg(clients_per_round=2, noise_multiplier=0.7, epsilon=100.0))
    # offline registered clients are not part of the pool (a smaller pool means a larger q)
    for i in range(6):
        pk = default_crypto().ed25519_public_key(bytes([i + 1]) * 32)
        fed.engine.registry[client_id_for(pk)] = pk
    names = ["a", "b", "c", "d", "e"]
    for n in names:
        fed.hold.add((n, "ready"))
        fed.connect(n)
    fed.pump()
    for i, c in enumerate(names):  # unequal trust
        t = fed.engine.trust.ensure(fed.cid(c))
        t.alpha, t.beta = 2.0 + i, 1.0 + 2 * (4 - i)
    cids = sorted(fed.cid(c) for c in names)
    expected_q = fed.engine.trust.max_inclusion_probability(cids, 2)
    everyone = fed.engine.trust.max_inclusion_probability(sorted(set(cids) | set(fed.engine.registry)), 2)
    fed.hold.clear()
    fed.train_hold.update(names)
    for c in names[:-1]:
        mark_ready(fed, c)
    fed.release(names[-1], "ready")
    fed.pump()
    assert fed.engine.round is not None and fed.engine.round.q == pytest.approx(expected_q)
    for c in list(fed.pending_train):
        fed.train(c)
    fed.run_round(1)
    events = fed.engine.amplified.events  # the third-party (amplified) figure's ledger
    z = fed.engine.cfg.dp_config().effective_noise_multiplier()
    assert events == [RoundEvent(z, expected_q)]
    assert 0 < expected_q < 1
    assert everyone < expected_q  # had the pool been everyone ever registered, q would have been (wrongly) smaller
    amplified = epsilon_for([RoundEvent(z, expected_q)], 1e-5)
    assert fed.engine.epsilon_third_party() == pytest.approx(min(amplified, fed.engine.epsilon()))
    # against the coordinator (which knows who it selected): one full Gaussian event per participation
    assert fed.engine.epsilon() == pytest.approx(epsilon_for([RoundEvent(z, 1.0)], 1e-5))
    assert fed.engine.history[-1]["epsilon"] == pytest.approx(fed.engine.epsilon())


def test_dp_accounting_smaller_pool_gives_larger_q() -> None:
    qs = []
    for n in (2, 3, 6):
        fed = Fed(cfg(clients_per_round=2, noise_multiplier=0.7, epsilon=100.0))
        all_ready_at_once(fed, [f"c{i}" for i in range(n)])
        assert fed.engine.round is not None
        for c in list(fed.pending_train):
            fed.train(c)
        fed.run_round(1)
        qs.append(fed.engine.amplified.events[0].sampling_rate)
    assert qs[0] == 1.0 and qs[0] > qs[1] > qs[2]
    assert qs[2] == pytest.approx(2 / (6 - 2 + 1))  # equal trust: m / (n − m + 1)


def test_budget_refuses_a_round_that_would_exceed_epsilon() -> None:
    fed = Fed(cfg(clients_per_round=2, noise_multiplier=0.5, epsilon=1e-3))
    fed.connect("a")
    fed.connect("b")
    fed.pump()
    assert fed.engine.finished and fed.engine.round is None
    assert fed.engine.stopped_reason.startswith("privacy budget exhausted")
    assert fed.frames("a")[-1] == "stop" and fed.engine.amplified.events == []


# ── reconnects ────────────────────────────────────────────────────────────────────────────────────────
def test_reconnect_replaces_the_old_connection() -> None:
    fed = Fed(cfg(clients_per_round=3))
    seed = b"\x05" * 32
    fed.connect("old", seed)
    fed.connect("b")
    fed.pump()
    cid = fed.cid("old")
    assert fed.engine.by_client[cid] == "old"
    fed.connect("new", seed)  # same identity, new connection (the old one is half-dead)
    fed.pump()
    assert any(isinstance(a, Close) and a.conn == "old" and "replaced" in a.reason for a in fed.actions)
    assert fed.engine.by_client[cid] == "new" and "old" not in fed.engine.conns
    st = fed.engine.status()
    assert st["connected"] == 2 and st["ready"] == 2
    assert sum(1 for c in st["clients"] if c["id"] == cid) == 1
    # frames still arriving on the replaced connection are ignored
    assert fed.send("old", fed.sessions["old"]._send("ready", {}).data) == []
    fed.connect("c")
    fed.run_round(1)
    assert "task" in fed.frames("new") and "task" not in fed.frames("old")
    assert not any(isinstance(a, Send) and a.conn == "old" for a in fed.actions[-50:])


def test_reconnect_during_a_round_rejoins_the_next_one() -> None:
    fed = Fed(cfg(clients_per_round=2, rounds=3))
    seed = b"\x06" * 32
    fed.train_hold.update({"a", "b"})
    fed.connect("a", seed)
    fed.connect("b")
    fed.pump()
    assert sorted(fed.pending_train) == ["a", "b"]
    del fed.pending_train["a"]  # a's connection dies mid-training
    fed.connect("a2", seed)
    fed.pump()
    fed.train("b")
    fed.run_round(1)  # a's group has no input: it fails at the deadline, b's group carries the round
    assert fed.engine.history[-1]["groups_ok"] == 1
    assert "round_end" in fed.frames("a2")
    fed.pump()
    assert fed.engine.round is not None and fed.engine.round.number == 2
    assert fed.engine.round.group_of.keys() == {fed.cid("a2"), fed.cid("b")}
    for c in list(fed.pending_train):
        fed.train(c)
    fed.run_round(2)  # a2 answered round_end with ready and takes part again
    assert fed.engine.history[-1]["survivors"] == 2 and fed.engine.round_number == 2


def test_identity_mismatch_and_misrouted() -> None:
    fed = Fed(cfg())
    c = default_crypto()
    fed.connect("a")
    fed.pump()
    cid = fed.cid("a")
    # a hello claiming a's id with another key
    seed = c.random_bytes(32)
    other_pk = c.ed25519_public_key(seed)
    hello = Envelope("hello", client_id_for(other_pk), COORDINATOR_ID, "", 0, -1,
                     {"public_key": other_pk.hex(), "kind": "native", "versions": [1]})
    fed.feed(Connected("z", "inprocess", 0.0))
    fed.sessions["z"] = ClientSession(seed, fed.engine.public_key)
    assert error_code(fed.feed(DataReceived("z", encode(hello, seed), 0.0)), fed.engine.public_key) is None
    fed.engine.registry[client_id_for(other_pk)] = fed.engine.registry[cid]  # the id is registered elsewhere
    assert error_code(fed.feed(DataReceived("z", encode(hello, seed), 0.0)), fed.engine.public_key) == "identity"
    s = fed.sessions["a"]
    env = Envelope("ready", s.client_id, "somebody-else", s.session, s.seq + 1, -1, {"commitment": "00" * 32})
    assert error_code(fed.send("a", encode(env, s.identity_seed)), fed.engine.public_key) == "misrouted"


def test_error_limit_closes_the_connection() -> None:
    fed = Fed(cfg())
    fed.feed(Connected("junk", "inprocess", 0.0))
    fed.sessions["junk"] = ClientSession(b"\x01" * 32, fed.engine.public_key)
    closes = []
    for i in range(20):
        acts = fed.engine.handle(DataReceived("junk", b"garbage" * (i + 1), 0.0))
        closes += [a for a in acts if isinstance(a, Close)]
        assert error_code(acts, fed.engine.public_key) == "bad_format"
    assert len(closes) == 1 and "20 rejected" in closes[0].reason


def test_client_sees_the_version_error() -> None:
    fed = Fed(cfg())
    seed = b"\x09" * 32
    s = ClientSession(seed, fed.engine.public_key)
    s.start()
    hello = Envelope("hello", s.client_id, COORDINATOR_ID, "", 0, -1,
                     {"public_key": s.public_key.hex(), "kind": "native", "versions": [99]})
    fed.feed(Connected("v", "inprocess", 0.0))
    acts = fed.engine.handle(DataReceived("v", encode(hello, seed), 0.0))
    assert error_code(acts, fed.engine.public_key) == "version"
    reply = next(a for a in acts if isinstance(a, Send))
    assert [a.code for a in s.receive(reply.data) if isinstance(a, Failed)] == ["version"]


@pytest.mark.parametrize("versions", [[True], [1.0], ["1"], [[1]]])
def test_only_integer_protocol_versions_negotiate(versions: list) -> None:
    """Issue 13 F20: `versions: [true]` was accepted as version 1 (True == 1 in Python); so were 1.0 and "1"-like
    look-alikes that compare equal. Only integers negotiate."""
    fed = Fed(cfg())
    seed = b"\x0a" * 32
    s = ClientSession(seed, fed.engine.public_key)
    hello = Envelope("hello", s.client_id, COORDINATOR_ID, "", 0, -1,
                     {"public_key": s.public_key.hex(), "kind": "native", "versions": versions})
    fed.feed(Connected("v", "inprocess", 0.0))
    assert error_code(fed.engine.handle(DataReceived("v", encode(hello, seed), 0.0)), fed.engine.public_key) == "version"


def test_a_corrupted_signature_trailer_is_a_protocol_error_on_both_sides() -> None:
    """Issue 13 F9: flipping any byte of a message's signature trailer used to raise mle.FormatError out of the
    engine (no error reply, a traceback, never counted towards the disconnect) and out of the client session."""
    fed = Fed(cfg())
    seed = b"\x0b" * 32
    s = ClientSession(seed, fed.engine.public_key)
    hello = Envelope("hello", s.client_id, COORDINATOR_ID, "", 0, -1,
                     {"public_key": s.public_key.hex(), "kind": "native", "versions": [1]})
    data = encode(hello, seed)
    fed.feed(Connected("t", "inprocess", 0.0))
    codes = set()
    for k in range(1, 97):  # the trailer: algorithm id, key id, signature
        bad = bytearray(data)
        bad[-k] ^= 0xFF
        codes.add(error_code(fed.engine.handle(DataReceived("t", bytes(bad), 0.0)), fed.engine.public_key))
    assert codes == {"bad_signature"}
    assert fed.engine.conns["t"].errors == 96  # every one counted towards the disconnect (Close at 20)
    # the client side: a coordinator frame with a corrupted trailer is refused, not raised
    c = ClientSession(b"\x0c" * 32, fed.engine.public_key)
    fed.feed(Connected("u", "inprocess", 0.0))
    reply = next(a for a in fed.engine.handle(DataReceived("u", c.start()[0].data, 0.0)) if isinstance(a, Send))
    bad = bytearray(reply.data)
    bad[-70] ^= 0xFF
    failed = [a for a in c.receive(bytes(bad)) if isinstance(a, Failed)]  # must not raise
    assert len(failed) == 1 and "signature does not verify" in failed[0].message, failed


def test_replay_guard_entries_of_replaced_sessions_are_freed() -> None:
    """Issue 13 F16: every reconnect that replaced a live connection left its session in the replay guard forever
    (4,999 entries after 5,000 cycles). Now the guard holds at most the live sessions."""
    fed = Fed(cfg())
    seed = b"\x0d" * 32
    for i in range(300):  # the same identity reconnects without the old connection ever saying goodbye
        fed.connect(f"r{i}", seed)
        fed.pump()
        assert fed.engine.conns[f"r{i}"].state in ("authenticated", "ready")
    assert len(fed.engine.guard.last_seq) <= 1, len(fed.engine.guard.last_seq)


def test_a_client_that_never_says_ready_does_not_stop_every_round() -> None:
    """Issue 13 F3: with min_clients_per_round < clients_per_round the engine waited for every connected client to
    become ready, so one client that authenticates and never says ``ready`` stopped every round. Now it is waited
    for during phase_timeout, and a "start" timer starts the round with the clients that are ready."""
    fed = Fed(cfg(clients_per_round=4, min_clients_per_round=3, group_size=1, aggregator="mean", rounds=2))
    for i in range(3):
        fed.connect(f"c{i}")
    fed.hold.add(("lazy", "ready"))
    fed.connect("lazy")
    fed.pump()
    assert fed.engine.round is None  # the lazy client is still within its grace: waited for
    timers = [a for a in fed.actions if isinstance(a, SetTimer) and a.name == "start"]
    assert timers and timers[-1].at == fed.now + fed.engine.cfg.phase_timeout
    fed.now = timers[-1].at
    fed.feed(TimerFired("start", fed.now))
    assert fed.engine.round is not None and len(fed.engine.round.selected) == 3
    assert fed.cid("lazy") not in fed.engine.round.selected


def test_replayed_pre_identity_error_cannot_stop_an_authenticated_client() -> None:
    fed = Fed(cfg(clients_per_round=3))
    fed.connect("victim")
    fed.pump()
    victim = fed.sessions["victim"]
    assert victim.state == "ready"
    # the attacker's own connection: a hello with no common version gets a signed error addressed to ""
    seed = b"\x0a" * 32
    pk = default_crypto().ed25519_public_key(seed)
    hello = Envelope("hello", client_id_for(pk), COORDINATOR_ID, "", 0, -1,
                     {"public_key": pk.hex(), "kind": "native", "versions": [99]})
    fed.feed(Connected("attacker", "inprocess", 0.0))
    acts = fed.engine.handle(DataReceived("attacker", encode(hello, seed), 0.0))
    recorded = next(a.data for a in acts if isinstance(a, Send))
    assert error_code(acts, fed.engine.public_key) == "version"
    codes = [a.code for a in victim.receive(recorded) if isinstance(a, Failed)]
    assert not set(codes) & {"handshake", "identity", "version", "banned"}, codes


def test_a_ban_never_stalls_a_federation_with_full_participation() -> None:
    """m = min_clients = population: once a client is banned, m can never be reached again. Banned clients no
    longer count towards the minimum, so the federation carries on with the clients left."""
    fed = Fed(cfg(rounds=4, clients_per_round=3))
    fed.train_hold.update({"a", "b", "c"})
    for c in ("a", "b", "c"):
        fed.connect(c)
    fed.pump()
    assert fed.engine.round is not None and len(fed.pending_train) == 3
    victim = fed.cid("a")
    fed.engine.trust.ensure(victim).banned = True  # as if this round's evidence had banned it
    for c in list(fed.pending_train):
        fed.train(c)
    fed.pump()
    assert fed.engine.round_number == 1
    # stalled for good before: 2 eligible clients < min_clients_per_round = 3
    assert fed.engine.round is not None and set(fed.engine.round.selected) == {fed.cid("b"), fed.cid("c")}
    assert any(isinstance(a, Log) and "banned client(s): round with the 2 clients left" in a.message
               for a in fed.actions)
    fed.train_hold.clear()
    for c in list(fed.pending_train):
        fed.train(c)
    fed.run_round(4)
    assert fed.engine.finished and [h["survivors"] for h in fed.engine.history] == [3, 2, 2, 2]
