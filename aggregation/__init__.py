"""Byzantine-robust aggregation over stacked ``(n, d)`` client updates (docs/aggregation.md).

Every aggregator returns an :class:`AggregationResult` (``value`` and per-input ``diagnostics``); stateful
rules take and return explicit state; preconditions on (n, f) raise ``ValueError`` stating them; rows with
NaN/Inf are excluded and reported, never propagated.
"""

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
from aggregation.preaggregation import bucketing, clip_norms, nnm

__all__ = [
    "AggregationResult",
    "CenteredClippingState",
    "Diagnostics",
    "MomentumState",
    "Pipeline",
    "PipelineState",
    "Step",
    "aggregate",
    "aggregate_groups",
    "bucketing",
    "bulyan",
    "centered_clipping",
    "clip_norms",
    "corrupted_groups_distribution",
    "corrupted_groups_tail",
    "f_groups_at_risk",
    "fltrust",
    "geometric_median",
    "gram_sq_distances",
    "group_means",
    "krum",
    "krum_scores",
    "mean",
    "median",
    "multi_krum",
    "nnm",
    "parse_pipeline",
    "prob_at_most_corrupted_groups",
    "server_momentum",
    "trimmed_mean",
    "validate_pipeline",
    "weighted_mean",
    "worst_case_corrupted_groups",
]
