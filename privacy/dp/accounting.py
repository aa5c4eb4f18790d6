"""(ε, δ) accounting for user-level DP across rounds, and a budget that refuses rounds.

Each round is one :class:`RoundEvent`: every participating client's clipped update enters exactly one
released sum (a secure-aggregation group's sum, or the server's aggregate in trusted mode) that carries
Gaussian or discrete-Gaussian noise with effective noise multiplier z = σ/Δ₂; clients are included with
probability at most q. The accountant composes Poisson-subsampled Gaussian mechanisms with Rényi DP
(Mironov CSF'17; subsampling: Zhu & Wang ICML'19 / Mironov et al. 2019) via Google's ``dp_accounting``
library, and converts to (ε, δ). The ledger (a list of events) is serializable so the coordinator persists it
and resumes after a crash. docs/privacy.md explains how z is derived for distributed DP (dropouts counted
conservatively, group-wise release, discreteness).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

ORDERS = tuple(sorted({*(1.75 + x / 4 for x in range(0, 41)), *range(12, 64), 128, 256, 512, 1024}))


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
