"""Record-level DP-SGD for local training (Abadi et al., CCS'16, "Deep Learning with Differential Privacy"),
through opacus: per-sample gradient clipping + Gaussian noise, Poisson-sampled batches, RDP accounting.

This protects each record of a client's own data set against everything downstream (coordinator, other
clients, the released model) and composes with the distributed DP of the group sums (docs/privacy.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from client_native.torch_model import get_parameters


@dataclass
class DpSgdOptions:
    noise_multiplier: float
    max_grad_norm: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0 or not self.max_grad_norm > 0 or not 0 < self.delta < 1:
            raise ValueError("DP-SGD needs noise_multiplier > 0, max_grad_norm > 0 and 0 < delta < 1")


@dataclass
class DpSgdTrainer:
    """Keeps the opacus accountant across rounds: ``epsilon()`` is the client's record-level ε so far."""

    options: DpSgdOptions
    accountant: Any = field(default=None)

    def __post_init__(self) -> None:
        from opacus.accountants import RDPAccountant

        self.accountant = RDPAccountant()

    def train(self, module: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, lr: float,
              seed: int) -> tuple[dict[str, np.ndarray], float]:
        from opacus import GradSampleModule
        from opacus.data_loader import DPDataLoader
        from opacus.optimizers import DPOptimizer

        before = get_parameters(module)
        gen = torch.Generator().manual_seed(seed)
        data = torch.utils.data.TensorDataset(torch.as_tensor(np.asarray(x, np.float32)),
                                              torch.as_tensor(np.asarray(y, np.int64)))
        loader = DPDataLoader.from_data_loader(torch.utils.data.DataLoader(data, batch_size=batch_size),
                                               generator=gen)
        sample_rate = 1 / len(loader)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gsm = GradSampleModule(module)
            opt = DPOptimizer(torch.optim.SGD(gsm.parameters(), lr=lr), noise_multiplier=self.options.noise_multiplier,
                              max_grad_norm=self.options.max_grad_norm, expected_batch_size=batch_size,
                              generator=gen)
        losses = []
        gsm.train()
        warnings.filterwarnings("ignore", message="Full backward hook is firing")  # opacus, harmless
        for _ in range(epochs):
            for xb, yb in loader:
                if len(xb) == 0:
                    continue
                opt.zero_grad()
                loss = nn.functional.cross_entropy(gsm(xb), yb)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            self.accountant.history.append((self.options.noise_multiplier, sample_rate, len(loader)))
        gsm._close()
        after = get_parameters(module)
        return {k: after[k] - before[k] for k in before}, float(np.mean(losses)) if losses else float("nan")

    def epsilon(self) -> float:
        return float(self.accountant.get_epsilon(self.options.delta)) if self.accountant.history else 0.0
