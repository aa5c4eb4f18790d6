"""L2 clipping of a whole update (the user-level sensitivity bound of DP-FedAvg, McMahan et al. ICLR'18)."""

from __future__ import annotations

import math
from typing import Any


def l2_clip(x: Any, clip: float, backend: Any) -> tuple[Any, float]:
    """``x · min(1, clip/‖x‖₂)`` and the original norm. Raises ``ValueError`` on NaN/Inf."""
    if not (clip > 0 and math.isfinite(clip)):
        raise ValueError(f"clip must be a positive finite number, got {clip}")
    norm = backend.l2_norm(x)
    if not math.isfinite(norm):
        raise ValueError("update contains NaN or Inf")
    return (backend.scale(x, clip / norm) if norm > clip else backend.scale(x, 1.0)), norm
