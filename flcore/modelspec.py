"""The model spec: a small sequential network description shared by the coordinator, the native client
(torch) and the browser client (WASM kernel). Stored in a model's .mle metadata under ``"model"``.

Layers: Linear, Conv2d, ReLU, MaxPool2d, Flatten; loss: softmax cross-entropy. Parameter names and layouts
follow torch's ``nn.Sequential`` (``"0.weight"``, ``"0.bias"``; Linear weight (out, in); Conv2d weight
(out, in, kh, kw)), so a torch module built from the spec loads the tensors as they are.

Pure Python (stdlib only): the browser imports this file.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

MAX_LAYERS = 64
MAX_PARAMETERS = 50_000_000
LOSSES = ("softmax_cross_entropy",)


def _pos_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


@dataclass(frozen=True)
class Linear:
    in_features: int
    out_features: int

    def out_shape(self, shape: tuple[int, ...], i: int) -> tuple[int, ...]:
        if shape != (self.in_features,):
            raise ValueError(f"layer {i} Linear({self.in_features}, {self.out_features}) needs input "
                             f"({self.in_features},), gets {shape}")
        return (self.out_features,)

    def params(self) -> list[tuple[str, tuple[int, ...], int]]:
        return [("weight", (self.out_features, self.in_features), self.in_features),
                ("bias", (self.out_features,), self.in_features)]


@dataclass(frozen=True)
class Conv2d:
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0

    def out_shape(self, shape: tuple[int, ...], i: int) -> tuple[int, ...]:
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ValueError(f"layer {i} Conv2d needs input ({self.in_channels}, H, W), gets {shape}")
        _, h, w = shape
        oh = (h + 2 * self.padding - self.kernel_size) // self.stride + 1
        ow = (w + 2 * self.padding - self.kernel_size) // self.stride + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"layer {i} Conv2d: kernel {self.kernel_size} too large for input {shape}")
        return (self.out_channels, oh, ow)

    def params(self) -> list[tuple[str, tuple[int, ...], int]]:
        fan_in = self.in_channels * self.kernel_size * self.kernel_size
        return [("weight", (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size), fan_in),
                ("bias", (self.out_channels,), fan_in)]


@dataclass(frozen=True)
class ReLU:
    def out_shape(self, shape: tuple[int, ...], i: int) -> tuple[int, ...]:
        return shape

    def params(self) -> list[tuple[str, tuple[int, ...], int]]:
        return []


@dataclass(frozen=True)
class MaxPool2d:
    kernel_size: int
    stride: int | None = None

    def out_shape(self, shape: tuple[int, ...], i: int) -> tuple[int, ...]:
        if len(shape) != 3:
            raise ValueError(f"layer {i} MaxPool2d needs input (C, H, W), gets {shape}")
        s = self.stride or self.kernel_size
        c, h, w = shape
        oh, ow = (h - self.kernel_size) // s + 1, (w - self.kernel_size) // s + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"layer {i} MaxPool2d: kernel {self.kernel_size} too large for input {shape}")
        return (c, oh, ow)

    def params(self) -> list[tuple[str, tuple[int, ...], int]]:
        return []


@dataclass(frozen=True)
class Flatten:
    def out_shape(self, shape: tuple[int, ...], i: int) -> tuple[int, ...]:
        return (math.prod(shape),)

    def params(self) -> list[tuple[str, tuple[int, ...], int]]:
        return []


Layer = Linear | Conv2d | ReLU | MaxPool2d | Flatten
_KINDS: dict[str, type] = {"Linear": Linear, "Conv2d": Conv2d, "ReLU": ReLU, "MaxPool2d": MaxPool2d,
                           "Flatten": Flatten}
_FIELDS = {"Linear": ("in_features", "out_features"),
           "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding"),
           "ReLU": (), "MaxPool2d": ("kernel_size", "stride"), "Flatten": ()}


@dataclass(frozen=True)
class ModelSpec:
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    num_classes: int
    loss: str = "softmax_cross_entropy"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "layers", tuple(self.layers))
        for d in self.input_shape:
            _pos_int("input dimension", d)
        if not 1 <= len(self.input_shape) <= 3:
            raise ValueError(f"input_shape must be (features,) or (C, H, W), got {self.input_shape}")
        _pos_int("num_classes", self.num_classes)
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r} (supported: {', '.join(LOSSES)})")
        if not 1 <= len(self.layers) <= MAX_LAYERS:
            raise ValueError(f"a model has 1..{MAX_LAYERS} layers, got {len(self.layers)}")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, tuple(_KINDS.values())):
                raise ValueError(f"layer {i}: unknown layer type {type(layer).__name__}")
            kind = type(layer).__name__
            for f in _FIELDS[kind]:
                v = getattr(layer, f)
                if f == "padding":
                    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                        raise ValueError(f"layer {i} {kind}.padding must be an integer >= 0, got {v!r}")
                elif not (f == "stride" and v is None):
                    _pos_int(f"layer {i} {kind}.{f}", v)
        shape = self.output_shape()
        if shape != (self.num_classes,):
            raise ValueError(f"the last layer outputs {shape}, but the model has {self.num_classes} classes")
        if self.num_parameters() > MAX_PARAMETERS:
            raise ValueError(f"{self.num_parameters()} parameters exceed the limit {MAX_PARAMETERS}")

    def shapes(self) -> list[tuple[int, ...]]:
        """The activation shape after each layer (per example)."""
        out, shape = [], self.input_shape
        for i, layer in enumerate(self.layers):
            shape = layer.out_shape(shape, i)
            out.append(shape)
        return out

    def output_shape(self) -> tuple[int, ...]:
        return self.shapes()[-1]

    def parameter_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"{i}.{name}", shape) for i, layer in enumerate(self.layers) for name, shape, _ in layer.params()]

    def num_parameters(self) -> int:
        return sum(math.prod(s) for _, s in self.parameter_shapes())

    def init_parameters(self, seed: int) -> dict[str, list[float]]:
        """Deterministic initialization like torch's default (Kaiming-uniform with a = √5, i.e. U(±1/√fan_in)
        for weights and biases), flat row-major lists. Model initialization is public, not a secret, so a
        seeded ``random.Random`` is appropriate here."""
        rng = random.Random(seed)
        out: dict[str, list[float]] = {}
        for i, layer in enumerate(self.layers):
            for name, shape, fan_in in layer.params():
                bound = 1.0 / math.sqrt(fan_in)
                out[f"{i}.{name}"] = [rng.uniform(-bound, bound) for _ in range(math.prod(shape))]
        return out

    # ── serialization ────────────────────────────────────────────────────────────────────────────────
    def to_dict(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "num_classes": self.num_classes, "loss": self.loss,
                "layers": [{"type": type(layer).__name__,
                            **{f: getattr(layer, f) for f in _FIELDS[type(layer).__name__]}}
                           for layer in self.layers]}

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        if not isinstance(data, dict):
            raise ValueError("model spec must be a JSON object")
        extra = set(data) - {"input_shape", "num_classes", "loss", "layers"}
        if extra:
            raise ValueError(f"unknown model spec field(s) {sorted(extra)}")
        layers = []
        raw_layers = data.get("layers")
        if not isinstance(raw_layers, list):
            raise ValueError("model spec 'layers' must be a list")
        for i, item in enumerate(raw_layers):
            if not isinstance(item, dict) or item.get("type") not in _KINDS:
                raise ValueError(f"layer {i}: unknown layer {item!r} (known: {', '.join(_KINDS)})")
            kind = item["type"]
            args = {k: v for k, v in item.items() if k != "type"}
            bad = set(args) - set(_FIELDS[kind])
            if bad:
                raise ValueError(f"layer {i} {kind}: unknown field(s) {sorted(bad)}")
            try:
                layers.append(_KINDS[kind](**args))
            except TypeError as exc:
                raise ValueError(f"layer {i} {kind}: {exc}") from None
        shape = data.get("input_shape")
        if not isinstance(shape, list):
            raise ValueError("model spec 'input_shape' must be a list")
        return cls(tuple(shape), tuple(layers), data.get("num_classes"), data.get("loss", "softmax_cross_entropy"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValueError(f"model spec is not JSON: {exc}") from None


def mlp(sizes: list[int]) -> ModelSpec:
    """An MLP with ReLUs between Linear layers, e.g. ``mlp([64, 128, 10])``."""
    layers: list[Layer] = []
    for i in range(len(sizes) - 1):
        layers.append(Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(ReLU())
    return ModelSpec((sizes[0],), tuple(layers), sizes[-1])


def cnn(input_shape: tuple[int, int, int], channels: list[int], num_classes: int, kernel_size: int = 3,
        pool: int = 2) -> ModelSpec:
    """A small CNN: per entry of ``channels`` a block Conv2d(·, C, k, padding=k // 2)-ReLU-MaxPool2d(pool), then
    Flatten-Linear(·, num_classes). E.g. ``cnn((1, 8, 8), [8, 16], 10)`` (:data:`CNN_DIGITS`):
    (1, 8, 8) → (8, 4, 4) → (16, 2, 2) → 64 → 10. Each block's pooling divides the image side by ``pool``: an
    input too small for the number of blocks is refused (``ValueError``)."""
    if len(input_shape) != 3:
        raise ValueError(f"a CNN needs input (C, H, W), got {tuple(input_shape)}")
    if not channels:
        raise ValueError("a CNN needs at least one convolution block")
    layers: list[Layer] = []
    c = input_shape[0]
    for out in channels:
        layers += [Conv2d(c, out, kernel_size, padding=kernel_size // 2), ReLU(), MaxPool2d(pool)]
        c = out
    shape: tuple[int, ...] = tuple(input_shape)
    for i, layer in enumerate(layers):
        shape = layer.out_shape(shape, i)
    return ModelSpec(tuple(input_shape), (*layers, Flatten(), Linear(math.prod(shape), num_classes)), num_classes)


# The digits CNN (``serve --model cnn:digits``): sklearn digits as 1×8×8 images (the 64 features row-major),
# 1,898 parameters (mlp:64-32-10 has 2,410).
CNN_DIGITS = cnn((1, 8, 8), [8, 16], 10)
