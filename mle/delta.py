"""Deltas: a .mle file whose metadata names the base model it applies to (``base_sha256``)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from mle.errors import DeltaBaseError
from mle.reader import MleFile

BASE_KEY = "base_sha256"


def delta_metadata(base: MleFile | str, **extra: Any) -> dict[str, Any]:
    """Metadata for a delta against ``base`` (an opened model or its hex SHA-256)."""
    sha = base.sha256() if isinstance(base, MleFile) else str(base)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"base SHA-256 must be 64 lowercase hex digits, got {sha!r}")
    return {"kind": "delta", BASE_KEY: sha, **extra}


def apply_delta(base: MleFile, delta: MleFile, *, strict: bool = True) -> dict[str, Any]:
    """``base + delta`` for every tensor of the delta; tensors absent from the delta are copied unchanged.

    Refuses (:class:`DeltaBaseError`) a delta whose ``base_sha256`` is not the base's SHA-256, a delta tensor
    the base lacks, or mismatched shapes. With ``strict`` every base tensor must appear in the delta.
    Returns new arrays (numpy float32/float64; ``array.array`` with numpy absent)."""
    want = delta.metadata.get(BASE_KEY)
    have = base.sha256()
    if want is None:
        raise DeltaBaseError("delta metadata does not name its base model (no 'base_sha256')")
    if want != have:
        raise DeltaBaseError(f"delta is for base {want[:16]}…, this model is {have[:16]}…")
    extra = [n for n in delta.tensor_names if n not in base]
    if extra:
        raise DeltaBaseError(f"delta has tensors the base lacks: {extra[:5]}")
    if strict:
        missing = [n for n in base.tensor_names if n not in delta]
        if missing:
            raise DeltaBaseError(f"delta lacks base tensors: {missing[:5]} (pass strict=False to allow)")
    out: dict[str, Any] = {}
    np = sys.modules.get("numpy") if base._np is not None else None
    for name in base.tensor_names:
        b = base[name]
        if name not in delta:
            if np is not None:
                out[name] = b.copy()
            else:
                import array

                out[name] = array.array(b.format if isinstance(b, memoryview) else b.typecode, b)
            continue
        be, de = base.entry(name), delta.entry(name)
        if be.shape != de.shape:
            raise DeltaBaseError(f"tensor {name!r}: base shape {be.shape} vs delta shape {de.shape}")
        d = delta[name]
        if np is not None:
            out[name] = (b.astype(np.float64) + d.astype(np.float64)).astype(b.dtype if b.dtype.kind == "f" else np.float32)
        else:
            import array

            out[name] = array.array("d" if be.dtype.name == "f64" else "f", (x + y for x, y in zip(b, d, strict=True)))
    return out


def model_sha256(model: MleFile | bytes | Mapping[str, Any]) -> str:
    """SHA-256 (hex) identifying a model: of an opened file's body, or of .mle bytes."""
    if isinstance(model, MleFile):
        return model.sha256()
    if isinstance(model, bytes | bytearray | memoryview):
        from mle.reader import loads

        return loads(model).sha256()
    raise TypeError("model_sha256 takes an MleFile or .mle bytes (save a dict of tensors first)")
