"""Torch modules from a :class:`flcore.modelspec.ModelSpec`, local training and evaluation (native client)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from flcore.modelspec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU


def build_module(spec: ModelSpec) -> nn.Sequential:
    """An ``nn.Sequential`` whose parameter names and shapes equal ``spec.parameter_shapes()``."""
    mods: list[nn.Module] = []
    for layer in spec.layers:
        if isinstance(layer, Linear):
            mods.append(nn.Linear(layer.in_features, layer.out_features))
        elif isinstance(layer, Conv2d):
            mods.append(nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                  layer.padding))
        elif isinstance(layer, ReLU):
            mods.append(nn.ReLU())
        elif isinstance(layer, MaxPool2d):
            mods.append(nn.MaxPool2d(layer.kernel_size, layer.stride))
        elif isinstance(layer, Flatten):
            mods.append(nn.Flatten())
        else:  # pragma: no cover - ModelSpec validates layer types
            raise ValueError(f"unsupported layer {layer!r}")
    module = nn.Sequential(*mods)
    got = [(n, tuple(p.shape)) for n, p in module.named_parameters()]
    if got != spec.parameter_shapes():  # pragma: no cover - a bug guard
        raise AssertionError(f"torch parameters {got} differ from the spec {spec.parameter_shapes()}")
    return module


def get_parameters(module: nn.Module) -> dict[str, np.ndarray]:
    return {n: p.detach().cpu().numpy().astype(np.float32, copy=True) for n, p in module.named_parameters()}


def set_parameters(module: nn.Module, params: dict[str, Any]) -> None:
    """Load parameters (numpy arrays or flat lists) by name. Every parameter must be given, with the right
    number of finite entries; unknown names are rejected. Nothing is changed if any check fails."""
    named = dict(module.named_parameters())
    missing, unknown = set(named) - set(params), set(params) - set(named)
    if missing or unknown:
        raise ValueError(f"parameter names differ from the module's: missing {sorted(missing)}, "
                         f"unknown {sorted(unknown)}")
    values = {}
    for name, p in named.items():
        value = np.array(params[name], dtype=np.float32)  # a writable copy
        if value.size != p.numel():
            raise ValueError(f"parameter {name}: {value.size} values for shape {tuple(p.shape)}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"parameter {name} has non-finite values")
        values[name] = value.reshape(p.shape)
    with torch.no_grad():
        for name, p in named.items():
            p.copy_(torch.from_numpy(values[name]))


def flatten(params: dict[str, np.ndarray], spec: ModelSpec) -> np.ndarray:
    """One float32 vector in spec order (what secure aggregation and the aggregators work on)."""
    return np.concatenate([np.asarray(params[n], np.float32).reshape(-1) for n, _ in spec.parameter_shapes()])


def unflatten(vector: np.ndarray, spec: ModelSpec) -> dict[str, np.ndarray]:
    out, pos = {}, 0
    for name, shape in spec.parameter_shapes():
        n = int(np.prod(shape))
        out[name] = np.asarray(vector[pos: pos + n], np.float32).reshape(shape)
        pos += n
    if pos != len(vector):
        raise ValueError(f"vector has {len(vector)} entries, the model has {pos} parameters")
    return out


def train_local(module: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int = 1, batch_size: int = 32,
                lr: float = 0.1, momentum: float = 0.0, seed: int = 0) -> tuple[dict[str, np.ndarray], float]:
    """Plain SGD on softmax cross-entropy. Returns (delta = new − old parameters, mean training loss)."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need matching, non-empty x and y (got {len(x)} and {len(y)})")
    before = get_parameters(module)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum)
    xt, yt = torch.as_tensor(np.asarray(x, np.float32)), torch.as_tensor(np.asarray(y, np.int64))
    module.train()
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch_size):
            idx = perm[i: i + batch_size]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(module(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item())
    after = get_parameters(module)
    return {k: after[k] - before[k] for k in before}, float(np.mean(losses))


@torch.no_grad()
def evaluate(module: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy)."""
    module.eval()
    logits = module(torch.as_tensor(np.asarray(x, np.float32)))
    yt = torch.as_tensor(np.asarray(y, np.int64))
    return float(nn.functional.cross_entropy(logits, yt)), float((logits.argmax(1) == yt).float().mean())
