"""Composable aggregation pipelines from a string or config, e.g. ``"clip(median)|bucket(2)|cc(tau=1)"``.

Grammar: steps separated by ``|``; each step is ``name`` or ``name(arg, key=value, …)`` with numbers,
``true``/``false`` or bare words as values. Order: any pre-aggregation steps (``clip``, ``bucket``, ``nnm``),
exactly one aggregator, then optionally ``momentum``.

| step | meaning | precondition on (n, f) at that point |
|---|---|---|
| ``clip(c)`` / ``clip(median)`` | norm clipping, fixed or adaptive | – |
| ``bucket(s)`` | bucketing in buckets of s → n' = ⌈n/s⌉, f' = min(f, n') | s ≥ 1 |
| ``nnm`` | nearest-neighbour mixing | n > 2f |
| ``mean`` | mean (weighted by the inputs' weights when given) | – |
| ``wmean(cap=…)`` | weighted mean with weight cap | weights given |
| ``median`` | coordinate-wise median | n ≥ 2f+1 |
| ``trmean`` / ``trmean(f=…)`` / ``trmean(frac=…)`` | coordinate-wise trimmed mean | n ≥ 2b+1 |
| ``krum`` | Krum | n ≥ 2f+3 |
| ``mkrum`` / ``mkrum(m=…)`` | Multi-Krum (weighted mean of the selected when weights are given) | n ≥ 2f+3 |
| ``bulyan`` | Bulyan over Krum | n ≥ 4f+3 |
| ``gm(tol=…)`` | geometric median (smoothed Weiszfeld) | n ≥ 2f+1 |
| ``cc(tau=…, iters=…)`` | centered clipping (stateful) | n ≥ 2f+1 |
| ``fltrust`` | FLTrust (needs ``root_update``) | – |
| ``momentum(beta=…)`` | server momentum on the aggregate (stateful) | – |
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aggregation.clipping import CenteredClippingState, MomentumState, centered_clipping, server_momentum
from aggregation.coordinatewise import median, trimmed_mean
from aggregation.core import (
    AggregationResult,
    check_matrix,
    check_weights,
    make_diagnostics,
    split_finite_norms,
)
from aggregation.distance import bulyan, krum, multi_krum
from aggregation.fltrust import fltrust
from aggregation.geometric import geometric_median
from aggregation.means import mean, weighted_mean
from aggregation.preaggregation import StepOutput, bucketing, clip_norms, nnm

PRE_STEPS = {"clip", "bucket", "nnm"}
AGGREGATORS = {"mean", "wmean", "median", "trmean", "krum", "mkrum", "bulyan", "gm", "cc", "fltrust"}
POST_STEPS = {"momentum"}
_ALLOWED_ARGS: dict[str, tuple[str, ...]] = {
    "clip": ("c",), "bucket": ("s",), "nnm": (), "mean": (), "wmean": ("cap",), "median": (),
    "trmean": ("f", "frac"), "krum": (), "mkrum": ("m",), "bulyan": (), "gm": ("tol", "nu", "max_iter"),
    "cc": ("tau", "iters"), "fltrust": (), "momentum": ("beta",),
}
_STEP_RE = re.compile(r"^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$", re.S)


@dataclass(frozen=True)
class Step:
    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.name}({inner})" if inner else self.name


def _value(text: str) -> Any:
    t = text.strip()
    if t in ("true", "false"):
        return t == "true"
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t):
        raise ValueError(f"bad argument value {text!r}")
    return t


def parse_step(text: str) -> Step:
    m = _STEP_RE.match(text)
    if not m:
        raise ValueError(f"bad pipeline step {text!r}: expected name or name(args)")
    name, argtext = m.group(1), m.group(2)
    if name not in _ALLOWED_ARGS:
        raise ValueError(f"unknown pipeline step {name!r} (known: {', '.join(sorted(_ALLOWED_ARGS))})")
    allowed = _ALLOWED_ARGS[name]
    args: dict[str, Any] = {}
    if argtext and argtext.strip():
        for pos, part in enumerate(argtext.split(",")):
            if "=" in part:
                k, v = part.split("=", 1)
                k = k.strip()
            else:
                if pos >= len(allowed):
                    raise ValueError(f"{name}: too many positional arguments in {text!r}")
                k, v = allowed[pos], part
            if k not in allowed:
                raise ValueError(f"{name}: unknown argument {k!r} (allowed: {', '.join(allowed) or 'none'})")
            if k in args:
                raise ValueError(f"{name}: argument {k!r} given twice")
            args[k] = _value(v)
    return Step(name, args)


@dataclass
class PipelineState:
    """Explicit state of the stateful steps (centered-clipping center, momentum), keyed by step index."""

    cc: dict[int, CenteredClippingState] = field(default_factory=dict)
    momentum: dict[int, MomentumState] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def enc(a: np.ndarray | None) -> Any:
            return None if a is None else {"dtype": str(a.dtype), "data": base64.b64encode(a.tobytes()).decode()}

        return {"cc": {str(k): enc(v.center) for k, v in self.cc.items()},
                "momentum": {str(k): enc(v.momentum) for k, v in self.momentum.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineState:
        def dec(v: Any) -> np.ndarray | None:
            return None if v is None else np.frombuffer(base64.b64decode(v["data"]), dtype=v["dtype"]).copy()

        return cls(cc={int(k): CenteredClippingState(dec(v)) for k, v in data.get("cc", {}).items()},
                   momentum={int(k): MomentumState(dec(v)) for k, v in data.get("momentum", {}).items()})


def _required_n(step: Step, f: int) -> tuple[int, str]:
    name = step.name
    if name == "nnm":
        return 2 * f + 1, "2f+1"
    if name in ("median", "gm", "cc"):
        return 2 * f + 1, "2f+1"
    if name == "trmean":
        if "frac" in step.args:
            return 1, "1"
        b = int(step.args.get("f", f))
        return 2 * b + 1, "2f+1"
    if name in ("krum", "mkrum"):
        return 2 * f + 3, "2f+3"
    if name == "bulyan":
        return 4 * f + 3, "4f+3"
    return 1, "1"


@dataclass
class Pipeline:
    steps: list[Step]

    def __str__(self) -> str:
        return "|".join(str(s) for s in self.steps)

    @property
    def aggregator(self) -> Step:
        return next(s for s in self.steps if s.name in AGGREGATORS)

    def validate(self, n: int, f: int, has_weights: bool = False, has_root_update: bool = False,
                 unit: str = "") -> None:
        """Check the whole pipeline's preconditions for n inputs of which f may be Byzantine (``unit`` names
        the inputs in messages, e.g. ``"groups"``)."""
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise ValueError(f"f must be a non-negative integer, got {f!r}")
        if n < 1:
            raise ValueError(f"need at least one input, got n={n}")
        cur_n, cur_f = n, f
        for i, step in enumerate(self.steps):
            if step.name == "bucket":
                s = step.args.get("s", 2)
                if isinstance(s, bool) or not isinstance(s, int) or s < 1:
                    raise ValueError(f"bucket: s must be an integer >= 1, got {s!r}")
                cur_n = -(-cur_n // s)
                cur_f = min(cur_f, cur_n)
                continue
            need, formula = _required_n(step, cur_f)
            if cur_n < need:
                where = f" after {'|'.join(str(s) for s in self.steps[:i])}" if i else ""
                what = f" {unit}" if unit else ""
                raise ValueError(f"{step.name} needs n >= {formula}: got n={cur_n}{what}, f={cur_f}{where} "
                                 f"(needs n >= {need})")
            if step.name == "wmean" and not has_weights:
                raise ValueError("wmean needs per-input weights")
            if step.name == "fltrust" and not has_root_update:
                raise ValueError("fltrust needs a root update computed by the server on its root data")
            if step.name == "clip":
                c = step.args.get("c", "median")
                if not (c == "median" or (isinstance(c, int | float) and not isinstance(c, bool) and c > 0)):
                    raise ValueError(f"clip: threshold must be a positive number or 'median', got {c!r}")
            if step.name == "cc":
                tau = step.args.get("tau", 1.0)
                if not (isinstance(tau, int | float) and tau > 0):
                    raise ValueError(f"cc: tau must be > 0, got {tau!r}")
            if step.name == "momentum":
                beta = step.args.get("beta", 0.9)
                if not (isinstance(beta, int | float) and 0 <= beta < 1):
                    raise ValueError(f"momentum: beta must be in [0, 1), got {beta!r}")

    def __call__(self, x: Any, f: int, *, weights: Any = None, state: PipelineState | None = None,
                 rng: np.random.Generator | None = None, root_update: Any = None, unit: str = ""
                 ) -> tuple[AggregationResult, PipelineState]:
        """Run the pipeline. Non-finite inputs are dropped first (and reported); preconditions are checked on
        the finite inputs. Returns the result (diagnostics refer to the caller's rows) and the new state."""
        x = check_matrix(x)
        w = check_weights(weights, x.shape[0])
        xs, finite, ws, norms_all = split_finite_norms(x, w)
        self.validate(len(xs), f, has_weights=ws is not None, has_root_update=root_update is not None, unit=unit)
        state = state or PipelineState()
        new_state = PipelineState(dict(state.cc), dict(state.momentum))
        cur, cur_f, cur_w = xs, f, ws
        mixing = np.eye(len(xs))
        result: AggregationResult | None = None
        value: np.ndarray | None = None
        for i, step in enumerate(self.steps):
            a = step.args
            if step.name in PRE_STEPS:
                out: StepOutput
                if step.name == "clip":
                    out = clip_norms(cur, a.get("c", "median"), cur_f)
                elif step.name == "bucket":
                    if rng is None:
                        raise ValueError("bucket needs an rng (numpy Generator)")
                    out = bucketing(cur, int(a.get("s", 2)), cur_f, rng)
                    if cur_w is not None:
                        cur_w = out.mixing @ cur_w * np.array([np.count_nonzero(r) for r in out.mixing])
                else:
                    out = nnm(cur, cur_f)
                cur, cur_f, mixing = out.x, out.f, out.mixing @ mixing
                continue
            if step.name in AGGREGATORS:
                result = self._aggregate(step, i, cur, cur_f, cur_w, new_state, root_update)
                value = result.value
                continue
            assert step.name == "momentum" and value is not None
            value, new_state.momentum[i] = server_momentum(value, float(a.get("beta", 0.9)),
                                                           state.momentum.get(i))
        assert result is not None and value is not None
        selected = (mixing.T @ result.diagnostics.selected.astype(float)) > 0
        diag = make_diagnostics(str(self), x, finite, value, selected,
                                extra={"final_stage": result.diagnostics, "f_final": cur_f}, norms2=norms_all)
        return AggregationResult(value, diag), new_state

    @staticmethod
    def _aggregate(step: Step, index: int, x: np.ndarray, f: int, w: np.ndarray | None, state: PipelineState,
                   root_update: Any) -> AggregationResult:
        a, name = step.args, step.name
        if name == "mean":
            return mean(x, w)
        if name == "wmean":
            return weighted_mean(x, w, a.get("cap"))
        if name == "median":
            return median(x)
        if name == "trmean":
            return trimmed_mean(x, fraction=float(a["frac"])) if "frac" in a else trimmed_mean(x, f=int(a.get("f", f)))
        if name == "krum":
            return krum(x, f)
        if name == "mkrum":
            return multi_krum(x, f, a.get("m"), weights=w)
        if name == "bulyan":
            return bulyan(x, f)
        if name == "gm":
            return geometric_median(x, w, tol=float(a.get("tol", 1e-6)), nu=float(a.get("nu", 1e-6)),
                                    max_iter=int(a.get("max_iter", 1000)))
        if name == "cc":
            res, state.cc[index] = centered_clipping(x, float(a.get("tau", 1.0)), state.cc.get(index),
                                                     iters=int(a.get("iters", 1)), weights=w)
            return res
        if name == "fltrust":
            return fltrust(x, root_update)
        raise AssertionError(name)  # pragma: no cover


def parse_pipeline(spec: str | list[str] | list[dict[str, Any]], n: int | None = None, f: int | None = None,
                   **validate_kwargs: Any) -> Pipeline:
    """Parse a pipeline from a string (``"a|b(x=1)"``), a list of step strings, or a list of
    ``{"name": …, "args": {…}}`` dicts; with ``n`` and ``f`` given, validate it too."""
    if isinstance(spec, str):
        parts = [p for p in spec.split("|")]
        steps = [parse_step(p) for p in parts]
    else:
        steps = []
        for item in spec:
            if isinstance(item, str):
                steps.append(parse_step(item))
            elif isinstance(item, dict) and "name" in item:
                st = parse_step(str(item["name"]))
                args = dict(item.get("args", {}))
                bad = set(args) - set(_ALLOWED_ARGS[st.name])
                if bad:
                    raise ValueError(f"{st.name}: unknown argument(s) {sorted(bad)}")
                steps.append(Step(st.name, args))
            else:
                raise ValueError(f"bad pipeline step {item!r}")
    kinds = ["pre" if s.name in PRE_STEPS else "agg" if s.name in AGGREGATORS else "post" for s in steps]
    if kinds.count("agg") != 1:
        raise ValueError(f"a pipeline needs exactly one aggregator, got {kinds.count('agg')} in "
                         f"{'|'.join(map(str, steps))!r}")
    a = kinds.index("agg")
    if any(k != "pre" for k in kinds[:a]) or any(k != "post" for k in kinds[a + 1:]):
        raise ValueError("order must be: pre-aggregation steps (clip, bucket, nnm), one aggregator, then momentum")
    p = Pipeline(steps)
    if n is not None and f is not None:
        p.validate(n, f, **validate_kwargs)
    return p


def validate_pipeline(spec: str | Pipeline | list[Any], n: int, f: int, *, unit: str = "",
                      has_weights: bool = False, has_root_update: bool = False) -> Pipeline:
    """Parse ``spec`` and check every step's precondition for n inputs of which f may be Byzantine; raises
    ``ValueError`` stating the failed precondition, e.g. ``krum needs n >= 2f+3: got n=5 groups, f=2``.
    Returns the parsed pipeline."""
    p = spec if isinstance(spec, Pipeline) else parse_pipeline(spec)
    p.validate(n, f, has_weights=has_weights, has_root_update=has_root_update, unit=unit)
    return p


def aggregate(spec: str | Pipeline, x: Any, f: int, **kwargs: Any) -> tuple[AggregationResult, PipelineState]:
    """One-shot: parse (if needed) and run a pipeline."""
    p = spec if isinstance(spec, Pipeline) else parse_pipeline(spec)
    return p(x, f, **kwargs)


__all__ = ["Pipeline", "PipelineState", "Step", "aggregate", "parse_pipeline", "parse_step", "validate_pipeline"]
