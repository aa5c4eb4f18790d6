"""Grouping planner: the per-round probability that secure aggregation in groups breaks the robust rule.

Secure aggregation inside groups, then a Byzantine-robust rule across the group means, is the SHARE design
(Velicheti, Xia & Koyejo, "Secure Byzantine-Robust Distributed Learning via Clustering", arXiv:2110.02940,
2021/2022: secure averaging inside randomly formed clusters of clients, then robust aggregation over the
cluster means). The robust rule then sees G = ⌊m/s⌋ inputs instead of m, and a single Byzantine member
corrupts its group's whole sum. Whether the rule's guarantee holds in a round therefore depends on how many
groups the round's attackers hit – a random quantity, because clients are selected at random and the groups
are formed from public randomness the attackers cannot steer. This module computes that probability exactly
and plans the group size s and the clients per round m around it (docs/aggregation.md, "Grouping planner").

**The model.** A round selects m clients uniformly at random from a population in which a fraction β is
Byzantine, and splits them into G = max(1, ⌊m/s⌋) groups with the sizes of
:func:`privacy.secagg.graph.partition` (the first m mod G groups get one member more), in a uniformly random
order. A group is *corrupted* if it holds at least one Byzantine member. A round *fails* if more groups are
corrupted than the rule tolerates. Two population models:

- ``byzantine_fraction=β`` (population much larger than m): every selected client is Byzantine independently
  with probability β, so the number B of Byzantine clients in the round is Binomial(m, β);
- ``population=N, byzantine=f`` (a known population): B is Hypergeometric(N, f, m) – uniform selection without
  replacement.

**The computation (exact, no bound or sampling).**

- Hypergeometric: P(C = j) = Σ_b P(B = b) · P(C = j | B = b), where P(C = j | B = b) is the exact distribution
  of the number of groups b attackers hit under a uniformly random partition with these sizes,
  :func:`aggregation.groups.corrupted_groups_distribution` (a dynamic programme over the groups in exact
  integer counts; for equal groups it is the occupancy law C(G, j) Σᵢ (−1)ⁱ C(j, i) C((j−i)s, b) / C(Gs, b)).
- Binomial: the same mixture with P(B = b) = C(m, b) βᵇ (1−β)ᵐ⁻ᵇ collapses to something simpler – given the
  partition, every client is Byzantine independently, so the groups are corrupted *independently*, a group of
  size k with probability 1 − (1 − β)ᵏ. C is then a sum of independent Bernoulli variables with at most two
  distinct probabilities (the partition has sizes ⌊m/G⌋ and ⌊m/G⌋ + 1): the convolution of two binomial
  distributions, computed in log space (tested equal to the mixture above, to brute-force enumeration and to
  Monte Carlo in tests/test_planner.py).

**What the rule tolerates.** :func:`tolerated_groups`: the largest f_g for which
``parse_pipeline(rule, n=G, f=f_g)`` is valid and the aggregator's guarantee covers f_g corrupted inputs
(``aggregation.registry``: the mean and FLTrust cover none, ``trmean(frac=q)`` covers ⌊qG'⌋, bucketing turns
(G, f_g) into (⌈G/s_b⌉, min(f_g, ⌈G/s_b⌉)) before the aggregator). That is the rule's *capacity*. A rule whose
computation takes f (Krum, Multi-Krum, Bulyan, a trimmed mean without ``f=``/``frac=``, NNM) only has the
guarantee for the f it is *run* with – the engine runs it with f_groups = min(byzantine, G) – so for a
configured federation (:func:`check`) its tolerance is that configured f_g; the median, the geometric median
and centered clipping take no f and tolerate their capacity whatever f is configured.

The failure probability is then P(C > tolerated) = Σ_{j > tolerated} P(C = j); a rule that cannot run over G
inputs at all fails with probability 1. :func:`largest_group_size` and :func:`smallest_clients_per_round` scan
for the most private s at a given m and the cheapest m at a given s that keep it ≤ a bound (default 0.01 per
round); :func:`tradeoff_table` prints the privacy-vs-robustness trade-off; :func:`check` evaluates a
:class:`coordinator.federation.config.FederationConfig` (every round size from ``min_clients_per_round`` to m) and is what
``fl-coordinator serve`` refuses configurations with.

Not modelled: dropouts (a group that aborts is lost, which only removes inputs), the coordinator's group-level
norm test (it excludes provably corrupted groups, which only helps), trust-weighted selection (if trust works
it lowers the attackers' share below β; an attacker that earns trust does not), and attackers that adapt to the
rule – a rule can fail with fewer corrupted groups than it "tolerates" when the attack is one it is known to
fail on (:func:`rule_warnings`, docs/aggregation.md).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from aggregation import registry
from aggregation.groups import corrupted_groups_distribution
from aggregation.pipeline import Pipeline, parse_pipeline

DEFAULT_BOUND = 0.01
DEFAULT_M_MAX = 1000


# ── the partition and the population model ───────────────────────────────────────────────────────────────
def group_sizes(m: int, s: int) -> tuple[int, ...]:
    """The group sizes :func:`privacy.secagg.graph.partition` makes of m clients with group size s: G =
    max(1, ⌊m/s⌋) groups, the first m mod G of them one member larger."""
    if isinstance(m, bool) or isinstance(s, bool) or not isinstance(m, int) or not isinstance(s, int):
        raise ValueError(f"m and s must be integers, got m={m!r}, s={s!r}")
    if m < 1 or s < 1:
        raise ValueError(f"need m >= 1 and s >= 1, got m={m}, s={s}")
    g = max(1, m // s)
    base, extra = divmod(m, g)
    return tuple([base + 1] * extra + [base] * (g - extra))


@dataclass(frozen=True)
class ByzantineModel:
    """Who is Byzantine: a fraction β of a population much larger than a round (``fraction``), or exactly
    ``byzantine`` of a known ``population`` of N clients."""

    fraction: float | None = None
    population: int | None = None
    byzantine: int | None = None

    def __post_init__(self) -> None:
        if self.population is None:
            if self.fraction is None or self.byzantine is not None:
                raise ValueError("give byzantine_fraction, or population and byzantine")
            if not (isinstance(self.fraction, int | float) and 0.0 <= self.fraction <= 1.0):
                raise ValueError(f"byzantine_fraction must be in [0, 1], got {self.fraction!r}")
        else:
            if self.fraction is not None or self.byzantine is None:
                raise ValueError("give byzantine_fraction, or population and byzantine")
            if not (isinstance(self.population, int) and isinstance(self.byzantine, int)
                    and 0 <= self.byzantine <= self.population and self.population >= 1):
                raise ValueError(f"need 0 <= byzantine <= population, got byzantine={self.byzantine!r}, "
                                 f"population={self.population!r}")

    @classmethod
    def of(cls, byzantine_fraction: float | None = None, population: int | None = None,
           byzantine: int | None = None) -> ByzantineModel:
        return cls(None if byzantine_fraction is None else float(byzantine_fraction), population, byzantine)

    @property
    def beta(self) -> float:
        """The Byzantine fraction (f/N for a known population)."""
        return float(self.fraction) if self.population is None else self.byzantine / self.population

    def describe(self) -> str:
        if self.population is None:
            return f"β = {_num(self.beta)} (each selected client Byzantine independently)"
        return f"{self.byzantine} Byzantine among {self.population} clients (uniform selection)"


def _num(x: float) -> str:
    return f"{x:.4g}"


def _binomial_pmf(n: int, p: float) -> np.ndarray:
    """Binomial(n, p) probabilities, computed in log space (no overflow for large n)."""
    out = np.zeros(n + 1)
    if p <= 0.0:
        out[0] = 1.0
        return out
    if p >= 1.0:
        out[n] = 1.0
        return out
    lp, lq = math.log(p), math.log1p(-p)
    lg = math.lgamma(n + 1)
    for k in range(n + 1):
        out[k] = math.exp(lg - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lp + (n - k) * lq)
    return out


def _corrupted_pmf(sizes: tuple[int, ...], model: ByzantineModel) -> np.ndarray:
    """P(exactly j groups corrupted), j = 0..G, for a round with these group sizes."""
    m, g = sum(sizes), len(sizes)
    if model.population is None:
        beta = float(model.fraction)  # type: ignore[arg-type]
        pmf = np.ones(1)
        for size, count in sorted(Counter(sizes).items()):
            p_hit = 1.0 if beta >= 1.0 else -math.expm1(size * math.log1p(-beta))
            pmf = np.convolve(pmf, _binomial_pmf(count, p_hit))
        return pmf
    n_pop, f = model.population, model.byzantine
    assert f is not None
    if n_pop < m:
        raise ValueError(f"population {n_pop} is smaller than a round of {m} clients")
    total = math.comb(n_pop, m)
    pmf = np.zeros(g + 1)
    for b in range(max(0, m - (n_pop - f)), min(f, m) + 1):
        w = float(Fraction(math.comb(f, b) * math.comb(n_pop - f, m - b), total))
        pmf += w * corrupted_groups_distribution(sizes, b)
    return pmf


def corrupted_groups_pmf(m: int, s: int, *, byzantine_fraction: float | None = None, population: int | None = None,
                         byzantine: int | None = None) -> np.ndarray:
    """Exact distribution of the number of corrupted groups in a round of m clients in groups of s (index j =
    exactly j groups hold at least one Byzantine member), over the random selection and the random partition."""
    return _corrupted_pmf(group_sizes(m, s), ByzantineModel.of(byzantine_fraction, population, byzantine))


# ── what a rule tolerates ──────────────────────────────────────────────────────────────────────────────────
def _pipeline(rule: str | Pipeline) -> Pipeline:
    return rule if isinstance(rule, Pipeline) else parse_pipeline(rule)


def takes_f(rule: str | Pipeline) -> bool:
    """Whether some step's computation is parametrised by f (its guarantee then covers only the f it runs with)."""
    return any(registry.get_rule(s.name).takes_f(s.args) for s in _pipeline(rule).steps)


def _covers(p: Pipeline, n: int, f: int) -> bool:
    try:
        p.validate(n, f, has_weights=True, has_root_update=True)
    except ValueError:
        return False
    cur_n, cur_f = n, f
    for step in p.steps:
        spec = registry.get_rule(step.name)
        if spec.transform is not None:
            cur_n, cur_f = spec.transform(step.args, cur_n, cur_f)
        elif spec.kind == "aggregator":
            tol = spec.tolerates(step.args, cur_n)
            return tol is None or cur_f <= tol
    return True


@lru_cache(maxsize=8192)
def _capacity(rule: str, n: int) -> int | None:
    p = parse_pipeline(rule)
    if not _covers(p, n, 0):
        return None
    lo, hi = 0, n  # _covers(lo) holds; preconditions are monotone in f, so bisect for the largest
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _covers(p, n, mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def tolerated_groups(rule: str | Pipeline, num_groups: int, f_groups: int | None = None) -> int | None:
    """How many of ``num_groups`` corrupted group means the rule's guarantee covers; ``None`` if the rule cannot
    run over that many inputs at all (e.g. Krum over fewer than 3).

    Without ``f_groups``: the rule's capacity, the largest f_g for which ``parse_pipeline(rule, n=G, f=f_g)`` is
    valid and the aggregator covers f_g (module docstring). With ``f_groups`` (the f the rule is configured with,
    in groups – the engine uses min(byzantine, G)): for a rule whose computation takes f, ``min(f_groups,
    capacity)`` if the pipeline is valid with it, else ``None``; for a rule that takes no f, the capacity."""
    p = _pipeline(rule)
    if num_groups < 1:
        raise ValueError(f"need at least one group, got {num_groups}")
    cap = _capacity(str(p), num_groups)
    if f_groups is None or cap is None or not takes_f(p):
        return cap
    if f_groups < 0:
        raise ValueError(f"f_groups must be >= 0, got {f_groups}")
    try:
        p.validate(num_groups, f_groups, has_weights=True, has_root_update=True)
    except ValueError:
        return None
    return min(f_groups, cap)


def _resolve_f_groups(num_groups: int, f_groups: int | None, configured_f: int | None) -> int | None:
    if f_groups is not None and configured_f is not None:
        raise ValueError("give f_groups or configured_f, not both")
    if configured_f is not None:
        if configured_f < 0:
            raise ValueError(f"configured_f must be >= 0, got {configured_f}")
        return min(configured_f, num_groups)
    return f_groups


def _failure(sizes: tuple[int, ...], rule: str | Pipeline, model: ByzantineModel, f_groups: int | None
             ) -> tuple[float, int | None, np.ndarray]:
    t = tolerated_groups(rule, len(sizes), f_groups)
    pmf = _corrupted_pmf(sizes, model)
    if t is None:
        return 1.0, None, pmf
    return float(min(1.0, max(0.0, pmf[t + 1:].sum()))), t, pmf


def failure_probability(m: int, s: int, rule: str | Pipeline, *, byzantine_fraction: float | None = None,
                        population: int | None = None, byzantine: int | None = None, f_groups: int | None = None,
                        configured_f: int | None = None) -> float:
    """P(a round has more corrupted groups than the rule tolerates), exactly (module docstring).

    The rule tolerates its capacity over G groups, or – ``f_groups`` (in groups) or ``configured_f`` (in clients,
    as ``FederationConfig.byzantine``: f_groups = min(configured_f, G)) – what it tolerates when run with that f.
    A rule that cannot run over G inputs fails with probability 1."""
    sizes = group_sizes(m, s)
    fg = _resolve_f_groups(len(sizes), f_groups, configured_f)
    return _failure(sizes, rule, ByzantineModel.of(byzantine_fraction, population, byzantine), fg)[0]


# ── planning ──────────────────────────────────────────────────────────────────────────────────────────────
def largest_group_size(m: int, rule: str | Pipeline, *, byzantine_fraction: float | None = None,
                       population: int | None = None, byzantine: int | None = None, bound: float = DEFAULT_BOUND,
                       configured_f: int | None = None) -> int | None:
    """The largest group size s ≤ m (the most private) whose failure probability at m clients per round is ≤
    ``bound``; ``None`` if none, not even s = 1 (no secure aggregation across clients), holds. Every s is
    checked (the probability is not monotone in s: G = ⌊m/s⌋ and the rule's tolerance move in steps)."""
    model = ByzantineModel.of(byzantine_fraction, population, byzantine)
    _check_bound(bound)
    for s in range(m, 0, -1):
        sizes = group_sizes(m, s)
        if _failure(sizes, rule, model, _resolve_f_groups(len(sizes), None, configured_f))[0] <= bound:
            return s
    return None


def smallest_clients_per_round(s: int, rule: str | Pipeline, *, byzantine_fraction: float | None = None,
                               population: int | None = None, byzantine: int | None = None,
                               bound: float = DEFAULT_BOUND, configured_f: int | None = None,
                               m_max: int | None = None) -> int | None:
    """The smallest m ≥ s whose failure probability with groups of s is ≤ ``bound``; ``None`` if no m up to
    ``m_max`` (default: the population if known, else 1000) holds."""
    model = ByzantineModel.of(byzantine_fraction, population, byzantine)
    _check_bound(bound)
    top = m_max if m_max is not None else (population if population is not None else DEFAULT_M_MAX)
    if population is not None:
        top = min(top, population)
    for m in range(s, top + 1):
        sizes = group_sizes(m, s)
        if _failure(sizes, rule, model, _resolve_f_groups(len(sizes), None, configured_f))[0] <= bound:
            return m
    return None


def smallest_configured_f(m: int, s: int, rule: str | Pipeline, *, byzantine_fraction: float | None = None,
                          population: int | None = None, byzantine: int | None = None,
                          bound: float = DEFAULT_BOUND) -> int | None:
    """For a rule whose computation takes f: the smallest f (in clients, as ``FederationConfig.byzantine``) with
    which rounds of m clients in groups of s exceed what it then tolerates with probability ≤ ``bound`` – telling
    it the *expected* number of Byzantine clients leaves the upper tail of the hypergeometric count uncovered
    (30 of 100, 50 per round: P(more than 15 in a round) ≈ 0.41). ``None`` if no f works (the precondition, e.g.
    n ≥ 2f + 1, caps f below the tail). For a rule that takes no f, f does not change its tolerance: 0 if it
    holds, else ``None``."""
    model = ByzantineModel.of(byzantine_fraction, population, byzantine)
    _check_bound(bound)
    sizes = group_sizes(m, s)
    for f in range(0, m + 1):
        if _failure(sizes, rule, model, _resolve_f_groups(len(sizes), None, f))[0] <= bound:
            return f
        if not takes_f(rule):
            return None
    return None


def _check_bound(bound: float) -> None:
    if not (isinstance(bound, int | float) and 0.0 <= bound < 1.0):
        raise ValueError(f"the bound on the failure probability must be in [0, 1), got {bound!r}")


@dataclass(frozen=True)
class TradeoffRow:
    group_sizes_range: tuple[int, int]  # every s in [lo, hi] gives the same partition
    num_groups: int
    sizes: tuple[int, ...]
    tolerated: int | None
    failure: tuple[float, ...]  # one per Byzantine fraction


def _sizes_text(sizes: tuple[int, ...]) -> str:
    return " + ".join(f"{c}×{k}" for k, c in sorted(Counter(sizes).items(), reverse=True))


def tradeoff_rows(m: int, rule: str | Pipeline = "median",
                  byzantine_fractions: float | tuple[float, ...] = (0.1, 0.2, 0.3), *,
                  configured_f: int | None = None) -> list[TradeoffRow]:
    """One row per distinct partition of m clients (s from 1 to m; the partition depends on s only through
    G = ⌊m/s⌋): the s range, G, the group sizes, the corrupted groups the rule tolerates and the failure
    probability at each Byzantine fraction."""
    betas = (byzantine_fractions,) if isinstance(byzantine_fractions, int | float) else tuple(byzantine_fractions)
    models = [ByzantineModel.of(b) for b in betas]
    by_g: dict[int, list[int]] = {}
    for s in range(1, m + 1):
        by_g.setdefault(max(1, m // s), []).append(s)
    rows = []
    for g, ss in sorted(by_g.items(), key=lambda kv: min(kv[1])):
        sizes = group_sizes(m, ss[0])
        fg = _resolve_f_groups(g, None, configured_f)
        fails = tuple(_failure(sizes, rule, model, fg)[0] for model in models)
        rows.append(TradeoffRow((min(ss), max(ss)), g, sizes, tolerated_groups(rule, g, fg), fails))
    return rows


def _prob_text(p: float) -> str:
    if p == 0.0:
        return "0"
    if p < 1e-4:
        return f"{p:.1e}"
    return f"{p:.4f}"


def tradeoff_table(m: int, rule: str | Pipeline = "median",
                   byzantine_fractions: float | tuple[float, ...] = (0.1, 0.2, 0.3), *,
                   configured_f: int | None = None, bound: float = DEFAULT_BOUND, markdown: bool = False) -> str:
    """The privacy-vs-robustness trade-off at m clients per round as a text (or Markdown) table: group size s
    (larger = more private: a released sum mixes more clients), the number of groups G the rule sees, the
    corrupted groups it tolerates, and P(a round has more) at each Byzantine fraction; ``*`` marks ≤ ``bound``."""
    betas = (byzantine_fractions,) if isinstance(byzantine_fractions, int | float) else tuple(byzantine_fractions)
    rows = tradeoff_rows(m, rule, betas, configured_f=configured_f)
    head = ["s", "G", "group sizes", "tolerated", *[f"β = {b:g}" for b in betas]]
    body = []
    for r in rows:
        lo, hi = r.group_sizes_range
        body.append([str(lo) if lo == hi else f"{lo}–{hi}", str(r.num_groups), _sizes_text(r.sizes),
                     "–" if r.tolerated is None else str(r.tolerated),
                     *[_prob_text(p) + (" *" if p <= bound else "") for p in r.failure]])
    title = (f"m = {m} clients per round, rule {str(_pipeline(rule))!r}: P(a round has more corrupted groups than "
             f"the rule tolerates); * = at most {bound:g}")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return title + "\n\n" + "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([title, fmt.format(*head), *[fmt.format(*row) for row in body]])


def rule_warnings(rule: str | Pipeline) -> list[str]:
    """Warnings every use of the rule carries (e.g. Krum/Multi-Krum: identical updates win the score)."""
    return [registry.get_rule(s.name).warning for s in _pipeline(rule).steps if registry.get_rule(s.name).warning]


def known_failures(rule: str | Pipeline) -> dict[str, tuple[str, ...]]:
    """Attack classes each step of the rule is known to fail on (aggregation.registry, docs/aggregation.md)."""
    return {s.name: registry.get_rule(s.name).fails_on for s in _pipeline(rule).steps
            if registry.get_rule(s.name).fails_on}


# ── a configured federation ───────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class RoundRisk:
    """The risk of one round size: n clients in G groups (sizes), the corrupted groups the configured rule
    tolerates, P(more are corrupted), and the expected number of corrupted groups."""

    clients: int
    num_groups: int
    group_sizes: tuple[int, ...]
    tolerated: int | None
    failure_probability: float
    expected_corrupted: float


@dataclass(frozen=True)
class PlannerReport:
    rule: str
    clients_per_round: int
    group_size: int
    min_clients_per_round: int
    byzantine_fraction: float
    byzantine_fraction_derived: bool  # True: β = byzantine / clients_per_round
    configured_f: int
    bound: float
    model: ByzantineModel
    full_round: RoundRisk
    worst_round: RoundRisk  # the riskiest round size from min_clients_per_round to clients_per_round
    rule_takes_f: bool
    largest_group_size: int | None  # at clients_per_round, the rule at its capacity
    smallest_clients_per_round: int | None  # with group_size, the rule at its capacity
    smallest_min_clients_per_round: int | None  # every round size from it to clients_per_round holds
    warnings: tuple[str, ...] = ()
    known_failures: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def failure_probability(self) -> float:
        """The per-round failure probability the bound is checked against (the riskiest round size)."""
        return self.worst_round.failure_probability

    @property
    def ok(self) -> bool:
        return self.failure_probability <= self.bound

    def message(self) -> str:
        """One paragraph: the probability, the configuration it comes from, and what would hold."""
        w, fr = self.worst_round, self.full_round
        beta = f"β = {_num(self.byzantine_fraction)}" + (" (byzantine / clients_per_round)"
                                                         if self.byzantine_fraction_derived else "")
        if self.model.population is not None:
            beta += f", {self.model.byzantine} Byzantine among a population of {self.model.population}"

        def describe(r: RoundRisk) -> str:
            where = (f"{r.num_groups} group{'s' if r.num_groups != 1 else ''} ({_sizes_text(r.group_sizes)}) of a "
                     f"{r.clients}-client round")
            if r.tolerated is None:
                return f"rule {self.rule!r} cannot run over the {where} (probability 1)"
            return (f"rule {self.rule!r} tolerates {r.tolerated} corrupted group{'s' if r.tolerated != 1 else ''} "
                    f"out of the {where}; a round has more with probability {_prob_text(r.failure_probability)} "
                    f"(expected corrupted groups {r.expected_corrupted:.2f})")

        verdict = "exceeds" if not self.ok else "is within"
        text = (f"grouping risk {_prob_text(w.failure_probability)} per round {verdict} the bound {self.bound:g}: "
                f"with a Byzantine fraction {beta}, {describe(w)}.")
        if w.clients != fr.clients:
            text += (f" Smaller rounds occur because min_clients_per_round = {self.min_clients_per_round}; "
                     f"in full rounds {describe(fr)}.")
        if self.rule_takes_f:
            text += (f" {self.rule!r} takes f: it is run with f_groups = min(byzantine, G) = "
                     f"{min(self.configured_f, fr.num_groups)} and its guarantee covers only that many.")
        if not self.ok:
            hint = []
            if self.largest_group_size is not None:
                s = self.largest_group_size
                hint.append(f"the largest group size that holds at {self.clients_per_round} clients per round is "
                            f"{s}" + (" (groups of 1: no secure aggregation across clients)" if s == 1 else ""))
            else:
                hint.append(f"no group size holds at {self.clients_per_round} clients per round")
            if self.smallest_clients_per_round is not None:
                hint.append(f"the smallest clients_per_round that holds with groups of {self.group_size} is "
                            f"{self.smallest_clients_per_round}")
            else:
                hint.append(f"no clients_per_round up to {DEFAULT_M_MAX} holds with groups of {self.group_size}")
            if fr.failure_probability <= self.bound and self.smallest_min_clients_per_round is not None:
                hint.append(f"full rounds hold: min_clients_per_round ≥ {self.smallest_min_clients_per_round} "
                            "keeps every round within the bound")
            text += " " + "; ".join(hint).capitalize() + "."
            if self.rule_takes_f:
                text += (" (Those suggestions assume the rule is run at its capacity: raise byzantine accordingly "
                         "and give the Byzantine fraction explicitly.)")
        return text


def _round_risk(n: int, s: int, rule: str, model: ByzantineModel, configured_f: int) -> RoundRisk:
    sizes = group_sizes(n, s)
    p, t, pmf = _failure(sizes, rule, model, min(configured_f, len(sizes)))
    return RoundRisk(n, len(sizes), sizes, t, p, float(np.arange(len(pmf)) @ pmf))


def check(config: Any, byzantine_fraction: float | None = None, bound: float = DEFAULT_BOUND, *,
          population: int | None = None) -> PlannerReport:
    """The grouping risk of a :class:`coordinator.federation.config.FederationConfig` (``clients_per_round`` m,
    ``min_clients_per_round``, ``group_size`` s, ``aggregator``, ``byzantine`` f).

    ``byzantine_fraction`` β defaults to f/m (the configured f as a fraction of a round, applied to the
    population the rounds are drawn from). Every round size from ``min_clients_per_round`` (0 = m) to m is
    evaluated with the rule run as the engine runs it (f_groups = min(f, G)); the report's
    ``failure_probability`` is the largest, and ``ok`` compares it with ``bound``. With ``population`` (N known)
    the selection is hypergeometric with ⌈βN⌉ Byzantine clients, else binomial. Suggestions (largest s at m,
    smallest m at s) assume the rule at its capacity. Pure computation: raises ``ValueError`` on bad arguments,
    never refuses – the caller decides (``fl-coordinator serve`` refuses unless told to accept the risk)."""
    m, s, f = int(config.clients_per_round), int(config.group_size), int(config.byzantine)
    rule = str(config.aggregator)
    derived = byzantine_fraction is None
    beta = f / m if byzantine_fraction is None else float(byzantine_fraction)
    if not 0.0 <= beta <= 1.0 or math.isnan(beta):
        raise ValueError(f"byzantine_fraction must be in [0, 1], got {beta!r}")
    _check_bound(bound)
    if population is None:
        model = ByzantineModel.of(beta)
    else:
        model = ByzantineModel.of(population=int(population),
                                  byzantine=min(int(population), math.ceil(beta * population - 1e-9)))
    min_clients = int(config.min_clients_per_round) or m
    risks = [_round_risk(n, s, rule, model, f) for n in range(max(min_clients, s), m + 1)]
    full = risks[-1]
    worst = max(risks, key=lambda r: (r.failure_probability, r.clients))
    smallest_min = None
    for r in reversed(risks):
        if r.failure_probability > bound:
            break
        smallest_min = r.clients
    model_kw: dict[str, Any] = ({"byzantine_fraction": beta} if population is None
                                else {"population": model.population, "byzantine": model.byzantine})
    largest_s = largest_group_size(m, rule, bound=bound, **model_kw)
    smallest_m = smallest_clients_per_round(s, rule, bound=bound, **model_kw)
    return PlannerReport(rule=rule, clients_per_round=m, group_size=s, min_clients_per_round=min_clients,
                         byzantine_fraction=beta, byzantine_fraction_derived=derived, configured_f=f, bound=bound,
                         model=model, full_round=full, worst_round=worst, rule_takes_f=takes_f(rule),
                         largest_group_size=largest_s, smallest_clients_per_round=smallest_m,
                         smallest_min_clients_per_round=smallest_min, warnings=tuple(rule_warnings(rule)),
                         known_failures=known_failures(rule))


__all__ = ["DEFAULT_BOUND", "ByzantineModel", "PlannerReport", "RoundRisk", "TradeoffRow", "check",
           "corrupted_groups_pmf", "failure_probability", "group_sizes", "known_failures", "largest_group_size",
           "rule_warnings", "smallest_clients_per_round", "takes_f", "tolerated_groups", "tradeoff_rows",
           "tradeoff_table"]
