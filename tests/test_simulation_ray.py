"""The Ray backend on a local Ray instance gives the same federation as the local backend."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'fl-coordinator[ray]'")


def test_ray_backend_matches_local_backend() -> None:
    from simulations.runner import run_simulation

    cfg = {"name": "ray", "rounds": 2, "seed": 1, "plots": False, "mode": "direct",
           "data": {"num_clients": 12, "partition": "iid"}, "model": {"hidden": [8]},
           "federation": {"clients_per_round": 12, "group_size": 3, "aggregator": "median", "byzantine": 1,
                          "accept_grouping_risk": True},  # above the planner's bound on purpose: backends compared
           "attack": {"name": "alie", "num_byzantine": 2}}
    local = run_simulation(cfg)
    remote = run_simulation({**cfg, "backend": "ray", "ray_workers": 2})
    assert not ray.is_initialized()  # the backend shut down the instance it started
    np.testing.assert_allclose([h["loss"] for h in remote.history], [h["loss"] for h in local.history], rtol=1e-5)
