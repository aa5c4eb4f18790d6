"""Discrete Gaussian sampling: Canonne, Kamath & Steinke, NeurIPS'20, "The Discrete Gaussian for Differential
Privacy" (Algorithm 3: rejection from the discrete Laplace).

For σ > 0, t = ⌊σ⌋ + 1: draw Y from the discrete Laplace with scale t (as the difference of two geometric
variables), accept with probability exp(−(|Y| − σ²/t)² / (2σ²)); the accepted Y follow N_Z(0, σ²).
All uniforms come from a :class:`RandomStream` (ChaCha20 seeded by the OS CSPRNG). This is the floating-point
version of the sampler (geometric variables by inversion, the acceptance test in binary64); both paths
(numpy, pure Python) consume the stream identically, in rounds over the still-rejected coordinates.
"""

from __future__ import annotations

import math
from typing import Any

from privacy.randomness import RandomStream


def sample_discrete_gaussian(n: int, sigma: float, stream: RandomStream, backend: Any) -> Any:
    """``n`` i.i.d. samples of N_Z(0, σ²) as int64 (numpy) or a list of ints."""
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a positive finite number, got {sigma}")
    if n < 0:
        raise ValueError("n must be >= 0")
    fast = getattr(backend, "sample_discrete_gaussian", None)
    if fast is not None:  # a backend's own implementation (the browser's WASM kernel); same stream bytes, same rounds
        return fast(n, sigma, stream)
    t = math.floor(sigma) + 1
    s2 = sigma * sigma
    if backend.name == "numpy":
        import numpy as np

        out = np.zeros(n, dtype=np.int64)
        todo = np.arange(n)
        while len(todo):
            u = stream.uniforms_open(3 * len(todo), backend).reshape(3, -1)
            g1 = np.floor(-t * np.log(u[0]))
            g2 = np.floor(-t * np.log(u[1]))
            y = g1 - g2
            accept = u[2] <= np.exp(-((np.abs(y) - s2 / t) ** 2) / (2 * s2))
            out[todo[accept]] = y[accept].astype(np.int64)
            todo = todo[~accept]
        return out
    out_l = [0] * n
    todo_l = list(range(n))
    while todo_l:
        r = len(todo_l)
        u = stream.uniforms_open(3 * r, backend)
        rejected = []
        for j, idx in enumerate(todo_l):
            y = math.floor(-t * math.log(u[j])) - math.floor(-t * math.log(u[r + j]))
            if u[2 * r + j] <= math.exp(-((abs(y) - s2 / t) ** 2) / (2 * s2)):
                out_l[idx] = int(y)
            else:
                rejected.append(idx)
        todo_l = rejected
    return out_l


def sum_divergence_tau(sigma: float, n: int) -> float:
    """τ of Kairouz, Liu & Steinke (ICML'21, Thm. 12) for a sum of n i.i.d. N_Z(0, σ²):
    τ = 10 · Σ_{k=1}^{n−1} exp(−2π²σ² · k/(k+1))."""
    return 10.0 * sum(math.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, n))
