"""Torch modules built from the spec against a numpy reference forward pass, and local training on digits."""

from __future__ import annotations

import numpy as np
import torch

from client_native.torch_model import (
    build_module,
    evaluate,
    flatten,
    get_parameters,
    set_parameters,
    train_local,
    unflatten,
)
from federated_data import load_digits
from flcore.modelspec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU, mlp

torch.set_num_threads(1)


def ref_forward(spec: ModelSpec, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Naive numpy forward pass written from the layer definitions."""
    h = x.astype(np.float64)
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Linear):
            h = h @ params[f"{i}.weight"].T.astype(np.float64) + params[f"{i}.bias"]
        elif isinstance(layer, Conv2d):
            w, b = params[f"{i}.weight"].astype(np.float64), params[f"{i}.bias"]
            p, s, k = layer.padding, layer.stride, layer.kernel_size
            hp = np.pad(h, ((0, 0), (0, 0), (p, p), (p, p)))
            oh, ow = (hp.shape[2] - k) // s + 1, (hp.shape[3] - k) // s + 1
            out = np.zeros((h.shape[0], w.shape[0], oh, ow))
            for r in range(oh):
                for c in range(ow):
                    patch = hp[:, :, r * s: r * s + k, c * s: c * s + k]
                    out[:, :, r, c] = np.einsum("nchw,ochw->no", patch, w) + b
            h = out
        elif isinstance(layer, ReLU):
            h = np.maximum(h, 0)
        elif isinstance(layer, MaxPool2d):
            k = layer.kernel_size
            s = layer.stride or k
            oh, ow = (h.shape[2] - k) // s + 1, (h.shape[3] - k) // s + 1
            out = np.zeros((h.shape[0], h.shape[1], oh, ow))
            for r in range(oh):
                for c in range(ow):
                    out[:, :, r, c] = h[:, :, r * s: r * s + k, c * s: c * s + k].max(axis=(2, 3))
            h = out
        elif isinstance(layer, Flatten):
            h = h.reshape(h.shape[0], -1)
    return h


def test_module_matches_reference_forward_for_every_layer_type() -> None:
    spec = ModelSpec((2, 9, 9), (Conv2d(2, 3, 3, stride=2, padding=1), ReLU(), MaxPool2d(2, 1), Flatten(),
                                 Linear(48, 16), ReLU(), Linear(16, 5)), 5)
    module = build_module(spec)
    params = get_parameters(module)
    assert [(n, p.shape) for n, p in params.items()] == spec.parameter_shapes()
    x = np.random.default_rng(0).normal(size=(7, 2, 9, 9)).astype(np.float32)
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref_forward(spec, params, x), rtol=1e-4, atol=1e-5)


def test_parameters_round_trip_and_flatten() -> None:
    spec = mlp([64, 16, 10])
    m = build_module(spec)
    init = {k: np.asarray(v, np.float32) for k, v in spec.init_parameters(3).items()}
    set_parameters(m, init)
    got = get_parameters(m)
    for k in init:
        np.testing.assert_array_equal(got[k].reshape(-1), init[k])
    vec = flatten(got, spec)
    assert vec.shape == (spec.num_parameters(),)
    back = unflatten(vec, spec)
    for k in got:
        np.testing.assert_array_equal(back[k], got[k])


def test_local_training_on_digits_learns() -> None:
    data = load_digits()
    spec = mlp([64, 64, 10])
    m = build_module(spec)
    torch.manual_seed(0)
    _, acc0 = evaluate(m, data.x_test, data.y_test)
    delta, loss = train_local(m, data.x_train, data.y_train, epochs=10, batch_size=32, lr=0.1, seed=1)
    _, acc = evaluate(m, data.x_test, data.y_test)
    assert acc > 0.9 > acc0 and np.isfinite(loss)
    assert set(delta) == {n for n, _ in spec.parameter_shapes()}
