"""Masked vectors as .mle field-element tensors (what travels in the ``masked`` phase)."""

from __future__ import annotations

from typing import Any


def encode_masked(values: Any, modulus_bits: int, round: int, group: int) -> bytes:
    import mle

    return mle.dumps({"masked": mle.FieldElements(values, modulus_bits=modulus_bits, check=False)},
                     {"kind": "secagg-masked-input", "round": round, "group": group})


def decode_masked(blob: bytes, backend: str = "auto") -> tuple[int, Any]:
    import mle

    return mle.loads(blob, backend=backend).field_values("masked")
