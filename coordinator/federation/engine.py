"""The coordinator engine: a sans-I/O state machine (no sockets, clock or randomness of its own).

Feed it :mod:`coordinator.federation.events` (``Connected``, ``DataReceived``, ``Disconnected``, ``TimerFired``) with the
current time; execute the returned actions in order (``Send``, ``Close``, ``SetTimer``, ``PersistRound``,
``PersistLedger``, ``Log``). A ``PersistRound`` or ``PersistLedger`` must be made durable before later actions are
executed (the store does it atomically); if it cannot be, nothing after it may be executed.

Round lifecycle: when enough authenticated clients are ready (each ``ready`` carries a commitment to a fresh
secret) → drop the clients whose own ε (per participation, against this coordinator) would exceed the budget →
select m by trust → send every selected client the signed selection (members, keys, commitments) → collect the
reveals (one missing: the attempt is abandoned, never a subset) → the public seed from the reveals
(:mod:`flcore.assignment`) → partition into groups → send each client its task (group, reveals, SecAgg+
parameters with the group's own threshold, DP parameters calibrated for it, the signed global model); each
client recomputes all of it and checks it against its own policy → run SecAgg+ per group, all groups phase by
phase, each phase closed when every expected client answered or at its deadline → decode the group sums →
honest norm bound → robust aggregation across groups → DP accounting (per participation) → server optimizer →
trust update → evaluate → sign the new model → persist → round_end.

Admission (``AdmissionConfig``, :mod:`coordinator.federation.admission`; issue 13 F4, F12): the hello's key is
checked against the enrolment policy (open with a rate limit on new identities, an allow-list of keys, or an
operator-issued enrolment token) – a refusal answers the ``auth`` with an ``error`` and a ``Close``, nothing stored;
a fresh identity is not selected during its probation; one "deadline" timer closes connections that do not
authenticate within ``hello_timeout`` or sit idle (not ready) longer than ``ready_timeout``; a selected client
that misses a reveal or SecAgg+ deadline gets stall evidence (``TrustState.observe_stall``) and is banned after
``stall_ban`` consecutive stalls.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import mle
from aggregation import PipelineState, aggregate_groups, parse_pipeline
from coordinator.federation.admission import AdmissionConfig, EnrolmentBucket, TokenError, check_token
from coordinator.federation.config import FederationConfig
from coordinator.federation.downlink import Downlink
from coordinator.federation.events import (
    Action,
    ClientEnrolled,
    Close,
    Connected,
    DataReceived,
    Disconnected,
    GroupAggregated,
    Log,
    PersistLedger,
    PersistRound,
    RoundStarted,
    Send,
    SetTimer,
    TimerFired,
)
from coordinator.federation.evidence import (
    alignment_evidence,
    bound_noise_variance,
    debiased_outlier_scores,
    deviation_evidence,
    duplicate_units,
    effective_noise_variance,
    mean_norm_bound,
    measured_noise_variance,
    noise_deficient,
    noise_variance_of_mean,
)
from coordinator.federation.optimizers import OptimizerState, ServerOptimizer, apply_update
from coordinator.federation.trust import TrustState
from flcore import assignment
from flcore.protocol import COORDINATOR_ID, PROTOCOL_VERSIONS, Envelope, ProtocolError, ReplayGuard
from flcore.wire import MAX_MESSAGE_BYTES, as_u8, client_id_for, decode, encode, tensor_bytes
from flcrypto import Crypto, default_crypto
from privacy.backends import numpy_backend
from privacy.client_pipeline import decode_sum, unclipped_count
from privacy.dp import ParticipationAccountant, PrivacyAccountant, RoundEvent, epsilon_report
from privacy.rotation import rotation_seed
from privacy.secagg import GroupConfig, GroupResult, SecAggError, SecAggServer, ThresholdError, partition
from privacy.secagg.server import PHASE_ORDER

Evaluator = Callable[[dict[str, np.ndarray]], dict[str, float]]


@dataclass
class Connection:
    conn: str
    kind: str
    client_id: str | None = None
    public_key: bytes | None = None
    challenge: str = ""
    state: str = "hello"  # hello → auth → authenticated → ready → busy
    seq: int = 0
    errors: int = 0
    connected_at: float = 0.0
    commitment: bytes = b""  # from the last ``ready``: opened by the reveal of the next selection
    declined: str = ""  # the client's policy refused a task on this connection: not selected again on it
    idle_since: float = 0.0  # when it last became "authenticated" (after its handshake or its last round)
    handshake_since: float = 0.0  # when its current handshake began: hello → auth must finish by hello_timeout
    refused: tuple[str, str] | None = None  # the enrolment policy's refusal of its hello's key, told at its auth
    model_sha256: str = ""  # from the last ``ready``: the model the client holds (compact downlink), "" = none


@dataclass
class RoundState:
    number: int
    seed: bytes
    groups: list[list[str]]
    servers: dict[int, SecAggServer]
    group_of: dict[str, int]
    deadline: float
    q: float  # the selection probability bound used for the third-party (amplified) figure
    started_at: float
    failed: dict[int, str] = field(default_factory=dict)
    pending: set[int] = field(default_factory=set)  # groups still waiting for answers in the current phase
    attempt: str = ""
    selected: list[str] = field(default_factory=list)
    commitments: dict[str, bytes] = field(default_factory=dict)
    reveals: dict[str, bytes] = field(default_factory=dict)
    selection: bytes = b""  # assignment.selection_hash of this attempt
    stage: str = "secagg"  # "reveal" until every selected client opened its commitment, then "secagg"
    dp: dict[int, Any] = field(default_factory=dict)  # group → DistributedDPConfig (its own threshold)
    stalled: set[str] = field(default_factory=set)  # selected clients that missed a deadline in this attempt
    released: set[int] = field(default_factory=set)  # groups whose spend was charged when their unmask went out
    charged_round: bool = False  # the third-party (amplified) event of this attempt is recorded
    # selected clients whose connection closed during the attempt: their session (and SecAgg+ state) is gone, so
    # no phase waits for them (a reconnecting client starts a new session and joins a later round)
    departed: set[str] = field(default_factory=set)


MAX_ERRORS_PER_CONNECTION = 20
ENROLMENT_BUSY = "too many new identities are enrolling right now (enrolment rate limit); try again later"


def _finite(x: float | None) -> float | None:
    """JSON/SQLite-safe: non-finite figures become None."""
    return float(x) if x is not None and math.isfinite(x) else None


class Engine:
    def __init__(self, config: FederationConfig, identity_seed: bytes, *, seed: int = 0,
                 evaluator: Evaluator | None = None, crypto: Crypto | None = None,
                 params: np.ndarray | None = None, state: dict[str, Any] | None = None,
                 registry: dict[str, bytes] | None = None, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 admission: AdmissionConfig | None = None) -> None:
        config.validate()
        self.cfg = config
        # who may enrol, how fast, probation, deadlines, stall penalties (coordinator/federation/admission.py)
        self.admission = admission or AdmissionConfig()
        self.admission.validate()
        self.enrolment_bucket = EnrolmentBucket(self.admission.enrolment_per_minute, self.admission.enrolment_burst)
        self.enrolled_at: dict[str, float] = {}  # identities enrolled by this process → when (probation)
        self._deadline_at: float | None = None  # the pending "deadline" sweep timer
        self.refusals: dict[str, int] = {}  # refused hellos and closed connections by reason (operator view)
        self.max_message_bytes = max_message_bytes
        self.crypto = crypto or default_crypto()
        self.seed = identity_seed
        self.public_key = self.crypto.ed25519_public_key(identity_seed)
        state = state or {}
        # Selection randomness: a restarted coordinator continues with a fresh stream for the next round.
        self.rng = np.random.default_rng([seed, int(state.get("round", 0))])
        self.evaluator = evaluator
        self.spec = config.model
        self.pipeline = parse_pipeline(config.aggregator)
        self.optimizer = ServerOptimizer(config.server_optimizer, lr=config.server_step())
        self.backend = numpy_backend()
        self.conns: dict[str, Connection] = {}
        # connections that said ready (a superset: ready_clients re-checks each), so finding the ready clients costs
        # O(ready), not O(connections) – bench_load: 10,000 idle connections, one scan per ready message
        self._said_ready: dict[str, None] = {}
        # stop bookkeeping for a finished federation (awaiting_stop): last-round participants, and who was told
        self._last_participants: set[str] = set()
        self._told_stop: set[str] = set()
        self.by_client: dict[str, str] = {}
        self.registry: dict[str, bytes] = dict(registry or {})  # client id → public key
        self.guard = ReplayGuard()
        self.round_number = int(state.get("round", 0))
        # the clip of the next round: l2_clip, or where adaptive clipping has moved it (persisted with the round)
        self.clip = float(state.get("clip", config.l2_clip))
        self.trust = TrustState.from_dict(state["trust"]) if "trust" in state else TrustState(config.trust_params())
        # against the coordinator: per participation (q = 1); against third parties: amplified by selection
        self.participation = ParticipationAccountant.from_dict(state.get("participation", {}))
        self.amplified = PrivacyAccountant.from_dict(state.get("accountant", {}))
        d = self.spec.num_parameters()
        self.opt_state = OptimizerState.from_dict(state["optimizer"], d) if "optimizer" in state else OptimizerState()
        self.agg_state = PipelineState.from_dict(state["aggregation"]) if "aggregation" in state else PipelineState()
        if params is None:
            init = self.spec.init_parameters(config.seed)
            params = np.concatenate([np.asarray(init[n], np.float32) for n, _ in self.spec.parameter_shapes()])
        self.params = params.astype(np.float32)
        # the compact downlink: its error-feedback residual is engine state (coordinator/federation/downlink.py)
        self.downlink = Downlink.from_state(config.downlink, self.spec, state.get("downlink"))
        self.model_bytes = self._model_file()
        self.round: RoundState | None = None
        self.round_declined: dict[str, int] = {}  # client → the last round number whose task it declined
        self._stall_note = ""
        self.history: list[dict[str, Any]] = list(state.get("history", []))
        self.finished = self.round_number >= config.rounds
        self.stopped_reason = ""
        self._now = 0.0  # the latest event time seen (events carry the injected clock)

    # ── model files ──────────────────────────────────────────────────────────────────────────────────
    def params_dict(self) -> dict[str, np.ndarray]:
        out, pos = {}, 0
        for name, shape in self.spec.parameter_shapes():
            n = math.prod(shape)
            out[name] = self.params[pos: pos + n].reshape(shape)
            pos += n
        return out

    def _model_file(self) -> bytes:
        c = self.cfg
        meta = {"kind": "model", "round": self.round_number, "model": self.spec.to_dict(),
                "task": {"loss": self.spec.loss, "local_epochs": c.local_epochs, "batch_size": c.batch_size,
                         "lr": c.lr, "l2_clip": self.clip, "noise_multiplier": c.noise_multiplier,
                         "aggregator": c.aggregator, "group_size": c.group_size,
                         "server_optimizer": c.server_optimizer, "server_lr": c.server_step()}}
        return mle.dumps(self.params_dict(), meta, signing_key=self.seed)

    def state(self) -> dict[str, Any]:
        """Everything a restarted coordinator needs besides the model file."""
        return {"round": self.round_number, "clip": self.clip, "trust": self.trust.to_dict(),
                "accountant": self.amplified.to_dict(), "participation": self.participation.to_dict(),
                "optimizer": self.opt_state.to_dict(),
                "aggregation": self.agg_state.to_dict(), "history": self.history,
                **({"downlink": self.downlink.state()} if self.cfg.downlink != "full" else {})}

    def forget_identities(self, client_ids: list[str]) -> list[str]:
        """Forget identities that never took part (no trust observation, no participation) and are not connected –
        the store pruned them (issue 13 F14); one that comes back enrols again. Returns the ids forgotten."""
        out = []
        for cid in client_ids:
            t = self.trust.clients.get(cid)
            if cid in self.by_client or self.participation.count(cid) or (t is not None and (t.observations or t.banned)):
                continue
            self.registry.pop(cid, None)
            self.trust.clients.pop(cid, None)
            self.enrolled_at.pop(cid, None)
            out.append(cid)
        return out

    def epsilon(self) -> float:
        """ε against this coordinator: the largest per-client figure (per participated round, no amplification
        by subsampling the coordinator can see); ``inf`` without DP noise once any round has been released."""
        if self.cfg.noise_multiplier <= 0:
            return math.inf if self.round_number > 0 else 0.0
        return self.participation.max_epsilon(self.cfg.delta)

    def epsilon_third_party(self) -> float | None:
        """ε against third parties who see only the published models (not who was selected): the subsampled
        accountant over the trust-weighted selection bound q, or the per-participation figure if that is smaller
        (it holds against anyone). ``None`` without noise."""
        if self.cfg.noise_multiplier <= 0:
            return None
        amplified = float(epsilon_report(self.amplified.events, self.cfg.delta, continuous_gaussian=False)["reported"])
        return min(amplified, self.epsilon())

    # ── event handling ───────────────────────────────────────────────────────────────────────────────
    def handle(self, event: Any) -> list[Action]:
        self._now = max(self._now, float(getattr(event, "now", 0.0)))
        if isinstance(event, Connected):
            self.conns[event.conn] = Connection(event.conn, event.kind, connected_at=event.now,
                                                handshake_since=event.now)
            return self._arm_deadline(event.now + self.admission.hello_timeout if self.admission.hello_timeout
                                      else math.inf)
        if isinstance(event, Disconnected):
            return self._disconnected(event.conn, event.now)
        if isinstance(event, TimerFired):
            return self._timer(event.name, event.now)
        if isinstance(event, DataReceived):
            conn = self.conns.get(event.conn)
            if conn is None:
                return []
            try:
                return self._frame(conn, event.data, event.now)
            except ProtocolError as exc:
                conn.errors += 1
                out: list[Action] = [self._error(conn, exc.code, exc.message),
                                     Log("warning", f"rejected message on {conn.conn} ({conn.client_id}): {exc}")]
                if conn.errors >= MAX_ERRORS_PER_CONNECTION:
                    out.append(Close(conn.conn, f"{conn.errors} rejected messages"))
                return out
        raise TypeError(f"unknown event {event!r}")

    def _send(self, conn: Connection, msg_type: str, body: dict[str, Any], round_: int = -1,
              tensors: dict[str, Any] | None = None, recipient: str | None = None) -> Send:
        to = conn.client_id or "" if recipient is None else recipient
        env = Envelope(msg_type, COORDINATOR_ID, to, conn.challenge, conn.seq, round_, body)
        conn.seq += 1
        return Send(conn.conn, encode(env, self.seed, tensors))

    def _error(self, conn: Connection, code: str, message: str) -> Send:
        return self._send(conn, "error", {"code": code, "message": message[:500]})

    def _key_for(self, conn: Connection, env: Envelope) -> bytes | None:
        if env.type == "hello":
            try:
                pk = bytes.fromhex(str(env.body.get("public_key", "")))
            except ValueError:
                return None
            return pk if len(pk) == 32 and client_id_for(pk) == env.sender else None
        return conn.public_key if conn.client_id == env.sender else None

    def _frame(self, conn: Connection, data: bytes, now: float) -> list[Action]:
        env, f = decode(data, lambda e: self._key_for(conn, e), self.max_message_bytes)
        if env.recipient != COORDINATOR_ID:
            raise ProtocolError("misrouted", f"message addressed to {env.recipient!r}")
        if env.type == "hello":
            return self._hello(conn, env)
        if env.session != conn.challenge or conn.state == "hello":
            raise ProtocolError("replay", "message outside the authenticated session")
        self.guard.check(env.sender, env.session, env.seq)
        if env.type == "auth":
            return self._auth(conn, env, now)
        if conn.state not in ("authenticated", "ready", "busy"):
            raise ProtocolError("unexpected", f"{env.type} before authentication")
        if env.type == "ready":
            if self.finished:
                self._told_stop.add(conn.client_id or "")
                return [self._send(conn, "stop", {"reason": self.stopped_reason or "federation finished"})]
            if self.trust.ensure(conn.client_id or "").banned:
                return [self._send(conn, "stop", {"reason": "banned: trust below the ban threshold"}),
                        Close(conn.conn, "banned")]
            try:
                commitment = bytes.fromhex(env.body["commitment"])
            except ValueError:
                commitment = b""
            if len(commitment) != 32:
                raise ProtocolError("bad_message", "ready: the commitment must be 32 bytes of hex")
            held = env.body.get("model_sha256", "")
            if held and (len(held) != 64 or held.strip("0123456789abcdef")):
                raise ProtocolError("bad_message", "ready: model_sha256 must be 64 lowercase hex digits")
            if conn.state == "authenticated":
                conn.state, conn.commitment, conn.model_sha256 = "ready", commitment, held
                self._said_ready[conn.conn] = None
            return self._maybe_start(now)
        if env.type == "reveal":
            return self._reveal(conn, env, now)
        if env.type == "decline":
            return self._decline(conn, env, now)
        if env.type == "secagg":
            return self._secagg(conn, env, f, now)
        if env.type == "bye":
            return [Close(conn.conn, "client said bye")]
        raise ProtocolError("unexpected", f"unexpected {env.type} message")

    def _hello(self, conn: Connection, env: Envelope) -> list[Action]:
        # integers only: True == 1 in Python, and `versions: [true]` must not negotiate version 1 (issue 13 F20)
        versions = [v for v in env.body["versions"] if type(v) is int and v in PROTOCOL_VERSIONS]
        if not versions:  # addressed to the (signature-verified) sender: useless to replay to anyone else
            conn.errors += 1
            return [self._send(conn, "error", {"code": "version", "message": f"no common protocol version (we "
                                               f"speak {list(PROTOCOL_VERSIONS)})"}, recipient=env.sender),
                    Log("warning", f"rejected hello on {conn.conn}: no common protocol version")]
        pk = bytes.fromhex(env.body["public_key"])
        known = self.registry.get(env.sender)
        if known is not None and known != pk:
            raise ProtocolError("identity", "client id registered with another key")
        # a refused key still gets its challenge: a client that has not pinned our key yet (trust on first use)
        # could not verify an error before it; the refusal comes as the answer to its auth
        conn.refused = self._admit(pk, known is not None, env.body.get("enrolment_token"))
        if conn.client_id and conn.challenge:  # a second hello on this connection ends its previous session
            self.guard.forget(conn.client_id, conn.challenge)
        if conn.client_id and self.by_client.get(conn.client_id) == conn.conn:
            # ... and unbinds its identity: the old client is gone from this connection (a dropout if it was
            # selected), so nothing later looks it up on a connection that now belongs to another session or that
            # closes (a selected Sybil re-helloing with a fresh key stalled every later round, bench_load F4)
            del self.by_client[conn.client_id]
        rearm: list[Action] = []
        if conn.state in ("authenticated", "ready", "busy") and self.admission.hello_timeout > 0:
            conn.handshake_since = self._now  # a new handshake on an authenticated connection: its own deadline
            rearm = self._arm_deadline(self._now + self.admission.hello_timeout)
        conn.client_id, conn.public_key = env.sender, pk
        conn.challenge = self.crypto.random_bytes(32).hex()
        conn.state, conn.seq = "auth", 0
        return [self._send(conn, "challenge", {"challenge": conn.challenge, "version": max(versions),
                                               "coordinator_key": self.public_key.hex()}), *rearm]

    def _auth(self, conn: Connection, env: Envelope, now: float) -> list[Action]:
        if conn.state != "auth" or env.body["challenge"] != conn.challenge:
            raise ProtocolError("handshake", "wrong challenge")
        assert conn.client_id is not None and conn.public_key is not None
        if conn.client_id in self.trust.clients and self.trust.clients[conn.client_id].banned:
            raise ProtocolError("banned", "this client is banned (trust below the ban threshold)")
        if conn.refused is not None:  # nothing about the key is kept: error, then close
            code, message = conn.refused
            self.refusals[code] = self.refusals.get(code, 0) + 1
            return [self._error(conn, code, message), Close(conn.conn, f"enrolment refused: {code}")]
        old = self.by_client.get(conn.client_id)
        actions: list[Action] = []
        if old is not None and old != conn.conn:  # a reconnect replaces the previous connection
            actions.append(Close(old, "replaced by a new connection"))
            replaced = self.conns.pop(old, None)
            if replaced is not None and replaced.client_id:  # its session can never verify again (issue 13 F16)
                self.guard.forget(replaced.client_id, replaced.challenge)
        if conn.client_id not in self.registry:
            if self.admission.enrolment == "open" and not self.enrolment_bucket.take(now):
                self.refusals["enrolment_busy"] = self.refusals.get("enrolment_busy", 0) + 1
                return [*actions, self._error(conn, "enrolment_busy", ENROLMENT_BUSY),
                        Close(conn.conn, "enrolment refused: enrolment_busy")]
            actions.append(ClientEnrolled(conn.client_id, conn.public_key, conn.kind))
            if self.admission.probation > 0:
                self.enrolled_at[conn.client_id] = now
        self.by_client[conn.client_id] = conn.conn
        self.registry[conn.client_id] = conn.public_key
        self.trust.ensure(conn.client_id)
        conn.state, conn.idle_since = "authenticated", self._now
        actions.append(self._send(conn, "welcome", {"client_id": conn.client_id, "round": self.round_number}))
        actions.append(Log("info", f"client {conn.client_id[:8]} authenticated ({conn.kind})"))
        return actions + self._arm_idle(conn)

    # ── admission (coordinator/federation/admission.py) ──────────────────────────────────────────────
    def _admit(self, pk: bytes, known: bool, token: Any) -> tuple[str, str] | None:
        """None if the enrolment policy admits the key of this (signature-verified) hello; else the refusal
        (code ``enrolment``: final, the client should stop), sent as the answer to its ``auth``. Open enrolment's
        rate limit is applied when a new key authenticates (``enrolment_busy``: try again later)."""
        a = self.admission
        refused: tuple[str, str] | None = None
        if a.enrolment == "allowlist":
            if pk not in a.allowlist:
                refused = ("enrolment", "this coordinator admits only the keys on its allow-list (enrolment = "
                                        f"allowlist); ask its operator to add the public key {pk.hex()}")
        elif known:
            pass  # enrolled before (open, or with a token): no token needed again
        elif a.enrolment == "token":
            try:
                if not isinstance(token, str) or not token:
                    raise TokenError("enrolment needs a token (enrolment = token)")
                check_token(self.public_key, pk, token, self._now, self.crypto)
            except TokenError as exc:
                refused = ("enrolment", f"{exc}; ask the operator for one: fl-coordinator enrol-token "
                                        f"--client-key {pk.hex()}")
        return refused

    def _arm_deadline(self, at: float) -> list[Action]:
        """Make sure the "deadline" sweep runs by ``at``: one timer for every connection (the sweep re-arms itself
        no sooner than ``sweep_interval`` later, so a flood of connections costs one pass per interval)."""
        if not math.isfinite(at) or (self._deadline_at is not None and self._deadline_at <= at):
            return []
        self._deadline_at = at
        return [SetTimer("deadline", at)]

    def _arm_idle(self, conn: Connection) -> list[Action]:
        """``conn`` just became idle (authenticated, not ready): closed after ``ready_timeout`` unless it says
        ready (or is selected) before."""
        t = self.admission.ready_timeout
        return self._arm_deadline(conn.idle_since + t) if t > 0 else []

    def _sweep(self, now: float) -> list[Action]:
        """The "deadline" timer: close connections that did not finish hello → auth within ``hello_timeout``, and
        authenticated ones idle (not ready, not selected) longer than ``ready_timeout`` (issue 13 F12); re-arm
        for the next deadline. One log line per sweep, whatever the number of connections closed."""
        self._deadline_at = None
        a = self.admission
        out: list[Action] = []
        late, idle, nxt = 0, 0, math.inf
        for c in list(self.conns.values()):
            if c.state in ("hello", "auth") and a.hello_timeout > 0:
                due = c.handshake_since + a.hello_timeout
                if now >= due:
                    late += 1
                    out.append(Close(c.conn, f"no authentication within {a.hello_timeout:g} s"))
                    continue
                nxt = min(nxt, due)
            elif c.state == "authenticated" and a.ready_timeout > 0 and self._is_current(c):
                due = c.idle_since + a.ready_timeout
                if now >= due:
                    idle += 1
                    out += [self._error(c, "idle", f"not ready for {a.ready_timeout:g} s: closing the connection"),
                            Close(c.conn, f"idle (not ready) for {a.ready_timeout:g} s")]
                    continue
                nxt = min(nxt, due)
        if late or idle:
            self.refusals["hello_timeout"] = self.refusals.get("hello_timeout", 0) + late
            self.refusals["ready_timeout"] = self.refusals.get("ready_timeout", 0) + idle
            out.append(Log("info", f"closed {late} connection(s) that did not authenticate within "
                                   f"{a.hello_timeout:g} s and {idle} idle for {a.ready_timeout:g} s"))
        if math.isfinite(nxt):
            out += self._arm_deadline(max(nxt, now + a.sweep_interval))
        return out

    def _disconnected(self, conn_id: str, now: float) -> list[Action]:
        conn = self.conns.pop(conn_id, None)
        current = False
        if conn and conn.client_id:
            self.guard.forget(conn.client_id, conn.challenge)  # that session can never verify again anyway
            if self.by_client.get(conn.client_id) == conn_id:
                del self.by_client[conn.client_id]
                current = True
        if conn is None or conn.state in ("hello", "auth"):
            return []  # it never counted towards a round: nothing to re-check (no scan of every connection, F15)
        # a selected client that left is a dropout at once, not at the phase deadline (a closed tab must not stall
        # everyone); a round that was waiting for this (not yet ready) client under min_clients_per_round may
        # start now
        out = self._departed(conn.client_id or "", now) if current else []
        return out + self._maybe_start(now)

    def _departed(self, cid: str, now: float) -> list[Action]:
        """The connection of ``cid`` closed. If it is selected in the current attempt: before it revealed, the
        attempt is abandoned at once (a reveal can no longer come; it counts as a stall, since it cost everyone an
        attempt); after, its group stops waiting for it in every remaining phase."""
        rs = self.round
        if rs is None or cid not in rs.commitments:
            return []
        rs.departed.add(cid)
        if rs.stage == "reveal":
            if cid in rs.reveals:
                return []  # revealed: its group sees the dropout once secure aggregation starts
            return [*self._stalls(rs, [cid], "disconnected before revealing"),
                    *self._abort_attempt(rs, now, f"selected client {cid[:8]} disconnected before revealing")]
        return [Log("info", f"round {rs.number}: selected client {cid[:8]} disconnected: a dropout of group "
                            f"{rs.group_of.get(cid)} now, not at the phase deadline"), *self._drop_departed(rs, now)]

    def _drop_departed(self, rs: RoundState, now: float) -> list[Action]:
        """No group waits for a departed member in its current phase; closes the phase when nobody else is
        awaited."""
        for cid in rs.departed:
            g = rs.group_of.get(cid)
            if g is None or g in rs.failed:
                continue
            server = rs.servers[g]
            if server.phase in PHASE_ORDER and cid in server.expected:
                server.drop(cid)
                if server.phase_complete:
                    rs.pending.discard(g)
        if rs.stage == "secagg" and not rs.pending:
            return self._close_phase(now)
        return []

    # ── rounds ───────────────────────────────────────────────────────────────────────────────────────
    def ready_clients(self) -> list[str]:
        """The clients whose current connection said ready (sorted); stale entries are dropped on the way."""
        out = []
        for cid in list(self._said_ready):
            c = self.conns.get(cid)
            if c is None or c.state != "ready":
                del self._said_ready[cid]
            elif self._is_current(c):
                out.append(c.client_id)
        return sorted(out)

    def _maybe_start(self, now: float) -> list[Action]:
        if self.round is not None or self.finished:
            return []
        ready, stop = self._eligible(self.trust.selectable(self.ready_clients()))
        if stop:
            self.finished, self.stopped_reason = True, stop
            return [Log("warning", stop), *self._stop_all()]
        ready, waiting = self._probation(ready, now)
        m = self.cfg.clients_per_round
        if len(ready) < m:
            held = [c for c in self.ready_clients() if self.conns[self.by_client[c]].declined]
            note = (f"{len(ready)} eligible client(s) < {m} per round; {len(held)} ready client(s) declined tasks on "
                    "their connection and are not selected again until they reconnect") if held else ""
            out: list[Action] = []
            if note and note != self._stall_note:
                self._stall_note = note
                out.append(Log("warning", note))
            out += self._maybe_start_short(ready, m, now)
            if waiting and self.round is None:  # re-check when the first of them leaves its probation
                starts = [a.at for a in out if isinstance(a, SetTimer) and a.name == "start"]
                out = [a for a in out if not (isinstance(a, SetTimer) and a.name == "start")]
                out.append(SetTimer("start", min([*starts, min(waiting)])))
            return out
        return self._start(ready, m, now)

    def _probation(self, ready: list[str], now: float) -> tuple[list[str], list[float]]:
        """The clients of ``ready`` past their probation – identities this process enrolled less than
        ``probation`` seconds ago are not selected yet (issue 13 F4: a burst of fresh identities cannot capture the
        next round) – and when the others' probation ends."""
        p = self.admission.probation
        if p <= 0 or not self.enrolled_at:
            return ready, []
        ends = {c: self.enrolled_at[c] + p for c in ready if c in self.enrolled_at}
        for c, t in ends.items():
            if t <= now:  # past it for good
                del self.enrolled_at[c]
        return [c for c in ready if ends.get(c, now) <= now], [t for t in ends.values() if t > now]

    def _maybe_start_short(self, ready: list[str], m: int, now: float) -> list[Action]:
        """Fewer than m eligible clients: start only with ≥ min_clients and when nobody else connected could
        still become ready – a connected client is waited for during ``phase_timeout`` after it last became idle
        (its handshake or its last round), not forever: one client that authenticates and never says ``ready``
        must not stop every round (issue 13 F3). A "start" timer re-checks when that grace ends."""
        k, note = self.short_round_size(ready)
        if not k:  # nothing could start now, whoever else becomes ready: no scan of every connection
            return []  # (a client saying ready, a round end or a probation timer asks again)
        grace = self.cfg.phase_timeout
        pending = [c for c in self.conns.values() if c.state == "authenticated" and self._is_current(c)
                   and not self.trust.ensure(c.client_id or "").banned and now - c.idle_since < grace]
        if pending:
            return [SetTimer("start", min(c.idle_since for c in pending) + grace)]
        return [*([Log("warning", note)] if note else []), *self._start(ready, k, now)]

    def short_round_size(self, ready: list[str]) -> tuple[int, str]:
        """How many of ``ready`` (fewer than clients_per_round) a short round starts with – 0 if none may start –
        and a warning to log ("" if none): all of them when they are ≥ min_clients_per_round. Bans must never stall
        the federation for good: banned clients no longer count towards the minimum, so a federation with full
        participation carries on with the clients left – as long as they still form at least one group of s and
        the robust rule's precondition holds for their groups. Public for in-process drivers
        (``simulations.direct``); the engine asks it once no connected client is still expected to say ready."""
        if not ready:
            return 0, ""
        if len(ready) >= self.cfg.min_clients:
            return len(ready), ""
        if len(ready) < self.cfg.group_size:  # not even one group: no need to count the bans (O(identities))
            return 0, ""
        banned = sum(1 for c in self.registry if self.trust.ensure(c).banned)
        if banned and len(ready) >= max(self.cfg.group_size, self.cfg.min_clients - banned):
            g = max(1, len(ready) // self.cfg.group_size)
            if self._aggregable(g, min(self.cfg.byzantine, g)):
                return len(ready), (f"{banned} banned client(s): round with the {len(ready)} clients left "
                                    f"(min_clients_per_round {self.cfg.min_clients})")
        return 0, ""

    def _start(self, ready: list[str], m: int, now: float) -> list[Action]:
        """Select m of the eligible ready clients and send them the signed selection."""
        r = self.round_number + 1
        q = self.trust.max_inclusion_probability(ready, m)
        selected = self.trust.select(ready, m, self.rng)
        rs = self.new_round(r, selected, {c: self.conns[self.by_client[c]].commitment for c in selected}, q, now)
        self.round = rs
        body = {"round": r, "attempt": rs.attempt, "group_size": self.cfg.group_size,
                "members": {c: self.registry[c].hex() for c in selected},
                "commitments": {c: v.hex() for c, v in rs.commitments.items()}}
        actions: list[Action] = []
        for c in selected:
            conn = self.conns[self.by_client[c]]
            conn.state, conn.commitment = "busy", b""  # each commitment opens once
            actions.append(self._send(conn, "select", body, r))
        actions.append(SetTimer("phase", rs.deadline))
        actions.append(Log("info", f"round {r}: {len(selected)} clients selected (attempt {rs.attempt[:8]})"))
        return actions

    def new_round(self, r: int, selected: list[str], commitments: dict[str, bytes], q: float, now: float
                  ) -> RoundState:
        """The state of a new round attempt over ``selected`` (waiting for their reveals)."""
        wait = self.cfg.phase_timeout
        if self.admission.reveal_timeout > 0:
            wait = min(wait, self.admission.reveal_timeout)
        rs = RoundState(r, b"", [], {}, {}, now + wait, q, now, stage="reveal",
                        attempt=self._attempt_id(), selected=list(selected), commitments=dict(commitments))
        keys = {c: self.registry[c] for c in selected}
        rs.selection = assignment.selection_hash(r, rs.attempt, self.cfg.group_size, keys, rs.commitments)
        return rs

    def _eligible(self, ready: list[str]) -> tuple[list[str], str]:
        """The ready clients this round may select: not declined on this connection, and (with DP noise) whose
        own ε against the coordinator stays within the budget after one more participation. Also returns a
        reason to stop the federation ("" if none): δ ≥ 1/N, or too few registered clients with budget left."""
        return self.within_budget([c for c in ready if not self.conns[self.by_client[c]].declined])

    def within_budget(self, out: list[str]) -> tuple[list[str], str]:
        """The clients of ``out`` whose ε stays within budget after one more round, and a reason to stop ("")."""
        if self.cfg.noise_multiplier <= 0:
            return out, ""
        n = max(len(self.registry), 1)
        if self.cfg.delta * n >= 1:
            return [], f"δ = {self.cfg.delta:g} is not below 1/N for N = {n} clients: the guarantee would be void"
        z = self.cfg.dp_config().effective_noise_multiplier()  # a group of s
        budget, delta = self.cfg.epsilon, self.cfg.delta
        ok = [c for c in out if self.participation.epsilon_after(c, z, delta) <= budget]
        if len(ok) == len(out):
            return ok, ""
        # a ready client is held back by its budget: stop once the registered clients that still have budget
        # could never make a round (clients that have not enrolled yet are not counted on)
        left = sum(1 for c in self.registry if self.participation.epsilon_after(c, z, delta) <= budget)
        if left < self.cfg.min_clients:
            return ok, (f"privacy budget exhausted: only {left} registered client(s) can take part once more "
                        f"within ε = {budget:g} (δ = {delta:g}), {self.cfg.min_clients} needed")
        return ok, ""

    def _attempt_id(self) -> str:
        """A fresh id for a round attempt (from the engine's injected generator: reproducible in simulations)."""
        return bytes(self.rng.integers(0, 256, 16, dtype=np.uint8)).hex()

    def assign(self, rs: RoundState) -> None:
        """Seed, partition and per-group SecAgg+/DP configuration of a round whose reveals are all in."""
        rs.seed = assignment.round_seed(rs.selection, rs.reveals)
        rs.groups = partition(rs.selected, self.cfg.group_size, rs.seed)
        keys = {c: self.registry[c] for c in rs.selected}
        rot = rotation_seed(rs.seed, self.crypto) if self.cfg.rotation else None
        for g, members in enumerate(rs.groups):
            n = len(members)
            t = self.cfg.threshold(n)
            dp = self.cfg.dp_config(t, self.clip, members=n, rotation_seed=rot)
            binding = assignment.group_binding(rs.seed, rs.selection, g, members, keys, n - 1, t, asdict(dp))
            gc = GroupConfig(rs.number, g, tuple(members), {m: keys[m] for m in members}, dp.field_length,
                             dp.modulus_bits, rs.seed, n - 1, t, binding)
            rs.servers[g] = SecAggServer(gc, self.backend, self.crypto)
            rs.dp[g] = dp
            for m in members:
                rs.group_of[m] = g

    def _reveal(self, conn: Connection, env: Envelope, now: float) -> list[Action]:
        rs, b = self.round, env.body
        cid = conn.client_id or ""
        if rs is None or rs.stage != "reveal" or b["round"] != rs.number or b["attempt"] != rs.attempt:
            raise ProtocolError("stale", "no selection of that round attempt is waiting for reveals")
        if cid not in rs.commitments or cid in rs.reveals:
            raise ProtocolError("not_selected", "not selected in this attempt, or already revealed")
        try:
            secret = bytes.fromhex(b["secret"])
            assignment.check_reveals({cid: rs.commitments[cid]}, {cid: secret})
        except ValueError:
            raise ProtocolError("bad_reveal", "the reveal does not open the commitment") from None
        rs.reveals[cid] = secret
        if len(rs.reveals) < len(rs.selected):
            return []
        return self._start_secagg(rs, now)

    def _start_secagg(self, rs: RoundState, now: float) -> list[Action]:
        self.assign(rs)
        rs.stage = "secagg"
        r = rs.number
        model_sha = hashlib.sha256(mle.loads(self.model_bytes).body).hexdigest()
        reveals = {c: v.hex() for c, v in rs.reveals.items()}
        actions: list[Action] = [RoundStarted(r, rs.seed.hex())]
        for g, members in enumerate(rs.groups):
            gc = rs.servers[g].cfg
            config = {"group": g, "members": members, "attempt": rs.attempt, "reveals": reveals,
                      "identity_keys": {k: v.hex() for k, v in gc.identity_keys.items()},
                      "public_seed": rs.seed.hex(), "model_sha256": model_sha, "degree": gc.k, "threshold": gc.t,
                      "dp": asdict(rs.dp[g]),
                      "train": {"epochs": self.cfg.local_epochs, "batch_size": self.cfg.batch_size,
                                "lr": self.cfg.lr}}
            if self.cfg.downlink != "full":  # clients that see it announce the model they hold in their ready
                config["downlink"] = self.cfg.downlink
            for m in members:
                conn_id = self.by_client.get(m)
                if conn_id is not None:
                    conn = self.conns[conn_id]
                    # the full signed model, or the deltas from the one the client holds (or none: it has it)
                    model = self.downlink.payload(conn.model_sha256, self.model_bytes, model_sha)
                    actions.append(self._send(conn, "task", {"config": config}, r, model))
                else:
                    rs.departed.add(m)  # its connection is gone: it cannot take part
        rs.pending = set(rs.servers)
        rs.deadline = now + self.cfg.train_timeout
        actions.append(SetTimer("phase", rs.deadline))
        actions.append(Log("info", f"round {r}: {len(rs.selected)} clients in {len(rs.groups)} groups"))
        return actions + (self._drop_departed(rs, now) if rs.departed else [])

    def _abort_attempt(self, rs: RoundState, now: float, reason: str) -> list[Action]:
        """A selection whose reveals did not all arrive: abandoned as a whole (never a subset of reveals, which
        would let the coordinator choose the seed); the clients get round_end "failed" and commit afresh."""
        self.round = None
        return [*self._round_end(rs.selected, rs.number, "failed"),
                Log("warning", f"round {rs.number} attempt {rs.attempt[:8]} abandoned: {reason}"),
                *self._maybe_start(now)]

    def _decline(self, conn: Connection, env: Envelope, now: float) -> list[Action]:
        """The client's policy or budget refused its task: it is not selected again on this connection. Before
        the reveals the attempt is abandoned at once; during SecAgg+ its group sees a dropout."""
        rs, cid = self.round, conn.client_id or ""
        code, msg = str(env.body["code"])[:64], str(env.body["message"])[:300]
        if code == "bad_model" and conn.model_sha256:
            # the deltas from the model it announced did not rebuild the signed model on its side: it dropped that
            # model and gets the full one next time (its next ready announces none); nothing against its policy
            conn.model_sha256 = ""
        else:
            conn.declined = f"{code}: {msg}"
        self.round_declined[cid] = int(env.body["round"])
        out: list[Action] = [Log("warning", f"client {cid[:8]} declined round {env.body['round']}: {code}: {msg}")]
        if rs is None or env.body["round"] != rs.number or cid not in rs.commitments:
            return out
        if rs.stage == "reveal":
            return out + self._abort_attempt(rs, now, f"client {cid[:8]} declined ({code})")
        g = rs.group_of.get(cid)
        if g is not None and g not in rs.failed:
            rs.servers[g].drop(cid)
            server = rs.servers[g]
            if server.phase_complete:
                rs.pending.discard(g)
            if not rs.pending:
                return out + self._close_phase(now)
        return out

    def _secagg(self, conn: Connection, env: Envelope, f: mle.MleFile, now: float) -> list[Action]:
        rs = self.round
        if rs is None or env.round != rs.number or rs.stage != "secagg":
            raise ProtocolError("stale", f"no round {env.round} in secure aggregation")
        cid = conn.client_id
        g = rs.group_of.get(cid or "")
        if g is None or env.body["group"] != g:
            raise ProtocolError("not_selected", "this client is not in that group this round")
        if g in rs.failed:
            raise ProtocolError("group_failed", rs.failed[g])
        try:
            rs.servers[g].receive(tensor_bytes(f, "secagg"))
        except SecAggError as exc:
            raise ProtocolError("secagg", str(exc)) from None
        server = rs.servers[g]
        if server.phase_complete or server.phase in ("done", "failed"):  # O(group) per message, not O(m)
            rs.pending.discard(g)
        if not rs.pending:
            return self._close_phase(now)
        return []

    def health(self) -> dict[str, Any]:
        """The liveness figures of ``/health``, in O(1)."""
        return {"round": self.round_number, "finished": self.finished}

    def status(self) -> dict[str, Any]:
        """A JSON-ready summary for the status endpoint: rounds, clients, privacy spent, trust."""
        connected = {c.client_id: c for c in self.conns.values() if self._is_current(c)}
        clients = []
        for cid in sorted(set(self.registry) | set(self.trust.clients)):
            t = self.trust.ensure(cid)
            conn = connected.get(cid)
            clients.append({"id": cid, "trust": t.trust, "banned": t.banned, "observations": t.observations,
                            "connected": conn is not None, "kind": conn.kind if conn else None,
                            "state": conn.state if conn else "offline",
                            "participations": self.participation.count(cid),
                            "epsilon": _finite(self.participation.epsilon_of(cid, self.cfg.delta))
                            if self.cfg.noise_multiplier > 0 else None,
                            "declined": conn.declined if conn else ""})
        rs = self.round
        return {
            "round": self.round_number, "rounds": self.cfg.rounds, "finished": self.finished,
            "stopped_reason": self.stopped_reason,
            "round_in_progress": None if rs is None else {
                "round": rs.number, "stage": rs.stage, "groups": len(rs.groups), "failed_groups": len(rs.failed),
                "phases": sorted({s.phase for s in rs.servers.values()})},
            "clients_per_round": self.cfg.clients_per_round, "min_clients_per_round": self.cfg.min_clients,
            "group_size": self.cfg.group_size,
            "aggregator": self.cfg.aggregator,
            "privacy": self.privacy_status(),
            "clients": clients, "connected": len(connected),
            "ready": len(self.ready_clients()),
            "coordinator_key": self.public_key.hex(),
            "metrics": self.history[-1] if self.history else None,
        }

    def privacy_status(self) -> dict[str, Any]:
        """Federation-level privacy figures (public). ``epsilon`` is the figure against this coordinator (the
        largest per-client ε, per participated round, no amplification); ``null`` with ``private: false`` when
        no noise is added – never 0, which would read as perfect privacy."""
        private = self.cfg.noise_multiplier > 0
        n = len(self.registry)
        eps = _finite(self.epsilon()) if private else None
        return {"private": private, "epsilon": eps, "epsilon_vs_coordinator": eps,
                "epsilon_third_party": _finite(self.epsilon_third_party()) if private else None,
                "accounting": "per participation, RDP of the distributed discrete Gaussian (Kairouz et al. 2021); "
                              "third party: subsampled RDP, reported only because the selection is not published",
                "max_participations": self.participation.max_participations(),
                "delta": self.cfg.delta, "population": n, "delta_below_one_over_n": self.cfg.delta * max(n, 1) < 1,
                "epsilon_budget": self.cfg.epsilon if math.isfinite(self.cfg.epsilon) else None,
                "noise_multiplier": self.cfg.noise_multiplier, "l2_clip": self.clip,
                "adaptive_clip_quantile": self.cfg.adaptive_clip_quantile or None,
                "group_size": self.cfg.group_size, "threshold_rule": self.cfg.threshold_rule,
                "colluders": self.cfg.colluders}

    def _timer(self, name: str, now: float) -> list[Action]:
        if name == "deadline":
            return self._sweep(now)
        if name == "start":
            return self._maybe_start(now)
        if name == "phase" and self.round is not None and now >= self.round.deadline:
            rs = self.round
            if rs.stage == "reveal":
                missing = [c for c in rs.selected if c not in rs.reveals]
                return [*self._stalls(rs, missing, "did not reveal"),
                        *self._abort_attempt(rs, now, f"{len(missing)} selected client(s) did not reveal")]
            # whoever a SecAgg+ phase still waits for at its deadline stalled it (a decline drops the client first)
            late = sorted({m for g, sv in rs.servers.items() if g not in rs.failed and sv.phase in PHASE_ORDER
                           for m in sv.expected - set(sv.received[sv.phase])})
            return [*self._stalls(rs, late, "did not answer a secure-aggregation phase in time"),
                    *self._close_phase(now)]
        return []

    def _stalls(self, rs: RoundState, clients: list[str], what: str) -> list[Action]:
        """Selected clients that missed a deadline: negative trust evidence (``stall_evidence``, weaker than a
        proven deviation) and a ban after ``stall_ban`` consecutive stalled selections (issue 13 F4), so silent
        clients stop being selected and rounds proceed. Counted once per client per attempt."""
        a = self.admission
        fresh = [c for c in clients if c not in rs.stalled]
        rs.stalled.update(fresh)
        if not fresh or (a.stall_evidence <= 0 and a.stall_ban <= 0):
            return []
        banned = [c for c in fresh if not self.trust.ensure(c).banned
                  and self.trust.observe_stall(c, a.stall_evidence, a.stall_ban)]
        out: list[Action] = [Log("warning", f"round {rs.number}: {len(fresh)} selected client(s) {what}: "
                                            "stall evidence against them")]
        if banned:
            out.append(Log("warning", f"round {rs.number}: banned {len(banned)} stalling client(s) ({a.stall_ban} "
                                      "consecutive stalls, or trust below the ban threshold): "
                                      f"{', '.join(c[:8] for c in banned[:20])}"))
        return out

    def _close_phase(self, now: float) -> list[Action]:
        rs = self.round
        assert rs is not None
        actions: list[Action] = []
        sends: list[Action] = []
        releasing: list[int] = []
        for g, server in rs.servers.items():
            if g in rs.failed or server.phase == "done":
                continue
            try:
                out = server.close_phase()
            except ThresholdError as exc:
                rs.failed[g] = str(exc)
                out = server.failure_messages
                actions.append(Log("warning", f"round {rs.number} group {g} failed: {exc}"))
            if server.phase == "unmask" and g not in rs.released:
                releasing.append(g)  # the unmask requests let the coordinator reconstruct the group's sum
            for member, blob in out.items():
                conn_id = self.by_client.get(member)
                if conn_id is not None:
                    sends.append(self._send(self.conns[conn_id], "secagg", {"group": g}, rs.number,
                                            {"secagg": as_u8(blob)}))
        if releasing:  # the spend is durable before anything that releases a sum is sent (issue 13 F5)
            actions.append(self._release(rs, releasing))
        actions += sends
        if all(s.phase == "done" or g in rs.failed for g, s in rs.servers.items()):
            return actions + self._finish_round(now)
        rs.deadline = now + self.cfg.phase_timeout
        rs.pending = {g for g, s in rs.servers.items()
                      if g not in rs.failed and s.phase not in ("done", "failed") and not s.phase_complete}
        actions.append(SetTimer("phase", rs.deadline))
        return actions + (self._drop_departed(rs, now) if rs.departed else [])

    def _release(self, rs: RoundState, groups: list[int]) -> PersistLedger:
        """Charge the privacy spend of ``groups``, whose sums the coordinator can reconstruct once their unmask
        requests are out: each survivor (whose masked input is in the sum) one event at the group's effective z,
        and the round one third-party event – charged here, not when the round aggregates, so that the ledger is
        durable before the release and a crash in between loses nothing. A group that then fails to unmask stays
        charged (the conservative side; the members' own ledgers count it too)."""
        rs.released.update(groups)
        if self.cfg.noise_multiplier > 0:
            zs = []
            for g in groups:
                z = rs.dp[g].effective_noise_multiplier()
                self.participation.record(list(rs.servers[g].u3), z)
                zs.append(z)
            if not rs.charged_round:
                self.amplified.events.append(RoundEvent(min(zs), max(rs.q, 1e-9)))
                rs.charged_round = True
        return PersistLedger(rs.number, {"participation": self.participation.to_dict(),
                                         "accountant": self.amplified.to_dict()})

    def _finish_round(self, now: float) -> list[Action]:
        rs = self.round
        assert rs is not None
        return self.complete_round({g: s.result for g, s in rs.servers.items()}, now)

    def complete_round(self, results: Mapping[int, GroupResult | None], now: float) -> list[Action]:
        """Finish the current round from its groups' SecAgg+ outputs (``None``: the group failed): decode,
        the honest-norm bound, robust aggregation, DP accounting, adaptive clipping, optimizer, trust evidence,
        evaluation and the next model file – or a failed attempt retried with the same round number.

        Public for in-process drivers that compute the group sums themselves (``simulations.direct``: the plain
        modular sums SecAgg+ releases when nobody drops out); the SecAgg+ servers call it through
        ``_finish_round`` when every group is done or failed."""
        rs = self.round
        if rs is None:
            raise RuntimeError("no round in progress")
        if set(results) - set(range(len(rs.groups))):
            raise ValueError(f"results for unknown groups {sorted(set(results) - set(range(len(rs.groups))))}")
        self.round = None
        done = [(g, res) for g, res in sorted(results.items()) if res is not None]
        participants = [m for grp in rs.groups for m in grp]
        if not done:
            return [*self._round_end(participants, rs.number, "failed"),
                    Log("warning", f"round {rs.number}: every group failed; retrying"), *self._maybe_start(now)]
        dps = [rs.dp[g] for g, _ in done]
        dp = dps[0]  # decoding (clip, bits → grid scale) is the same for every group; the noise share is not
        audit: list[Action] = [GroupAggregated(rs.number, g, tuple(res.survivors), tuple(res.dropped),
                                               tuple(res.faulty), res.sum, rs.dp[g].modulus_bits) for g, res in done]
        decoded = [np.asarray(decode_sum(res.sum, d, self.backend), dtype=np.float64)  # each group its modulus
                   for d, (_, res) in zip(dps, done, strict=True)]
        # with adaptive clipping the last coordinate is each group's indicator sum Σ κ(b_i − ½) + noise
        indicator = np.array([v[dp.dimension:].sum() for v in decoded])
        sums = np.stack([v[:dp.dimension] for v in decoded]).astype(np.float32)
        sizes = np.array([len(res.survivors) for _, res in done], dtype=np.float64)
        scale = dp.fixed_point().scale()
        noise_var = np.array([noise_variance_of_mean(len(res.survivors), d.sigma_client() if d.noise_multiplier > 0
                                                     else 0.0, scale) for d, (_, res) in zip(dps, done, strict=True)])
        # Honest members clip to C, so a group mean longer than C plus the quantization/noise allowance proves
        # that some member did not: clip it back (before aggregation) and count it as full negative evidence.
        # The noise allowance is the noise *measured* in the released sum (never more than prescribed), and a sum
        # whose noise is provably below what its members were told to add proves a member omitted its share
        # (docs/trust.md): both are excluded like a group over the bound.
        means = sums / sizes[:, None]
        measured = measured_noise_variance(means)
        resolution = 1.0 / (sizes * scale)
        dp_var = np.array([(d.sigma_client() ** 2 if d.noise_multiplier > 0 else 0.0) / (n * scale**2)
                           for d, n in zip(dps, sizes, strict=True)])
        bounds = np.array([mean_norm_bound(dp.l2_clip, dp.dimension, scale, v)
                           for v in bound_noise_variance(noise_var, means, resolution, measured=measured)])
        norms = np.linalg.norm(means, axis=1)
        deficient = noise_deficient(dp_var, means, resolution, measured=measured)
        # units closer to each other than independent noise allows: Sybils/free-riders sending one update
        # (against the noise measured in each unit, never more than prescribed: a unit whose members omitted their
        # shares must not make its honest neighbours look "too close" to it)
        duplicate = duplicate_units(means, effective_noise_variance(dp_var, means, measured=measured),
                                    0.25 / (sizes * scale**2))
        over = ~(norms <= bounds) | deficient | duplicate
        keep = ~over
        # excluded groups are proven corrupted, so at most f_groups − excluded corrupted groups remain
        f_left = max(0, min(self.cfg.byzantine, len(done)) - int(over.sum()))
        if over.any():
            audit.append(Log("warning", f"round {rs.number}: group(s) {[done[i][0] for i in np.flatnonzero(over)]} "
                                        "exceed the honest norm bound, lack the prescribed noise or duplicate another; "
                                        "excluded and counted against their members"))
            if not self._aggregable(int(keep.sum()), f_left):  # too few left for the rule: clip them back instead
                # never scale a noise-deficient group that is within the bound *up*
                factor = np.where(over & np.isfinite(norms),
                                  np.minimum(1.0, bounds / np.where(norms > 0, norms, 1.0)), 0.0)
                sums = (sums * np.where(over, factor, 1.0)[:, None]).astype(np.float32)
                keep = np.ones(len(done), bool)
                f_left = min(self.cfg.byzantine, len(done))
        if not self._aggregable(int(keep.sum()), f_left):
            # dropouts left too few groups for the robust rule's precondition: no update this round (the
            # released group sums still cost privacy), the same round number is tried again
            self._account(rs, done, dps)
            return [*audit, *self._round_end(participants, rs.number, "failed"),
                    Log("warning", f"round {rs.number}: only {int(keep.sum())} group(s) left, too few for "
                                   f"{self.cfg.aggregator!r} with f={f_left}; no update, retrying"),
                    *self._maybe_start(now)]
        result, self.agg_state = aggregate_groups(self.pipeline, sums[keep], sizes[keep], self.cfg.byzantine,
                                                  f_groups=min(f_left, int(keep.sum())), state=self.agg_state,
                                                  rng=self.rng)
        self._account(rs, done, dps)
        clip_used = self.clip
        unclipped = self._adapt_clip(indicator, dps, sizes, ~over, min(f_left, int((~over).sum())))
        self.params, self.opt_state = apply_update(self.optimizer, self.params, result.value.astype(np.float32),
                                                   self.opt_state)
        # int8-delta downlink: the model moves on the int8 grid of this step (error feedback); evaluated, signed
        # and sent as it is
        self.params = self.downlink.snap(self.model_bytes, self.params)
        self.round_number = rs.number
        units = [list(res.survivors) for _, res in done]
        final = sums / sizes[:, None]
        eff_var = effective_noise_variance(noise_var, final)
        scores = debiased_outlier_scores(final, eff_var) if len(done) > 1 else np.ones(1)
        scores[over] = np.inf
        # coordinated stealthy attacks: each kept unit's deviation along the round's dominant direction, accumulated
        # per client across rounds of fresh groups (docs/trust.md (g)); excluded units are left out of it
        kept_means = np.where(over[:, None], np.nan, final)
        deviations = deviation_evidence(kept_means, eff_var, sizes)
        # units that point against the round's aggregate, accumulated per client (docs/trust.md (i))
        alignments = alignment_evidence(kept_means, result.value)
        self.trust.observe_units(units, scores, deviations, alignments)
        for c in {m for u in units for m in u} - rs.stalled:  # a completed participation ends a run of stalls
            self.trust.clear_stalls(c)
        for _, res in done:  # a holder whose share contradicted the owner's commitment: direct evidence
            for c in res.faulty:
                self.trust.observe(c, 0.0, 1.0)
        metrics: dict[str, Any] = {"round": rs.number, "groups": len(rs.groups), "groups_ok": len(done),
                                   "survivors": int(sizes.sum()), "groups_over_bound": int(over.sum()),
                                   "groups_noise_deficient": int(deficient.sum()),
                                   "groups_duplicate": int(duplicate.sum()), "clip": clip_used,
                                   "unclipped_fraction": unclipped,
                                   "epsilon": _finite(self.epsilon()) if self.cfg.noise_multiplier > 0 else None,
                                   "duration": now - rs.started_at, "time": now}
        if self.evaluator is not None:  # a diverged model may evaluate to NaN/inf: kept as None (JSON, SQLite)
            metrics.update({k: (float(v) if math.isfinite(v) else None)
                            for k, v in self.evaluator(self.params_dict()).items()})
        self.history.append(metrics)
        self.model_bytes = self._model_file()
        self.downlink.commit(self.model_bytes, self.seed)
        if self.round_number >= self.cfg.rounds:
            self.finished, self.stopped_reason = True, f"all {self.cfg.rounds} rounds done"
            self._last_participants = set(participants)
        actions: list[Action] = [*audit, PersistRound(rs.number, self.model_bytes, self.state())]
        actions += self._round_end(participants, rs.number, "ok")
        actions.append(Log("info", f"round {rs.number} done: " + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items() if k != "time")))
        if self.finished:
            return actions + self._stop_all()
        return actions + self._maybe_start(now)

    def _is_current(self, c: Connection) -> bool:
        """``c`` is its client's live connection (authenticated, not replaced by a reconnect)."""
        return bool(c.client_id) and self.by_client.get(c.client_id or "") == c.conn

    def _account(self, rs: RoundState, done: list[tuple[int, Any]], dps: list[Any]) -> None:
        """Every released group sum costs its survivors one Gaussian event against the coordinator (the group's
        effective z: its noise shares are calibrated for its threshold, and the sum holds ≥ t of them); the
        round costs everyone one subsampled event in the third-party figure."""
        if self.cfg.noise_multiplier <= 0:
            return
        zs = [d.effective_noise_multiplier() for d in dps]
        for z, (g, res) in zip(zs, done, strict=True):
            if g not in rs.released:  # groups released through SecAgg+ were charged before their unmask (_release)
                self.participation.record(list(res.survivors), z)
        if not rs.charged_round:
            self.amplified.events.append(RoundEvent(min(zs), max(rs.q, 1e-9)))
            rs.charged_round = True

    def _adapt_clip(self, indicator: np.ndarray, dps: list[Any], sizes: np.ndarray, used: np.ndarray,
                    trim: int) -> float | None:
        """Adaptive clipping's geometric step (Andrew, Thakkar, McMahan & Ramaswamy, NeurIPS'21, Algorithm 1) on
        group counts: each used group's count of unclipped members from its released indicator sum, clamped to
        [0, n_g] (:func:`privacy.client_pipeline.unclipped_count`); b̃ = the trimmed mean of the groups' fractions
        count_g/n_g, ``trim`` groups cut from each end (the corrupted groups the rule is run for, so a tolerated
        number of corrupted groups cannot drag b̃ beyond the honest groups' range), then C ← C·exp(−η(b̃ − γ)),
        kept within [l2_clip/10⁴, l2_clip]: the configured clip is the ceiling, adaptive clipping only tightens.
        Returns b̃ (``None`` without adaptive clipping or without a usable group)."""
        use = np.flatnonzero(used)
        if not self.cfg.adaptive_clip or not use.size:
            return None
        fractions = sorted(unclipped_count(indicator[i], dps[i], int(sizes[i])) / float(sizes[i]) for i in use)
        k = max(0, min(trim, (len(fractions) - 1) // 2))
        kept = fractions[k:len(fractions) - k]
        frac = math.fsum(kept) / len(kept)
        step = math.exp(-self.cfg.adaptive_clip_lr * (frac - self.cfg.adaptive_clip_quantile))
        self.clip = min(self.cfg.l2_clip, max(self.cfg.l2_clip * 1e-4, self.clip * step))
        return frac

    def _stop_all(self) -> list[Action]:
        """Tell every authenticated client the federation is over."""
        told = [c for c in self.conns.values() if c.state in ("authenticated", "ready", "busy") and self._is_current(c)]
        self._told_stop.update(c.client_id or "" for c in told)
        return [self._send(c, "stop", {"reason": self.stopped_reason}) for c in told]

    def awaiting_stop(self) -> set[str]:
        """Once finished: the participants of the last round not yet told that the federation is over (their
        connection was gone at the end; they reconnect and get ``stop`` on ``ready``). Empty while running."""
        return self._last_participants - self._told_stop if self.finished else set()

    def _aggregable(self, groups: int, f_groups: int) -> bool:
        """Whether the robust rule can run over ``groups`` group means with ``f_groups`` corrupted."""
        if groups < 1:
            return False
        try:
            parse_pipeline(self.cfg.aggregator, n=groups, f=min(f_groups, groups))
        except ValueError:
            return False
        return True

    def _round_end(self, participants: list[str], number: int, status: str) -> list[Action]:
        out: list[Action] = []
        for m in participants:
            conn_id = self.by_client.get(m)
            if conn_id is not None:
                conn = self.conns[conn_id]
                conn.state, conn.idle_since = "authenticated", self._now
                # a client that declined this round's task is told so, not that its round went "ok"
                st = "declined" if self.round_declined.get(m) == number else status
                out.append(self._send(conn, "round_end", {"round": number, "status": st}, number))
                if self.trust.ensure(m).banned:
                    out.append(self._send(conn, "stop", {"reason": "banned: trust below the ban threshold"}))
                    out.append(Log("warning", f"client {m[:8]} banned (trust {self.trust.trust(m):.3f})"))
        if out and self.admission.ready_timeout > 0:  # they are idle now, until their next ready
            out += self._arm_deadline(self._now + self.admission.ready_timeout)
        return out
