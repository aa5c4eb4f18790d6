"""A selected client whose connection closes is a dropout at once, not at the phase deadline (issue 14: a closed
tab stalled everyone 20–60 s). The real Engine and real client sessions in-process, a virtual clock that only
moves when a timer has to fire: a round that completes without waiting for a deadline completes at the same
virtual time it started."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import mle
from coordinator.federation.admission import AdmissionConfig
from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.federation.events import (
    Connected,
    DataReceived,
    Disconnected,
    Log,
    PersistRound,
    Send,
    SetTimer,
    TimerFired,
)
from flcore.modelspec import mlp
from flcore.policy import PrivacyPolicy
from flcore.session import ClientSession, SendFrame, Train
from flcrypto import default_crypto
from privacy.secagg.config import GroupConfig

SPEC = mlp([6, 3])


def frame_type(data: bytes) -> str:
    return str(mle.loads(data).metadata["fl"]["type"])


class Federation:
    """``leave(conn, frame_type, round)`` decides, for every frame the coordinator sends, whether that client's
    connection closes instead of answering it (the coordinator then gets ``Disconnected``)."""

    def __init__(self, n: int, leave: Callable[[str, str, int], bool], admission: AdmissionConfig | None = None,
                 **kw) -> None:
        cfg = FederationConfig(model=SPEC, rounds=2, clients_per_round=kw.pop("m", 6), group_size=3,
                               aggregator="mean", local_epochs=1, l2_clip=1.0, quantization_bits=16,
                               modulus_bits=32, threshold_rule="majority", colluders=0, train_timeout=60.0,
                               phase_timeout=30.0, **kw)
        c = default_crypto()
        self.engine = Engine(cfg, b"\x05" * 32, seed=3, admission=admission)
        self.sessions = {f"c{i}": ClientSession(c.random_bytes(32), self.engine.public_key,
                                                policy=PrivacyPolicy.permissive()) for i in range(n)}
        self.leave, self.gone = leave, set()
        self.outbox: list[tuple[str, bytes]] = []
        self.timers: dict[str, float] = {}
        self.rounds: dict[int, float] = {}  # round → virtual time it was persisted
        self.logs: list[str] = []
        self.now = 0.0
        self.rng = np.random.default_rng(0)

    def act(self, actions) -> None:
        for a in actions:
            if isinstance(a, Send) and a.conn not in self.gone:
                self.receive(a.conn, a.data)
            elif isinstance(a, SetTimer):
                self.timers[a.name] = a.at
            elif isinstance(a, PersistRound):
                self.rounds[a.round] = self.now
            elif isinstance(a, Log):
                self.logs.append(a.message)

    def receive(self, conn: str, data: bytes) -> None:
        env = mle.loads(data).metadata["fl"]
        if self.leave(conn, str(env["type"]), int(env.get("round", -1))):
            self.gone.add(conn)
            self.act(self.engine.handle(Disconnected(conn, self.now)))
            return
        for a in self.sessions[conn].receive(data):
            self.client(conn, a)

    def client(self, conn: str, a) -> None:
        if isinstance(a, SendFrame):
            self.outbox.append((conn, a.data))
        elif isinstance(a, Train):
            delta = self.rng.normal(0, 0.01, sum(int(np.prod(s)) for _, s in SPEC.parameter_shapes()))
            for a2 in self.sessions[conn].training_done(delta.astype(np.float32)):
                self.client(conn, a2)

    def run(self, max_steps: int = 50_000) -> None:
        for conn, s in self.sessions.items():
            self.act(self.engine.handle(Connected(conn, "inprocess", self.now)))
            for a in s.start():
                self.client(conn, a)
        for _ in range(max_steps):
            if self.engine.finished:
                return
            if self.outbox:
                conn, data = self.outbox.pop(0)
                if conn not in self.gone:
                    self.act(self.engine.handle(DataReceived(conn, data, self.now)))
                continue
            pending = [t for t in self.timers.values() if t > self.now]
            if not pending:
                raise AssertionError("the federation is stuck: nothing in flight and no timer set")
            self.now = min(pending)
            for name, at in list(self.timers.items()):
                if at <= self.now:
                    del self.timers[name]
                    self.act(self.engine.handle(TimerFired(name, self.now)))


def _first(kind: str, at_round: int = 1) -> Callable[[str, str, int], bool]:
    """The first client that receives a ``kind`` frame of round ``at_round`` closes its connection instead."""
    state: dict[str, str] = {}

    def leave(conn: str, frame: str, rnd: int) -> bool:
        if frame == kind and rnd == at_round and "who" not in state:
            state["who"] = conn
        return state.get("who") == conn and frame == kind and rnd == at_round

    return leave


def test_a_selected_client_that_disconnects_mid_secure_aggregation_is_dropped_at_once() -> None:
    """7 clients, 6 per round in 2 groups of 3 (threshold 2): a client closes its connection when the first
    SecAgg+ reply reaches it. Both rounds complete at virtual time 0 – no phase deadline (30 s) was waited for."""
    fed = Federation(7, _first("secagg"))
    fed.run()
    assert sorted(fed.rounds) == [1, 2] and fed.rounds[2] == 0.0, fed.rounds
    assert fed.engine.history[0]["survivors"] == 5
    assert any("disconnected: a dropout of group" in m for m in fed.logs)


def test_a_selected_client_that_disconnects_when_its_task_arrives_is_dropped_at_once() -> None:
    fed = Federation(7, _first("task"))
    fed.run()
    assert sorted(fed.rounds) == [1, 2] and max(fed.rounds.values()) == 0.0, fed.rounds
    assert fed.engine.history[0]["survivors"] == 5


def test_a_selected_client_that_disconnects_before_revealing_restarts_the_attempt_at_once() -> None:
    """Before its reveal the attempt cannot go on (no subset of reveals may seed the groups): it is abandoned at
    once and the next attempt selects among the clients still there; the leaver gets stall evidence."""
    fed = Federation(7, _first("select"), admission=AdmissionConfig(stall_evidence=0.5, stall_ban=6))
    fed.run()
    assert sorted(fed.rounds) == [1, 2] and max(fed.rounds.values()) == 0.0, fed.rounds
    assert any("disconnected before revealing" in m for m in fed.logs)
    (leaver,) = fed.gone
    leaver_id = fed.sessions[leaver].client_id
    assert fed.engine.trust.ensure(leaver_id).stalls == 1


def test_without_a_disconnect_a_silent_client_still_costs_the_deadline() -> None:
    """The contrast (the test above could not pass by accident): a client that stays connected but never answers
    is waited for until the phase deadline."""
    fed = Federation(7, lambda conn, frame, rnd: False)
    silent: dict[str, str] = {}
    original = fed.receive

    def receive(conn: str, data: bytes) -> None:
        env = mle.loads(data).metadata["fl"]
        if env["type"] == "secagg" and int(env.get("round", -1)) == 1 and "who" not in silent:
            silent["who"] = conn
        if silent.get("who") == conn and int(env.get("round", -1)) == 1 and env["type"] == "secagg":
            return  # swallowed: no answer, connection open
        original(conn, data)

    fed.receive = receive  # type: ignore[method-assign]
    fed.run()
    assert sorted(fed.rounds) == [1, 2] and fed.rounds[1] >= 30.0, fed.rounds


def test_secagg_server_drop_after_a_phase_keeps_that_phase_survivors() -> None:
    """The server-side defect the departures exposed: after a phase closed, ``expected`` was the very set object
    of its survivors (u1), so dropping a member that had advertised removed it from u1 too – and its neighbours'
    shares, correctly addressed to it, were rejected ("must address exactly its live neighbours")."""
    from privacy.backends import NumpyBackend
    from privacy.secagg.messages import Message
    from privacy.secagg.server import ADVERTISE_ITEMS, SecAggServer

    members = ("a", "b", "c")
    keys = {m: default_crypto().random_bytes(32) for m in members}
    server = SecAggServer(GroupConfig(round=1, group=0, members=members, identity_keys=keys, vector_length=4,
                                      modulus_bits=16, public_seed=b"\x00" * 32), NumpyBackend())
    for m in members:  # what receive() records once a signed advertise message verified
        server.received["advertise"][m] = Message("advertise", 1, 0, m, "server",
                                                  {k: b"\x01" * 32 for k in ADVERTISE_ITEMS})
    server.close_phase()
    assert server.phase == "shares" and server.u1 == set(members)
    server.drop("a")
    assert server.u1 == set(members) and server.expected == {"b", "c"}


def test_a_finished_federation_knows_which_last_round_participants_still_need_stop() -> None:
    """A client that left during the last round is not told the federation is over (it was gone): the engine
    reports it in ``awaiting_stop()`` – what ``serve --exit-when-finished`` waits for (up to ``exit_grace``) – until
    it reconnects, says ready and gets ``stop``."""
    fed = Federation(7, _first("secagg", at_round=2))
    fed.run()
    assert fed.engine.finished
    (leaver,) = fed.gone
    leaver_id = fed.sessions[leaver].client_id
    assert fed.engine.awaiting_stop() == {leaver_id}
    # it reconnects with back-off: a new connection, its session restarted
    fed.gone.discard(leaver)
    fed.leave = lambda conn, frame, rnd: False
    again = leaver + "-again"
    fed.sessions[again] = fed.sessions[leaver]
    fed.act(fed.engine.handle(Connected(again, "inprocess", fed.now)))
    for a in fed.sessions[again].start():
        fed.client(again, a)
    while fed.outbox:
        conn, data = fed.outbox.pop(0)
        fed.act(fed.engine.handle(DataReceived(conn, data, fed.now)))
    assert fed.engine.awaiting_stop() == set()
    assert fed.sessions[again].state == "stopped"
