"""Flower ``ArrayRecord`` ↔ one flat float vector (the layout every aggregation rule works on)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord


def flat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Arrays as one float64 vector, in order (the layout every aggregation rule works on)."""
    return np.concatenate([np.asarray(a).astype(np.float64, copy=False).ravel() for a in arrays]) if arrays \
        else np.zeros(0)


@dataclass(frozen=True)
class Layout:
    """The names, shapes and dtypes of a model's arrays, in the record's order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    @classmethod
    def of(cls, record: ArrayRecord) -> Layout:
        arrays = [(k, record[k].numpy()) for k in record]
        return cls(tuple(k for k, _ in arrays), tuple(tuple(a.shape) for _, a in arrays),
                   tuple(str(a.dtype) for _, a in arrays))

    @property
    def size(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes)

    def flatten(self, record: ArrayRecord) -> np.ndarray:
        """The record as one float64 vector; ``ValueError`` unless it has exactly this layout's names and shapes
        (a reply that does not fit is refused, never reshaped)."""
        if tuple(record.keys()) != self.names:
            raise ValueError(f"arrays {list(record.keys())} differ from the model's {list(self.names)}")
        parts = []
        for name, shape in zip(self.names, self.shapes):
            a = record[name].numpy()
            if tuple(a.shape) != shape:
                raise ValueError(f"array {name!r} has shape {tuple(a.shape)}, the model's is {shape}")
            if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
                raise ValueError(f"array {name!r} has dtype {a.dtype}: not numeric")
            parts.append(a)
        return flat(parts)

    def unflatten(self, vec: np.ndarray) -> ArrayRecord:
        """A record with this layout's names, shapes and dtypes from a flat vector."""
        if vec.shape != (self.size,):
            raise ValueError(f"vector of {vec.shape} for a model of {self.size} values")
        out, pos = {}, 0
        for name, shape, dtype in zip(self.names, self.shapes, self.dtypes):
            k = int(np.prod(shape))
            out[name] = Array(np.ascontiguousarray(vec[pos: pos + k].reshape(shape).astype(dtype)))
            pos += k
        return ArrayRecord(out)
