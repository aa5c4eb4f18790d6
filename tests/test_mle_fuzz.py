"""Fuzzing the .mle parser: mutated valid files may only raise FormatError / SignatureError, never anything
else, and never return garbage (every tensor that decodes passed its CRC and encoding checks)."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mle

SEED = bytes(range(32))
PK = mle.public_key(SEED)
_rng = np.random.default_rng(7)
_BASE = {
    "w": _rng.normal(size=(6, 5)).astype(np.float32),
    "b": np.arange(5, dtype=np.int64),
    "h": _rng.normal(size=(9,)).astype(np.float16),
    "q": mle.quantize_int8(_rng.normal(size=(4, 7)).astype(np.float32), axis=0),
    "qt": mle.quantize_int8(_rng.normal(size=(11,)).astype(np.float32)),
    "s": mle.sparse_topk(_rng.normal(size=(200,)).astype(np.float32), k=9),
    "fe": mle.FieldElements(_rng.integers(0, 1 << 12, size=20).astype(np.uint16), modulus_bits=12),
    "bf": mle.Tensor(bytes(range(16)), "bf16", (8,)),
}
VALID = mle.dumps(_BASE, {"task": "fuzz", "list": [1, 2, 3]})
VALID_SIGNED = mle.dumps(_BASE, {"task": "fuzz"}, signing_key=SEED)
ALLOWED = (mle.FormatError, mle.SignatureError)


def _consume(blob: bytes, signed: bool, backend: str) -> None:
    try:
        f = mle.loads(blob, trusted_keys=[PK] if signed else None, backend=backend)
        for name in f.tensor_names:
            value = f[name]
            e = f.entry(name)
            n = len(value) if backend == "pure" else value.size
            assert n == e.numel
        f.verify_all()
    except ALLOWED:
        pass


_FIELD_OFFSETS = [4, 6, 8, 12, 16, 24, 32, 40, 48, 56, 64, 68, 72, 76]


@st.composite
def mutations(draw: st.DrawFn) -> tuple[bytes, bool]:
    signed = draw(st.booleans())
    blob = bytearray(VALID_SIGNED if signed else VALID)
    kind = draw(st.sampled_from(["truncate", "flip", "header_field", "table_bytes", "extend", "multi"]))
    if kind == "truncate":
        blob = blob[: draw(st.integers(0, len(blob) - 1))]
    elif kind == "flip":
        pos = draw(st.integers(0, len(blob) - 1))
        blob[pos] ^= 1 << draw(st.integers(0, 7))
    elif kind == "header_field":
        off = draw(st.sampled_from(_FIELD_OFFSETS))
        width = 2 if off in (4, 6) else (8 if 16 <= off < 64 else 4)
        value = draw(st.one_of(st.integers(0, 2 ** (8 * width) - 1), st.sampled_from([0, 1, 2, 3, 63, 64, 65])))
        blob[off: off + width] = value.to_bytes(width, "little")
        if draw(st.booleans()):  # fix the header CRC so the mutation reaches the field checks
            import zlib

            struct.pack_into("<I", blob, 76, zlib.crc32(bytes(blob[:76])))
    elif kind == "table_bytes":
        h = mle.loads(VALID).header
        pos = draw(st.integers(h.table_offset, h.table_offset + h.table_length - 1))
        blob[pos] = draw(st.integers(0, 255))
        if draw(st.booleans()):  # fix table + header CRCs so the table's own validation is exercised
            import zlib

            struct.pack_into("<I", blob, 68, zlib.crc32(bytes(blob[h.table_offset: h.table_offset + h.table_length])))
            struct.pack_into("<I", blob, 76, zlib.crc32(bytes(blob[:76])))
    elif kind == "extend":
        blob += draw(st.binary(min_size=1, max_size=100))
    else:
        for _ in range(draw(st.integers(2, 10))):
            pos = draw(st.integers(0, len(blob) - 1))
            blob[pos] = draw(st.integers(0, 255))
    return bytes(blob), signed


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations(), st.sampled_from(["numpy", "pure"]))
def test_mutated_files_raise_only_format_or_signature_errors(case: tuple[bytes, bool], backend: str) -> None:
    blob, signed = case
    _consume(blob, signed, backend)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_format_errors(blob: bytes) -> None:
    _consume(blob, False, "numpy")
    _consume(b"MLE\x00\x03\x00" + blob, False, "numpy")


def test_valid_files_still_parse() -> None:
    _consume(VALID, False, "numpy")
    f = mle.loads(VALID_SIGNED, trusted_keys=[PK], require_signature=True)
    assert f.signer == PK
