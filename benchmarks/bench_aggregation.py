"""Benchmark: every aggregator on n = 50 updates of d = 1,000,000 float32 (f = 10), against byzfl's
implementation where one exists, and against one ``mean`` over the same array (the memory-bandwidth floor).

byzfl is installed in the benchmark environment only (``--no-deps``); ``import byzfl`` pulls torchvision and
seaborn for its training framework, which we stub in ``sys.modules`` (its aggregators don't use them).
byzfl is given the same numpy array (its aggregators dispatch to numpy for numpy input).
Run: `.venv-bench/bin/python benchmarks/bench_aggregation.py` (AGGREGATION_THREADS=1 to use one thread).
"""

from __future__ import annotations

import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import aggregation as A
from aggregation.core import threads


class _Stub(types.ModuleType):
    """A module whose every attribute is a do-nothing callable (byzfl only builds transforms at import)."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *a, **k: None


def _stub_byzfl_imports() -> None:
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms", "seaborn"):
        sys.modules.setdefault(name, _Stub(name))
    tv = sys.modules["torchvision"]
    tv.datasets = sys.modules["torchvision.datasets"]  # type: ignore[attr-defined]
    tv.transforms = sys.modules["torchvision.transforms"]  # type: ignore[attr-defined]


def timeit(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    n, f, d = 50, 10, 1_000_000
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x[:f] *= 10.0
    weights = rng.integers(10, 100, size=n).astype(np.float64)
    root = rng.standard_normal(d, dtype=np.float32)
    try:
        _stub_byzfl_imports()
        import byzfl
    except ImportError as exc:  # pragma: no cover - the benchmark environment installs it
        sys.exit(f"byzfl is not importable ({exc}): run `bash benchmarks/setup_env.sh`")
    import torch

    torch.set_num_threads(1)
    base = timeit(lambda: x.mean(axis=0), 5)
    print(f"n={n}, f={f}, d={d:,} float32 ({x.nbytes / 1e6:.0f} MB); ours uses {threads()} thread(s) "
          f"for column-chunked rules; numpy mean = {base * 1e3:.1f} ms")
    gram = timeit(lambda: A.gram_sq_distances(x), 3)
    print(f"one Gram matrix X·Xᵀ: {gram * 1e3:.1f} ms")

    def bz(cls: str, *args: object, **kw: object) -> Callable[[], object]:
        agg = getattr(byzfl, cls)(*args, **kw)
        if cls == "Clipping":  # byzfl clips in place: hand it a fresh copy made outside the timed call
            return lambda: agg(clip_input.pop())
        return lambda: agg(x)

    clip_input: list[np.ndarray] = []

    cases: list[tuple[str, Callable[[], object], Callable[[], object] | None, int]] = [
        ("mean", lambda: A.mean(x), bz("Average"), 5),
        ("weighted mean (cap)", lambda: A.weighted_mean(x, weights), None, 5),
        ("median", lambda: A.median(x), bz("Median"), 3),
        ("trimmed mean (f)", lambda: A.trimmed_mean(x, f=f), bz("TrMean", f=f), 3),
        ("krum", lambda: A.krum(x, f), bz("Krum", f=f), 3),
        ("multi-krum", lambda: A.multi_krum(x, f), bz("MultiKrum", f=f), 3),
        ("bulyan", lambda: A.bulyan(x, f), None, 3),
        ("geometric median", lambda: A.geometric_median(x, tol=1e-6), bz("GeometricMedian", nu=0.1, T=3), 3),
        ("geometric median (3 it.)", lambda: A.geometric_median(x, tol=1e-30, max_iter=3, nu=0.1),
         bz("GeometricMedian", nu=0.1, T=3), 3),
        ("centered clipping (L=1)", lambda: A.centered_clipping(x, 1.0, iters=1), bz("CenteredClipping", L=1, tau=1.0), 3),
        ("centered clipping (L=3)", lambda: A.centered_clipping(x, 1.0, iters=3), bz("CenteredClipping", L=3, tau=1.0), 3),
        ("fltrust", lambda: A.fltrust(x, root), None, 3),
        ("clip (fixed)", lambda: A.clip_norms(x, 100.0, f), bz("Clipping", c=100.0), 3),
        ("clip (median)", lambda: A.clip_norms(x, "median", f), None, 3),
        ("bucketing (s=2)", lambda: A.bucketing(x, 2, f, np.random.default_rng(1)), bz("Bucketing", s=2), 3),
        ("nnm", lambda: A.nnm(x, f), bz("NNM", f=f), 3),
        ("pipeline clip|bucket|cc", lambda: A.aggregate("clip(median)|bucket(2)|cc(tau=1)", x, f,
                                                          rng=np.random.default_rng(1)), None, 3),
    ]
    print(f"\n{'aggregator':<28}{'ours':>11}{'byzfl':>11}{'speedup':>9}{'× mean':>9}")
    for name, ours, theirs, reps in cases:
        if name == "clip (fixed)":
            clip_input.append(x.copy())
        t_ours = timeit(ours, reps)
        t_theirs = timeit(theirs, 1) if theirs is not None else None
        th = f"{t_theirs * 1e3:9.0f}ms" if t_theirs is not None else f"{'–':>11}"
        sp = f"{t_theirs / t_ours:8.1f}×" if t_theirs is not None else f"{'–':>9}"
        print(f"{name:<28}{t_ours * 1e3:9.1f}ms{th}{sp}{t_ours / base:8.1f}×", flush=True)
    print("\nbyzfl has no Bulyan, FLTrust or median-adaptive clipping; its GeometricMedian runs a fixed T=3 "
          "Weiszfeld steps (ours iterates to tol=1e-6; the '3 it.' row compares like for like).")


if __name__ == "__main__":
    main()
