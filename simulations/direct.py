"""The "direct" mode: the coordinator engine without its transport and without SecAgg+ masking.

A round here: trust-weighted selection and the public partition into groups (as ``Engine._maybe_start``
does) → every client's ``privacy.client_pipeline.prepare_update`` (clip, stochastic rounding, distributed DP
noise, field elements) with the same per-client ``RandomStream`` the engine mode's sessions use – computed for
all the round's clients at once by :mod:`simulations.batch_pipeline`, the same integers – → per-group
sums mod 2^m → the engine's *own* round completion, ``Engine.complete_round``, fed those sums as the groups'
SecAgg+ results (decoding, the honest-norm bound, robust aggregation, DP accounting, optimizer, trust
evidence, evaluation, the next model file). So everything after the group sums is the engine's code, not a
copy of it.

What it leaves out: messages, signatures, SecAgg+ key agreement and masking. SecAgg+ with no dropouts outputs
exactly the modular sum of the group's field vectors (its masks cancel; tests/test_secagg.py), so results are
bit-identical to the engine mode (tests/test_simulation.py checks it). One scheduling difference: the engine
starts a round as soon as m clients are ready, so when N − m ≥ m the previous round's participants (still
finishing) are not in the next pool; the direct mode always samples from the whole population. With m = N
both coincide.

A failed round (every group failed, or too few groups left for the rule's precondition) is retried with the same
round number, as the engine does (``Engine.complete_round`` accounts the released sums and starts a fresh attempt:
new selection, new commit–reveal seed); ``max_retries`` failed attempts of one round in a row stop the run with
a reason naming the round and the last failure. With fewer selectable clients than m (bans, budget), the round
size is the one ``Engine.short_round_size`` gives (min_clients_per_round), or the run stops as stalled.

Engine API this relies on (public, so the engine owns every decision): ``Engine.new_round``, ``assign``,
``complete_round``, ``short_round_size`` (how many clients a round with fewer than m selectable starts with).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from coordinator.federation.engine import Engine
from flcore import assignment
from privacy.client_pipeline import DistributedDPConfig
from privacy.randomness import RandomStream
from privacy.secagg import GroupResult
from simulations.batch_pipeline import SimulationCrypto, group_sum, prepare_updates
from simulations.engine_driver import UpdateFn, derive_seed, lying_indicator, reveal_secret, unclipped_dp


class DirectDriver:
    def __init__(self, fed_cfg: Any, num_clients: int, updates: UpdateFn, *, seed: int,
                 byzantine: set[int] = frozenset(), attackers_clip: bool = True,
                 evaluator: Any = None, engine_state: dict[str, Any] | None = None,
                 absent: set[int] = frozenset(), max_retries: int = 50) -> None:
        self.cfg = fed_cfg
        self.max_retries = max_retries
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
        # the clients' streams (the engine mode's sessions draw the same bytes: same seeds, same requests)
        crypto_streams = SimulationCrypto()
        self.streams = [RandomStream(derive_seed(seed, "stream", i), crypto_streams) for i in range(num_clients)]
        self.byzantine = set(byzantine)
        self.attackers_clip = attackers_clip
        self.stopped_reason = ""
        self.selected: dict[int, list[int]] = {}
        # round → the selected clients (population indices, sorted) and their trust when selected (last attempt)
        self.selection: dict[int, tuple[list[int], list[float]]] = {}
        self.attempts: dict[int, int] = {}  # round → attempts made (1 + failed attempts)
        self.last_failure = ""
        self.now = 0.0

    def run(self, on_round: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        e = self.engine
        while not e.finished:
            done_before = len(e.history)
            if not self._round():
                break
            if on_round is not None and len(e.history) > done_before:
                on_round(e.history[-1])
        if e.stopped_reason and not self.stopped_reason:
            self.stopped_reason = e.stopped_reason
        return e.history

    def _round_size(self, ready: list[str]) -> int:
        """How many clients this round starts with: m, or (fewer selectable clients than m) what the engine's
        ``short_round_size`` decides – 0 if it would not start (the federation stalls)."""
        m = self.cfg.clients_per_round
        return m if len(ready) >= m else self.engine.short_round_size(ready)[0]

    def _round(self) -> bool:
        e, cfg, backend = self.engine, self.cfg, self.engine.backend
        ready, stop = e.within_budget(e.trust.selectable(sorted(self.ids)))
        if stop:
            e.finished, self.stopped_reason = True, stop
            return False
        m = self._round_size(ready)
        if not m:
            self.stopped_reason = (f"stalled after round {e.round_number}: {len(ready)} selectable clients "
                                   f"< clients_per_round={cfg.clients_per_round} (min_clients_per_round="
                                   f"{cfg.min_clients})")
            return False
        r = e.round_number + 1
        self.attempts[r] = self.attempts.get(r, 0) + 1
        if self.attempts[r] > 1 + self.max_retries:
            self.stopped_reason = (f"round {r} failed {self.attempts[r] - 1} time(s) in a row (max_round_retries = "
                                   f"{self.max_retries}); last failure: {self.last_failure}")
            return False
        q = e.trust.max_inclusion_probability(ready, m)
        selected = e.trust.select(ready, m, e.rng)
        chosen = sorted((self.index[c], e.trust.trust(c)) for c in selected)
        self.selection[r] = ([i for i, _ in chosen], [t for _, t in chosen])
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
        results: dict[int, GroupResult | None] = {}
        bad_groups = 0
        # every survivor's prepare_update (clip, rounding, noise share from its own stream), computed for the whole
        # round at once by simulations.batch_pipeline – the same integers, client by client
        members: list[int] = []
        dps: list[DistributedDPConfig] = []
        lies: list[float | None] = []
        spans: list[tuple[int, int]] = []
        survivors_of: list[list[str]] = []
        for gi, g in enumerate(groups):
            gdp = rs.dp[gi]
            attacker_dp = gdp if self.attackers_clip else DistributedDPConfig(**unclipped_dp(asdict(gdp)))
            survivors = [c for c in g if self.index[c] not in self.absent]
            survivors_of.append(survivors)
            spans.append((len(members), len(members) + len(survivors)))
            for c in survivors:
                i = self.index[c]
                dp = attacker_dp if i in self.byzantine else gdp
                members.append(i)
                dps.append(dp)
                lies.append(lying_indicator(dp) if i in self.byzantine else None)
        q = prepare_updates(deltas[[row[i] for i in members]], dps, [self.streams[i] for i in members], lies)
        for gi, g in enumerate(groups):
            survivors = survivors_of[gi]
            a, b = spans[gi]
            acc = group_sum(q[a:b], rs.dp[gi].modulus_bits) if b > a else backend.zeros_field(
                rs.dp[gi].field_length, rs.dp[gi].modulus_bits)
            # SecAgg+ releases a group's sum only if at least its threshold of members took part
            ok = len(survivors) >= max(1, rs.servers[gi].cfg.t)
            results[gi] = GroupResult(acc, tuple(survivors), tuple(c for c in g if c not in survivors)) if ok else None
            bad_groups += any(self.index[c] in self.byzantine for c in survivors)
        rs.stage = "secagg"
        e.round = rs
        done_before = len(e.history)
        try:
            e.complete_round(results, self.now)  # the engine's own decode → bound → aggregate → optimizer → trust → …
        except ValueError as exc:
            e.round = None
            self.stopped_reason = f"engine error in round {r}: {exc}"
            return False
        if e.round is not None:  # pragma: no cover - no transport, so no next round can have started
            raise AssertionError("the engine started a round without connected clients")
        if len(e.history) == done_before:  # the engine failed the round: the same round number is tried again
            ok = sum(res is not None for res in results.values())
            self.last_failure = ("every group failed (too few survivors)" if not ok else
                                 f"{ok} group(s) released, too few for {cfg.aggregator!r}")
            return True
        e.history[-1]["corrupted_groups"] = bad_groups
        e.history[-1]["attempts"] = self.attempts[r]
        return True
