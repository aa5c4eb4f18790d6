"""Masked vectors as .mle field-element tensors (what travels in the ``masked`` phase; see docs/mle-format.md).

The tensor is named ``masked``; the .mle metadata records ``{"kind": "secagg-masked-input", "round", "group"}``.
Its encoding depends on m: ``field`` (plain u16/u32 words, zero-copy) when m is 16 or 32, where those words are
already exact, else ``field_packed`` (exactly m bits per element: ceil(d·m/8) bytes instead of 2d or 4d).
:func:`decode_masked` accepts both, so a reader never needs to know which one a client chose.
The .mle file itself is not signed: it travels inside a SecAgg message whose Ed25519 signature covers every byte,
so the reader skips the per-tensor CRC32 (``verify_crc=False``) and keeps all structural checks.
"""

from __future__ import annotations

from typing import Any

KIND = "secagg-masked-input"


def encode_masked(values: Any, modulus_bits: int, round: int, group: int) -> bytes:
    """``values`` (d field elements mod 2^m) as .mle bytes: ``field`` (u16/u32) when m is 16 or 32, else
    ``field_packed`` (m bits per element; in the browser packed by the WASM kernel, see mle.bitpack)."""
    import mle

    packed = modulus_bits not in (16, 32)
    return mle.dumps({"masked": mle.FieldElements(values, modulus_bits=modulus_bits, check=False, packed=packed)},
                     {"kind": KIND, "round": round, "group": group})


def decode_masked(blob: bytes, backend: str = "auto", round: int | None = None, group: int | None = None
                  ) -> tuple[int, Any]:
    """``(modulus_bits, values)`` of a masked-input .mle in either encoding: a numpy u16/u32 array
    (``backend="numpy"``; a view for ``field``) or a memoryview of format ``'H'``/``'I'``.
    Raises ``mle.FormatError`` on malformed bytes, ``ValueError`` if it is not a masked input of this round/group."""
    import mle

    f = mle.loads(blob, backend=backend, verify_crc=False)
    meta = f.metadata
    if meta.get("kind") != KIND or (round is not None and meta.get("round") != round) or \
            (group is not None and meta.get("group") != group):
        raise ValueError(f"not a masked input of round {round} group {group}: metadata {dict(meta)}")
    return f.field_values("masked")
