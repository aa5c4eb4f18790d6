"""The model spec: validation, shapes, parameter names, serialization, deterministic init."""

from __future__ import annotations

import pytest

from flcore.modelspec import CNN_DIGITS, Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU, cnn, mlp

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


def test_size_limits() -> None:
    from flcore import modelspec

    with pytest.raises(ValueError, match=r"1\.\.64 layers"):
        ModelSpec((10,), (ReLU(),) * (modelspec.MAX_LAYERS + 1) + (Linear(10, 10),), 10)
    with pytest.raises(ValueError, match="exceed the limit"):
        mlp([10_000, 10_000, 10])
    with pytest.raises(ValueError, match="positive integer"):
        ModelSpec((1, 8, 8), (MaxPool2d(2, 0), Flatten(), Linear(16, 10)), 10)
    with pytest.raises(ValueError, match=r"needs input \(C, H, W\)"):
        ModelSpec((64,), (MaxPool2d(2), Flatten(), Linear(64, 10)), 10)


def test_parameter_layout_is_torch_layout() -> None:
    """Shapes are torch's (Linear (out, in), Conv2d (out, in, kh, kw)); init bounds are 1/√fan_in."""
    spec = ModelSpec((3, 6, 6), (Conv2d(3, 2, 3, stride=2), Flatten(), Linear(8, 4)), 4)
    assert spec.parameter_shapes() == [("0.weight", (2, 3, 3, 3)), ("0.bias", (2,)), ("2.weight", (4, 8)),
                                       ("2.bias", (4,))]
    init = spec.init_parameters(0)
    assert {k: len(v) for k, v in init.items()} == {"0.weight": 54, "0.bias": 2, "2.weight": 32, "2.bias": 4}
    assert max(abs(v) for v in init["0.weight"] + init["0.bias"]) <= 1 / 27 ** 0.5
    assert max(abs(v) for v in init["2.weight"]) > 0.5 / 8 ** 0.5  # spread over the range, not tiny


def test_digits_cnn_shapes_and_parameters() -> None:
    """``cnn:digits``: 1×8×8 → two conv blocks (3×3, padding 1, 2×2 max-pool) → 16×2×2 = 64 → 10 classes."""
    assert CNN_DIGITS.layers == (Conv2d(1, 8, 3, padding=1), ReLU(), MaxPool2d(2), Conv2d(8, 16, 3, padding=1),
                                 ReLU(), MaxPool2d(2), Flatten(), Linear(64, 10))
    assert CNN_DIGITS.input_shape == (1, 8, 8) and CNN_DIGITS.num_classes == 10
    assert CNN_DIGITS.shapes() == [(8, 8, 8), (8, 8, 8), (8, 4, 4), (16, 4, 4), (16, 4, 4), (16, 2, 2), (64,), (10,)]
    assert CNN_DIGITS.parameter_shapes() == [("0.weight", (8, 1, 3, 3)), ("0.bias", (8,)),
                                             ("3.weight", (16, 8, 3, 3)), ("3.bias", (16,)),
                                             ("7.weight", (10, 64)), ("7.bias", (10,))]
    assert CNN_DIGITS.num_parameters() == 72 + 8 + 1152 + 16 + 640 + 10 == 1898
    assert ModelSpec.from_json(CNN_DIGITS.to_json()) == CNN_DIGITS


def test_cnn_builder() -> None:
    three = cnn((1, 8, 8), [4, 8, 16], 10)
    assert three.shapes()[-2:] == [(16,), (10,)] and three.layers[-1] == Linear(16, 10)
    rgb = cnn((3, 12, 10), [5], 4, kernel_size=5)
    assert rgb.layers[0] == Conv2d(3, 5, 5, padding=2) and rgb.shapes()[2] == (5, 6, 5)
    assert rgb.layers[-1] == Linear(5 * 6 * 5, 4)
    with pytest.raises(ValueError, match="too large"):  # 8 → 4 → 2 → 1 → nothing
        cnn((1, 8, 8), [4, 8, 16, 32], 10)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        cnn((64,), [8], 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        cnn((1, 8, 8), [], 10)
