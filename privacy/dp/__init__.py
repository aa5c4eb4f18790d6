"""Differential privacy: distributed discrete-Gaussian noise on the clients (composes with secure
aggregation), DP-FedAvg and adaptive clipping on a trusted server, (ε, δ) accounting with a budget on the
coordinator, and each client's own ledger. See docs/privacy.md.

Importing this package is pure Python (the browser does); the server-side pieces (numpy, dp_accounting) load on
first use.
"""

from typing import Any

from privacy.dp.accounting import (
    BudgetExceeded,
    ParticipationAccountant,
    PrivacyAccountant,
    PrivacyBudget,
    RoundEvent,
    epsilon_for,
    epsilon_pld,
    epsilon_report,
)
from privacy.dp.clipping import l2_clip
from privacy.dp.discrete_gaussian import sample_discrete_gaussian
from privacy.dp.ledger import (
    LedgerBudgetExceeded,
    LedgerEntry,
    PrivacyLedger,
    gaussian_rdp_epsilon,
    inv_z2_of,
    z_from_inv,
)

_SERVER = ("AdaptiveClipState", "DPFedAvg", "adaptive_clip_update", "adaptive_effective_multiplier")


def __getattr__(name: str) -> Any:
    if name in _SERVER:
        from privacy.dp import server

        return getattr(server, name)
    raise AttributeError(name)


__all__ = ["AdaptiveClipState", "BudgetExceeded", "DPFedAvg", "LedgerBudgetExceeded", "LedgerEntry",
           "ParticipationAccountant", "PrivacyAccountant", "PrivacyBudget", "PrivacyLedger", "RoundEvent",
           "adaptive_clip_update", "adaptive_effective_multiplier", "epsilon_for", "epsilon_pld", "epsilon_report",
           "gaussian_rdp_epsilon", "inv_z2_of", "l2_clip", "sample_discrete_gaussian", "z_from_inv"]
