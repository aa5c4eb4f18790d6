"""Ray backend (optional extra ``pip install 'fl-coordinator[ray]'``): spreads a round's client training over
Ray actors – on this machine (a local Ray instance is started) or on a cluster (``ray_address``).

Each actor holds the clients' datasets once (shared through Ray's object store) and trains its slice of the
round's clients with the same batched trainer as the local backend; the coordinator engine, secure
aggregation, DP and the attacks stay in the driver process, so the protocol path is unchanged. Per-client
results do not depend on how clients are sliced (each client's SGD is independent and seeded by client).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class RayTrainer:
    def __init__(self, spec: Any, xs: list[np.ndarray], ys: list[np.ndarray], *, workers: int = 2,
                 address: str = "") -> None:
        try:
            import ray
        except ImportError:
            raise RuntimeError("backend = \"ray\" needs Ray: pip install 'fl-coordinator[ray]'") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            self.started = True
        data_ref = ray.put((spec.to_dict(), xs, ys))

        @ray.remote(num_cpus=1)
        class Worker:
            def __init__(self, data: Any) -> None:
                import torch

                from flcore.modelspec import ModelSpec

                torch.set_num_threads(1)
                spec_dict, self.xs, self.ys = data
                self.spec = ModelSpec.from_dict(spec_dict)

            def train(self, params: np.ndarray, idxs: list[int], seeds: list[int], kw: dict[str, Any]) -> np.ndarray:
                from simulations.training import train_clients

                deltas, _ = train_clients(self.spec, params, [self.xs[i] for i in idxs],
                                          [self.ys[i] for i in idxs], seeds=seeds, **kw)
                return deltas

        self.workers = [Worker.remote(data_ref) for _ in range(workers)]

    def train(self, params: np.ndarray, idxs: list[int], seeds: list[int], **kw: Any) -> np.ndarray:
        chunks = [c for c in np.array_split(np.arange(len(idxs)), len(self.workers)) if len(c)]
        params_ref = self.ray.put(np.asarray(params, np.float32))
        futures = [w.train.remote(params_ref, [idxs[k] for k in c], [seeds[k] for k in c], kw)
                   for w, c in zip(self.workers, chunks, strict=False)]
        return np.concatenate(self.ray.get(futures))

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w)
        self.workers = []
        if self.started:
            self.ray.shutdown()
            self.started = False
