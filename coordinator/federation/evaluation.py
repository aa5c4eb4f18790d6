"""Server-side evaluation of a model spec in numpy (the coordinator does not need torch).

A forward pass for every model-spec layer (Linear, Conv2d, ReLU, MaxPool2d, Flatten) with torch's layouts and
semantics, softmax cross-entropy and accuracy; tested against torch in tests/test_evaluation.py.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from flcore.modelspec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU


def forward(spec: ModelSpec, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits for a batch ``x`` of shape (n, *spec.input_shape)."""
    h = np.asarray(x, dtype=np.float32).reshape(len(x), *spec.input_shape)
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Linear):
            h = h @ params[f"{i}.weight"].T + params[f"{i}.bias"]
        elif isinstance(layer, Conv2d):
            h = _conv2d(h, params[f"{i}.weight"], params[f"{i}.bias"], layer.stride, layer.padding)
        elif isinstance(layer, ReLU):
            h = np.maximum(h, 0)
        elif isinstance(layer, MaxPool2d):
            k, s = layer.kernel_size, layer.stride or layer.kernel_size
            win = sliding_window_view(h, (k, k), axis=(2, 3))[:, :, ::s, ::s]
            h = win.max(axis=(-2, -1))
        elif isinstance(layer, Flatten):
            h = h.reshape(len(h), -1)
        else:  # pragma: no cover - ModelSpec validates layer types
            raise ValueError(f"unsupported layer {layer!r}")
    return h


def _conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int) -> np.ndarray:
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    k = w.shape[-1]
    win = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # n, c, oh, ow, k, k
    out = np.einsum("nchwij,ocij->nohw", win, w, optimize=True)
    return out + b[None, :, None, None]


def loss_and_accuracy(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(len(y)), y].mean())
    return loss, float((logits.argmax(axis=1) == y).mean())


def evaluator(spec: ModelSpec, x: np.ndarray, y: np.ndarray) -> Callable[[dict[str, np.ndarray]], dict[str, float]]:
    """An engine evaluator: parameters → {"loss", "accuracy"} on held-out data."""
    y = np.asarray(y, dtype=np.int64)

    def evaluate(params: dict[str, np.ndarray]) -> dict[str, float]:
        loss, acc = loss_and_accuracy(forward(spec, params, x), y)
        return {"loss": loss, "accuracy": acc}

    return evaluate
