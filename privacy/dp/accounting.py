"""(ε, δ) accounting for user-level DP across rounds, and a budget that refuses rounds.

Each round is one :class:`RoundEvent`: every participating client's clipped update enters exactly one
released sum (a secure-aggregation group's sum, or the server's aggregate in trusted mode) that carries
Gaussian or discrete-Gaussian noise with effective noise multiplier z = σ/Δ₂; clients are included with
probability at most q. The accountant composes Poisson-subsampled Gaussian mechanisms with Rényi DP
(Mironov CSF'17; subsampling: Zhu & Wang ICML'19 / Mironov et al. 2019) via Google's ``dp_accounting``
library, and converts to (ε, δ). The ledger (a list of events) is serializable so the coordinator persists it
and resumes after a crash. docs/privacy.md explains how z is derived for distributed DP (dropouts counted
conservatively, group-wise release, discreteness).

Beside the RDP figure: :func:`epsilon_pld` (privacy loss distributions, tighter for the continuous Gaussian) and
:func:`epsilon_report` (both, and which one is valid to report); :class:`ParticipationAccountant` accounts per
client, without amplification by subsampling, from the rounds each client actually took part in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from privacy.dp.ledger import ORDERS, gaussian_rdp_epsilon, inv_z2_of

__all__ = ["ORDERS", "BudgetExceeded", "ParticipationAccountant", "PrivacyAccountant", "PrivacyBudget", "RoundEvent",
           "epsilon_for", "epsilon_pld", "epsilon_report"]


@dataclass(frozen=True)
class RoundEvent:
    """One round's release: effective noise multiplier ``z`` (σ / L2-sensitivity) and sampling rate ``q``
    (an upper bound on any client's probability of taking part), repeated ``count`` times."""

    noise_multiplier: float
    sampling_rate: float
    count: int = 1

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(f"noise multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.sampling_rate <= 1:
            raise ValueError(f"sampling rate must be in (0, 1], got {self.sampling_rate}")
        if self.count < 1:
            raise ValueError("count must be >= 1")


class BudgetExceeded(Exception):
    """The round would take ε above the configured budget; nothing was spent."""

    def __init__(self, epsilon_after: float, budget: float, delta: float) -> None:
        super().__init__(f"this round would bring ε to {epsilon_after:.4f} > budget {budget:.4f} (δ={delta:g}); "
                         f"round refused")
        self.epsilon_after, self.budget, self.delta = epsilon_after, budget, delta


def _dp_event(events: list[RoundEvent]) -> Any:
    import dp_accounting

    parts = []
    for e in events:
        base = dp_accounting.GaussianDpEvent(e.noise_multiplier)
        ev = base if e.sampling_rate >= 1 else dp_accounting.PoissonSampledDpEvent(e.sampling_rate, base)
        parts.append(dp_accounting.SelfComposedDpEvent(ev, e.count))
    return dp_accounting.ComposedDpEvent(parts)


def epsilon_for(events: list[RoundEvent], delta: float) -> float:
    """ε at ``delta`` after the events (RDP accountant of dp_accounting). 0 for no events."""
    if not events:
        return 0.0
    from dp_accounting.rdp import RdpAccountant

    acc = RdpAccountant(list(ORDERS))
    acc.compose(_dp_event(events))
    return float(acc.get_epsilon(delta))


@dataclass
class PrivacyAccountant:
    """The ledger of released rounds."""

    events: list[RoundEvent] = field(default_factory=list)

    def epsilon(self, delta: float) -> float:
        return epsilon_for(self.events, delta)

    def to_dict(self) -> dict[str, Any]:
        return {"events": [asdict(e) for e in self.events]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyAccountant:
        return cls([RoundEvent(**e) for e in data.get("events", [])])


@dataclass
class PrivacyBudget:
    """A configured (ε, δ) budget over an accountant: :meth:`check` refuses a round that would exceed it."""

    epsilon: float
    delta: float
    accountant: PrivacyAccountant = field(default_factory=PrivacyAccountant)

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"ε budget must be > 0, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"δ must be in (0, 1), got {self.delta}")

    def epsilon_spent(self) -> float:
        return self.accountant.epsilon(self.delta)

    def epsilon_after(self, event: RoundEvent) -> float:
        return epsilon_for([*self.accountant.events, event], self.delta)

    def check(self, event: RoundEvent) -> float:
        """Raise :class:`BudgetExceeded` if ``event`` would exceed the budget; else return ε after it."""
        after = self.epsilon_after(event)
        if after > self.epsilon:
            raise BudgetExceeded(after, self.epsilon, self.delta)
        return after

    def spend(self, event: RoundEvent) -> float:
        """Check, then record the event. Returns ε spent so far."""
        after = self.check(event)
        self.accountant.events.append(event)
        return after


# ── privacy loss distributions ─────────────────────────────────────────────────────────────────────────
def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"δ must be in (0, 1), got {delta}")


def _pld_epsilon(events: list[RoundEvent], delta: float, interval: float) -> float:
    from dp_accounting.pld import PLDAccountant

    acc = PLDAccountant(value_discretization_interval=interval)
    acc.compose(_dp_event(events))
    return float(acc.get_epsilon(delta))


def _default_interval(rdp_epsilon: float) -> float:
    # 1e-3 in privacy-loss units, coarser in proportion for huge ε (the PLD's support, and its cost, grow with
    # ε: a resolution of 1e-4·ε keeps one report near 0.1 s even at ε in the thousands). dp_accounting's
    # pessimistic discretization keeps the result an upper bound at any resolution.
    return max(1e-3, 1e-4 * rdp_epsilon)


def epsilon_pld(events: list[RoundEvent], delta: float, value_discretization_interval: float | None = None) -> float:
    """ε at ``delta`` after the events with dp_accounting's privacy-loss-distribution accountant (Poisson-
    subsampled events supported). Tighter than the RDP figure, but the loss distribution is the one of the
    *continuous* Gaussian: a valid bound for continuous Gaussian noise only (see :func:`epsilon_report`).
    ``value_discretization_interval`` None: 1e-3, coarser for very large ε. 0 for no events."""
    _check_delta(delta)
    if value_discretization_interval is not None and not value_discretization_interval > 0:
        raise ValueError(f"value_discretization_interval must be > 0, got {value_discretization_interval}")
    if not events:
        return 0.0
    interval = value_discretization_interval or _default_interval(epsilon_for(events, delta))
    return _pld_epsilon(events, delta, interval)


def epsilon_report(events: list[RoundEvent], delta: float, continuous_gaussian: bool) -> dict[str, Any]:
    """Both accountants' ε and the one to report: ``{"rdp", "pld", "reported", "method"}``.

    The PLD figure describes the continuous Gaussian mechanism. With ``continuous_gaussian`` (server-side
    DP-FedAvg noise) both are valid upper bounds and the smaller is reported. For the distributed *discrete*
    Gaussian of the client pipeline only the RDP/concentrated-DP bound of Kairouz, Liu & Steinke (ICML'21) is
    proven, so the PLD figure is returned for information and the RDP one is reported. No events: zeros.
    """
    _check_delta(delta)
    if not events:
        return {"rdp": 0.0, "pld": 0.0, "reported": 0.0, "method": "rdp"}
    rdp = epsilon_for(events, delta)
    pld = _pld_epsilon(events, delta, _default_interval(rdp))
    if continuous_gaussian and pld < rdp:
        return {"rdp": rdp, "pld": pld, "reported": pld, "method": "pld"}
    return {"rdp": rdp, "pld": pld, "reported": rdp, "method": "rdp"}


# ── per-client accounting ──────────────────────────────────────────────────────────────────────────────
@dataclass
class ParticipationAccountant:
    """ε per client from the rounds whose released sums actually contained the client's input.

    No amplification by subsampling (the coordinator knows who took part, so a guarantee *against the
    coordinator* cannot rest on the randomness of the selection) and zero-out adjacency: each participation
    is one full Gaussian release with the round's noise multiplier z. A client is therefore summarised by its
    count and inv_z2 = Σ 1/z² (RDP of order α: α·inv_z2/2), and its ε is :func:`gaussian_rdp_epsilon` of that
    sum – pure Python, memoized, and non-decreasing in inv_z2, so the maximum over clients is the ε of the
    largest inv_z2 (10,000 clients cost one dictionary scan).
    """

    counts: dict[str, int] = field(default_factory=dict)
    inv: dict[str, float] = field(default_factory=dict)

    def record(self, client_ids: Iterable[str], z: float) -> None:
        """One round: every client in ``client_ids`` (each at most once) entered a sum released with noise
        multiplier ``z`` > 0."""
        if isinstance(client_ids, (str, bytes)):
            raise ValueError("client_ids must be a collection of client ids, not one string")
        ids = list(client_ids)
        if not all(isinstance(c, str) for c in ids):
            raise ValueError("client ids must be strings")
        if len(set(ids)) != len(ids):
            raise ValueError("a client can enter a round's released sums only once")
        inc = inv_z2_of(z)
        if not (z > 0 and math.isfinite(inc)):
            raise ValueError(f"noise multiplier must be > 0 (and 1/z² finite), got {z!r}")
        new = {c: self.inv.get(c, 0.0) + inc for c in ids}
        if not all(math.isfinite(v) for v in new.values()):
            raise ValueError("Σ 1/z² overflowed")
        for c in ids:
            self.counts[c] = self.counts.get(c, 0) + 1
        self.inv.update(new)

    def inv_z2(self, cid: str) -> float:
        return self.inv.get(cid, 0.0)

    def count(self, cid: str) -> int:
        return self.counts.get(cid, 0)

    def epsilon_of(self, cid: str, delta: float) -> float:
        """The client's ε at ``delta`` (0 if it never took part)."""
        return gaussian_rdp_epsilon(self.inv_z2(cid), delta)

    def epsilon_after(self, cid: str, z: float, delta: float) -> float:
        """The client's ε if it took part in one more round released with noise multiplier ``z``."""
        return gaussian_rdp_epsilon(self.inv_z2(cid) + inv_z2_of(z), delta)

    def max_epsilon(self, delta: float) -> float:
        """The largest ε of any client (0 if none took part yet)."""
        return gaussian_rdp_epsilon(max(self.inv.values(), default=0.0), delta)

    def max_participations(self) -> int:
        return max(self.counts.values(), default=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``{"clients": {id: {"count": n, "inv_z2": Σ 1/z²}}}`` (floats round-trip exactly)."""
        return {"clients": {c: {"count": n, "inv_z2": self.inv[c]} for c, n in self.counts.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ParticipationAccountant:
        """Inverse of :meth:`to_dict`; ``None`` or ``{}`` give an empty accountant, malformed input
        ``ValueError``."""
        if data is None:
            return cls()
        if not isinstance(data, dict) or not set(data) <= {"clients"}:
            raise ValueError("participation ledger must be {'clients': {...}}")
        clients = data.get("clients", {})
        if not isinstance(clients, dict):
            raise ValueError("participation ledger 'clients' must be an object")
        out = cls()
        for c, rec in clients.items():
            if not isinstance(c, str) or not isinstance(rec, dict) or set(rec) != {"count", "inv_z2"}:
                raise ValueError(f"malformed participation record for {c!r}")
            n, inv = rec["count"], rec["inv_z2"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"count of {c!r} must be an int >= 1")
            if isinstance(inv, int) and not isinstance(inv, bool) and 0 <= inv < 1 << 1000:
                inv = float(inv)
            if not isinstance(inv, float) or not (inv >= 0 and math.isfinite(inv)):
                raise ValueError(f"inv_z2 of {c!r} must be a finite number >= 0")
            out.counts[c], out.inv[c] = n, inv
        return out
