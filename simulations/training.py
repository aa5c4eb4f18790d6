"""Honest local training, vectorized across clients.

For the model-spec MLPs (Linear/ReLU/Flatten) all C clients of a round train at once: their parameters are
stacked into (C, out, in) tensors, each SGD step is one batched matmul per layer (``torch.baddbmm``) over a
padded (C, batch, features) block, and one backward pass gives every client its own gradient (the per-client
losses are independent, so the gradient of their sum w.r.t. client c's parameters is client c's gradient).

The result is the same computation as :func:`client_native.torch_model.train_local` for each client: plain
SGD on softmax cross-entropy, per epoch a ``torch.randperm`` drawn from ``torch.Generator().manual_seed(seed)``,
mini-batches of ``batch_size`` in that order, the last one smaller (tested to agree to float32 rounding).
Clients with fewer batches simply take no step while others finish their epoch. Other layer types fall back
to calling ``train_local`` client by client.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from flcore.modelspec import Flatten, Linear, ModelSpec, ReLU


def vectorizable(spec: ModelSpec) -> bool:
    return len(spec.input_shape) == 1 and all(isinstance(layer, Linear | ReLU | Flatten) for layer in spec.layers)


def _unflatten_batch(params: np.ndarray, spec: ModelSpec, c: int) -> list[torch.Tensor]:
    out, pos = [], 0
    for _, shape in spec.parameter_shapes():
        n = math.prod(shape)
        t = torch.from_numpy(np.ascontiguousarray(params[pos: pos + n], dtype=np.float32)).reshape(shape)
        out.append(t.unsqueeze(0).expand(c, *shape).contiguous().requires_grad_(True))  # C copies (faster than repeat)
        pos += n
    return out


def _forward(spec: ModelSpec, ps: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x: (C, B, features) → logits (C, B, classes)."""
    h, i = x, 0
    for layer in spec.layers:
        if isinstance(layer, Linear):
            w, b = ps[i], ps[i + 1]
            i += 2
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        elif isinstance(layer, ReLU):
            h = torch.relu(h)
    return h


def train_clients(spec: ModelSpec, params: np.ndarray, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], *,
                  epochs: int, batch_size: int, lr: float, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Local SGD for every client from the same global ``params`` (flat, spec order). Returns (deltas (C, d)
    float32, mean training loss per client)."""
    c = len(xs)
    d = spec.num_parameters()
    if c == 0:
        return np.zeros((0, d), np.float32), np.zeros(0)
    if not (len(ys) == len(seeds) == c):
        raise ValueError("xs, ys and seeds must have one entry per client")
    if any(len(x) == 0 or len(x) != len(y) for x, y in zip(xs, ys, strict=True)):
        raise ValueError("every client needs a non-empty dataset with matching x and y")
    if not vectorizable(spec):
        return _train_loop(spec, params, xs, ys, epochs=epochs, batch_size=batch_size, lr=lr, seeds=seeds)
    sizes = np.array([len(x) for x in xs])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    x_all = torch.from_numpy(np.concatenate([np.asarray(x, np.float32).reshape(len(x), -1) for x in xs]))
    y_all = torch.from_numpy(np.concatenate([np.asarray(y, np.int64) for y in ys]))
    # a zero row/label used for padding (its loss is masked out)
    x_all = torch.cat([x_all, torch.zeros(1, x_all.shape[1])])
    y_all = torch.cat([y_all, torch.zeros(1, dtype=torch.int64)])
    pad = len(y_all) - 1
    steps = math.ceil(sizes.max() / batch_size)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    ps = _unflatten_batch(np.asarray(params, np.float32), spec, c)
    loss_sum = torch.zeros(c)
    loss_count = torch.zeros(c)
    for _ in range(epochs):
        idx = torch.full((c, steps * batch_size), pad, dtype=torch.int64)
        for k in range(c):
            idx[k, : sizes[k]] = torch.randperm(int(sizes[k]), generator=gens[k]) + int(offsets[k])
        idx = idx.view(c, steps, batch_size)
        for j in range(steps):
            bi = idx[:, j]  # (C, B)
            mask = (bi != pad).to(torch.float32)
            count = mask.sum(1)
            if not bool((count > 0).any()):
                break
            logits = _forward(spec, ps, x_all[bi])
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_all[bi].reshape(-1),
                                 reduction="none").view(c, batch_size)
            per_client = (ce * mask).sum(1) / count.clamp(min=1.0)
            grads = torch.autograd.grad(per_client.sum(), ps)
            with torch.no_grad():
                for p, g in zip(ps, grads, strict=True):
                    p.sub_(lr * g)
                active = count > 0
                loss_sum += torch.where(active, per_client.detach(), torch.zeros_like(per_client))
                loss_count += active.to(torch.float32)
    start = torch.from_numpy(np.asarray(params, np.float32))
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(c, -1) for p in ps], dim=1)
        deltas = (flat - start.unsqueeze(0)).numpy().astype(np.float32, copy=False)
    return deltas, (loss_sum / loss_count.clamp(min=1.0)).numpy()


def _train_loop(spec: ModelSpec, params: np.ndarray, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], *,
                epochs: int, batch_size: int, lr: float, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    from client_native.torch_model import build_module, flatten, set_parameters, train_local, unflatten

    module = build_module(spec)
    start = unflatten(np.asarray(params, np.float32), spec)
    deltas, losses = [], []
    for x, y, s in zip(xs, ys, seeds, strict=True):
        set_parameters(module, start)
        delta, loss = train_local(module, np.asarray(x).reshape(len(x), *spec.input_shape), y, epochs=epochs,
                                  batch_size=batch_size, lr=lr, seed=int(s))
        deltas.append(flatten(delta, spec))
        losses.append(loss)
    return np.stack(deltas), np.array(losses)
