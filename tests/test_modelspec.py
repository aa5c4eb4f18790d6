"""The model spec: validation, shapes, parameter names, serialization, deterministic init."""

from __future__ import annotations

import pytest

from flcore.modelspec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU, mlp

CNN = ModelSpec((1, 8, 8), (Conv2d(1, 4, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(), Linear(64, 10)), 10)


def test_shapes_and_parameters() -> None:
    assert CNN.shapes() == [(4, 8, 8), (4, 8, 8), (4, 4, 4), (64,), (10,)]
    assert CNN.parameter_shapes() == [("0.weight", (4, 1, 3, 3)), ("0.bias", (4,)), ("4.weight", (10, 64)),
                                      ("4.bias", (10,))]
    assert CNN.num_parameters() == 36 + 4 + 640 + 10
    m = mlp([64, 128, 10])
    assert [n for n, _ in m.parameter_shapes()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert m.num_parameters() == 64 * 128 + 128 + 128 * 10 + 10


def test_round_trip_json() -> None:
    for spec in (CNN, mlp([64, 32, 10])):
        assert ModelSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(("bad", "msg"), [
    ({"input_shape": [64], "num_classes": 10, "layers": [{"type": "Linear", "in_features": 63, "out_features": 10}]},
     "needs input"),
    ({"input_shape": [64], "num_classes": 3, "layers": [{"type": "Linear", "in_features": 64, "out_features": 10}]},
     "3 classes"),
    ({"input_shape": [64], "num_classes": 10, "layers": [{"type": "Dropout"}]}, "unknown layer"),
    ({"input_shape": [64], "num_classes": 10, "layers": []}, "layers"),
    ({"input_shape": [0], "num_classes": 10, "layers": [{"type": "Flatten"}]}, "positive"),
    ({"input_shape": [64], "num_classes": 10, "layers": [{"type": "Linear", "in_features": 64,
                                                          "out_features": 10, "bias": False}]}, "unknown field"),
    ({"input_shape": [1, 2, 2], "num_classes": 10,
      "layers": [{"type": "Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3}]}, "too large"),
    ({"input_shape": [64], "num_classes": 10, "loss": "mse",
      "layers": [{"type": "Linear", "in_features": 64, "out_features": 10}]}, "unknown loss"),
    ({"input_shape": [64], "num_classes": 10, "extra": 1, "layers": []}, "unknown model spec field"),
    ({"input_shape": [64], "num_classes": 10, "layers": [{"type": "Linear", "in_features": True,
                                                          "out_features": 10}]}, "positive integer"),
])
def test_invalid_specs_raise_clear_errors(bad: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        ModelSpec.from_dict(bad)
    with pytest.raises(ValueError, match="not JSON"):
        ModelSpec.from_json("{")


def test_init_is_deterministic_and_in_range() -> None:
    a, b = CNN.init_parameters(1), CNN.init_parameters(1)
    assert a == b and a != CNN.init_parameters(2)
    assert all(abs(v) <= 1 / 3 for v in a["0.weight"])  # fan_in 9
    assert len(a["4.weight"]) == 640
