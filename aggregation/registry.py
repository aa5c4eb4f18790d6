"""One place to register a pipeline step: its name, kind, arguments, precondition on (n, f), how to run it, and
what the grouping planner (:mod:`aggregation.planner`) needs to know about its guarantee.

:func:`aggregation.pipeline.parse_pipeline` parses and validates against this registry, and
:class:`aggregation.pipeline.Pipeline` runs the registered functions. Adding a rule is one call::

    from aggregation.registry import RuleSpec, register_rule
    register_rule(RuleSpec(
        name="mymedian", kind="aggregator", args=("eps",),
        precondition=lambda args, f: (2 * f + 1, "2f+1"),
        run=lambda x, f, w, args, ctx: my_median(x, eps=args.get("eps", 0.0)),
        paper="…", fails_on=("…",)))
    parse_pipeline("clip(median)|mymedian(eps=0.1)", n=10, f=3)

Kinds: ``"pre"`` steps (before the aggregator) return a :class:`aggregation.preaggregation.StepOutput` from
``run(x, f, args, rng)``; one ``"aggregator"`` returns an :class:`AggregationResult` from
``run(x, f, weights, args, ctx)`` (``ctx``: :class:`StepContext`, with the pipeline state for stateful rules);
``"post"`` steps map the aggregate with ``run(value, args, ctx)``.

What each field means for the guarantee (used by the planner, see docs/aggregation.md):

- ``precondition(args, f) -> (smallest n, formula)``: the rule's (n, f) requirement, checked by
  ``Pipeline.validate`` (``krum needs n >= 2f+3``).
- ``transform(args, n, f) -> (n', f')``: how a pre-step changes the number of inputs and of corrupted ones
  (bucketing: ``(⌈n/s⌉, min(f, ⌈n/s⌉))``).
- ``takes_f(args)``: whether the computation itself is parametrised by f (Krum's n − f − 2 neighbours, the
  trimmed mean's b = f, NNM's n − f neighbours). Such a rule's guarantee covers only the f it is *run* with;
  a rule that takes no f (median, geometric median, centered clipping) tolerates whatever its precondition
  allows, whatever f it is configured with.
- ``tolerates(args, n)``: the number of corrupted inputs out of n the rule's guarantee covers when that is not
  given by its precondition – 0 for the mean (one input moves it arbitrarily) and for rules whose guarantee is
  not stated in counts (FLTrust); ``⌊frac·n⌋`` for ``trmean(frac=…)``; ``None`` = as many as the precondition
  allows.
- ``fails_on``: attack classes the rule is known to fail on (measured here or reported in the literature);
  ``warning``: a warning the planner report carries whenever the rule is used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aggregation.clipping import centered_clipping, server_momentum
from aggregation.coordinatewise import median, trimmed_mean
from aggregation.core import AggregationResult
from aggregation.distance import bulyan, krum, multi_krum
from aggregation.fltrust import fltrust
from aggregation.geometric import geometric_median
from aggregation.means import mean, weighted_mean
from aggregation.preaggregation import StepOutput, bucketing, clip_norms, nnm

KINDS = ("pre", "aggregator", "post")


@dataclass
class StepContext:
    """What a step may need besides its inputs: its index in the pipeline (the key of its state), the pipeline
    state being built (``PipelineState``: ``cc``/``momentum`` dicts keyed by index) and the server's root update."""

    index: int
    state: Any
    root_update: Any = None


def _never(args: Mapping[str, Any]) -> bool:
    return False


def _always(args: Mapping[str, Any]) -> bool:
    return True


def _by_precondition(args: Mapping[str, Any], n: int) -> int | None:
    return None


@dataclass(frozen=True)
class RuleSpec:
    name: str
    kind: str
    args: tuple[str, ...] = ()
    run: Callable[..., Any] | None = None
    precondition: Callable[[Mapping[str, Any], int], tuple[int, str]] | None = None
    transform: Callable[[Mapping[str, Any], int, int], tuple[int, int]] | None = None
    check_args: Callable[[Mapping[str, Any]], None] | None = None
    needs_weights: bool = False
    needs_root_update: bool = False
    takes_f: Callable[[Mapping[str, Any]], bool] = _never
    tolerates: Callable[[Mapping[str, Any], int], int | None] = _by_precondition
    paper: str = ""
    fails_on: tuple[str, ...] = ()
    warning: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z_]+", self.name):
            raise ValueError(f"rule name must be lower-case letters and underscores, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"rule kind must be one of {KINDS}, got {self.kind!r}")
        if self.run is None:
            raise ValueError(f"rule {self.name!r}: run is required")


_REGISTRY: dict[str, RuleSpec] = {}


def register_rule(spec: RuleSpec, *, replace: bool = False) -> RuleSpec:
    """Add a step to the registry (``replace=True`` to override an existing one)."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"pipeline step {spec.name!r} is already registered (pass replace=True to override)")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_rule(name: str) -> None:
    """Remove a step added with :func:`register_rule` (the built-in steps cannot be removed)."""
    if name in BUILTIN_NAMES:
        raise ValueError(f"{name!r} is a built-in pipeline step")
    _REGISTRY.pop(name, None)


def get_rule(name: str) -> RuleSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown pipeline step {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def rules() -> dict[str, RuleSpec]:
    """A copy of the registry: name → spec."""
    return dict(_REGISTRY)


def names_of_kind(kind: str) -> frozenset[str]:
    return frozenset(n for n, s in _REGISTRY.items() if s.kind == kind)


# ── built-in steps ──────────────────────────────────────────────────────────────────────────────────────
def _check_clip(args: Mapping[str, Any]) -> None:
    c = args.get("c", "median")
    if not (c == "median" or (isinstance(c, int | float) and not isinstance(c, bool) and c > 0)):
        raise ValueError(f"clip: threshold must be a positive number or 'median', got {c!r}")


def _check_bucket(args: Mapping[str, Any]) -> None:
    s = args.get("s", 2)
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise ValueError(f"bucket: s must be an integer >= 1, got {s!r}")


def _bucket_transform(args: Mapping[str, Any], n: int, f: int) -> tuple[int, int]:
    n2 = -(-n // int(args.get("s", 2)))
    return n2, min(f, n2)


def _run_bucket(x: np.ndarray, f: int, args: Mapping[str, Any], rng: np.random.Generator | None) -> StepOutput:
    if rng is None:
        raise ValueError("bucket needs an rng (numpy Generator)")
    return bucketing(x, int(args.get("s", 2)), f, rng)


def _check_cc(args: Mapping[str, Any]) -> None:
    tau = args.get("tau", 1.0)
    if not (isinstance(tau, int | float) and tau > 0):
        raise ValueError(f"cc: tau must be > 0, got {tau!r}")


def _check_momentum(args: Mapping[str, Any]) -> None:
    beta = args.get("beta", 0.9)
    if not (isinstance(beta, int | float) and 0 <= beta < 1):
        raise ValueError(f"momentum: beta must be in [0, 1), got {beta!r}")


def _two_f_plus_1(args: Mapping[str, Any], f: int) -> tuple[int, str]:
    return 2 * f + 1, "2f+1"


def _two_f_plus_3(args: Mapping[str, Any], f: int) -> tuple[int, str]:
    return 2 * f + 3, "2f+3"


def _trmean_precondition(args: Mapping[str, Any], f: int) -> tuple[int, str]:
    if "frac" in args:
        return 1, "1"
    return 2 * int(args.get("f", f)) + 1, "2f+1"


def _trmean_tolerates(args: Mapping[str, Any], n: int) -> int | None:
    if "frac" in args:
        return math.floor(float(args["frac"]) * n)
    if "f" in args:
        return int(args["f"])
    return None


def _run_trmean(x: np.ndarray, f: int, w: Any, args: Mapping[str, Any], ctx: StepContext) -> AggregationResult:
    if "frac" in args:
        return trimmed_mean(x, fraction=float(args["frac"]))
    return trimmed_mean(x, f=int(args.get("f", f)))


def _run_cc(x: np.ndarray, f: int, w: Any, args: Mapping[str, Any], ctx: StepContext) -> AggregationResult:
    res, ctx.state.cc[ctx.index] = centered_clipping(x, float(args.get("tau", 1.0)), ctx.state.cc.get(ctx.index),
                                                     iters=int(args.get("iters", 1)), weights=w)
    return res


def _run_momentum(value: np.ndarray, args: Mapping[str, Any], ctx: StepContext) -> np.ndarray:
    out, ctx.state.momentum[ctx.index] = server_momentum(value, float(args.get("beta", 0.9)),
                                                         ctx.state.momentum.get(ctx.index))
    return out


def _zero(args: Mapping[str, Any], n: int) -> int | None:
    return 0


IDENTICAL_UPDATES = ("identical or all-zero updates from several clients (Sybils sending one vector, free-riders "
                     "sending zeros): k identical points are at distance 0 from each other, so with k ≥ n − f − 2 "
                     "they win the score (measured here: tests/test_aggregation_krum_identical.py, issue 12)")
ALIE = "ALIE, small coordinated shifts inside the honest spread (Baruch, Baruch & Goldberg, NeurIPS'19)"
IPM = "inner-product manipulation, IPM (Xie, Koyejo & Gupta, UAI'19)"
MINMAX = "optimised min-max / min-sum attacks (Shejwalkar & Houmansadr, NDSS'21)"
HETEROGENEITY = ("heterogeneous (non-IID) honest data, even with no attack, unless bucketing or NNM come first "
                 "(Karimireddy, He & Jaggi, ICLR'22; here: Synthetic(1,1), issue 12)")

_BUILTIN = [
    RuleSpec("clip", "pre", ("c",), run=lambda x, f, a, rng: clip_norms(x, a.get("c", "median"), f),
             check_args=_check_clip, paper="norm clipping"),
    RuleSpec("bucket", "pre", ("s",), run=_run_bucket, transform=_bucket_transform, check_args=_check_bucket,
             paper="Karimireddy, He & Jaggi, ICLR'22"),
    RuleSpec("nnm", "pre", (), run=lambda x, f, a, rng: nnm(x, f), precondition=_two_f_plus_1, takes_f=_always,
             paper="Allouah et al., AISTATS'23"),
    RuleSpec("mean", "aggregator", (), run=lambda x, f, w, a, ctx: mean(x, w), tolerates=_zero,
             fails_on=("any single Byzantine input (no robustness)",),
             warning="mean has no robustness: one corrupted group moves it arbitrarily"),
    RuleSpec("wmean", "aggregator", ("cap",), run=lambda x, f, w, a, ctx: weighted_mean(x, w, a.get("cap")),
             needs_weights=True, tolerates=_zero, paper="FedAvg, McMahan et al., AISTATS'17",
             fails_on=("any single Byzantine input (no robustness; the cap only bounds its weight)",),
             warning="wmean has no robustness: one corrupted group moves it (its share is capped, its value is not)"),
    RuleSpec("median", "aggregator", (), run=lambda x, f, w, a, ctx: median(x), precondition=_two_f_plus_1,
             paper="Yin et al., ICML'18", fails_on=(IPM, ALIE, HETEROGENEITY)),
    RuleSpec("trmean", "aggregator", ("f", "frac"), run=_run_trmean, precondition=_trmean_precondition,
             takes_f=lambda a: "f" not in a and "frac" not in a, tolerates=_trmean_tolerates,
             paper="Yin et al., ICML'18", fails_on=(ALIE, MINMAX, HETEROGENEITY)),
    RuleSpec("krum", "aggregator", (), run=lambda x, f, w, a, ctx: krum(x, f), precondition=_two_f_plus_3,
             takes_f=_always, paper="Blanchard et al., NeurIPS'17",
             fails_on=(IDENTICAL_UPDATES, ALIE, IPM, MINMAX, HETEROGENEITY),
             warning="krum is won by identical updates: k ≥ n − f − 2 clients (here: groups) sending the same "
                     "vector – Sybils, or free-riders sending zeros – have score 0 and are selected over honest "
                     "inputs (docs/aggregation.md, 'Krum and identical updates')"),
    RuleSpec("mkrum", "aggregator", ("m",), run=lambda x, f, w, a, ctx: multi_krum(x, f, a.get("m"), weights=w),
             precondition=_two_f_plus_3, takes_f=_always, paper="Blanchard et al., NeurIPS'17",
             fails_on=(IDENTICAL_UPDATES, MINMAX, HETEROGENEITY),
             warning="mkrum is won by identical updates: k ≥ n − f − 2 clients (here: groups) sending the same "
                     "vector – Sybils, or free-riders sending zeros – score 0, are always among the m selected "
                     "and pull the average to them (docs/aggregation.md, 'Krum and identical updates')"),
    RuleSpec("bulyan", "aggregator", (), run=lambda x, f, w, a, ctx: bulyan(x, f), precondition=lambda a, f: (
        4 * f + 3, "4f+3"), takes_f=_always, paper="El Mhamdi et al., ICML'18", fails_on=(ALIE, MINMAX)),
    RuleSpec("gm", "aggregator", ("tol", "nu", "max_iter"), precondition=_two_f_plus_1,
             run=lambda x, f, w, a, ctx: geometric_median(x, w, tol=float(a.get("tol", 1e-6)),
                                                           nu=float(a.get("nu", 1e-6)),
                                                           max_iter=int(a.get("max_iter", 1000))),
             paper="RFA, Pillutla et al., IEEE TSP'22", fails_on=(HETEROGENEITY,)),
    RuleSpec("cc", "aggregator", ("tau", "iters"), run=_run_cc, precondition=_two_f_plus_1, check_args=_check_cc,
             paper="Karimireddy, He & Jaggi, ICML'21",
             fails_on=("relocated orthogonal perturbation against the clipping center (Özfatura et al., "
                       "arXiv:2208.09894)",)),
    RuleSpec("fltrust", "aggregator", (), run=lambda x, f, w, a, ctx: fltrust(x, ctx.root_update),
             needs_root_update=True, tolerates=_zero, paper="Cao et al., NDSS'21",
             fails_on=("updates aligned with a root data set that is not representative",),
             warning="fltrust's guarantee is not stated in a number of corrupted inputs: the planner credits it "
                     "with none"),
    RuleSpec("momentum", "post", ("beta",), run=_run_momentum, check_args=_check_momentum,
             paper="Karimireddy, He & Jaggi, ICML'21"),
]
for _spec in _BUILTIN:
    register_rule(_spec)
BUILTIN_NAMES = frozenset(s.name for s in _BUILTIN)

__all__ = ["BUILTIN_NAMES", "KINDS", "RuleSpec", "StepContext", "get_rule", "is_registered", "names_of_kind",
           "register_rule", "rules", "unregister_rule"]
