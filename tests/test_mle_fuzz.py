"""Fuzzing the .mle parser: mutated valid files may only raise FormatError / SignatureError, never anything
else, and never return garbage (every tensor that decodes passed its CRC and encoding checks)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mle_spec import Ent, Seg, Spec

import mle
from mle.spec import ENC_FIELD_PACKED

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
    # 21 × 13 bits = 35 bytes with 7 padding bits; 9 × 20 bits = 22.5 bytes (u32 logical dtype)
    "fp": mle.FieldElements(_rng.integers(0, 1 << 13, size=21).astype(np.uint16), modulus_bits=13, packed=True),
    "fq": mle.FieldElements(_rng.integers(0, 1 << 20, size=9).astype(np.uint32), modulus_bits=20, packed=True),
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


# ── field_packed entries built by hand, against the spec's rules as an oracle ─────────────────────────────
_BAD_PARAMS = [{}, {"modulus_bits": 0}, {"modulus_bits": 33}, {"modulus_bits": True}, {"modulus_bits": 12.0},
               {"modulus_bits": "12"}, {"modulus_bits": 12, "axis": 0}, {"bits": 12}]


@st.composite
def packed_entries(draw: st.DrawFn) -> dict:
    """A field_packed entry with mostly valid, sometimes wrong fields: logical dtype, params, storage dtype, byte
    count, and random data bytes (so the padding bits are random too, unless cleared)."""
    m = draw(st.integers(1, 32))
    n = draw(st.integers(0, 70))
    params = draw(st.one_of(st.just({"modulus_bits": m}), st.just({"modulus_bits": m}), st.sampled_from(_BAD_PARAMS)))
    need = (n * m + 7) // 8
    length = draw(st.one_of(st.just(need), st.just(need), st.integers(0, need + 9)))
    data = bytearray(draw(st.binary(min_size=length, max_size=length)))
    if length and (n * m) % 8 and draw(st.booleans()):
        data[-1] &= (1 << ((n * m) % 8)) - 1  # clear the padding bits: a valid file when everything else is
    return {"dtype": draw(st.sampled_from([8, 10, 10, 1, 6])), "params": params, "n": n,
            "sdtype": draw(st.sampled_from([6, 6, 6, 8])), "data": bytes(data)}


def _expected(c: dict) -> type[Exception] | list[int]:
    """What docs/mle-format.md says a reader must do with the entry: an error class or the decoded values."""
    length, n, p = len(c["data"]), c["n"], c["params"]
    if c["sdtype"] == 8 and length % 2:
        return mle.BoundsError  # not a whole number of storage elements
    limit = {8: 16, 10: 32}.get(c["dtype"])
    m = p.get("modulus_bits")
    if limit is None or set(p) != {"modulus_bits"} or type(m) is not int or not 1 <= m <= limit:
        return mle.TableError
    if c["sdtype"] != 6:
        return mle.TableError
    if length != (n * m + 7) // 8:
        return mle.BoundsError
    if (n * m) % 8 and c["data"][-1] >> ((n * m) % 8):
        return mle.EncodingError
    x = int.from_bytes(c["data"], "little")
    return [(x >> (i * m)) & ((1 << m) - 1) for i in range(n)]


@settings(max_examples=400, deadline=None)
@given(packed_entries(), st.sampled_from(["numpy", "pure"]))
def test_packed_entries_decode_exactly_as_the_spec_says(c: dict, backend: str) -> None:
    import json

    data = c["data"]
    seg = Seg(0, c["sdtype"], 128, len(data))
    blob = Spec(data=data + bytes(-len(data) % 64), entries=[
        Ent(b"p", c["dtype"], ENC_FIELD_PACKED, [c["n"]], [seg], params=json.dumps(c["params"]).encode())]).build()
    want = _expected(c)
    if isinstance(want, list):
        f = mle.loads(blob, backend=backend)
        assert f.field_values("p")[0] == c["params"]["modulus_bits"]
        assert list(f["p"]) == want
        return
    with pytest.raises(want):
        mle.loads(blob, backend=backend)["p"]
