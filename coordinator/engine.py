"""The coordinator engine: a sans-I/O state machine (no sockets, clock or randomness of its own).

Feed it :mod:`coordinator.events` (``Connected``, ``DataReceived``, ``Disconnected``, ``TimerFired``) with the
current time; execute the returned actions in order (``Send``, ``Close``, ``SetTimer``, ``PersistRound``,
``Log``). A ``PersistRound`` must be made durable before later actions are executed (the store does it
atomically).

Round lifecycle: when enough authenticated clients are ready → check the privacy budget (q of the selection
pool) → select m by trust → partition into groups from the round's public seed → send each client its task
(group, SecAgg+ parameters, DP parameters, the signed global model) → run SecAgg+ per group, all groups phase by
phase, each phase closed when every expected client answered or at its deadline → decode the group sums →
honest norm bound → robust aggregation across groups → DP accounting → server optimizer → trust update →
evaluate → sign the new model → persist → round_end.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import mle
from aggregation import PipelineState, aggregate_groups, parse_pipeline
from coordinator.config import FederationConfig
from coordinator.events import (
    Action,
    ClientEnrolled,
    Close,
    Connected,
    DataReceived,
    Disconnected,
    GroupAggregated,
    Log,
    PersistRound,
    RoundStarted,
    Send,
    SetTimer,
    TimerFired,
)
from coordinator.evidence import debiased_outlier_scores, mean_norm_bound, noise_variance_of_mean
from coordinator.optimizers import OptimizerState, ServerOptimizer, apply_update
from coordinator.trust import TrustState
from flcore.protocol import COORDINATOR_ID, PROTOCOL_VERSIONS, Envelope, ProtocolError, ReplayGuard
from flcore.wire import MAX_MESSAGE_BYTES, as_u8, client_id_for, decode, encode, tensor_bytes
from flcrypto import Crypto, default_crypto
from privacy.backends import numpy_backend
from privacy.client_pipeline import decode_sum
from privacy.dp import BudgetExceeded, PrivacyAccountant, PrivacyBudget, RoundEvent
from privacy.secagg import GroupConfig, SecAggError, SecAggServer, ThresholdError, partition

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


@dataclass
class RoundState:
    number: int
    seed: bytes
    groups: list[list[str]]
    servers: dict[int, SecAggServer]
    group_of: dict[str, int]
    deadline: float
    q: float  # the selection probability bound used for this round's DP accounting
    started_at: float
    failed: dict[int, str] = field(default_factory=dict)
    train_losses: list[float] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)
    pending: set[int] = field(default_factory=set)  # groups still waiting for answers in the current phase


MAX_ERRORS_PER_CONNECTION = 20


class Engine:
    def __init__(self, config: FederationConfig, identity_seed: bytes, *, seed: int = 0,
                 evaluator: Evaluator | None = None, crypto: Crypto | None = None,
                 params: np.ndarray | None = None, state: dict[str, Any] | None = None,
                 registry: dict[str, bytes] | None = None, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        config.validate()
        self.cfg = config
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
        self.optimizer = ServerOptimizer(config.server_optimizer, lr=config.server_lr)
        self.backend = numpy_backend()
        self.conns: dict[str, Connection] = {}
        self.by_client: dict[str, str] = {}
        self.registry: dict[str, bytes] = dict(registry or {})  # client id → public key
        self.guard = ReplayGuard()
        self.round_number = int(state.get("round", 0))
        self.trust = TrustState.from_dict(state["trust"]) if "trust" in state else TrustState(config.trust_params())
        self.budget = PrivacyBudget(config.epsilon if config.epsilon < math.inf else 1e300, config.delta,
                                    PrivacyAccountant.from_dict(state.get("accountant", {})))
        d = self.spec.num_parameters()
        self.opt_state = OptimizerState.from_dict(state["optimizer"], d) if "optimizer" in state else OptimizerState()
        self.agg_state = PipelineState.from_dict(state["aggregation"]) if "aggregation" in state else PipelineState()
        if params is None:
            init = self.spec.init_parameters(config.seed)
            params = np.concatenate([np.asarray(init[n], np.float32) for n, _ in self.spec.parameter_shapes()])
        self.params = params.astype(np.float32)
        self.model_bytes = self._model_file()
        self.round: RoundState | None = None
        self.history: list[dict[str, Any]] = list(state.get("history", []))
        self.finished = self.round_number >= config.rounds
        self.stopped_reason = ""

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
                         "lr": c.lr, "l2_clip": c.l2_clip, "noise_multiplier": c.noise_multiplier,
                         "aggregator": c.aggregator, "group_size": c.group_size,
                         "server_optimizer": c.server_optimizer, "server_lr": c.server_lr}}
        return mle.dumps(self.params_dict(), meta, signing_key=self.seed)

    def state(self) -> dict[str, Any]:
        """Everything a restarted coordinator needs besides the model file."""
        return {"round": self.round_number, "trust": self.trust.to_dict(),
                "accountant": self.budget.accountant.to_dict(), "optimizer": self.opt_state.to_dict(),
                "aggregation": self.agg_state.to_dict(), "history": self.history}

    def epsilon(self) -> float:
        return self.budget.epsilon_spent()

    # ── event handling ───────────────────────────────────────────────────────────────────────────────
    def handle(self, event: Any) -> list[Action]:
        if isinstance(event, Connected):
            self.conns[event.conn] = Connection(event.conn, event.kind, connected_at=event.now)
            return []
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
                return [self._send(conn, "stop", {"reason": self.stopped_reason or "federation finished"})]
            if self.trust.ensure(conn.client_id or "").banned:
                return [self._send(conn, "stop", {"reason": "banned: trust below the ban threshold"}),
                        Close(conn.conn, "banned")]
            if conn.state == "authenticated":
                conn.state = "ready"
            return self._maybe_start(now)
        if env.type == "secagg":
            return self._secagg(conn, env, f, now)
        if env.type == "metrics":
            return self._metrics(conn, env)
        if env.type == "bye":
            return [Close(conn.conn, "client said bye")]
        raise ProtocolError("unexpected", f"unexpected {env.type} message")

    def _hello(self, conn: Connection, env: Envelope) -> list[Action]:
        versions = [v for v in env.body["versions"] if v in PROTOCOL_VERSIONS]
        if not versions:  # addressed to the (signature-verified) sender: useless to replay to anyone else
            conn.errors += 1
            return [self._send(conn, "error", {"code": "version", "message": f"no common protocol version (we "
                                               f"speak {list(PROTOCOL_VERSIONS)})"}, recipient=env.sender),
                    Log("warning", f"rejected hello on {conn.conn}: no common protocol version")]
        pk = bytes.fromhex(env.body["public_key"])
        known = self.registry.get(env.sender)
        if known is not None and known != pk:
            raise ProtocolError("identity", "client id registered with another key")
        conn.client_id, conn.public_key = env.sender, pk
        conn.challenge = self.crypto.random_bytes(32).hex()
        conn.state, conn.seq = "auth", 0
        return [self._send(conn, "challenge", {"challenge": conn.challenge, "version": max(versions),
                                               "coordinator_key": self.public_key.hex()})]

    def _auth(self, conn: Connection, env: Envelope, now: float) -> list[Action]:
        if conn.state != "auth" or env.body["challenge"] != conn.challenge:
            raise ProtocolError("handshake", "wrong challenge")
        assert conn.client_id is not None and conn.public_key is not None
        if conn.client_id in self.trust.clients and self.trust.clients[conn.client_id].banned:
            raise ProtocolError("banned", "this client is banned (trust below the ban threshold)")
        old = self.by_client.get(conn.client_id)
        actions: list[Action] = []
        if old is not None and old != conn.conn:  # a reconnect replaces the previous connection
            actions.append(Close(old, "replaced by a new connection"))
            self.conns.pop(old, None)
        self.by_client[conn.client_id] = conn.conn
        if conn.client_id not in self.registry:
            actions.append(ClientEnrolled(conn.client_id, conn.public_key, conn.kind))
        self.registry[conn.client_id] = conn.public_key
        self.trust.ensure(conn.client_id)
        conn.state = "authenticated"
        actions.append(self._send(conn, "welcome", {"client_id": conn.client_id, "round": self.round_number}))
        actions.append(Log("info", f"client {conn.client_id[:8]} authenticated ({conn.kind})"))
        return actions

    def _disconnected(self, conn_id: str, now: float) -> list[Action]:
        conn = self.conns.pop(conn_id, None)
        if conn and conn.client_id:
            self.guard.forget(conn.client_id, conn.challenge)  # that session can never verify again anyway
            if self.by_client.get(conn.client_id) == conn_id:
                del self.by_client[conn.client_id]
        # a selected client that left simply stops answering: SecAgg+ treats it as a dropout; a round that was
        # waiting for this (not yet ready) client under min_clients_per_round may start now
        return self._maybe_start(now)

    # ── rounds ───────────────────────────────────────────────────────────────────────────────────────
    def ready_clients(self) -> list[str]:
        return sorted(c.client_id for c in self.conns.values()
                      if c.state == "ready" and self._is_current(c))

    def _maybe_start(self, now: float) -> list[Action]:
        if self.round is not None or self.finished:
            return []
        ready = self.trust.selectable(self.ready_clients())
        m = self.cfg.clients_per_round
        if len(ready) < m:
            # fewer than m: start only with ≥ min_clients and when nobody else connected could still become ready
            pending = [c for c in self.conns.values() if c.state == "authenticated" and self._is_current(c)
                       and not self.trust.ensure(c.client_id or "").banned]
            if len(ready) < self.cfg.min_clients or pending:
                return []
            m = len(ready)
        r = self.round_number + 1
        q = self.trust.max_inclusion_probability(ready, m)
        if self.cfg.noise_multiplier > 0:
            event = self._dp_event(q)
            try:
                self.budget.check(event)
            except BudgetExceeded as exc:
                self.finished, self.stopped_reason = True, f"privacy budget exhausted: {exc}"
                return [Log("warning", f"privacy budget: {exc}"), *self._stop_all()]
        selected = self.trust.select(ready, m, self.rng)
        seed = hashlib.blake2b(hashlib.sha256(self.model_bytes).digest() + r.to_bytes(8, "little"),
                               digest_size=32).digest()  # public: derived from public data only
        groups = partition(selected, self.cfg.group_size, seed)
        rs = RoundState(r, seed, groups, {}, {}, now + self.cfg.train_timeout, q, now)
        model_sha = hashlib.sha256(mle.loads(self.model_bytes).body).hexdigest()
        dp = self.cfg.dp_config()
        actions: list[Action] = [RoundStarted(r, seed.hex())]
        for g, members in enumerate(groups):
            keys = {m: self.registry[m] for m in members}
            gc = GroupConfig(r, g, tuple(members), keys, dp.dimension, dp.modulus_bits, seed)
            rs.servers[g] = SecAggServer(gc, self.backend, self.crypto)
            for m in members:
                rs.group_of[m] = g
                conn = self.conns[self.by_client[m]]
                conn.state = "busy"
                config = {"group": g, "members": members, "identity_keys": {k: v.hex() for k, v in keys.items()},
                          "public_seed": seed.hex(), "model_sha256": model_sha,
                          "dp": {"l2_clip": dp.l2_clip, "noise_multiplier": dp.noise_multiplier, "bits": dp.bits,
                                 "modulus_bits": dp.modulus_bits, "min_contributors": dp.min_contributors,
                                 "dimension": dp.dimension},
                          "train": {"epochs": self.cfg.local_epochs, "batch_size": self.cfg.batch_size,
                                    "lr": self.cfg.lr}}
                actions.append(self._send(conn, "task", {"config": config}, r,
                                          {"global_model": as_u8(self.model_bytes)}))
        rs.pending = set(rs.servers)
        self.round = rs
        actions.append(SetTimer("phase", rs.deadline))
        actions.append(Log("info", f"round {r}: {len(selected)} clients in {len(groups)} groups"))
        return actions

    def _secagg(self, conn: Connection, env: Envelope, f: mle.MleFile, now: float) -> list[Action]:
        rs = self.round
        if rs is None or env.round != rs.number:
            raise ProtocolError("stale", f"no round {env.round} in progress")
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

    def _metrics(self, conn: Connection, env: Envelope) -> list[Action]:
        """A selected client's self-reported training loss (informational only: never used for trust)."""
        rs = self.round
        if rs is None or env.round != rs.number or env.body["round"] != rs.number or conn.client_id not in rs.group_of:
            raise ProtocolError("stale", f"no round {env.round} in progress for this client")
        try:
            loss = float(env.body["loss"])
        except OverflowError:
            loss = math.inf
        if not math.isfinite(loss) or env.body["num_samples"] < 0:
            raise ProtocolError("bad_message", "metrics: loss must be finite and num_samples >= 0")
        if conn.client_id in rs.reported:
            raise ProtocolError("bad_message", "metrics: already reported for this round")
        rs.reported.add(conn.client_id or "")
        rs.train_losses.append(loss)
        return []

    def status(self) -> dict[str, Any]:
        """A JSON-ready summary for the status endpoint: rounds, clients, privacy spent, trust."""
        connected = {c.client_id: c for c in self.conns.values() if self._is_current(c)}
        clients = []
        for cid in sorted(set(self.registry) | set(self.trust.clients)):
            t = self.trust.ensure(cid)
            conn = connected.get(cid)
            clients.append({"id": cid, "trust": t.trust, "banned": t.banned, "observations": t.observations,
                            "connected": conn is not None, "kind": conn.kind if conn else None,
                            "state": conn.state if conn else "offline"})
        rs = self.round
        return {
            "round": self.round_number, "rounds": self.cfg.rounds, "finished": self.finished,
            "stopped_reason": self.stopped_reason,
            "round_in_progress": None if rs is None else {
                "round": rs.number, "groups": len(rs.groups), "failed_groups": len(rs.failed),
                "phases": sorted({s.phase for s in rs.servers.values()})},
            "clients_per_round": self.cfg.clients_per_round, "group_size": self.cfg.group_size,
            "aggregator": self.cfg.aggregator,
            "privacy": {"epsilon": self.epsilon(), "delta": self.cfg.delta,
                        "epsilon_budget": self.cfg.epsilon if math.isfinite(self.cfg.epsilon) else None,
                        "noise_multiplier": self.cfg.noise_multiplier, "l2_clip": self.cfg.l2_clip},
            "clients": clients, "connected": len(connected),
            "ready": len(self.ready_clients()),
            "coordinator_key": self.public_key.hex(),
            "metrics": self.history[-1] if self.history else None,
        }

    def _timer(self, name: str, now: float) -> list[Action]:
        if name == "phase" and self.round is not None and now >= self.round.deadline:
            return self._close_phase(now)
        return []

    def _close_phase(self, now: float) -> list[Action]:
        rs = self.round
        assert rs is not None
        actions: list[Action] = []
        for g, server in rs.servers.items():
            if g in rs.failed or server.phase == "done":
                continue
            try:
                out = server.close_phase()
            except ThresholdError as exc:
                rs.failed[g] = str(exc)
                out = server.failure_messages
                actions.append(Log("warning", f"round {rs.number} group {g} failed: {exc}"))
            for member, blob in out.items():
                conn_id = self.by_client.get(member)
                if conn_id is not None:
                    actions.append(self._send(self.conns[conn_id], "secagg", {"group": g}, rs.number,
                                              {"secagg": as_u8(blob)}))
        if all(s.phase == "done" or g in rs.failed for g, s in rs.servers.items()):
            return actions + self._finish_round(now)
        rs.deadline = now + self.cfg.phase_timeout
        rs.pending = {g for g, s in rs.servers.items()
                      if g not in rs.failed and s.phase not in ("done", "failed") and not s.phase_complete}
        actions.append(SetTimer("phase", rs.deadline))
        return actions

    def _finish_round(self, now: float) -> list[Action]:
        rs = self.round
        assert rs is not None
        self.round = None
        done = [(g, s.result) for g, s in sorted(rs.servers.items()) if s.result is not None]
        participants = [m for grp in rs.groups for m in grp]
        if not done:
            return [*self._round_end(participants, rs.number, "failed"),
                    Log("warning", f"round {rs.number}: every group failed; retrying"), *self._maybe_start(now)]
        dp = self.cfg.dp_config()
        audit: list[Action] = [GroupAggregated(rs.number, g, tuple(res.survivors), tuple(res.dropped),
                                               tuple(res.faulty), res.sum) for g, res in done]
        sums = np.stack([np.asarray(decode_sum(res.sum, dp, self.backend), dtype=np.float32) for _, res in done])
        sizes = np.array([len(res.survivors) for _, res in done], dtype=np.float64)
        scale = dp.fixed_point().scale()
        sigma_c = dp.sigma_client() if dp.noise_multiplier > 0 else 0.0
        noise_var = np.array([noise_variance_of_mean(len(res.survivors), sigma_c, scale) for _, res in done])
        # Honest members clip to C, so a group mean longer than C plus the quantization/noise allowance proves
        # that some member did not: clip it back (before aggregation) and count it as full negative evidence.
        bounds = np.array([mean_norm_bound(dp.l2_clip, dp.dimension, scale, v) for v in noise_var])
        norms = np.linalg.norm(sums / sizes[:, None], axis=1)
        over = ~(norms <= bounds)
        keep = ~over
        # excluded groups are proven corrupted, so at most f_groups − excluded corrupted groups remain
        f_left = max(0, min(self.cfg.byzantine, len(done)) - int(over.sum()))
        if over.any():
            audit.append(Log("warning", f"round {rs.number}: group(s) {[done[i][0] for i in np.flatnonzero(over)]} "
                                        f"exceed the honest norm bound; excluded and counted against their members"))
            if not self._aggregable(int(keep.sum()), f_left):  # too few left for the rule: clip them back instead
                factor = np.where(over & np.isfinite(norms), bounds / np.where(norms > 0, norms, 1.0), 0.0)
                sums = (sums * np.where(over, factor, 1.0)[:, None]).astype(np.float32)
                keep = np.ones(len(done), bool)
                f_left = min(self.cfg.byzantine, len(done))
        if not self._aggregable(int(keep.sum()), f_left):
            # dropouts left too few groups for the robust rule's precondition: no update this round (the
            # released group sums still cost privacy), the same round number is tried again
            if self.cfg.noise_multiplier > 0:
                self.budget.spend(self._dp_event(rs.q))
            return [*audit, *self._round_end(participants, rs.number, "failed"),
                    Log("warning", f"round {rs.number}: only {int(keep.sum())} group(s) left, too few for "
                                   f"{self.cfg.aggregator!r} with f={f_left}; no update, retrying"),
                    *self._maybe_start(now)]
        result, self.agg_state = aggregate_groups(self.pipeline, sums[keep], sizes[keep], self.cfg.byzantine,
                                                  f_groups=min(f_left, int(keep.sum())), state=self.agg_state,
                                                  rng=self.rng)
        if self.cfg.noise_multiplier > 0:  # the same q the budget check used (selection pool of this round)
            self.budget.spend(self._dp_event(rs.q))
        self.params, self.opt_state = apply_update(self.optimizer, self.params, result.value.astype(np.float32),
                                                   self.opt_state)
        self.round_number = rs.number
        units = [list(res.survivors) for _, res in done]
        scores = debiased_outlier_scores(sums / sizes[:, None], noise_var) if len(done) > 1 else np.ones(1)
        scores[over] = np.inf
        self.trust.observe_units(units, scores)
        for _, res in done:  # a holder whose share contradicted the owner's commitment: direct evidence
            for c in res.faulty:
                self.trust.observe(c, 0.0, 1.0)
        metrics: dict[str, Any] = {"round": rs.number, "groups": len(rs.groups), "groups_ok": len(done),
                                   "survivors": int(sizes.sum()), "groups_over_bound": int(over.sum()),
                                   "epsilon": self.epsilon(),
                                   "duration": now - rs.started_at, "time": now}
        if rs.train_losses:
            metrics["train_loss"] = float(np.mean(rs.train_losses))
        if self.evaluator is not None:  # a diverged model may evaluate to NaN/inf: kept as None (JSON, SQLite)
            metrics.update({k: (float(v) if math.isfinite(v) else None)
                            for k, v in self.evaluator(self.params_dict()).items()})
        self.history.append(metrics)
        self.model_bytes = self._model_file()
        if self.round_number >= self.cfg.rounds:
            self.finished, self.stopped_reason = True, f"all {self.cfg.rounds} rounds done"
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

    def _dp_event(self, q: float) -> RoundEvent:
        """The accountant's event for one released round with selection probability bound ``q``."""
        return RoundEvent(self.cfg.dp_config().effective_noise_multiplier(), max(q, 1e-9))

    def _stop_all(self) -> list[Action]:
        """Tell every authenticated client the federation is over."""
        return [self._send(c, "stop", {"reason": self.stopped_reason}) for c in self.conns.values()
                if c.state in ("authenticated", "ready", "busy") and self._is_current(c)]

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
                conn.state = "authenticated"
                out.append(self._send(conn, "round_end", {"round": number, "status": status}, number))
                if self.trust.ensure(m).banned:
                    out.append(self._send(conn, "stop", {"reason": "banned: trust below the ban threshold"}))
                    out.append(Log("warning", f"client {m[:8]} banned (trust {self.trust.trust(m):.3f})"))
        return out
