"""Byzantine-robust aggregation over stacked ``(n, d)`` client updates (docs/aggregation.md).

Every aggregator returns an :class:`AggregationResult` (``value`` and per-input ``diagnostics``); stateful
rules take and return explicit state; preconditions on (n, f) raise ``ValueError`` stating them; rows with
NaN/Inf are excluded and reported, never propagated.
"""

from aggregation import planner
from aggregation.clipping import (
    CenteredClippingState,
    MomentumState,
    centered_clipping,
    server_momentum,
)
from aggregation.coordinatewise import median, trimmed_mean
from aggregation.core import AggregationResult, Diagnostics, gram_sq_distances
from aggregation.distance import bulyan, krum, krum_scores, multi_krum
from aggregation.fltrust import fltrust
from aggregation.geometric import geometric_median
from aggregation.groups import (
    aggregate_groups,
    corrupted_groups_distribution,
    corrupted_groups_tail,
    f_groups_at_risk,
    group_means,
    prob_at_most_corrupted_groups,
    worst_case_corrupted_groups,
)
from aggregation.means import mean, weighted_mean
from aggregation.pipeline import Pipeline, PipelineState, Step, aggregate, parse_pipeline, validate_pipeline
from aggregation.planner import (
    ByzantineModel,
    PlannerReport,
    corrupted_groups_pmf,
    failure_probability,
    known_failures,
    largest_group_size,
    rule_warnings,
    smallest_clients_per_round,
    tolerated_groups,
    tradeoff_table,
)
from aggregation.preaggregation import bucketing, clip_norms, nnm
from aggregation.registry import RuleSpec, get_rule, register_rule, rules, unregister_rule

__all__ = [
    "AggregationResult",
    "ByzantineModel",
    "CenteredClippingState",
    "Diagnostics",
    "MomentumState",
    "Pipeline",
    "PipelineState",
    "PlannerReport",
    "RuleSpec",
    "Step",
    "aggregate",
    "aggregate_groups",
    "bucketing",
    "bulyan",
    "centered_clipping",
    "clip_norms",
    "corrupted_groups_distribution",
    "corrupted_groups_pmf",
    "corrupted_groups_tail",
    "f_groups_at_risk",
    "failure_probability",
    "fltrust",
    "geometric_median",
    "get_rule",
    "gram_sq_distances",
    "group_means",
    "known_failures",
    "krum",
    "krum_scores",
    "largest_group_size",
    "mean",
    "median",
    "multi_krum",
    "nnm",
    "parse_pipeline",
    "planner",
    "prob_at_most_corrupted_groups",
    "register_rule",
    "rule_warnings",
    "rules",
    "server_momentum",
    "smallest_clients_per_round",
    "tolerated_groups",
    "tradeoff_table",
    "trimmed_mean",
    "unregister_rule",
    "validate_pipeline",
    "weighted_mean",
    "worst_case_corrupted_groups",
]
