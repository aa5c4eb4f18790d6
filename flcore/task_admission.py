"""The checks a client makes before its update enters a group's secure aggregation, shared by every client
runtime (our session, the Flower client Mod): the task's group against the client's :class:`PrivacyPolicy`, its
DP/quantization parameters, and the ledger entry the participation would add against the client's budget.

Pure Python (stdlib and the pure client-side modules only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flcore.policy import PolicyViolation, PrivacyPolicy
from privacy.client_pipeline import DistributedDPConfig
from privacy.dp.ledger import LedgerEntry, PrivacyLedger


def admit_group_task(policy: PrivacyPolicy, ledger: PrivacyLedger, *, round_: int, attempt: str, n: int,
                     degree: int, threshold: int, dp_params: Mapping[str, Any], dimension: int, binding: bytes
                     ) -> tuple[DistributedDPConfig, LedgerEntry]:
    """The task's DP configuration and the ledger entry to record when the masked input leaves. Raises
    :class:`PolicyViolation` (its ``code`` is what the client declines with) or
    :class:`privacy.dp.ledger.LedgerBudgetExceeded`; records nothing."""
    policy.check_group(n, degree, threshold)
    try:
        dp = DistributedDPConfig(**dict(dp_params))
        dp.validate(n)
    except (TypeError, ValueError) as exc:
        raise PolicyViolation("policy_range", f"DP/quantization parameters: {exc}") from None
    if dp.dimension != dimension:
        raise PolicyViolation("policy_dimension", f"dimension {dp.dimension} != the model's {dimension} parameters")
    if dp.noise_multiplier > 0 and dp.min_contributors != threshold:
        raise PolicyViolation("policy_calibration", f"noise share calibrated for {dp.min_contributors} "
                              f"contributors, the group's threshold is {threshold}")
    policy.check_noise(dp.noise_multiplier)  # against the whole contribution, indicator included
    honest = threshold - policy.colluders
    entry = LedgerEntry(round=round_, attempt=attempt, group_size=n, threshold=threshold,
                        z_guaranteed=dp.noise_multiplier_with(honest) if honest >= 1 else 0.0,
                        z_own=dp.noise_multiplier_with(1), config_hash=binding.hex())
    if ledger.recorded(entry):
        raise PolicyViolation("bad_task", "this round attempt is already in our ledger: not released twice")
    ledger.check(entry)
    return dp, entry
