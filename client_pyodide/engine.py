"""Training a :class:`flcore.modelspec.ModelSpec` on the WASM kernel (the browser's counterpart of
``client_native.torch_model``).

Parameters are one float32 vector in spec order – layer i's weight then bias, torch's layouts – exactly what
``client_native.torch_model.flatten`` produces, so deltas from both runtimes aggregate together. Inputs are
float32 examples flattened row-major ((features,) or (C, H, W)), labels int class indices.

One kernel call runs a whole epoch (gather mini-batches in the given order, forward, softmax cross-entropy,
backward, SGD): Python only prepares the permutation, so FFI overhead does not scale with the data.
"""

from __future__ import annotations

import array
import math
import random
from typing import Any

from client_pyodide.kernel import Kernel, KernelError
from flcore.modelspec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU

LINEAR, CONV2D, RELU, MAXPOOL2D, FLATTEN = 1, 2, 3, 4, 5


def layer_descriptor(spec: ModelSpec) -> array.array:
    """6 int32 per layer: type, then Linear(in, out) | Conv2d(in, out, k, stride, padding) | MaxPool2d(k, stride)."""
    out = array.array("i")
    for layer in spec.layers:
        if isinstance(layer, Linear):
            rec = [LINEAR, layer.in_features, layer.out_features, 0, 0, 0]
        elif isinstance(layer, Conv2d):
            rec = [CONV2D, layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding]
        elif isinstance(layer, ReLU):
            rec = [RELU, 0, 0, 0, 0, 0]
        elif isinstance(layer, MaxPool2d):
            rec = [MAXPOOL2D, layer.kernel_size, layer.stride or layer.kernel_size, 0, 0, 0]
        elif isinstance(layer, Flatten):
            rec = [FLATTEN, 0, 0, 0, 0, 0]
        else:  # pragma: no cover - ModelSpec validates layer types
            raise ValueError(f"unsupported layer {layer!r}")
        out.extend(rec)
    return out


def _floats(x: Any, n: int | None = None) -> array.array:
    """A flat float32 array from an array/bytes/memoryview or (nested) sequences of numbers."""
    if isinstance(x, array.array) and x.typecode == "f":
        a = x
    elif hasattr(x, "to_bytes") and hasattr(x, "BYTES_PER_ELEMENT"):  # a JS typed array (Float32Array, …)
        if str(x.constructor.name) == "Float32Array":
            a = array.array("f")
            a.frombytes(x.to_bytes())
        else:
            a = array.array("f", x.to_py())
    elif isinstance(x, bytes | bytearray | memoryview):
        a = array.array("f")
        a.frombytes(bytes(x))
    else:
        a = array.array("f")
        for row in x:
            if isinstance(row, int | float):
                a.append(row)
            else:
                a.extend(_flatten(row))
    if n is not None and len(a) != n:
        raise ValueError(f"expected {n} floats, got {len(a)}")
    return a


def _flatten(row: Any) -> list[float]:
    out: list[float] = []
    for v in row:
        if isinstance(v, int | float):
            out.append(v)
        else:
            out.extend(_flatten(v))
    return out


class KernelModel:
    """A model's parameters, gradients and buffers in kernel memory (allocated once, for batches of up to
    ``max_batch`` examples)."""

    def __init__(self, spec: ModelSpec, kernel: Kernel, max_batch: int = 64) -> None:
        self.spec, self.k = spec, kernel
        self.max_batch = int(max_batch)
        shape = spec.input_shape + (1,) * (3 - len(spec.input_shape))
        self.input_size = math.prod(spec.input_shape)
        desc = layer_descriptor(spec)
        self._desc = kernel.put(desc)
        self._m = kernel.x.fl_model_create(self._desc, len(spec.layers), shape[0], shape[1], shape[2], self.max_batch)
        if not self._m:
            raise KernelError("kernel could not create the model (out of memory?)")
        self.num_parameters = kernel.x.fl_model_nparams(self._m)
        if self.num_parameters != spec.num_parameters():
            raise KernelError(f"kernel counts {self.num_parameters} parameters, the spec {spec.num_parameters()}")
        self.num_classes = spec.num_classes
        self._params = kernel.x.fl_model_params(self._m)
        self._grads = kernel.x.fl_model_grads(self._m)
        self._mom = kernel.x.fl_model_momentum(self._m)

    # ── parameters ──────────────────────────────────────────────────────────────────────────────────
    def set_flat_parameters(self, vector: Any) -> None:
        v = _floats(vector, self.num_parameters)
        for i, value in enumerate(v):
            if not math.isfinite(value):
                raise ValueError(f"parameter {i} is not finite")
        self.k.write(self._params, v)
        self.k.x.fl_zero(self._mom, 4 * self.num_parameters)  # a new model starts a fresh momentum buffer

    def flat_parameters(self) -> array.array:
        return self.k.read_into(self._params, array.array("f", bytes(4 * self.num_parameters)))

    def set_parameters(self, params: dict[str, Any]) -> None:
        """From ``{name: flat values}`` (e.g. :meth:`ModelSpec.init_parameters`), every name of the spec."""
        names = [n for n, _ in self.spec.parameter_shapes()]
        if set(params) != set(names):
            raise ValueError(f"parameters {sorted(params)} do not match the spec's {names}")
        flat = array.array("f")
        for name, shape in self.spec.parameter_shapes():
            part = _floats(params[name], math.prod(shape))
            flat.extend(part)
        self.set_flat_parameters(flat)

    def parameters(self) -> dict[str, array.array]:
        flat, out, pos = self.flat_parameters(), {}, 0
        for name, shape in self.spec.parameter_shapes():
            n = math.prod(shape)
            out[name] = flat[pos: pos + n]
            pos += n
        return out

    def flat_gradients(self) -> array.array:
        return self.k.read_into(self._grads, array.array("f", bytes(4 * self.num_parameters)))

    # ── data ────────────────────────────────────────────────────────────────────────────────────────
    def _labels(self, y: Any, n: int) -> array.array:
        if hasattr(y, "to_py") and hasattr(y, "BYTES_PER_ELEMENT"):  # a JS typed array
            y = y.to_py()
        labels = y if isinstance(y, array.array) and y.typecode == "i" else array.array("i", (int(v) for v in y))
        if len(labels) != n:
            raise ValueError(f"{n} examples but {len(labels)} labels")
        if n and not (min(labels) >= 0 and max(labels) < self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}")
        return labels

    def _examples(self, x: Any) -> tuple[array.array, int]:
        a = _floats(x)
        if len(a) % self.input_size:
            raise ValueError(f"input of {len(a)} floats is not a whole number of {self.input_size}-float examples")
        return a, len(a) // self.input_size

    # ── compute ─────────────────────────────────────────────────────────────────────────────────────
    def loss_and_gradients(self, x: Any, y: Any) -> tuple[float, array.array]:
        """Mean softmax cross-entropy of one batch and its gradient w.r.t. every parameter (flat, spec order)."""
        xa, n = self._examples(x)
        ya = self._labels(y, n)
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"batch of {n} examples; this model takes 1..{self.max_batch}")
        with self.k.scratch():
            loss = self.k.x.fl_loss_grad(self._m, self.k.put(xa), self.k.put(ya), n)
        return float(loss), self.flat_gradients()

    def logits(self, x: Any) -> list[list[float]]:
        xa, n = self._examples(x)
        out: list[list[float]] = []
        c = self.num_classes
        with self.k.scratch():
            px = self.k.put(xa)
            for i in range(0, n, self.max_batch):
                b = min(self.max_batch, n - i)
                ptr = self.k.x.fl_forward(self._m, px + 4 * i * self.input_size, b)
                flat = self.k.read_into(ptr, array.array("f", bytes(4 * b * c)))
                out.extend(list(flat[j * c: (j + 1) * c]) for j in range(b))
        return out

    def predict(self, x: Any) -> list[int]:
        return [max(range(len(row)), key=row.__getitem__) for row in self.logits(x)]

    def evaluate(self, x: Any, y: Any) -> tuple[float, float]:
        """(mean cross-entropy loss, accuracy)."""
        xa, n = self._examples(x)
        ya = self._labels(y, n)
        if n == 0:
            raise ValueError("no examples")
        with self.k.scratch():
            out = self.k.alloc(16)
            self.k.x.fl_evaluate(self._m, self.k.put(xa), self.k.put(ya), n, out)
            loss, correct = array.array("d", self.k.read(out, 16))
        return loss, correct / n

    def train(self, x: Any, y: Any, *, epochs: int = 1, batch_size: int = 32, lr: float = 0.1,
              momentum: float = 0.0, seed: int = 0) -> tuple[array.array, float]:
        """Mini-batch SGD on softmax cross-entropy (``client_native.torch_model.train_local``'s contract):
        returns (delta = new − old parameters, flat float32; mean of the batch losses). Examples are visited in
        a fresh permutation each epoch (``random.Random(seed)``: shuffling is public, not a secret)."""
        xa, n = self._examples(x)
        ya = self._labels(y, n)
        if n == 0:
            raise ValueError("need at least one example")
        if not 1 <= batch_size <= self.max_batch:
            raise ValueError(f"batch_size must be in 1..{self.max_batch}")
        rng = random.Random(seed)
        total, batches = 0.0, 0
        nbytes = 4 * self.num_parameters
        self.k.x.fl_zero(self._mom, nbytes)
        delta = array.array("f", bytes(nbytes))
        with self.k.scratch():
            before = self.k.alloc(nbytes)
            self.k.x.fl_copy(before, self._params, nbytes)
            px, py = self.k.put(xa), self.k.put(ya)
            pperm = self.k.alloc(4 * n)
            perm = array.array("i", range(n))
            for _ in range(epochs):
                rng.shuffle(perm)
                self.k.write(pperm, perm)
                total += self.k.x.fl_train_epoch(self._m, px, py, pperm, n, batch_size, lr, momentum)
                batches += (n + batch_size - 1) // batch_size
            self.k.x.fl_sub_f32(self._params, before, self.num_parameters, before)
            self.k.read_into(before, delta)
        return delta, total / batches
