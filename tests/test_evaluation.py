"""The coordinator's numpy evaluation equals torch on every model-spec layer."""

from __future__ import annotations

import numpy as np
import torch

from client_native.torch_model import build_module, set_parameters
from coordinator.federation.evaluation import evaluator, forward
from flcore.modelspec import ModelSpec, mlp


def _cnn() -> ModelSpec:
    return ModelSpec.from_dict({"input_shape": [1, 8, 8], "num_classes": 10, "layers": [
        {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "stride": 1, "padding": 1},
        {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2},
        {"type": "Conv2d", "in_channels": 4, "out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 0},
        {"type": "Flatten"}, {"type": "Linear", "in_features": 6, "out_features": 10}]})


def test_forward_matches_torch() -> None:
    rng = np.random.default_rng(0)
    for spec in (mlp([64, 32, 10]), _cnn()):
        init = spec.init_parameters(3)
        params = {k: np.asarray(init[k], np.float32).reshape(s) for k, s in spec.parameter_shapes()}
        x = rng.normal(size=(17, *spec.input_shape)).astype(np.float32)
        module = build_module(spec)
        set_parameters(module, params)
        with torch.no_grad():
            ref = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(forward(spec, params, x), ref, rtol=1e-4, atol=1e-5)


def test_evaluator_accuracy() -> None:
    spec = mlp([4, 3])
    params = {"0.weight": np.eye(3, 4, dtype=np.float32), "0.bias": np.zeros(3, np.float32)}
    x = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]], np.float32)
    out = evaluator(spec, x, np.array([0, 1, 2, 2]))(params)
    assert out["accuracy"] == 0.75 and out["loss"] > 0
