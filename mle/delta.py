"""Deltas: a .mle file whose metadata names the base model it applies to (``base_sha256``).

A **model delta** (:func:`model_delta_metadata`, :func:`apply_model_delta`) also names the model it produces: its
``model_sha256`` (the SHA-256 of that model file's body), the JSON merge patch (RFC 7386) from the base model's
metadata to the produced model's (``model_metadata_patch``) and the produced model's signature trailer
(``model_trailer``, hex). Applying it rebuilds the produced model's *file*, byte for byte – the body the writer
would write for those tensors and that metadata (:func:`signed_body`) followed by the carried trailer – so the
receiver checks the SHA-256 it was told and the producer's signature on the very bytes the producer signed.
Pure Python (the browser applies model deltas); numpy is used when the files were opened with it, with the same
bits (float64 addition rounded to float32 on both paths).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from mle.errors import DeltaBaseError, FormatError
from mle.reader import MleFile

BASE_KEY = "base_sha256"
MODEL_SHA_KEY = "model_sha256"
PATCH_KEY = "model_metadata_patch"
TRAILER_KEY = "model_trailer"


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


# ── model deltas: the produced model file, byte for byte ─────────────────────────────────────────────────────────
def metadata_patch(base: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``base`` into ``target``: changed keys with their new value
    (objects recursively), removed keys as ``None``. ``ValueError`` if ``target`` holds a ``null`` anywhere in an
    object (a merge patch cannot set one)."""
    out: dict[str, Any] = {}
    for k, v in target.items():
        if v is None:
            raise ValueError(f"metadata key {k!r} is null: not expressible as a merge patch")
        b = base.get(k)
        if isinstance(v, Mapping) and isinstance(b, Mapping):
            sub = metadata_patch(b, v)
            if sub:
                out[k] = sub
        elif k not in base or b != v or type(b) is not type(v):
            _no_nulls(v, k)
            out[k] = v
    for k in base:
        if k not in target:
            out[k] = None
    return out


def _no_nulls(v: Any, where: str) -> None:
    if isinstance(v, Mapping):
        for k, x in v.items():
            if x is None:
                raise ValueError(f"metadata key {where}.{k} is null: not expressible as a merge patch")
            _no_nulls(x, f"{where}.{k}")


def merge_patch(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386: ``base`` with ``patch`` applied (a new dict; ``None`` removes a key)."""
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, Mapping):
            b = out.get(k)
            out[k] = merge_patch(b if isinstance(b, Mapping) else {}, v)
        else:
            out[k] = v
    return out


def signed_body(tensors: Mapping[str, Any] | Iterable[tuple[str, Any]], metadata: Mapping[str, Any] | None) -> bytes:
    """The body (every byte before the signature trailer) of ``mle.dumps(tensors, metadata, signing_key=…)``,
    computed without the key: the unsigned file with the SIGNED flag set in its header (and the header CRC
    updated). Its SHA-256 is the signed file's model identity."""
    from mle.layout import pack_header, parse_header
    from mle.spec import FLAG_SIGNED, HEADER_SIZE
    from mle.writer import dumps

    raw = dumps(tensors, metadata)
    h = parse_header(memoryview(raw), len(raw))
    return pack_header(replace(h, flags=h.flags | FLAG_SIGNED)) + raw[HEADER_SIZE:]


def model_delta_metadata(base: MleFile, target: MleFile) -> dict[str, Any]:
    """Metadata of a model delta from ``base`` to the signed model ``target``: the base's and the target's
    SHA-256, the merge patch between their metadata and the target's signature trailer."""
    from mle.spec import SIG_TRAILER_SIZE

    if not target.signed:
        raise ValueError("the target model of a model delta must be signed (its trailer travels in the delta)")
    trailer = bytes(target._buf[target.header.body_length: target.header.body_length + SIG_TRAILER_SIZE])
    return delta_metadata(base, **{MODEL_SHA_KEY: target.sha256(),
                                   PATCH_KEY: metadata_patch(base.metadata, target.metadata),
                                   TRAILER_KEY: trailer.hex()})


def apply_model_delta(base: MleFile, delta: MleFile) -> bytes:
    """The model file a model delta produces from ``base``: :func:`apply_delta` (strict: every base tensor,
    ``base_sha256`` checked), the base metadata merge-patched, written in the base's tensor order and dtypes
    (:func:`signed_body`), followed by the carried trailer. Raises :class:`DeltaBaseError` if the delta is not a
    model delta or the rebuilt body's SHA-256 is not the one the delta names. The caller checks the signature of
    the result with the keys it trusts (``mle.loads(…, trusted_keys=…, require_signature=True)``) – and the
    delta's own signature when it opens it."""
    from mle.spec import SIG_TRAILER_SIZE
    from mle.tensors import Tensor

    meta = delta.metadata
    want, patch, trailer_hex = meta.get(MODEL_SHA_KEY), meta.get(PATCH_KEY), meta.get(TRAILER_KEY)
    if meta.get("kind") != "delta" or not isinstance(want, str) or not isinstance(patch, Mapping) \
            or not isinstance(trailer_hex, str):
        raise DeltaBaseError("not a model delta (needs kind 'delta', model_sha256, model_metadata_patch and "
                             "model_trailer)")
    try:
        trailer = bytes.fromhex(trailer_hex)
    except ValueError:
        trailer = b""
    if len(trailer) != SIG_TRAILER_SIZE:
        raise DeltaBaseError(f"model_trailer must be {SIG_TRAILER_SIZE} bytes of hex")
    values = apply_delta(base, delta)
    items: list[tuple[str, Any]] = []
    for name in base.tensor_names:
        v, e = values[name], base.entry(name)
        if base._np is None:
            v = Tensor(v, "f64" if v.typecode == "d" else "f32", e.shape)
        items.append((name, v))
    try:
        body = signed_body(items, merge_patch(base.metadata, patch))
    except FormatError as exc:
        raise DeltaBaseError(f"the patched model cannot be written: {exc}") from None
    have = hashlib.sha256(body).hexdigest()
    if have != want:
        raise DeltaBaseError(f"the rebuilt model is {have[:16]}…, the delta names {want[:16]}…")
    return body + trailer
