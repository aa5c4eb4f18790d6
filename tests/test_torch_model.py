"""Torch modules built from the spec against a numpy reference forward pass, and local training on digits."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_set_parameters_rejects_bad_input_atomically() -> None:
    spec = mlp([4, 3, 2])
    m = build_module(spec)
    before = get_parameters(m)
    good = {k: np.zeros(v.shape, np.float32) for k, v in before.items()}
    for bad, msg in (({**good, "0.bias": np.zeros(4)}, "0.bias: 4 values"),
                     ({k: v for k, v in good.items() if k != "2.weight"}, "missing"),
                     ({**good, "9.weight": np.zeros(1)}, "unknown"),
                     ({**good, "2.bias": np.array([0.0, np.nan])}, "non-finite")):
        with pytest.raises(ValueError, match=msg):
            set_parameters(m, bad)
        after = get_parameters(m)
        assert all(np.array_equal(after[k], before[k]) for k in before)


def test_train_local_delta_and_determinism() -> None:
    data = load_digits()
    spec = mlp([64, 16, 10])
    init = spec.init_parameters(0)
    runs = []
    for _ in range(2):
        m = build_module(spec)
        set_parameters(m, init)
        delta, _ = train_local(m, data.x_train[:200], data.y_train[:200], epochs=2, batch_size=16, lr=0.05,
                               momentum=0.9, seed=3)
        after = get_parameters(m)
        for k, v in delta.items():
            np.testing.assert_allclose(v, after[k] - np.asarray(init[k], np.float32).reshape(v.shape), atol=1e-6)
        runs.append(delta)
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])
    with pytest.raises(ValueError, match="non-empty"):
        train_local(build_module(spec), data.x_train[:0], data.y_train[:0])


def test_one_sgd_step_equals_manual_gradient_step() -> None:
    """One full-batch SGD step: the delta is −lr · ∇ of the mean softmax cross-entropy, computed here in numpy
    from the definition for a one-layer model (∇W = (softmax(xWᵀ + b) − onehot(y))ᵀ x / n)."""
    rng = np.random.default_rng(1)
    spec = ModelSpec((5,), (Linear(5, 3),), 3)
    m = build_module(spec)
    x, y = rng.normal(size=(8, 5)).astype(np.float32), rng.integers(0, 3, 8)
    p = get_parameters(m)
    logits = x.astype(np.float64) @ p["0.weight"].T + p["0.bias"]
    sm = np.exp(logits - logits.max(1, keepdims=True))
    sm /= sm.sum(1, keepdims=True)
    g = (sm - np.eye(3)[y]) / len(x)
    delta, _ = train_local(m, x, y, epochs=1, batch_size=8, lr=0.5, seed=0)
    np.testing.assert_allclose(delta["0.weight"], -0.5 * g.T @ x, atol=1e-5)
    np.testing.assert_allclose(delta["0.bias"], -0.5 * g.sum(0), atol=1e-5)
