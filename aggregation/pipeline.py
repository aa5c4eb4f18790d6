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

Every step – name, kind, arguments, precondition, the function that runs it – is one entry of
:mod:`aggregation.registry`; ``register_rule`` adds one.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aggregation import registry
from aggregation.clipping import CenteredClippingState, MomentumState
from aggregation.core import (
    AggregationResult,
    check_matrix,
    check_weights,
    make_diagnostics,
    split_finite_norms,
)
from aggregation.preaggregation import StepOutput
from aggregation.registry import StepContext

# the built-in step names by kind (steps added with aggregation.registry.register_rule are looked up there)
PRE_STEPS = set(registry.names_of_kind("pre"))
AGGREGATORS = set(registry.names_of_kind("aggregator"))
POST_STEPS = set(registry.names_of_kind("post"))
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
    allowed = registry.get_rule(name).args  # ValueError "unknown pipeline step …" for an unregistered name
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


def _kind(step: Step) -> str:
    return registry.get_rule(step.name).kind


@dataclass
class Pipeline:
    steps: list[Step]

    def __str__(self) -> str:
        return "|".join(str(s) for s in self.steps)

    @property
    def aggregator(self) -> Step:
        return next(s for s in self.steps if _kind(s) == "aggregator")

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
            spec = registry.get_rule(step.name)
            if spec.transform is not None:
                if spec.check_args is not None:
                    spec.check_args(step.args)
                cur_n, cur_f = spec.transform(step.args, cur_n, cur_f)
                continue
            if spec.precondition is not None:
                need, formula = spec.precondition(step.args, cur_f)
                if cur_n < need:
                    where = f" after {'|'.join(str(s) for s in self.steps[:i])}" if i else ""
                    what = f" {unit}" if unit else ""
                    raise ValueError(f"{step.name} needs n >= {formula}: got n={cur_n}{what}, f={cur_f}{where} "
                                     f"(needs n >= {need})")
            if spec.needs_weights and not has_weights:
                raise ValueError(f"{step.name} needs per-input weights")
            if spec.needs_root_update and not has_root_update:
                raise ValueError(f"{step.name} needs a root update computed by the server on its root data")
            if spec.check_args is not None:
                spec.check_args(step.args)

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
            spec = registry.get_rule(step.name)
            ctx = StepContext(i, new_state, root_update)
            if spec.kind == "pre":
                out: StepOutput = spec.run(cur, cur_f, a, rng)
                if step.name == "bucket" and cur_w is not None:
                    cur_w = out.mixing @ cur_w * np.array([np.count_nonzero(r) for r in out.mixing])
                cur, cur_f, mixing = out.x, out.f, out.mixing @ mixing
                continue
            if spec.kind == "aggregator":
                result = spec.run(cur, cur_f, cur_w, a, ctx)
                value = result.value
                continue
            assert spec.kind == "post" and value is not None
            value = spec.run(value, a, ctx)
        assert result is not None and value is not None
        selected = (mixing.T @ result.diagnostics.selected.astype(float)) > 0
        diag = make_diagnostics(str(self), x, finite, value, selected,
                                extra={"final_stage": result.diagnostics, "f_final": cur_f}, norms2=norms_all)
        return AggregationResult(value, diag), new_state


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
                bad = set(args) - set(registry.get_rule(st.name).args)
                if bad:
                    raise ValueError(f"{st.name}: unknown argument(s) {sorted(bad)}")
                steps.append(Step(st.name, args))
            else:
                raise ValueError(f"bad pipeline step {item!r}")
    kinds = ["agg" if _kind(s) == "aggregator" else _kind(s) for s in steps]
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
