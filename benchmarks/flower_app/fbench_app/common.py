"""What the ServerApp and the ClientApp share: each client's update and the SecAgg+ weight."""

from __future__ import annotations

import numpy as np

# SecAggPlusWorkflow's default max_weight. The clients report num_examples = MAX_WEIGHT, so the weighting
# factor is 1 and Flower's quantization keeps its full 2^22 grid (equal weights: the global model is the plain
# mean of the updates).
MAX_WEIGHT = 1000


def update(partition_id: int, server_round: int, dim: int) -> np.ndarray:
    """Client ``partition_id``'s update in ``server_round``: d float32 uniform in [-1, 1) (no training)."""
    return np.random.default_rng([partition_id, server_round]).uniform(-1.0, 1.0, dim).astype(np.float32)
