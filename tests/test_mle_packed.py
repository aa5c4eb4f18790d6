"""The ``field_packed`` .mle encoding (docs/mle-format.md) and its packers (mle.bitpack): numpy and pure Python give
the same bytes as the spec's rule (element i at bits [i·m, (i+1)·m) of one little-endian integer) for every m in
1..32 and awkward lengths; files round-trip on both reader backends and decode like ``field``; the writer refuses
out-of-range values; malformed entries (padding bits, byte counts, params, dtypes) raise the documented errors."""

from __future__ import annotations

import array
import zlib

import numpy as np
import pytest
from test_mle_spec import Ent, Seg, Spec

import mle
from mle import bitpack

RNG = np.random.default_rng(16)
LENGTHS = [0, 1, 2, 3, 5, 7, 8, 9, 13, 31, 64, 77]


def reference_pack(values: list[int], m: int) -> bytes:
    """The spec's definition, literally: Σ v_i · 2^(i·m) as ceil(n·m/8) little-endian bytes."""
    x = 0
    for i, v in enumerate(values):
        x |= v << (i * m)
    return x.to_bytes((len(values) * m + 7) // 8, "little")


def field_values(n: int, m: int) -> np.ndarray:
    return RNG.integers(0, 1 << m, size=n, dtype=np.uint64).astype(np.uint16 if m <= 16 else np.uint32)


@pytest.mark.parametrize("m", range(1, 33))
def test_numpy_and_pure_packers_are_bit_exact(m: int) -> None:
    for n in [*LENGTHS, int(RNG.integers(100, 400))]:
        v = field_values(n, m)
        if n > 2:
            v[0], v[-1] = (1 << m) - 1, (1 << m) - 1  # all ones at both ends: the padding must stay clear
        want = reference_pack(v.tolist(), m)
        assert bitpack.pack_numpy(v, m).tobytes() == want, (m, n)
        assert bitpack.pack_pure(v.tolist(), m) == want, (m, n)
        assert bitpack.pack_pure(array.array("H" if m <= 16 else "I", v.tobytes()), m) == want, (m, n)
        assert len(want) == bitpack.packed_nbytes(n, m) and bitpack.padding_is_zero(want, n, m)
        np.testing.assert_array_equal(bitpack.unpack_numpy(want, n, m), v)
        unpacked = bitpack.unpack_pure(want, n, m)
        assert unpacked.typecode == ("H" if m <= 16 else "I") and unpacked.tolist() == v.tolist()


@pytest.mark.parametrize("m", [1, 3, 12, 20, 31, 32])
def test_chunk_boundaries_of_the_pure_path(m: int) -> None:
    """The pure packer works in chunks of big integers: lengths around (multiples of) the chunk size."""
    for n in (bitpack._CHUNK - 1, bitpack._CHUNK + 1, 2 * bitpack._CHUNK + 13):
        v = field_values(n, m)
        packed = bitpack.pack_numpy(v, m).tobytes()
        assert bitpack.pack_pure(v.tolist(), m) == packed
        assert bitpack.unpack_pure(packed, n, m).tolist() == v.tolist()


def test_the_spec_example() -> None:
    """docs/mle-format.md's worked examples: [5, 3, 7, 1, 6] with m = 3 → DD 63 (one padding bit), and
    [0xABC, 0x123, 0xFFF] with m = 12 → BC 3A 12 FF 0F (four padding bits)."""
    packed = bitpack.pack_pure([5, 3, 7, 1, 6], 3)
    assert packed == bytes([0xDD, 0x63])
    assert bitpack.pack_numpy(np.array([5, 3, 7, 1, 6], np.uint16), 3).tobytes() == packed
    assert bitpack.pack_pure([0xABC, 0x123, 0xFFF], 12) == bytes([0xBC, 0x3A, 0x12, 0xFF, 0x0F])


@pytest.mark.parametrize("m", [1, 5, 12, 16, 17, 20, 32])
def test_files_round_trip_and_decode_like_field(m: int) -> None:
    v = field_values(1001, m)
    blob = mle.dumps({"p": mle.FieldElements(v, modulus_bits=m, packed=True),
                      "f": mle.FieldElements(v, modulus_bits=m)})
    assert blob == mle.dumps({"p": mle.FieldElements(v.tolist(), modulus_bits=m, packed=True),
                              "f": mle.FieldElements(v.tolist(), modulus_bits=m)})
    f = mle.loads(blob)
    e = f.entry("p")
    assert e.encoding_name == "field_packed" and e.dtype.name == ("u16" if m <= 16 else "u32")
    assert e.params == {"modulus_bits": m} and e.shape == (1001,)
    assert [(s.role_name, s.dtype.name, s.length) for s in e.segments] == [("data", "u8", (1001 * m + 7) // 8)]
    bits, got = f.field_values("p")
    assert bits == m and got.dtype == v.dtype
    np.testing.assert_array_equal(got, v)
    np.testing.assert_array_equal(f["p"], f.field_values("f")[1])
    p = mle.loads(blob, backend="pure")
    bits, pure = p.field_values("p")
    _, unpacked = p.field_values("f")
    assert bits == m and type(pure) is type(unpacked) and pure.format == unpacked.format
    assert pure.tolist() == unpacked.tolist() == v.tolist()
    f.verify_all()


def test_empty_and_tiny_vectors() -> None:
    for backend in ("numpy", "pure"):
        for n in (0, 1):
            blob = mle.dumps({"p": mle.FieldElements([3] * n, modulus_bits=2, packed=True)})
            assert list(mle.loads(blob, backend=backend).field_values("p")[1]) == [3] * n


def test_writer_refuses_values_out_of_range() -> None:
    for m in (1, 12, 16, 20, 31):
        for bad in ([0, 1 << m], [-1, 0]):
            with pytest.raises(mle.FormatError, match="values must lie"):
                mle.FieldElements(bad, modulus_bits=m, packed=True).encoded()
            with pytest.raises(mle.FormatError, match="values must lie"):
                mle.FieldElements(np.array(bad, np.int64), modulus_bits=m, packed=True).encoded()
        with pytest.raises(mle.FormatError, match="values must lie"):
            mle.FieldElements(array.array("I", [1 << m]), modulus_bits=m, packed=True).encoded()
    for m in (0, 33, True):
        with pytest.raises(mle.FormatError, match="modulus_bits"):
            mle.FieldElements([0], modulus_bits=m, packed=True).encoded()


def test_unchecked_values_keep_their_low_bits() -> None:
    """``check=False`` (the caller vouches for the range): an out-of-range value can't spill into a neighbour."""
    for values in (np.array([0xFFFF, 0, 0xFFFF], np.uint16), [0xFFFF, 0, 0xFFFF]):
        blob = mle.dumps({"p": mle.FieldElements(values, modulus_bits=4, check=False, packed=True)})
        for backend in ("numpy", "pure"):
            assert list(mle.loads(blob, backend=backend)["p"]) == [15, 0, 15]


def test_the_accelerator_hook_is_used_for_non_numpy_vectors() -> None:
    calls: list[str] = []

    def pack(values: object, m: int) -> bytes:
        calls.append("pack")
        return bitpack.pack_pure(values, m)

    def unpack(data: object, n: int, m: int) -> array.array:
        calls.append("unpack")
        return bitpack.unpack_pure(data, n, m)

    bitpack.set_accelerator(pack, unpack)
    try:
        blob = mle.dumps({"p": mle.FieldElements([1, 2, 3], modulus_bits=7, packed=True)})
        assert list(mle.loads(blob, backend="pure")["p"]) == [1, 2, 3]
        assert list(mle.loads(blob, backend="numpy")["p"]) == [1, 2, 3]  # numpy never goes to the hook
    finally:
        bitpack.set_accelerator(None, None)
    assert calls == ["pack", "unpack"]


# ── malformed entries, built byte by byte (tests/test_mle_spec.py's Spec) ──────────────────────────────────
def packed_file(data: bytes, n: int, *, dtype: int = 8, sdtype: int = 6, params: bytes = b'{"modulus_bits":12}',
                length: int | None = None, crc: int | None = None, shape: list[int] | None = None) -> bytes:
    seg = Seg(0, sdtype, 128, len(data) if length is None else length, crc)
    return Spec(data=data + bytes(-len(data) % 64), entries=[
        Ent(b"p", dtype, 5, [n] if shape is None else shape, [seg], params=params)]).build()


def test_a_hand_built_entry_decodes_by_the_spec() -> None:
    data = reference_pack([0xABC, 0x123, 0xFFF, 0, 1, 2], 12)
    for backend in ("numpy", "pure"):
        f = mle.loads(packed_file(data, 6, shape=[2, 3]), backend=backend)
        assert f.field_values("p")[0] == 12
        assert list(np.asarray(f["p"]).reshape(-1)) == [0xABC, 0x123, 0xFFF, 0, 1, 2]
    assert mle.loads(packed_file(data, 6, shape=[2, 3]))["p"].shape == (2, 3)


@pytest.mark.parametrize(("kw", "error", "words"), [
    ({"length": 8}, mle.BoundsError, "9 required"),
    ({"length": 10}, mle.BoundsError, "9 required"),
    ({"sdtype": 8, "length": 10}, mle.TableError, "data:u8"),
    ({"dtype": 1}, mle.TableError, "u16 or u32"),
    ({"dtype": 6}, mle.TableError, "u16 or u32"),
    ({"params": b""}, mle.TableError, "field_packed params"),
    ({"params": b'{"modulus_bits":17}'}, mle.TableError, "1..16"),
    ({"params": b'{"modulus_bits":0}'}, mle.TableError, "field_packed params"),
    ({"params": b'{"modulus_bits":true}'}, mle.TableError, "field_packed params"),
    ({"params": b'{"modulus_bits":12.0}'}, mle.TableError, "field_packed params"),
    ({"params": b'{"modulus_bits":12,"x":1}'}, mle.TableError, "field_packed params"),
    ({"dtype": 10, "params": b'{"modulus_bits":33}'}, mle.TableError, "1..32"),
    ({"crc": 0}, mle.ChecksumError, "CRC32"),
])
def test_malformed_entries_raise_the_documented_error(kw: dict, error: type, words: str) -> None:
    data = reference_pack(list(range(6)), 12)  # 6 × 12 bits = 9 bytes (the data section has room for more)
    kw = {"length": 9, **kw}
    with pytest.raises(error, match=words):
        f = mle.loads(packed_file(data + bytes(8), 6, **kw))
        f["p"]


@pytest.mark.parametrize("backend", ["numpy", "pure"])
def test_nonzero_padding_bits_are_refused_on_access(backend: str) -> None:
    data = bytearray(reference_pack([1, 2, 3], 5))  # 15 bits: one padding bit, the top bit of byte 1
    blob = packed_file(bytes(data), 3, params=b'{"modulus_bits":5}')
    assert list(mle.loads(blob, backend=backend)["p"]) == [1, 2, 3]
    data[-1] |= 0x80
    bad = mle.loads(packed_file(bytes(data), 3, params=b'{"modulus_bits":5}'), backend=backend)  # CRC matches
    assert bad.entry("p").numel == 3  # opening parses only the table
    with pytest.raises(mle.EncodingError, match="padding bits"):
        bad["p"]
    with pytest.raises(mle.EncodingError, match="padding bits"):
        bad.verify_all()
    # the CRC is checked before the padding
    with pytest.raises(mle.ChecksumError):
        mle.loads(packed_file(bytes(data), 3, params=b'{"modulus_bits":5}', crc=zlib.crc32(b"x")))["p"]


def test_field_values_refuses_other_encodings() -> None:
    with pytest.raises(mle.EncodingError, match="not field elements"):
        mle.loads(mle.dumps({"w": np.zeros(3, np.float32)})).field_values("w")
