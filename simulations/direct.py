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

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from coordinator.engine import Engine
from flcore import assignment
from privacy.client_pipeline import DistributedDPConfig, prepare_update
from privacy.randomness import RandomStream
from simulations.engine_driver import UpdateFn, derive_seed, reveal_secret, unclipped_dp


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
        keys = [crypto.ed25519_public_key(derive_seed(seed, "identity", i)) for i in range(num_clients)]
        from flcore.wire import client_id_for

        self.ids = [client_id_for(pk) for pk in keys]
        self.index = {cid: i for i, cid in enumerate(self.ids)}
        for cid, pk in zip(self.ids, keys, strict=True):
            self.engine.trust.ensure(cid)
            self.engine.registry[cid] = pk
        self.seed = seed
        self.commits_made = [0] * num_clients  # how many `ready` commitments each simulated client has made
        self.streams = [RandomStream(derive_seed(seed, "stream", i)) for i in range(num_clients)]
        self.byzantine = set(byzantine)
        self.attackers_clip = attackers_clip
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
        ready, stop = e.within_budget(e.trust.selectable(sorted(self.ids)))
        if stop:
            e.finished, self.stopped_reason = True, stop
            return False
        if len(ready) < m:
            if len(ready) < getattr(cfg, "min_clients", m) or not ready:
                self.stopped_reason = (f"stalled after round {e.round_number}: {len(ready)} selectable clients "
                                       f"< clients_per_round={m}")
                return False
            m = len(ready)
        r = e.round_number + 1
        q = e.trust.max_inclusion_probability(ready, m)
        selected = e.trust.select(ready, m, e.rng)
        # the sessions' commit–reveal, as the engine mode's clients do it (same deterministic secrets)
        secrets = {c: reveal_secret(self.seed, self.index[c], self.commits_made[self.index[c]]) for c in selected}
        rs = e.new_round(r, selected, {c: assignment.commitment(v, c) for c, v in secrets.items()}, q, self.now)
        rs.reveals = secrets
        e.assign(rs)
        for c in selected:
            self.commits_made[self.index[c]] += 1
        groups = rs.groups
        order = [self.index[c] for g in groups for c in g]
        self.selected[r] = sorted(order)
        deltas = np.asarray(self.updates(r, e.params.copy(), order), np.float32)
        row = {i: k for k, i in enumerate(order)}
        servers: dict[int, Any] = {}
        bad_groups = 0
        for gi, g in enumerate(groups):
            gdp = rs.dp[gi]
            mod = gdp.modulus_bits
            attacker_dp = gdp if self.attackers_clip else DistributedDPConfig(**unclipped_dp(e._dp_dict(gdp)))
            acc = backend.zeros_field(gdp.dimension, mod)
            survivors = [c for c in g if self.index[c] not in self.absent]
            for c in survivors:
                i = self.index[c]
                dp = attacker_dp if i in self.byzantine else gdp
                vec, _ = prepare_update(deltas[row[i]], dp, self.streams[i], backend)
                acc = backend.iadd_mod(acc, vec, mod)
            # SecAgg+ releases a group's sum only if at least its threshold of members took part
            ok = len(survivors) >= max(1, rs.servers[gi].cfg.t)
            result = SimpleNamespace(sum=acc, survivors=tuple(survivors),
                                     dropped=tuple(c for c in g if c not in survivors), faulty=())
            servers[gi] = SimpleNamespace(result=result if ok else None, phase="done" if ok else "failed",
                                          phase_complete=True)
            bad_groups += any(self.index[c] in self.byzantine for c in survivors)
        if not any(s.result is not None for s in servers.values()):
            self.stopped_reason = f"round {r}: every group failed (too few survivors)"
            return False
        rs.servers, rs.stage = servers, "secagg"
        e.round = rs
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
