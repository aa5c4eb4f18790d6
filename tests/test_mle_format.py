"""The .mle format: round trips, alignment, zero-copy, encodings, signing, validation."""

from __future__ import annotations

import hashlib
import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

import mle
from mle.spec import ALIGNMENT, HEADER_SIZE, SIG_TRAILER_SIZE

SEED = bytes(range(32))
PK = mle.public_key(SEED)
RNG = np.random.default_rng(1234)

NUMPY_DTYPES = {
    "f32": np.float32, "f16": np.float16, "f64": np.float64, "i8": np.int8, "u8": np.uint8, "i16": np.int16,
    "u16": np.uint16, "i32": np.int32, "u32": np.uint32, "i64": np.int64,
}


def _random(dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return RNG.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


@pytest.mark.parametrize("name", sorted(NUMPY_DTYPES))
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (2, 3, 4, 5)])
def test_round_trip_every_dtype(name: str, shape: tuple[int, ...]) -> None:
    a = _random(NUMPY_DTYPES[name], shape)
    f = mle.loads(mle.dumps({"t": a}))
    assert f.entry("t").dtype.name == name
    assert f["t"].dtype == a.dtype and f["t"].shape == a.shape
    np.testing.assert_array_equal(f["t"], a)


def test_bf16_round_trip() -> None:
    x = RNG.normal(size=(4, 6)).astype(np.float32)
    bits = (x.view(np.uint32) >> 16).astype("<u2")  # truncation to bf16
    f = mle.loads(mle.dumps({"w": mle.Tensor(bits.tobytes(), "bf16", x.shape)}))
    expected = (bits.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(f["w"], expected)
    assert np.all(np.abs(f["w"] - x) <= np.abs(x) * 2**-7)
    pure = mle.loads(mle.dumps({"w": mle.Tensor(bits.tobytes(), "bf16", x.shape)}), backend="pure")
    assert list(pure["w"]) == expected.reshape(-1).tolist()


def test_every_segment_is_64_byte_aligned_and_metadata_round_trips(tmp_path) -> None:
    tensors = {f"t{i}": _random(np.float32, (i * 7 + 1,)) for i in range(20)}
    tensors["q"] = mle.quantize_int8(_random(np.float32, (9, 13)), axis=0)
    tensors["s"] = mle.sparse_topk(_random(np.float32, (1000,)), fraction=0.01)
    tensors["fe"] = mle.FieldElements(np.arange(33, dtype=np.uint16), modulus_bits=16)
    meta = {"task": "test", "nested": {"a": [1, 2.5, None, True]}, "unicode": "naïve ✓"}
    path = tmp_path / "m.mle"
    mle.save(path, tensors, meta, signing_key=SEED)
    f = mle.load(path, trusted_keys=[PK], require_signature=True)
    assert f.metadata == meta
    assert f.header.data_offset % ALIGNMENT == 0
    for e in f.entries:
        for s in e.segments:
            assert s.offset % ALIGNMENT == 0, (e.name, s.role_name, s.offset)
    assert os.path.getsize(path) == f.header.body_length + SIG_TRAILER_SIZE


def test_load_is_zero_copy(tmp_path) -> None:
    a = _random(np.float32, (1024, 1024))  # 4 MiB
    path = tmp_path / "big.mle"
    mle.save(path, {"a": a, "b": a[:10]})
    tracemalloc.start()
    f = mle.load(path)
    view = f["a"]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20, f"opening allocated {peak} bytes"
    assert not view.flags.owndata and not view.flags.writeable
    base = view
    while getattr(base, "base", None) is not None and not isinstance(base, memoryview | bytes):
        base = base.base
    # the view's memory lies inside the mapping: same address range as the mmap buffer
    mm_addr = np.frombuffer(f._buf, dtype=np.uint8).ctypes.data
    assert mm_addr <= view.ctypes.data < mm_addr + len(f._buf)
    assert np.shares_memory(view, np.frombuffer(f._buf, dtype=np.uint8))
    np.testing.assert_array_equal(view, a)


def test_loads_is_zero_copy_over_bytes() -> None:
    a = _random(np.float32, (100,))
    blob = mle.dumps({"a": a})
    f = mle.loads(blob)
    assert np.shares_memory(f["a"], np.frombuffer(blob, dtype=np.uint8))


def test_int8_per_tensor_error_within_half_scale() -> None:
    for shape in [(1000,), (17, 3), (5, 4, 3, 3)]:
        x = (RNG.normal(size=shape) * RNG.uniform(0.01, 100)).astype(np.float32)
        enc = mle.quantize_int8(x)
        f = mle.loads(mle.dumps({"x": enc}))
        scale = float(np.frombuffer(f.raw("x", "scale"), "<f4")[0])
        err = np.abs(f["x"].astype(np.float64) - x.astype(np.float64))
        assert err.max() <= scale / 2 * (1 + 1e-6) + 1e-12
        assert f["x"].dtype == np.float32 and f["x"].shape == shape


def test_int8_per_channel_error_within_each_channels_half_scale() -> None:
    x = RNG.normal(size=(8, 3, 3, 3)).astype(np.float32) * np.logspace(-3, 2, 8, dtype=np.float32)[:, None, None, None]
    f = mle.loads(mle.dumps({"w": mle.quantize_int8(x, axis=0)}))
    scales = np.frombuffer(f.raw("w", "scale"), "<f4").astype(np.float64)
    err = np.abs(f["w"].astype(np.float64) - x.astype(np.float64)).reshape(8, -1).max(axis=1)
    assert np.all(err <= scales / 2 * (1 + 1e-6))
    # per-channel beats per-tensor on channels of very different ranges
    per_tensor = mle.loads(mle.dumps({"w": mle.quantize_int8(x)}))["w"]
    assert np.abs(f["w"] - x)[0].max() < np.abs(per_tensor - x)[0].max()


def test_int8_zero_range_and_constant_tensors() -> None:
    for x in (np.zeros((4, 4), np.float32), np.full((3,), 2.5, np.float32), np.full((3,), -7.0, np.float32)):
        for axis in (None, 0):
            f = mle.loads(mle.dumps({"x": mle.quantize_int8(x, axis=axis)}))
            scale = np.frombuffer(f.raw("x", "scale"), "<f4")
            assert np.all(np.isfinite(f["x"]))
            assert np.all(np.abs(f["x"] - x) <= scale.max() / 2 * (1 + 1e-6))
    zeros = mle.loads(mle.dumps({"x": mle.quantize_int8(np.zeros(5, np.float32))}))["x"]
    assert np.all(zeros == 0)


def test_int8_pure_and_numpy_paths_give_identical_bytes() -> None:
    x = RNG.normal(size=(6, 10)).astype(np.float32)
    for axis in (None, 0, 1):
        a = mle.dumps({"x": mle.quantize_int8(x, axis=axis)})
        b = mle.dumps({"x": mle.quantize_int8(x.reshape(-1).tolist(), axis=axis, shape=x.shape)})
        assert a == b
        pure = mle.loads(a, backend="pure")["x"]
        np.testing.assert_allclose(np.array(pure, np.float32).reshape(x.shape), mle.loads(a)["x"], rtol=0, atol=1e-6)


def test_quantize_rejects_non_finite() -> None:
    with pytest.raises(mle.FormatError):
        mle.quantize_int8(np.array([1.0, np.nan], np.float32))
    with pytest.raises(mle.FormatError):
        mle.sparse_topk(np.array([1.0, np.inf], np.float32), k=1)


@pytest.mark.parametrize("value_dtype", ["f16", "f32"])
def test_sparse_topk_keeps_the_largest_magnitudes(value_dtype: str) -> None:
    x = RNG.normal(size=(50, 20)).astype(np.float32)
    f = mle.loads(mle.dumps({"s": mle.sparse_topk(x, fraction=0.1, value_dtype=value_dtype)}))
    dense = f["s"]
    assert dense.shape == x.shape
    kept = np.flatnonzero(dense)
    assert len(kept) == 100
    top = np.argsort(-np.abs(x.reshape(-1)), kind="stable")[:100]
    assert set(kept.tolist()) == set(top.tolist())
    tol = 1e-3 if value_dtype == "f16" else 0
    np.testing.assert_allclose(dense.reshape(-1)[kept], x.reshape(-1)[kept], rtol=tol)
    pure = mle.loads(mle.dumps({"s": mle.sparse_topk(x.reshape(-1).tolist(), fraction=0.1,
                                                     value_dtype=value_dtype)}), backend="pure")["s"]
    np.testing.assert_array_equal(np.array(pure, np.float32), dense.reshape(-1))


def test_sparse_edge_cases() -> None:
    x = RNG.normal(size=10).astype(np.float32)
    assert np.all(mle.loads(mle.dumps({"s": mle.sparse_topk(x, k=0)}))["s"] == 0)
    np.testing.assert_array_equal(mle.loads(mle.dumps({"s": mle.sparse_topk(x, k=10, value_dtype="f32")}))["s"], x)
    with pytest.raises(mle.FormatError):
        mle.sparse_topk(x, k=11)
    with pytest.raises(mle.FormatError):
        mle.sparse_topk(x, fraction=0.5, k=3)


@pytest.mark.parametrize("m", [1, 8, 16, 17, 32])
def test_field_elements(m: int) -> None:
    values = RNG.integers(0, 1 << m, size=1000, dtype=np.uint64)
    f = mle.loads(mle.dumps({"v": mle.FieldElements(values.astype(np.uint32), modulus_bits=m)}))
    bits, got = f.field_values("v")
    assert bits == m and got.dtype == (np.uint16 if m <= 16 else np.uint32)
    np.testing.assert_array_equal(got, values)
    p = mle.loads(mle.dumps({"v": mle.FieldElements(values.tolist(), modulus_bits=m)}), backend="pure")
    assert p.field_values("v")[1].tolist() == values.tolist()
    with pytest.raises(mle.FormatError):
        mle.FieldElements([1 << m], modulus_bits=m).encoded()


def test_field_element_out_of_range_in_file_is_rejected() -> None:
    blob = bytearray(mle.dumps({"v": mle.FieldElements(np.zeros(4, np.uint16), modulus_bits=8)}))
    f = mle.loads(bytes(blob))
    seg = f.entry("v").segments[0]
    struct.pack_into("<H", blob, seg.offset, 300)  # ≥ 2^8, and fix the CRC so only the range check can catch it
    _rewrite_segment_crc(blob, "v")
    with pytest.raises(mle.EncodingError):
        mle.loads(bytes(blob))["v"]


def _rewrite_segment_crc(blob: bytearray, name: str) -> None:
    """Recompute the tensor's segment CRCs, the table CRC and the header CRC after an edit."""
    from mle.layout import _CRC, _HEADER, pack_entry
    from mle.layout import Segment as Seg

    f = mle.loads(bytes(blob), backend="pure")
    h = f.header
    entries = []
    for e in f.entries:
        segs = tuple(Seg(s.role, s.dtype, zlib.crc32(bytes(blob[s.offset: s.offset + s.length])), s.offset, s.length)
                     for s in e.segments)
        entries.append(mle.Entry(e.name, e.dtype, e.encoding, e.shape, e.params, segs))
    table = b"".join(pack_entry(e) for e in entries)
    blob[h.table_offset: h.table_offset + len(table)] = table
    struct.pack_into("<I", blob, 68, zlib.crc32(table))
    _CRC.pack_into(blob, _HEADER.size, zlib.crc32(bytes(blob[: _HEADER.size])))


def test_corrupted_tensor_bytes_fail_crc() -> None:
    blob = bytearray(mle.dumps({"a": np.ones(100, np.float32)}))
    f = mle.loads(bytes(blob))
    blob[f.entry("a").segments[0].offset + 5] ^= 0x40
    g = mle.loads(bytes(blob))  # header and table are intact: opening succeeds…
    with pytest.raises(mle.ChecksumError):
        g["a"]  # …but the tensor is never returned
    with pytest.raises(mle.ChecksumError):
        g.verify_all()


def test_signing_and_verification() -> None:
    blob = mle.dumps({"a": np.arange(10, dtype=np.float32)}, {"x": 1}, signing_key=SEED)
    assert mle.verify(blob, [PK]) == PK
    other = mle.public_key(bytes(32))
    assert mle.verify(blob, [other, PK]) == PK
    with pytest.raises(mle.SignatureError):
        mle.verify(blob, [other])  # a foreign key
    with pytest.raises(mle.SignatureError):
        mle.verify(blob, [])
    with pytest.raises(mle.SignatureError):
        mle.loads(blob, trusted_keys=[other])
    # any byte changed anywhere: header, metadata, data, table, trailer
    for pos in range(0, len(blob), max(1, len(blob) // 60)):
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises((mle.SignatureError, mle.FormatError)):
            mle.verify(bytes(bad), [PK])
    with pytest.raises((mle.SignatureError, mle.FormatError)):
        mle.verify(blob + b"\x00", [PK])
    unsigned = mle.dumps({"a": np.arange(10, dtype=np.float32)}, {"x": 1})
    with pytest.raises(mle.SignatureError):
        mle.verify(unsigned, [PK])
    with pytest.raises(mle.SignatureError):
        mle.loads(unsigned, trusted_keys=[PK], require_signature=True)
    assert mle.sign(unsigned, SEED) == blob  # deterministic Ed25519: signing later gives the same bytes
    with pytest.raises(mle.FormatError):
        mle.sign(blob, SEED)


def test_signature_is_over_blake2b_of_body() -> None:
    """Independent route: recompute the signed message with hashlib and verify with PyNaCl directly."""
    import nacl.signing

    blob = mle.dumps({"a": np.arange(3, dtype=np.float32)}, signing_key=SEED)
    body, trailer = blob[:-SIG_TRAILER_SIZE], blob[-SIG_TRAILER_SIZE:]
    assert trailer[:4] == b"MLSG" and struct.unpack("<I", trailer[4:8])[0] == 1
    message = b"mle-v3-signature\x00" + hashlib.blake2b(body, digest_size=64).digest()
    nacl.signing.VerifyKey(PK).verify(message, trailer[8:])


def test_apply_delta_checks_the_base(tmp_path) -> None:
    base = {"w": RNG.normal(size=(4, 3)).astype(np.float32), "b": np.zeros(3, np.float32)}
    mle.save(tmp_path / "base.mle", base)
    fb = mle.load(tmp_path / "base.mle")
    d = {"w": RNG.normal(size=(4, 3)).astype(np.float32) * 0.01, "b": np.ones(3, np.float32) * 0.1}
    delta = mle.loads(mle.dumps({"w": mle.quantize_int8(d["w"]), "b": d["b"]}, mle.delta_metadata(fb)))
    new = mle.apply_delta(fb, delta)
    scale = float(np.frombuffer(delta.raw("w", "scale"), "<f4")[0])
    assert np.abs(new["w"] - (base["w"] + d["w"])).max() <= scale / 2 + 1e-6
    np.testing.assert_allclose(new["b"], 0.1, rtol=1e-6)
    other = mle.loads(mle.dumps({"w": base["w"] + 1, "b": base["b"]}))
    with pytest.raises(mle.DeltaBaseError, match="delta is for base"):
        mle.apply_delta(other, delta)
    no_base = mle.loads(mle.dumps({"w": d["w"], "b": d["b"]}))
    with pytest.raises(mle.DeltaBaseError, match="does not name"):
        mle.apply_delta(fb, no_base)
    wrong_shape = mle.loads(mle.dumps({"w": np.zeros((3, 4), np.float32), "b": d["b"]}, mle.delta_metadata(fb)))
    with pytest.raises(mle.DeltaBaseError, match="shape"):
        mle.apply_delta(fb, wrong_shape)
    assert mle.model_sha256(fb) == hashlib.sha256((tmp_path / "base.mle").read_bytes()).hexdigest()


def test_old_versions_and_bad_magic_are_rejected() -> None:
    blob = bytearray(mle.dumps({"a": np.zeros(2, np.float32)}))
    for v in (1, 2):
        old = bytearray(blob)
        struct.pack_into("<H", old, 4, v)
        with pytest.raises(mle.VersionError, match="older"):
            mle.loads(bytes(old))
    with pytest.raises(mle.MagicError):
        mle.loads(b"PK\x03\x04" + bytes(blob[4:]))
    with pytest.raises(mle.TruncatedError):
        mle.loads(bytes(blob[:HEADER_SIZE - 1]))
    with pytest.raises(mle.TruncatedError):
        mle.loads(b"")


def test_writer_rejects_bad_input() -> None:
    with pytest.raises(mle.TableError):
        mle.dumps({"a": np.zeros(2, np.complex64)})
    with pytest.raises(mle.TableError):
        mle.dumps({"a": [1, 2, 3]})
    with pytest.raises(mle.FormatError):
        mle.dumps({"": np.zeros(2, np.float32)})
    with pytest.raises(mle.MetadataError):
        mle.dumps({}, {"x": float("nan")})
    with pytest.raises(mle.MetadataError):
        mle.dumps({}, {"x": object()})
    with pytest.raises(mle.TableError):
        mle.dumps({"a": mle.Tensor(b"\x00" * 7, "f32", (2,))})


def test_streaming_writer_does_not_copy_the_model(tmp_path) -> None:
    tensors = {f"t{i}": np.ones(1 << 20, np.float32) for i in range(8)}  # 32 MiB
    tracemalloc.start()
    mle.save(tmp_path / "s.mle", tensors)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 << 20, f"writer peak {peak} bytes for a 32 MiB model"


def test_non_contiguous_and_big_endian_inputs() -> None:
    a = np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2]
    np.testing.assert_array_equal(mle.loads(mle.dumps({"a": a}))["a"], a)
    b = np.arange(6, dtype=">i4")
    np.testing.assert_array_equal(mle.loads(mle.dumps({"b": b}))["b"], b)


def test_limits_are_enforced() -> None:
    from mle import spec

    blob = bytearray(mle.dumps({"a": np.zeros(2, np.float32)}))
    struct.pack_into("<I", blob, 12, spec.MAX_TENSORS + 1)
    from mle.layout import _CRC, _HEADER

    _CRC.pack_into(blob, _HEADER.size, zlib.crc32(bytes(blob[: _HEADER.size])))
    with pytest.raises(mle.LimitError):
        mle.loads(bytes(blob))


def test_verify_crc_off_still_checks_structure_and_verify_all_forces_crc() -> None:
    blob = bytearray(mle.dumps({"a": np.ones(100, np.float32)}))
    f = mle.loads(bytes(blob))
    blob[f.entry("a").segments[0].offset + 5] ^= 0x40
    g = mle.loads(bytes(blob), verify_crc=False)
    assert g["a"].shape == (100,)  # caller opted out of the CRC: the flipped bit is not detected here…
    with pytest.raises(mle.ChecksumError):
        g.verify_all()  # …but verify_all always checks


def test_signature_covers_what_the_crc_would() -> None:
    blob = bytearray(mle.dumps({"a": np.ones(100, np.float32)}, signing_key=SEED))
    f = mle.loads(bytes(blob))
    blob[f.entry("a").segments[0].offset + 5] ^= 0x40
    with pytest.raises(mle.SignatureError):
        mle.loads(bytes(blob), trusted_keys=[PK])
