"""Server optimizers: how the coordinator turns the aggregated update into the next global model.

All operate on flat float32 parameter vectors with explicit, serializable state (the store persists it, so a
restarted coordinator continues the same optimizer trajectory).

- FedAvg (McMahan et al., AISTATS'17): x ← x + η·Δ (η = 1 is plain model averaging).
- FedAvgM (Hsu, Qi & Brown 2019, "Measuring the effects of non-identical data distribution"): server momentum,
  m ← β·m + Δ,  x ← x + η·m.
- FedAdam (Reddi et al., ICLR'21, "Adaptive Federated Optimization", Algorithm 2):
  m ← β1·m + (1−β1)·Δ,  v ← β2·v + (1−β2)·Δ²,  x ← x + η·m / (√v + τ).
  As in the paper there is no bias correction; τ controls the degree of adaptivity.

Here Δ is the aggregated *client delta* (new local model − global model), i.e. the negative pseudo-gradient.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _encode(a: np.ndarray | None) -> str | None:
    return None if a is None else base64.b64encode(np.ascontiguousarray(a, dtype=np.float32).tobytes()).decode()


def _decode(s: str | None, d: int) -> np.ndarray | None:
    if s is None:
        return None
    a = np.frombuffer(base64.b64decode(s), dtype=np.float32).copy()
    if a.size != d:
        raise ValueError(f"optimizer state has {a.size} entries, model has {d}")
    return a


@dataclass
class OptimizerState:
    """Server-optimizer state. ``m``/``v`` are ``None`` until the first step."""

    step: int = 0
    m: np.ndarray | None = None
    v: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "m": _encode(self.m), "v": _encode(self.v)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], d: int) -> OptimizerState:
        return cls(step=int(data["step"]), m=_decode(data.get("m"), d), v=_decode(data.get("v"), d))


@dataclass(frozen=True)
class ServerOptimizer:
    """A server optimizer by name: ``fedavg``, ``fedavgm`` or ``fedadam``."""

    name: str = "fedavg"
    lr: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    state: OptimizerState = field(default_factory=OptimizerState, compare=False)

    def __post_init__(self) -> None:
        if self.name not in ("fedavg", "fedavgm", "fedadam"):
            raise ValueError(f"unknown server optimizer {self.name!r}: expected fedavg, fedavgm or fedadam")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise ValueError(f"server learning rate must be a positive finite number, got {self.lr}")
        for pname in ("momentum", "beta1", "beta2"):
            value = getattr(self, pname)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{pname} must be in [0, 1), got {value}")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")


def apply_update(
    opt: ServerOptimizer, params: np.ndarray, delta: np.ndarray, state: OptimizerState
) -> tuple[np.ndarray, OptimizerState]:
    """One server step. Returns the new parameters and the new state; the inputs are not modified."""
    if params.shape != delta.shape or params.ndim != 1:
        raise ValueError(f"params and delta must be equal-length vectors, got {params.shape} and {delta.shape}")
    if not np.all(np.isfinite(delta)):
        raise ValueError("aggregated update contains NaN or Inf; refusing to apply it")
    delta = delta.astype(np.float32, copy=False)
    if opt.name == "fedavg":
        return (params + np.float32(opt.lr) * delta).astype(np.float32), OptimizerState(step=state.step + 1)
    if opt.name == "fedavgm":
        m = delta.copy() if state.m is None else np.float32(opt.momentum) * state.m + delta
        return (params + np.float32(opt.lr) * m).astype(np.float32), OptimizerState(step=state.step + 1, m=m)
    m0 = np.zeros_like(delta) if state.m is None else state.m
    v0 = np.zeros_like(delta) if state.v is None else state.v
    m = np.float32(opt.beta1) * m0 + np.float32(1 - opt.beta1) * delta
    v = np.float32(opt.beta2) * v0 + np.float32(1 - opt.beta2) * delta * delta
    new = params + np.float32(opt.lr) * m / (np.sqrt(v) + np.float32(opt.tau))
    return new.astype(np.float32), OptimizerState(step=state.step + 1, m=m, v=v)
