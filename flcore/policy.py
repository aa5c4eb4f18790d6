"""The client's own privacy policy: the conditions under which it lets its update into a secure aggregation.

The coordinator is the party a client must not have to trust, so every security parameter of a task that the
client can check, it checks here, in the shared client core (native and browser clients run this file):

- **group size** n ≥ ``min_group_size``: a released sum mixes at least t inputs;
- **complete graph** (plain SecAgg, Bonawitz et al. CCS'17): in the sparse graphs of SecAgg+ (Bell et al. CCS'20)
  the consistency check is local to each client's neighbourhood, and a malicious coordinator that shows
  different survivor sets to different neighbourhoods unmasks a client with no colluder (docs/threat-model.md,
  route 3a). Sparse graphs are refused unless ``allow_sparse_graph``;
- **threshold** t: a coordinator that shows two survivor sets (one containing u, one not) obtains both u's
  self-mask seed and its mask key – hence x_u – when both views reach t consistency signatures. With the
  complete graph, honest holders split between the views and colluding members sign both, so this needs
  c ≥ 2t − n colluding members. The policy requires 2t − n > ``colluders`` (and the regime's floor:
  ``"majority"`` t ≥ ⌊n/2⌋ + 1, ``"two-thirds"`` t ≥ ⌈2n/3⌉, the active-adversary regime);
- **noise**: the task's noise multiplier z (against the whole contribution, adaptive clipping's indicator
  coordinate included: the shares are calibrated to √(C² + κ²/4)) ≥ ``min_noise_multiplier``, and the per-client noise share is
  calibrated for the group's *actual* threshold t (Kairouz, Liu & Steinke ICML'21: any released sum of ≥ t
  honest inputs carries the full noise);
- **shapes and ranges**: the dimension matches the model, the quantization/modulus are in range and wide enough
  for the group (no wrap-around), the clip is finite and positive.

Pure Python (stdlib only).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

THRESHOLD_RULES = ("majority", "two-thirds")


class PolicyViolation(Exception):
    """A task the client's policy refuses. ``code`` is sent to the coordinator in a ``decline`` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def rule_threshold(n: int, rule: str) -> int:
    """The smallest threshold the ``rule`` admits for a group of n members (complete graph, k + 1 = n holders)."""
    if n < 1:
        raise ValueError("group size must be >= 1")
    if rule == "majority":
        return n // 2 + 1 if n > 1 else 1
    if rule == "two-thirds":
        return max(-(-2 * n // 3), n // 2 + 1) if n > 1 else 1
    raise ValueError(f"threshold rule must be one of {THRESHOLD_RULES}, got {rule!r}")


def colluders_withstood(n: int, t: int) -> int:
    """How many colluding group members (with a malicious coordinator) the complete-graph consistency check
    withstands before a client's input can be unmasked: the attack needs c ≥ 2t − n, so c ≤ 2t − n − 1."""
    return max(-1, 2 * t - n - 1)


def required_threshold(n: int, rule: str, colluders: int) -> int:
    """The threshold this policy requires for a group of n: the rule's floor and 2t − n > colluders."""
    return max(rule_threshold(n, rule), (n + colluders) // 2 + 1 if n > 1 else 1)


@dataclass(frozen=True)
class PrivacyPolicy:
    """What a client requires of every task. Defaults are safe; see docs/threat-model.md for what each buys."""

    min_group_size: int = 5
    threshold_rule: str = "two-thirds"
    colluders: int = 1  # colluding members of the client's group (with the coordinator) to withstand
    allow_sparse_graph: bool = False
    min_noise_multiplier: float = 0.5
    epsilon_budget: float = 10.0  # the client's own budget (guaranteed figure of its ledger)
    delta: float = 1e-6
    max_aborted_reveals: int = 10  # consecutive attempts (any round number) aborted after our reveal

    def __post_init__(self) -> None:
        if self.min_group_size < 1:
            raise ValueError("min_group_size must be >= 1")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be one of {THRESHOLD_RULES}, got {self.threshold_rule!r}")
        if self.colluders < 0:
            raise ValueError("colluders must be >= 0")
        if not (self.min_noise_multiplier >= 0 and math.isfinite(self.min_noise_multiplier)):
            raise ValueError("min_noise_multiplier must be finite and >= 0")
        if not self.epsilon_budget > 0:
            raise ValueError("epsilon_budget must be > 0 (math.inf: no budget)")
        if not 0 < self.delta < 1:
            raise ValueError("delta must be in (0, 1)")
        if self.max_aborted_reveals < 0:
            raise ValueError("max_aborted_reveals must be >= 0")

    @classmethod
    def permissive(cls) -> PrivacyPolicy:
        """Accept any well-formed task (no minimums, no budget): for trusted-coordinator set-ups and research
        simulations that explore unsafe configurations on purpose. Never a default."""
        return cls(min_group_size=1, threshold_rule="majority", colluders=0, allow_sparse_graph=True,
                   min_noise_multiplier=0.0, epsilon_budget=math.inf, delta=1e-6, max_aborted_reveals=1 << 30)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["epsilon_budget"] = None if math.isinf(self.epsilon_budget) else self.epsilon_budget
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrivacyPolicy:
        """From SDK/CLI options (unknown keys refused; ``epsilon_budget`` None = no budget)."""
        known = set(cls.__dataclass_fields__)
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown policy option(s) {sorted(extra)}")
        kw = dict(d)
        if "epsilon_budget" in kw and kw["epsilon_budget"] is None:
            kw["epsilon_budget"] = math.inf
        types = {"min_group_size": int, "colluders": int, "max_aborted_reveals": int, "threshold_rule": str,
                 "allow_sparse_graph": bool, "min_noise_multiplier": float, "epsilon_budget": float,
                 "delta": float}
        for k, v in kw.items():
            want = types[k]
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                kw[k] = v = float(v)
            if want is int and isinstance(v, float) and v.is_integer():
                kw[k] = v = int(v)
            if not isinstance(v, want) or (want is not bool and isinstance(v, bool)):
                raise ValueError(f"policy option {k!r} must be {want.__name__}, got {type(v).__name__}")
        return cls(**kw)

    # ── checks ───────────────────────────────────────────────────────────────────────────────────────
    def check_group(self, n: int, degree: int, threshold: int) -> None:
        """Refuse a group that is too small, sparse, or whose threshold a coordinator with ``colluders``
        colluding members could split (raises :class:`PolicyViolation`)."""
        if n < self.min_group_size:
            raise PolicyViolation("policy_group_size", f"group of {n} < the client's minimum {self.min_group_size}")
        if degree != n - 1 and not self.allow_sparse_graph:
            raise PolicyViolation("policy_graph", f"sparse neighbour graph (degree {degree} < {n - 1}) refused: a "
                                  "malicious coordinator can split local consistency checks")
        need = required_threshold(n, self.threshold_rule, self.colluders)
        if threshold - self.colluders < 1:
            raise PolicyViolation("policy_threshold", f"threshold {threshold} leaves no honest input in a released "
                                  f"sum against {self.colluders} colluder(s)")
        if not need <= threshold <= n:
            raise PolicyViolation("policy_threshold", f"threshold {threshold} for a group of {n}; the client "
                                  f"requires {need}..{n} ({self.threshold_rule}, ≤ {self.colluders} colluders)")

    def check_noise(self, noise_multiplier: float) -> None:
        if not noise_multiplier >= self.min_noise_multiplier:
            raise PolicyViolation("policy_noise", f"noise multiplier {noise_multiplier} < the client's minimum "
                                  f"{self.min_noise_multiplier}")
