"""Differential privacy: distributed discrete-Gaussian noise on the clients (composes with secure
aggregation), DP-FedAvg and adaptive clipping on a trusted server, and (ε, δ) accounting with a budget.
See docs/privacy.md.

Importing this package is pure Python (the browser does); the server-side pieces (numpy) load on first use.
"""

from typing import Any

from privacy.dp.accounting import BudgetExceeded, PrivacyAccountant, PrivacyBudget, RoundEvent
from privacy.dp.clipping import l2_clip
from privacy.dp.discrete_gaussian import sample_discrete_gaussian

_SERVER = ("AdaptiveClipState", "DPFedAvg", "adaptive_clip_update")


def __getattr__(name: str) -> Any:
    if name in _SERVER:
        from privacy.dp import server

        return getattr(server, name)
    raise AttributeError(name)


__all__ = ["AdaptiveClipState", "BudgetExceeded", "DPFedAvg", "PrivacyAccountant", "PrivacyBudget", "RoundEvent",
           "adaptive_clip_update", "l2_clip", "sample_discrete_gaussian"]
