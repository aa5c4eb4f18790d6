"""Trust scores and client selection (docs/trust.md).

Reputation: the beta reputation system (Jøsang & Ismail, Bled eConference 2002). Each client holds (α, β):
positive and negative evidence plus a prior (α₀, β₀); trust = E[Beta(α, β)] = α / (α + β). Old evidence decays
towards the prior by a forgetting factor λ per observation, so a client's recent behaviour dominates.

Evidence is measured by the server, never self-reported: for each aggregated unit (a client when groups have
size 1, else a secure-aggregation group) the engine computes an outlier score o (the noise-debiased median
pairwise distance over its median, :mod:`coordinator.federation.evidence`; ≈ 1 typical). It maps to negative evidence
n = clip((o − 1)/(τ − 1), 0, 1)
and positive evidence 1 − n; a non-finite update is full negative evidence. A group's evidence is given to
each of its members: with fresh random groups every round an attacker is in a "bad" group every round,
an honest client only when it happens to share a group with an attacker, so attackers' trust falls faster
(group testing).

Selection samples m distinct clients with probability ∝ max(trust, floor) (successive sampling without
replacement); the floor keeps every non-banned client selectable. A client whose trust is below the ban
threshold after at least ``min_evidence`` observations is banned. Randomness is injected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TrustParams:
    prior_alpha: float = 2.0
    prior_beta: float = 1.0
    decay: float = 0.9  # λ: weight kept by old evidence at each new observation
    outlier_threshold: float = 2.5  # τ: outlier score that counts as fully negative evidence
    floor: float = 0.05  # exploration floor of the selection weight
    ban_threshold: float = 0.2
    min_evidence: int = 5
    selection: str = "trust"  # "trust": sampled ∝ max(trust, floor); "uniform": every eligible client alike
    negative_weight: float = 2.0  # w⁻: weight of one fully negative observation (bans after 5 instead of 12)
    deviation_decay: float = 0.97  # λ_d: memory of the co-deviation accumulator (≈ 1/(1 − λ_d) observations)
    deviation_threshold: float = 2.0  # t: co-deviation statistic from which evidence is negative (0: off)
    alignment_threshold: float = 1.0  # t_a: opposition statistic from which evidence is negative (0: off)

    def __post_init__(self) -> None:
        if self.selection not in ("trust", "uniform"):
            raise ValueError(f"selection must be 'trust' or 'uniform', got {self.selection!r}")
        if self.prior_alpha <= 0 or self.prior_beta <= 0:
            raise ValueError("prior alpha and beta must be > 0")
        if not 0 <= self.decay <= 1:
            raise ValueError(f"decay must be in [0, 1], got {self.decay}")
        if not self.outlier_threshold > 1:
            raise ValueError(f"outlier_threshold must be > 1, got {self.outlier_threshold}")
        if not 0 < self.floor <= 1 or not 0 <= self.ban_threshold < 1 or self.min_evidence < 0:
            raise ValueError("need 0 < floor <= 1, 0 <= ban_threshold < 1, min_evidence >= 0")
        if not self.negative_weight >= 1:
            raise ValueError(f"negative_weight must be >= 1, got {self.negative_weight}")
        if not 0 <= self.deviation_decay < 1:
            raise ValueError(f"deviation_decay must be in [0, 1), got {self.deviation_decay}")
        if not self.deviation_threshold >= 0:
            raise ValueError(f"deviation_threshold must be >= 0 (0: no co-deviation evidence), "
                             f"got {self.deviation_threshold}")
        if not self.alignment_threshold >= 0:
            raise ValueError(f"alignment_threshold must be >= 0 (0: no alignment evidence), "
                             f"got {self.alignment_threshold}")


@dataclass
class ClientTrust:
    alpha: float
    beta: float
    observations: int = 0
    banned: bool = False
    # co-deviation accumulator (docs/trust.md (g)): decayed sum of the oriented per-round deviation evidence and
    # of its squares; absent from states saved before it existed (defaults)
    drift: float = 0.0
    drift_energy: float = 0.0
    # alignment accumulator (docs/trust.md (i)): decayed sum of the cosines between the client's unit and the
    # round's aggregate, and of their squares (decay λ_d)
    align: float = 0.0
    align_energy: float = 0.0
    # consecutive selections this client stalled (did not reveal, or was dropped from a SecAgg+ phase at its
    # deadline) with no completed participation in between (:meth:`TrustState.observe_stall`)
    stalls: int = 0

    @property
    def trust(self) -> float:
        return self.alpha / (self.alpha + self.beta)


_CLIENT_FIELDS = tuple(f.name for f in fields(ClientTrust))
assert _CLIENT_FIELDS == ("alpha", "beta", "observations", "banned", "drift", "drift_energy", "align",
                          "align_energy", "stalls"), (
    "TrustState.to_dict lists ClientTrust's fields by hand: keep them in step")


def evidence_from_score(outlier_score: float, params: TrustParams) -> tuple[float, float]:
    """(positive, negative) evidence of one observation from its outlier score (``inf``/``nan`` → negative)."""
    if not np.isfinite(outlier_score):
        return 0.0, 1.0
    neg = float(np.clip((outlier_score - 1.0) / (params.outlier_threshold - 1.0), 0.0, 1.0))
    return 1.0 - neg, neg


@dataclass
class TrustState:
    params: TrustParams = field(default_factory=TrustParams)
    clients: dict[str, ClientTrust] = field(default_factory=dict)
    # to_dict's rows by client: (field values, row) – an unchanged client gets the very same row object back, so
    # saving the state each round costs O(changed clients), not O(identities) (bench_load: 10,000 enrolled
    # identities spent 29 % of the coordinator's time in asdict)
    _rows: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict, init=False, repr=False,
                                                                      compare=False)

    def ensure(self, client: str) -> ClientTrust:
        if client not in self.clients:
            self.clients[client] = ClientTrust(self.params.prior_alpha, self.params.prior_beta)
        return self.clients[client]

    def trust(self, client: str) -> float:
        return self.ensure(client).trust

    def observe(self, client: str, positive: float, negative: float) -> None:
        """Decay old evidence towards the prior, add the new evidence, update the ban flag."""
        p = self.params
        c = self.ensure(client)
        c.alpha = p.prior_alpha + p.decay * (c.alpha - p.prior_alpha) + positive
        c.beta = p.prior_beta + p.decay * (c.beta - p.prior_beta) + p.negative_weight * negative
        c.observations += 1
        if c.observations >= p.min_evidence and c.trust < p.ban_threshold:
            c.banned = True

    def observe_stall(self, client: str, evidence: float, ban_after: int = 0) -> bool:
        """A selected client stalled: it did not reveal, or did not answer a SecAgg+ phase by its deadline.
        Weaker than a proven deviation: ``evidence`` (in [0, 1]) of negative evidence through :meth:`observe`;
        ``ban_after`` > 0 bans it after that many consecutive stalls (:meth:`clear_stalls` resets the count when it
        completes a round). Returns whether the client is banned now."""
        c = self.ensure(client)
        if evidence > 0:
            self.observe(client, 0.0, evidence)
        c.stalls += 1
        if ban_after and c.stalls >= ban_after:
            c.banned = True
        return c.banned

    def clear_stalls(self, client: str) -> None:
        """The client took part in a completed round without stalling: its run of stalls is over."""
        c = self.clients.get(client)
        if c is not None:
            c.stalls = 0

    def observe_units(self, units: list[list[str]], outlier_scores: Any, deviations: Any = None,
                      alignments: Any = None) -> None:
        """Evidence for one round: ``units[j]`` are the members of unit j (a client, or a group), scored
        ``outlier_scores[j]`` (:func:`coordinator.federation.evidence.debiased_outlier_scores`); every member receives the
        unit's evidence. ``deviations[j]`` (optional, :func:`coordinator.federation.evidence.deviation_evidence`) is the unit's
        signed deviation along the round's dominant direction: it feeds every member's co-deviation accumulator,
        and a member whose accumulated statistic is on the coordinated minority's side beyond the threshold gets
        that much more negative evidence (:meth:`observe_deviations`) – never positive evidence. ``alignments[j]``
        (optional, :func:`coordinator.federation.evidence.alignment_evidence`) is the cosine between unit j and the
        round's aggregate: a member that points against the aggregate round after round gets negative evidence
        (:meth:`observe_alignments`), again never positive."""
        scores = np.asarray(outlier_scores, dtype=float)
        if len(units) != len(scores):
            raise ValueError(f"{len(units)} units but {len(scores)} scores")
        extra = self.observe_deviations(units, deviations) if deviations is not None else {}
        against = self.observe_alignments(units, alignments) if alignments is not None else {}
        for members, score in zip(units, scores, strict=True):
            pos, neg = evidence_from_score(float(score), self.params)
            for m in members:
                x = 1.0 - (1.0 - extra.get(m, 0.0)) * (1.0 - against.get(m, 0.0))
                self.observe(m, pos * (1.0 - x), neg + (1.0 - neg) * x)

    def observe_alignments(self, units: list[list[str]], alignments: Any) -> dict[str, float]:
        """Update the members' alignment accumulators with one round's cosines between their unit and the round's
        aggregate and return each member's negative evidence in [0, 1] (docs/trust.md (i)).

        align ← λ_d·align + a and energy ← λ_d·energy + a² per member; the self-normalized statistic
        A = align/√energy is ≈ N(μ√k/σ, 1) for a client whose cosines have mean μ and std σ over k observations: an
        honest client's updates agree with the aggregate on average (μ ≥ 0), a sign-flipping or gradient-ascent
        attacker's oppose it in every round. Negative evidence clip((−A − t_a)/t_a, 0, 1): none until A < −t_a."""
        from coordinator.federation.evidence import opposition_negative_evidence

        p = self.params
        cos = np.asarray(alignments, dtype=float)
        if len(units) != len(cos):
            raise ValueError(f"{len(units)} units but {len(cos)} alignments")
        if p.alignment_threshold <= 0:
            return {}
        out: dict[str, float] = {}
        for members, a in zip(units, cos, strict=True):
            if not np.isfinite(a):
                continue
            for m in members:
                c = self.ensure(m)
                c.align = p.deviation_decay * c.align + float(a)
                c.align_energy = p.deviation_decay * c.align_energy + float(a) * float(a)
                out[m] = float(opposition_negative_evidence(c.align, c.align_energy, p.alignment_threshold))
        return out

    def observe_deviations(self, units: list[list[str]], deviations: Any) -> dict[str, float]:
        """Update the members' co-deviation accumulators with one round's deviation evidence and return each
        member's extra negative evidence in [0, 1] (docs/trust.md (g)).

        The round's per-client evidence ζ (the unit's value for each member) is oriented to agree with the
        members' accumulated drift (:func:`coordinator.federation.evidence.round_orientation`), then every member's
        drift ← λ_d·drift + ζ and energy ← λ_d·energy + ζ². The statistic T (drift / √energy, oriented towards the
        minority that deviates together, :func:`coordinator.federation.evidence.codeviation_statistics`) over every client
        seen so far gives the negative evidence clip((T − t)/t, 0, 1) of the members observed this round."""
        from coordinator.federation.evidence import (
            codeviation_statistics,
            deviation_negative_evidence,
            round_orientation,
        )

        p = self.params
        dev = np.asarray(deviations, dtype=float)
        if len(units) != len(dev):
            raise ValueError(f"{len(units)} units but {len(dev)} deviations")
        if p.deviation_threshold <= 0:
            return {}
        pairs = [(m, float(z)) for members, z in zip(units, dev, strict=True) for m in members
                 if np.isfinite(z)]
        if not pairs or not any(z != 0 for _, z in pairs):
            return {}
        sign = round_orientation(np.array([z for _, z in pairs]),
                                 np.array([self.ensure(m).drift for m, _ in pairs]))
        for m, z in pairs:
            c = self.ensure(m)
            c.drift = p.deviation_decay * c.drift + sign * z
            c.drift_energy = p.deviation_decay * c.drift_energy + z * z
        names = list(self.clients)
        stats = codeviation_statistics(np.array([self.clients[k].drift for k in names]),
                                       np.array([self.clients[k].drift_energy for k in names]))
        neg = deviation_negative_evidence(stats, p.deviation_threshold)
        at = dict(zip(names, neg.tolist(), strict=True))
        return {m: at[m] for m, _ in pairs}

    def codeviation(self) -> dict[str, float]:
        """Every known client's current co-deviation statistic T (0 while no coordinated minority shows)."""
        from coordinator.federation.evidence import codeviation_statistics

        names = list(self.clients)
        stats = codeviation_statistics(np.array([self.clients[k].drift for k in names]),
                                       np.array([self.clients[k].drift_energy for k in names]))
        return dict(zip(names, stats.tolist(), strict=True))

    def selectable(self, clients: list[str]) -> list[str]:
        return [c for c in clients if not self.ensure(c).banned]

    def weights(self, clients: list[str]) -> np.ndarray:
        return _weights([self.trust(c) for c in clients], self.params.floor)

    def select(self, clients: list[str], m: int, rng: np.random.Generator) -> list[str]:
        """m distinct non-banned clients, sampled ∝ max(trust, floor) without replacement (sorted)."""
        pool = self.selectable(clients)
        return select(pool, m, {c: self._weight(c) for c in pool}, rng, self.params.floor)

    def _weight(self, client: str) -> float:
        """The selection weight's trust input: the client's trust, or 1 for everyone under uniform selection
        (evidence is still collected and bans still apply)."""
        return 1.0 if self.params.selection == "uniform" else self.trust(client)

    def max_inclusion_probability(self, clients: list[str], m: int) -> float:
        """Upper bound on any selectable client's per-round selection probability (see the module function).
        ``clients`` must be the pool :meth:`select` will sample from (a smaller pool means larger
        probabilities)."""
        pool = self.selectable(clients)
        return max_inclusion_probability([self._weight(c) for c in pool], m, self.params.floor)

    def to_dict(self) -> dict[str, Any]:
        """The state as plain data. Rows of clients unchanged since the last call are the same objects as then:
        treat the result as read-only."""
        if len(self._rows) > len(self.clients):  # forgotten identities
            self._rows = {k: r for k, r in self._rows.items() if k in self.clients}
        rows: dict[str, dict[str, Any]] = {}
        for k, v in self.clients.items():
            key = (v.alpha, v.beta, v.observations, v.banned, v.drift, v.drift_energy, v.align, v.align_energy,
                   v.stalls)  # _CLIENT_FIELDS
            hit = self._rows.get(k)
            if hit is None or hit[0] != key:
                hit = (key, dict(zip(_CLIENT_FIELDS, key, strict=True)))
                self._rows[k] = hit
            rows[k] = hit[1]
        return {"params": asdict(self.params), "clients": rows}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrustState:
        return cls(TrustParams(**data["params"]), {k: ClientTrust(**v) for k, v in data["clients"].items()})


def select(clients: list[str], m: int, trust: Mapping[str, float], rng: np.random.Generator,
           floor: float) -> list[str]:
    """Sample ``m`` distinct clients without replacement, each draw picking a remaining client with probability
    ∝ max(trust, floor) (successive sampling). Returns them sorted. The caller removes banned clients first.
    Randomness comes only from ``rng`` (the engine's seeded generator: selection is not secret, but must be
    reproducible for the simulation harness)."""
    pool = sorted(set(clients))
    if len(pool) != len(clients):
        raise ValueError("duplicate client ids in the selection pool")
    if not 0 < floor <= 1:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise ValueError(f"m must be an integer >= 0, got {m!r}")
    if m > len(pool):
        raise ValueError(f"cannot select {m} clients: only {len(pool)} selectable")
    w = _weights([trust[c] for c in pool], floor)
    # numpy's choice(replace=False, p=…) is successive sampling: each new pick ∝ the remaining weights
    chosen = rng.choice(len(pool), size=m, replace=False, p=w / w.sum())
    return sorted(pool[i] for i in chosen)


def max_inclusion_probability(trust_values: Any, m: int, floor: float) -> float:
    """An upper bound on any client's probability of being among the ``m`` selected in one round (the
    subsampling rate q the DP accountant needs).

    With weights w = max(trust, floor), total W: at each of the m successive draws, given that client i has not
    been picked yet, the remaining weight is at least W − S_i (S_i = the m − 1 largest *other* weights), so
    i is picked with probability ≤ w_i / (W − S_i); a union bound over the m draws gives
    P(i selected) ≤ min(1, m·w_i / (W − S_i)). The bound is exact for m = 1 and tight for equal weights
    (m/n · n/(n − m + 1)); 1 when m ≥ n."""
    w = _weights(trust_values, floor)
    n = len(w)
    if m >= n:
        return 1.0
    if m <= 0:
        return 0.0
    total = float(w.sum())
    top = np.sort(w)[::-1][:m]
    # S_i: if w_i is among the m − 1 largest, the other m − 1 largest are top[:m] minus w_i; else top[:m − 1]
    s_without = np.where(w >= top[m - 2] if m >= 2 else np.zeros(n, bool),
                         top.sum() - w, top[: m - 1].sum())
    return float(min(1.0, np.max(m * w / (total - s_without))))


def _weights(trust_values: Any, floor: float) -> np.ndarray:
    t = np.asarray(trust_values, dtype=float)
    if t.ndim != 1 or not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(t > 1):
        raise ValueError("trust values must be a 1-D array of numbers in [0, 1]")
    return np.maximum(t, floor)
