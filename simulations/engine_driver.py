"""Drive the real coordinator engine in-process: ``Engine.handle(event) -> actions`` with one real
``flcore.session.ClientSession`` per simulated client (Ed25519 identities, signed messages, SecAgg+ in groups,
the client pipeline's clipping/quantization/distributed DP), no sockets.

The only simulated parts are the clock (a virtual ``now`` advanced to the next timer when nothing is in
flight), local training (batched across the round's clients, see :mod:`simulations.training`) and the
Byzantine clients' updates (:mod:`simulations.attacks`). When the engine hands out a round's tasks, every
selected client's ``Train`` action is collected first, all updates are computed in one batch, and then each
session's ``training_done`` is called – the order a real federation would see if all clients trained in
parallel. The engine retries a failed round with the same round number; ``max_retries`` failed attempts of one
round in a row stop the run (as in the direct mode).
"""

from __future__ import annotations

import hashlib
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from coordinator.federation.engine import Engine
from coordinator.federation.events import (
    Close,
    Connected,
    DataReceived,
    Disconnected,
    Log,
    PersistRound,
    Send,
    SetTimer,
    TimerFired,
)
from flcore.policy import PrivacyPolicy
from flcore.session import ClientSession, Failed, SendFrame, Train
from privacy.randomness import RandomStream

UpdateFn = Callable[[int, np.ndarray, list[int]], np.ndarray]  # (round, global params, client idxs) → (k, d)


def derive_seed(seed: int, purpose: str, index: int = 0) -> bytes:
    """32 deterministic bytes for identities and client randomness (simulation only, never production)."""
    return hashlib.blake2b(f"{purpose}:{seed}:{index}".encode(), key=b"fl-coordinator-simulation",
                           digest_size=32).digest()


def reveal_secret(seed: int, index: int, k: int) -> bytes:
    """The k-th seed-commitment secret of simulated client ``index`` (deterministic: simulation only)."""
    return derive_seed(seed, f"reveal-{index}", k)


def unclipped_dp(dp: dict[str, Any]) -> dict[str, Any]:
    """The DP/quantization parameters a clip-ignoring Byzantine client encodes with: the same grid step
    ((2^(B−1) − 1)/C), but B raised to m − 1 (at most 31) and C raised by the same factor. A field chosen for the
    group's needs (``modulus_bits = 0``) may leave no bit above B: then the field itself bounds what any member can
    add to a coordinate, and this encoding is the honest one (the harness's attacker cannot widen it)."""
    wide_bits = max(int(dp["bits"]), min(31, int(dp["modulus_bits"]) - 1))
    factor = ((1 << (wide_bits - 1)) - 1) / ((1 << (int(dp["bits"]) - 1)) - 1)
    return {**dp, "bits": wide_bits, "l2_clip": float(dp["l2_clip"]) * factor}


def lying_indicator(dp: Any) -> float:
    """The clipped-indicator value a Byzantine client sends under adaptive clipping: the most negative value its
    grid holds (−C of its encoding), i.e. "my update was clipped" as loudly as the quantizer allows, pushing the
    federation's clip C up (an attacker whose updates sit at C gains reach with every step up). The server's
    per-group clamp (``privacy.client_pipeline.unclipped_count``) bounds what this buys."""
    return -float(dp.l2_clip)


class ByzantineSession(ClientSession):
    """A Byzantine client's session: it runs the production client pipeline, but under adaptive clipping it
    lies with its indicator (:func:`lying_indicator`), and unless it ``clips`` it does not honour the L2 clip
    (a Byzantine client controls its own code, and under secure aggregation nobody can check): it then encodes
    its update on the *same* fixed-point grid with the widest range the field allows – bits raised to 31 and the
    clip raised by the same factor, so the grid step – and hence the server's decoding – is unchanged."""

    clips = True

    def _prepare(self, delta: Any, dp: Any) -> Any:
        from privacy.client_pipeline import DistributedDPConfig, prepare_update

        if not self.clips:
            dp = DistributedDPConfig(**unclipped_dp(asdict(dp)))
        return prepare_update(delta, dp, self.stream, self.backend, indicator_value=lying_indicator(dp))[0]


class UnclippedSession(ByzantineSession):
    """A Byzantine client that ignores the L2 clip (:class:`ByzantineSession`)."""

    clips = False


class EngineDriver:
    """Runs one federation through :class:`coordinator.federation.engine.Engine` until it finishes or stalls."""

    def __init__(self, fed_cfg: Any, num_clients: int, updates: UpdateFn, *, seed: int,
                 byzantine: set[int] = frozenset(), attackers_clip: bool = True,
                 evaluator: Any = None, engine_state: dict[str, Any] | None = None,
                 absent: set[int] = frozenset(), max_retries: int = 50) -> None:
        self.cfg = fed_cfg
        self.max_retries = max_retries
        self.updates = updates
        self.absent = set(absent)  # clients that train but never submit (dropouts)
        self.engine = Engine(fed_cfg, derive_seed(seed, "coordinator"), seed=seed, evaluator=evaluator,
                             state=engine_state)
        self.sessions: dict[str, ClientSession] = {}
        self.index: dict[str, int] = {}
        for i in range(num_clients):
            cls = (ClientSession if i not in byzantine else ByzantineSession if attackers_clip
                   else UnclippedSession)
            conn = f"client{i}"
            counter = itertools.count()
            self.sessions[conn] = cls(derive_seed(seed, "identity", i), self.engine.public_key,
                                      stream=RandomStream(derive_seed(seed, "stream", i)),
                                      policy=PrivacyPolicy.permissive(),
                                      secret_source=lambda n, i=i, counter=counter: reveal_secret(seed, i, next(counter)))
            self.index[conn] = i
        self.outbox: deque[tuple[str, bytes]] = deque()
        self.pending: list[tuple[str, Train]] = []
        self.timers: dict[str, float] = {}
        self.now = 0.0
        self.failures: list[tuple[int, str, str]] = []
        self.logs: list[tuple[str, str]] = []
        self.stopped_reason = ""
        self.selected: dict[int, list[int]] = {}
        self.byzantine = set(byzantine)
        self.by_id = {sess.client_id: i for i, sess in enumerate(self.sessions.values())}
        self.group_stats: dict[int, tuple[int, int]] = {}  # round → (groups, groups with a Byzantine member)
        # round → the selected clients (population indices, sorted) and their trust when selected (last attempt)
        self.selection: dict[int, tuple[list[int], list[float]]] = {}
        self.attempts: dict[int, int] = {}  # round → attempts that reached training
        self.last_failure = ""
        self.gave_up = False

    # ── actions ──────────────────────────────────────────────────────────────────────────────────────
    def _engine(self, event: Any) -> None:
        for a in self.engine.handle(event):
            if isinstance(a, Send):
                self._deliver(a.conn, a.data)
            elif isinstance(a, SetTimer):
                self.timers[a.name] = a.at
            elif isinstance(a, Log):
                self.logs.append((a.level, a.message))
                if a.level == "warning" and ("retrying" in a.message or "abandoned" in a.message):
                    self.last_failure = a.message
            elif isinstance(a, Close):
                self.outbox = deque(x for x in self.outbox if x[0] != a.conn)
                self._engine(Disconnected(a.conn, self.now))
            elif isinstance(a, PersistRound):
                pass  # in memory: nothing to make durable
            # other actions (status notifications) carry nothing the simulation needs

    def _deliver(self, conn: str, data: bytes) -> None:
        for act in self.sessions[conn].receive(data):
            self._client(conn, act)

    def _client(self, conn: str, act: Any) -> None:
        if isinstance(act, SendFrame):
            self.outbox.append((conn, act.data))
        elif isinstance(act, Train):
            self.pending.append((conn, act))
        elif isinstance(act, Failed):
            self.failures.append((self.index[conn], act.code, act.message))

    def _train_pending(self) -> None:
        batch, self.pending = self.pending, []
        rnd = batch[0][1].round
        spec = batch[0][1].spec
        params = np.concatenate([np.asarray(batch[0][1].parameters[n], np.float32).reshape(-1)
                                 for n, _ in spec.parameter_shapes()])
        idxs = [self.index[conn] for conn, _ in batch]
        self.attempts[rnd] = self.attempts.get(rnd, 0) + 1
        if self.attempts[rnd] > 1 + self.max_retries:
            self.gave_up = True
            self.stopped_reason = (f"round {rnd} failed {self.attempts[rnd] - 1} time(s) in a row (max_round_retries "
                                   f"= {self.max_retries}); last failure: {self.last_failure}")
            return
        self.selected[rnd] = sorted(idxs)
        trust = self.engine.trust
        self.selection[rnd] = (sorted(idxs), [trust.trust(self.sessions[f"client{i}"].client_id)
                                              for i in sorted(idxs)])
        rs = self.engine.round
        if rs is not None:
            bad = sum(any(self.by_id[m] in self.byzantine and self.by_id[m] not in self.absent for m in g)
                      for g in rs.groups)
            self.group_stats[rnd] = (len(rs.groups), bad)
        deltas = self.updates(rnd, params, idxs)
        for (conn, _), delta in zip(batch, deltas, strict=True):
            if self.index[conn] in self.absent:
                continue  # drops out: never answers this round (the engine's phase timer moves on)
            for act in self.sessions[conn].training_done(np.asarray(delta, np.float32)):
                self._client(conn, act)

    # ── main loop ────────────────────────────────────────────────────────────────────────────────────
    def run(self, on_round: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        for conn, s in self.sessions.items():
            self._engine(Connected(conn, "inprocess", self.now))
            for act in s.start():
                self._client(conn, act)
        seen = 0
        try:
            while not self.engine.finished:
                if self.pending and not self.outbox:
                    self._train_pending()
                    if self.gave_up:
                        break
                elif self.outbox:
                    conn, data = self.outbox.popleft()
                    try:
                        self._engine(DataReceived(conn, data, self.now))
                    except ValueError as exc:  # e.g. too few groups left for the rule (an engine bug, reported)
                        self.stopped_reason = f"engine error in round {self.engine.round_number + 1}: {exc}"
                        break
                elif self.engine.round is not None and "phase" in self.timers:
                    self.now = max(self.now, self.timers.pop("phase"))
                    try:
                        self._engine(TimerFired("phase", self.now))
                    except ValueError as exc:
                        self.stopped_reason = f"engine error in round {self.engine.round_number + 1}: {exc}"
                        break
                elif self.engine.round is None and "start" in self.timers:  # waited for a client that is not ready
                    self.now = max(self.now, self.timers.pop("start"))
                    self._engine(TimerFired("start", self.now))
                else:
                    ready = len(self.engine.trust.selectable(self.engine.ready_clients()))
                    self.stopped_reason = (f"stalled after round {self.engine.round_number}: {ready} selectable "
                                           f"clients < clients_per_round={self.cfg.clients_per_round} "
                                           f"(min_clients_per_round={self.cfg.min_clients})")
                    break
                while on_round is not None and seen < len(self.engine.history):
                    on_round(self.engine.history[seen])
                    seen += 1
        finally:  # also when a round raises: the rounds done so far keep their figures
            if self.engine.stopped_reason and not self.stopped_reason:
                self.stopped_reason = self.engine.stopped_reason
            for h in self.engine.history:
                if h["round"] in self.group_stats:
                    h["corrupted_groups"] = self.group_stats[h["round"]][1]
                if h["round"] in self.attempts:
                    h["attempts"] = self.attempts[h["round"]]
        return self.engine.history
