"""Admission control in the sans-I/O engine (issue 13 F4, F12), driven through ``Engine.handle`` with real
ClientSessions and hand-written adversaries: enrolment policies (allow-list, operator-issued tokens, the open
enrolment's rate limit), probation, the hello/ready deadlines, and stall penalties for selected clients that go
silent. No wall clock: the tests pass the time in and count events, never measure them."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

import mle
from coordinator.federation.admission import (
    AdmissionConfig,
    TokenError,
    check_token,
    issue_token,
    parse_allowlist,
)
from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.federation.events import (
    ClientEnrolled,
    Close,
    Connected,
    DataReceived,
    Disconnected,
    Send,
    SetTimer,
    TimerFired,
)
from flcore.modelspec import mlp
from flcore.policy import PrivacyPolicy
from flcore.protocol import ProtocolError, validate_body
from flcore.session import ClientSession, Failed, SendFrame, Train
from flcrypto import default_crypto

SPEC = mlp([4, 3])
COORD_SEED = b"\x22" * 32


def cfg(**kw: Any) -> FederationConfig:
    base: dict[str, Any] = dict(model=SPEC, rounds=3, clients_per_round=2, group_size=1, aggregator="mean",
                                local_epochs=1, l2_clip=1.0)
    base.update(kw)
    return FederationConfig(**base)


def seed_of(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=32).digest()


def frame_type(data: bytes) -> str:
    return str(mle.loads(data).metadata["fl"]["type"])


class Harness:
    """The engine and client sessions in one process, with named timers and a virtual clock.

    ``passes[conn]``: the message types this client lets out (None: all) – a silent client sends its handshake
    and ``ready`` and nothing else; a SecAgg+ staller also reveals, then goes silent."""

    def __init__(self, config: FederationConfig, admission: AdmissionConfig | None = None,
                 registry: dict[str, bytes] | None = None) -> None:
        self.engine = Engine(config, COORD_SEED, seed=3, admission=admission, registry=registry)
        self.sessions: dict[str, ClientSession] = {}
        self.passes: dict[str, set[str] | None] = {}
        self.outbox: list[tuple[str, bytes]] = []
        self.actions: list[Any] = []
        self.failed: dict[str, list[str]] = {}
        self.closed: dict[str, str] = {}
        self.timers: dict[str, float] = {}
        self.now = 0.0
        self.firings = 0

    def connect(self, conn: str, *, token: str = "", passes: set[str] | None = None, hello: bool = True
                ) -> ClientSession:
        s = ClientSession(seed_of(conn), self.engine.public_key, policy=PrivacyPolicy.permissive(),
                          enrolment_token=token)
        self.sessions[conn], self.passes[conn], self.failed[conn] = s, passes, []
        self.feed(Connected(conn, "inprocess", self.now))
        if hello:
            for a in s.start():
                self._client(conn, a)
        return s

    def _client(self, conn: str, a: Any) -> None:
        if isinstance(a, SendFrame):
            allowed = self.passes[conn]
            if allowed is None or frame_type(a.data) in allowed:
                self.outbox.append((conn, a.data))
        elif isinstance(a, Train):
            rng = np.random.default_rng(sum(conn.encode()) + 1000 * a.round)
            delta = (0.2 + 0.02 * rng.normal(size=a.spec.num_parameters())).astype(np.float32)
            for b in self.sessions[conn].training_done(delta):
                self._client(conn, b)
        elif isinstance(a, Failed):
            self.failed[conn].append(a.code)

    def feed(self, event: Any) -> list[Any]:
        acts = self.engine.handle(event)
        self.actions += acts
        for a in acts:
            if isinstance(a, Send) and a.conn not in self.closed:
                for ca in self.sessions[a.conn].receive(a.data):
                    self._client(a.conn, ca)
            elif isinstance(a, SetTimer):
                self.timers[a.name] = a.at
            elif isinstance(a, Close) and a.conn not in self.closed:
                self.closed[a.conn] = a.reason
                self.feed(Disconnected(a.conn, self.now))
        return acts

    def pump(self) -> None:
        while self.outbox:
            conn, data = self.outbox.pop(0)
            if conn not in self.closed:
                self.feed(DataReceived(conn, data, self.now))

    def fire(self, name: str | None = None) -> str:
        """Fire the named timer (default: the earliest pending one), advancing the clock to it."""
        name = name or min(self.timers, key=lambda n: self.timers[n])
        self.now = max(self.now, self.timers.pop(name))
        self.firings += 1
        self.feed(TimerFired(name, self.now))
        self.pump()
        return name

    def enrolled(self) -> set[str]:
        return {a.client_id for a in self.actions if isinstance(a, ClientEnrolled)}

    def state(self, conn: str) -> str | None:
        c = self.engine.conns.get(conn)
        return None if c is None else c.state


# ── F4: enrolment policies ──────────────────────────────────────────────────────────────────────────────
def test_allowlist_admits_listed_keys_and_refuses_others_storing_nothing() -> None:
    c = default_crypto()
    listed = c.ed25519_public_key(seed_of("alice"))
    h = Harness(cfg(), AdmissionConfig(enrolment="allowlist", allowlist=frozenset({listed})))
    alice, mallory = h.connect("alice"), h.connect("mallory")
    h.pump()
    assert h.state("alice") == "ready" and alice.client_id in h.enrolled()
    assert h.failed["mallory"] == ["enrolment"] and "mallory" in h.closed
    assert mallory.client_id not in h.engine.registry and mallory.client_id not in h.engine.trust.clients
    assert mallory.client_id not in h.enrolled() and mallory.client_id not in h.engine.by_client
    # the allow-list file format: one hex key per line, comments and blank lines allowed
    assert parse_allowlist(f"# operator's list\n\n{listed.hex()}  # alice\n") == {listed}
    with pytest.raises(ValueError, match="line 1"):
        parse_allowlist("not-a-key\n")


def test_token_enrolment_needs_a_token_this_coordinator_issued_for_this_key() -> None:
    c = default_crypto()
    pk = {n: c.ed25519_public_key(seed_of(n)) for n in ("a", "b", "c", "d", "e")}
    day = 86400
    tokens = {"a": issue_token(COORD_SEED, pk["a"], day),
              "c": issue_token(COORD_SEED, pk["b"], day),  # b's token, presented by c
              "d": issue_token(b"\x33" * 32, pk["d"], day),  # issued by another coordinator
              "e": issue_token(COORD_SEED, pk["e"], 50)}  # expires at t = 50
    h = Harness(cfg(), AdmissionConfig(enrolment="token"))
    h.now = 100.0
    for n in ("a", "b", "c", "d", "e"):
        h.connect(n, token=tokens.get(n, ""))
    h.pump()
    assert h.state("a") == "ready"
    for n in ("b", "c", "d", "e"):
        assert h.failed[n] == ["enrolment"] and n in h.closed, n
    assert h.enrolled() == {h.sessions["a"].client_id}
    assert len(h.engine.registry) == 1 and len(h.engine.trust.clients) == 1
    # once enrolled, a reconnect needs no token
    h.feed(Disconnected("a", h.now))
    h.sessions.pop("a")
    h.connect("a")
    h.pump()
    assert h.state("a") == "ready"
    # the token itself
    assert check_token(c.ed25519_public_key(COORD_SEED), pk["a"], tokens["a"], 0.0) == day
    with pytest.raises(TokenError, match="expired"):
        check_token(c.ed25519_public_key(COORD_SEED), pk["a"], tokens["a"], day)
    with pytest.raises(TokenError, match="hex characters"):
        check_token(c.ed25519_public_key(COORD_SEED), pk["a"], tokens["a"][:-2], 0.0)


def test_the_hello_token_field_is_optional_and_typed() -> None:
    base = {"public_key": "00" * 32, "kind": "native", "versions": [1]}
    validate_body("hello", base)  # clients that predate the field
    validate_body("hello", {**base, "enrolment_token": "ab"})
    with pytest.raises(ProtocolError, match="enrolment_token"):
        validate_body("hello", {**base, "enrolment_token": 5})
    with pytest.raises(ProtocolError, match="unexpected"):
        validate_body("auth", {"challenge": "x", "enrolment_token": "ab"})
    plain = ClientSession(seed_of("x"), None).start()[0].data
    assert "enrolment_token" not in mle.loads(plain).metadata["fl"]["body"]


def test_open_enrolment_is_rate_limited_and_known_identities_are_not() -> None:
    known = {n: default_crypto().ed25519_public_key(seed_of(n)) for n in ("old",)}
    from flcore.wire import client_id_for

    h = Harness(cfg(clients_per_round=20), AdmissionConfig(enrolment_per_minute=60, enrolment_burst=5),
                registry={client_id_for(pk): pk for pk in known.values()})
    for i in range(8):  # a burst of 8 fresh identities at t = 0: the bucket holds 5
        h.connect(f"sybil{i}")
    h.pump()
    busy = [n for n in h.sessions if h.failed[n] == ["enrolment_busy"]]
    assert len(h.enrolled()) == 5 and len(busy) == 3 and all(n in h.closed for n in busy)
    h.connect("old")  # an enrolled identity does not need the bucket
    h.pump()
    assert h.state("old") == "ready"
    h.now = 2.0  # one new identity per second
    for i in range(8, 12):
        h.connect(f"sybil{i}")
    h.pump()
    assert len(h.enrolled()) == 7 and len(h.engine.registry) == 8


def test_a_new_identity_is_not_selected_during_its_probation() -> None:
    h = Harness(cfg(clients_per_round=2, rounds=1), AdmissionConfig(probation=30.0))
    h.connect("a")
    h.connect("b")
    h.pump()
    assert h.state("a") == h.state("b") == "ready" and h.engine.round is None
    assert h.timers["start"] == 30.0
    h.now = 10.0
    h.timers.pop("start")
    h.feed(TimerFired("start", h.now))  # early (a driver may fire late or early): still waiting
    assert h.engine.round is None and h.timers["start"] == 30.0
    h.fire("start")
    assert h.now == 30.0 and h.engine.round_number == 1  # selected once the probation is over: round done


# ── F12: deadlines ──────────────────────────────────────────────────────────────────────────────────────
def test_connections_that_do_not_authenticate_or_stay_idle_are_closed() -> None:
    h = Harness(cfg(clients_per_round=5), AdmissionConfig(hello_timeout=10.0, ready_timeout=60.0))
    h.connect("silent", hello=False)  # a socket that never says hello
    h.connect("half", passes={"hello"})  # hello, never auth
    h.connect("idle", passes={"hello", "auth"})  # authenticated, never ready
    h.connect("ready")
    h.pump()
    assert h.timers["deadline"] == 10.0
    assert h.fire() == "deadline" and h.now == 10.0
    assert set(h.closed) == {"silent", "half"}
    assert all(r.startswith("no authentication within 10") for r in h.closed.values())
    assert h.state("idle") == "authenticated" and h.timers["deadline"] == 60.0
    h.fire("deadline")
    assert h.closed["idle"].startswith("idle (not ready) for 60") and "idle" in h.failed["idle"]
    assert h.state("ready") == "ready" and "ready" not in h.closed  # a ready client is never idle
    assert "deadline" not in h.timers  # nothing left to watch: no more sweeps
    assert h.engine.refusals["hello_timeout"] == 2 and h.engine.refusals["ready_timeout"] == 1


def test_a_second_hello_restarts_the_handshake_deadline_only_after_authentication() -> None:
    h = Harness(cfg(clients_per_round=5), AdmissionConfig(hello_timeout=10.0))
    s = h.connect("a")
    h.pump()
    assert h.state("a") == "ready"
    h.fire("deadline")  # at t = 10: nothing to close, nothing left to watch
    assert "a" not in h.closed and "deadline" not in h.timers
    h.now = 25.0
    h.passes["a"] = {"hello"}  # re-handshake on the live connection, then stall: closed 10 s later, not at once
    for act in s.start():
        h._client("a", act)
    h.pump()
    assert h.state("a") == "auth" and h.timers["deadline"] == 35.0
    h.fire("deadline")
    assert "a" in h.closed and h.now == 35.0


# ── F4: stalling penalties ──────────────────────────────────────────────────────────────────────────────
def run_with_stallers(admission: AdmissionConfig, stage: str, rounds: int, firings: int
                      ) -> tuple[Harness, dict[int, int]]:
    """10 honest clients and 30 that stall at ``stage`` (never reveal, or reveal and never answer SecAgg+);
    m = 5 in groups of 1. Fires the phase deadline until the federation finishes or ``firings`` were fired;
    returns the harness and, per round, the number of firings it took to get there."""
    h = Harness(cfg(clients_per_round=5, rounds=rounds, phase_timeout=20.0, train_timeout=20.0), admission)
    for i in range(10):
        h.connect(f"honest{i}")
    passes = {"hello", "auth", "ready"} | ({"reveal"} if stage == "secagg" else set())
    for i in range(30):
        h.connect(f"silent{i}", passes=passes)
    h.pump()
    at: dict[int, int] = {h.engine.round_number: 0}
    while h.firings < firings and not h.engine.finished:
        h.fire("phase")
        for r in range(max(at) + 1, h.engine.round_number + 1):
            at[r] = h.firings
    return h, at


PENALTIES = AdmissionConfig(stall_evidence=0.5, stall_ban=3)


def test_clients_that_never_reveal_are_penalised_until_rounds_proceed() -> None:
    """30 silent clients among 10 honest ones (issue 13 F4: 3 rounds in 81 s vs 50 in 36 s): without penalties
    nearly every selection holds one and the attempt is abandoned at its deadline; with them each stall is
    evidence against the client and 3 in a row ban it, so in the same number of deadlines all 12 rounds finish."""
    off, _ = run_with_stallers(AdmissionConfig(), "reveal", 12, 60)
    on, _ = run_with_stallers(PENALTIES, "reveal", 12, 60)
    assert off.engine.round_number <= 2, off.engine.round_number
    assert on.engine.finished and on.engine.round_number == 12
    t = on.engine.trust
    silent = [on.sessions[f"silent{i}"].client_id for i in range(30)]
    honest = [on.sessions[f"honest{i}"].client_id for i in range(10)]
    assert all(t.clients[c].stalls == 0 and not t.clients[c].banned for c in honest)
    assert sum(t.clients[c].banned for c in silent) >= 20
    prior = t.params.prior_alpha / (t.params.prior_alpha + t.params.prior_beta)
    assert all(t.trust(c) < prior for c in silent if t.clients[c].stalls or t.clients[c].banned)
    assert not any(t.clients[c].stalls or t.clients[c].banned for c in silent if t.clients[c].observations == 0)
    # a banned staller is told so (and refused when it says ready again)
    banned = next(f"silent{i}" for i in range(30) if t.clients[silent[i]].banned)
    assert "stop" in [frame_type(a.data) for a in on.actions if isinstance(a, Send) and a.conn == banned]
    assert all(not t.clients[c].banned for c in t.clients if c not in silent)


def test_clients_that_stall_secure_aggregation_stop_costing_a_deadline_per_round() -> None:
    """Stallers that reveal and then never answer SecAgg+: each round that selects one waits for the phase
    deadline. Without penalties that stays so; with them the last 10 of 40 rounds need no deadline at all."""
    off, off_at = run_with_stallers(AdmissionConfig(), "secagg", 40, 200)
    on, on_at = run_with_stallers(PENALTIES, "secagg", 40, 200)
    assert off.engine.finished and on.engine.finished
    assert off_at[40] - off_at[30] >= 5, off_at
    assert on_at[40] == on_at[30], on_at
    assert on.firings < off.firings
    t = on.engine.trust
    assert all(not t.clients[on.sessions[f"honest{i}"].client_id].banned for i in range(10))


def test_a_stall_is_weaker_evidence_than_a_proven_deviation_and_a_completed_round_resets_the_count() -> None:
    from coordinator.federation.trust import TrustState

    ts = TrustState()
    ts.observe_stall("s", 0.5)
    ts.observe("d", 0.0, 1.0)
    assert ts.trust("d") < ts.trust("s") < 2 / 3
    assert ts.clients["s"].stalls == 1 and not ts.observe_stall("s", 0.5, ban_after=3)
    ts.clear_stalls("s")
    assert not ts.observe_stall("s", 0.5, ban_after=3) and not ts.observe_stall("s", 0.5, ban_after=3)
    assert ts.observe_stall("s", 0.5, ban_after=3) and ts.clients["s"].banned
    assert TrustState.from_dict(ts.to_dict()).clients["s"].stalls == 3


def test_many_identities_over_one_connection_meet_the_same_limit() -> None:
    """F4: "500 identities over one gRPC connection" – each new key on a connection (hello → auth again) draws
    from the same bucket; once it is empty the connection is closed."""
    engine = Engine(cfg(clients_per_round=20), COORD_SEED, seed=3,
                    admission=AdmissionConfig(enrolment_per_minute=60, enrolment_burst=5))
    engine.handle(Connected("flood", "grpc", 0.0))
    enrolled, closed = 0, False
    for i in range(8):
        s = ClientSession(seed_of(f"key{i}"), engine.public_key)
        frames = [a.data for a in s.start()]
        while frames and not closed:
            acts = engine.handle(DataReceived("flood", frames.pop(0), 0.0))
            enrolled += sum(isinstance(a, ClientEnrolled) for a in acts)
            closed = any(isinstance(a, Close) for a in acts)
            for a in acts:
                if isinstance(a, Send):
                    frames += [b.data for b in s.receive(a.data) if isinstance(b, SendFrame)
                               and frame_type(b.data) in ("auth",)]
        if closed:
            break
    assert enrolled == 5 and closed and len(engine.registry) == 5


def test_a_selected_identity_whose_connection_says_hello_with_another_key_then_leaves_does_not_stall() -> None:
    """Found by benchmarks/bench_load.py's Sybil flood (F4): a selected client's connection sends a hello with a
    fresh key (rebinding the connection) and closes. The old identity stayed in ``by_client`` pointing at the dead
    connection, so the reveal deadline's round end raised KeyError and no round ever completed again. The old
    identity must count as gone the moment its connection starts another session."""
    h = Harness(cfg(rounds=2, clients_per_round=2))
    h.connect("honest")
    sybil = h.connect("sybil", passes={"hello", "auth", "ready"})  # authenticates, never reveals
    h.pump()
    assert h.engine.round is not None and sybil.client_id in h.engine.round.selected
    fresh = ClientSession(seed_of("sybil-2"), h.engine.public_key, policy=PrivacyPolicy.permissive())
    hello = next(a.data for a in fresh.start() if isinstance(a, SendFrame))
    h.feed(DataReceived("sybil", hello, h.now))
    assert sybil.client_id not in h.engine.by_client  # the old identity is no longer bound to that connection
    h.closed["sybil"] = "left"
    h.feed(Disconnected("sybil", h.now))
    h.fire("phase")  # the reveal deadline: the attempt is abandoned without the sybil
    h.connect("late")  # another honest client: rounds go on
    h.pump()
    while not h.engine.finished and h.firings < 20:
        h.fire()
    assert h.engine.finished and h.engine.round_number == 2


def test_a_silent_selected_client_costs_the_reveal_timeout_not_a_whole_phase() -> None:
    """The reveal is sent on receipt of the selection, before training: a selected identity that stays silent
    (bench_load's Sybils) holds the attempt for ``reveal_timeout``, not ``phase_timeout``; honest clients reveal
    at once and are not affected."""
    for reveal, expected in ((2.0, 2.0), (0.0, 30.0)):
        h = Harness(cfg(phase_timeout=30.0), AdmissionConfig(reveal_timeout=reveal))
        h.connect("honest")
        h.connect("silent", passes={"hello", "auth", "ready"})
        h.pump()
        assert h.engine.round is not None and h.engine.round.stage == "reveal"
        assert h.timers["phase"] == h.now + expected
        first = h.engine.round.attempt
        h.fire("phase")
        assert h.now == expected  # the attempt was abandoned at the reveal deadline (a new one may start at once)
        assert h.engine.round is None or h.engine.round.attempt != first
    with pytest.raises(ValueError, match="reveal_timeout"):
        AdmissionConfig(reveal_timeout=-1.0).validate()
    h = Harness(cfg(phase_timeout=30.0), AdmissionConfig(reveal_timeout=2.0))
    h.connect("a")
    h.connect("b")
    h.pump()
    assert h.engine.round_number >= 1 and h.firings == 0  # both revealed at once: rounds complete, no deadline hit
