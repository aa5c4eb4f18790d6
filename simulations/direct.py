"""The "direct" mode: the coordinator engine without its transport and without SecAgg+ masking.

A round here: trust-weighted selection and the public partition into groups (as ``Engine._maybe_start``
does) → every client's ``privacy.client_pipeline.prepare_update`` (clip, stochastic rounding, distributed DP
noise, field elements) with the same per-client ``RandomStream`` the engine mode's sessions use → per-group
sums mod 2^m → the engine's *own* round completion, ``Engine._finish_round``, fed those sums as the groups'
SecAgg+ results (decoding, the honest-norm bound, robust aggregation, DP accounting, optimizer, trust
evidence, evaluation, the next model file). So everything after the group sums is the engine's code, not a
copy of it.

What it leaves out: messages, signatures, SecAgg+ key agreement and masking. SecAgg+ with no dropouts outputs
exactly the modular sum of the group's field vectors (its masks cancel; tests/test_secagg.py), so results are
bit-identical to the engine mode (tests/test_simulation.py checks it). One scheduling difference: the engine
starts a round as soon as m clients are ready, so when N − m ≥ m the previous round's participants (still
finishing) are not in the next pool; the direct mode always samples from the whole population. With m = N
both coincide. Engine hook this relies on (private, so the equality test guards it): ``Engine._finish_round``
reading ``RoundState.servers[g].result`` (``sum``, ``survivors``, ``dropped``, ``faulty``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from coordinator.engine import Engine, RoundState
from privacy.client_pipeline import DistributedDPConfig, prepare_update
from privacy.dp import BudgetExceeded, RoundEvent
from privacy.randomness import RandomStream
from privacy.secagg import partition
from simulations.engine_driver import UpdateFn, derive_seed, unclipped_dp


class DirectDriver:
    def __init__(self, fed_cfg: Any, num_clients: int, updates: UpdateFn, *, seed: int,
                 byzantine: set[int] = frozenset(), attackers_clip: bool = True,
                 evaluator: Any = None, engine_state: dict[str, Any] | None = None,
                 absent: set[int] = frozenset()) -> None:
        self.cfg = fed_cfg
        self.absent = set(absent)
        self.updates = updates
        self.engine = Engine(fed_cfg, derive_seed(seed, "coordinator"), seed=seed, evaluator=evaluator,
                             state=engine_state)
        crypto = self.engine.crypto
        self.ids = [crypto.ed25519_public_key(derive_seed(seed, "identity", i)) for i in range(num_clients)]
        from flcore.wire import client_id_for

        self.ids = [client_id_for(pk) for pk in self.ids]
        self.index = {cid: i for i, cid in enumerate(self.ids)}
        for cid in self.ids:
            self.engine.trust.ensure(cid)
        self.streams = [RandomStream(derive_seed(seed, "stream", i)) for i in range(num_clients)]
        self.byzantine = set(byzantine)
        dp = fed_cfg.dp_config()
        self.dp = dp
        wide = unclipped_dp({"l2_clip": dp.l2_clip, "noise_multiplier": dp.noise_multiplier, "bits": dp.bits,
                             "modulus_bits": dp.modulus_bits, "min_contributors": dp.min_contributors,
                             "dimension": dp.dimension})
        self.dp_attacker = dp if attackers_clip else DistributedDPConfig(**wide)
        self.stopped_reason = ""
        self.selected: dict[int, list[int]] = {}
        self.now = 0.0

    def run(self, on_round: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        e = self.engine
        while not e.finished:
            if not self._round():
                break
            if on_round is not None:
                on_round(e.history[-1])
        if e.stopped_reason and not self.stopped_reason:
            self.stopped_reason = e.stopped_reason
        return e.history

    def _round(self) -> bool:
        e, cfg, backend = self.engine, self.cfg, self.engine.backend
        m = cfg.clients_per_round
        ready = e.trust.selectable(sorted(self.ids))
        if len(ready) < m:
            if len(ready) < getattr(cfg, "min_clients", m) or not ready:
                self.stopped_reason = (f"stalled after round {e.round_number}: {len(ready)} selectable clients "
                                       f"< clients_per_round={m}")
                return False
            m = len(ready)
        r = e.round_number + 1
        q = e.trust.max_inclusion_probability(ready, m)
        if cfg.noise_multiplier > 0:
            try:
                e.budget.check(RoundEvent(self.dp.effective_noise_multiplier(), max(q, 1e-9)))
            except BudgetExceeded as exc:
                e.finished, self.stopped_reason = True, f"privacy budget exhausted: {exc}"
                return False
        selected = e.trust.select(ready, m, e.rng)
        seed = hashlib.blake2b(hashlib.sha256(e.model_bytes).digest() + r.to_bytes(8, "little"),
                               digest_size=32).digest()
        groups = partition(selected, cfg.group_size, seed)
        order = [self.index[c] for g in groups for c in g]
        self.selected[r] = sorted(order)
        deltas = np.asarray(self.updates(r, e.params.copy(), order), np.float32)
        row = {i: k for k, i in enumerate(order)}
        mod = self.dp.modulus_bits
        servers: dict[int, Any] = {}
        bad_groups = 0
        for gi, g in enumerate(groups):
            acc = backend.zeros_field(self.dp.dimension, mod)
            survivors = [c for c in g if self.index[c] not in self.absent]
            for c in survivors:
                i = self.index[c]
                dp = self.dp_attacker if i in self.byzantine else self.dp
                vec, _ = prepare_update(deltas[row[i]], dp, self.streams[i], backend)
                acc = backend.iadd_mod(acc, vec, mod)
            # SecAgg+ releases a group's sum only if at least its threshold of members took part
            ok = len(survivors) >= max(1, cfg.threshold())
            result = SimpleNamespace(sum=acc, survivors=tuple(survivors),
                                     dropped=tuple(c for c in g if c not in survivors), faulty=())
            servers[gi] = SimpleNamespace(result=result if ok else None, phase="done" if ok else "failed",
                                          phase_complete=True)
            bad_groups += any(self.index[c] in self.byzantine for c in survivors)
        if not any(s.result is not None for s in servers.values()):
            self.stopped_reason = f"round {r}: every group failed (too few survivors)"
            return False
        e.round = RoundState(r, seed, groups, servers, {c: gi for gi, g in enumerate(groups) for c in g},
                             self.now, q, self.now)
        done_before = len(e.history)
        try:
            e._finish_round(self.now)  # the engine's own decode → bound → aggregate → optimizer → trust → evaluate
        except ValueError as exc:
            e.round = None
            self.stopped_reason = f"engine error in round {r}: {exc}"
            return False
        if len(e.history) == done_before:  # the engine failed the round (e.g. too few groups left for the rule)
            e.round = None
            self.stopped_reason = f"round {r} failed: too few groups for {cfg.aggregator!r}"
            return False
        if e.round is not None:  # pragma: no cover - no transport, so no next round can have started
            raise AssertionError("the engine started a round without connected clients")
        e.history[-1]["corrupted_groups"] = bad_groups
        return True
