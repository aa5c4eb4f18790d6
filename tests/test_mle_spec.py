"""The .mle reference implementation against docs/mle-format.md, using bytes packed here with ``struct`` straight
from the spec's tables (independent of ``mle.layout``), and targeted table violations: each must raise the
documented ``FormatError`` subclass naming the tensor."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest

import mle


@dataclass
class Seg:
    role: int
    dtype: int
    offset: int
    length: int
    crc: int | None = None  # None: computed from the data
    reserved: int = 0


@dataclass
class Ent:
    name: bytes
    dtype: int
    encoding: int
    shape: list[int]
    segs: list[Seg]
    params: bytes = b""
    rank: int | None = None  # override the rank byte


@dataclass
class Spec:
    """A file described field by field as in docs/mle-format.md; ``build`` packs it."""

    metadata: bytes = b"{}"
    data: bytes = b""
    entries: list[Ent] = field(default_factory=list)
    tensor_count: int | None = None

    def build(self) -> bytes:
        data_offset = (80 + len(self.metadata) + 63) // 64 * 64
        table = b""
        for e in self.entries:
            rank = len(e.shape) if e.rank is None else e.rank
            t = struct.pack("<H", len(e.name)) + e.name + bytes([e.dtype, e.encoding, rank, len(e.segs)])
            t += b"".join(struct.pack("<Q", d) for d in e.shape) + struct.pack("<I", len(e.params)) + e.params
            for s in e.segs:
                rel = s.offset - data_offset
                crc = zlib.crc32(self.data[max(rel, 0): rel + s.length]) if s.crc is None else s.crc
                t += struct.pack("<BBHIQQ", s.role, s.dtype, s.reserved, crc, s.offset, s.length)
            table += t
        table_offset = data_offset + len(self.data)
        count = len(self.entries) if self.tensor_count is None else self.tensor_count
        head = b"MLE\x00" + struct.pack("<HHII", 3, 80, 0, count)
        head += struct.pack("<6Q", 80, len(self.metadata), data_offset, len(self.data), table_offset, len(table))
        head += struct.pack("<III", zlib.crc32(self.metadata), zlib.crc32(table), 0)
        head += struct.pack("<I", zlib.crc32(head))
        assert len(head) == 80
        return head + self.metadata + bytes(data_offset - 80 - len(self.metadata)) + self.data + table


W = np.array([[1.0, -2.0], [0.5, 3.25]], np.float32)


def test_the_spec_example_byte_for_byte() -> None:
    """The worked example at the end of docs/mle-format.md: one raw f32 (2, 2) tensor, metadata ``{}``."""
    blob = mle.dumps({"w": W})
    expected = Spec(data=W.tobytes(), entries=[Ent(b"w", 1, 0, [2, 2], [Seg(0, 1, 128, 16)])]).build()
    assert len(blob) == 195
    assert blob == expected
    assert blob[0x90:0x93] == bytes.fromhex("010077")
    f = mle.loads(expected)
    np.testing.assert_array_equal(f["w"], W)


def test_hand_built_encodings_decode_as_the_spec_says() -> None:
    """int8_channel, sparse and field entries packed by hand decode by the spec's formulas."""
    q = np.array([[-128, 0, 127], [10, -10, 0]], np.int8)
    scale = np.array([0.5, 0.25], "<f4")
    zp = np.array([-1, 2], np.int8)
    idx = np.array([1, 4], "<u4")
    vals = np.array([1.5, -2.0], "<f2")
    fe = np.array([0, 5, 4095], "<u2")
    data = bytearray()

    def put(a: np.ndarray) -> int:
        data.extend(bytes(-len(data) % 64))
        off = 128 + len(data)
        data.extend(a.tobytes())
        return off

    segs_q = [Seg(1, 5, put(q), q.nbytes), Seg(2, 1, put(scale), 8), Seg(3, 5, put(zp), 2)]
    segs_s = [Seg(4, 10, put(idx), 8), Seg(5, 2, put(vals), 4)]
    segs_f = [Seg(0, 8, put(fe), 6)]
    spec = Spec(data=bytes(data), entries=[
        Ent(b"q", 1, 2, [2, 3], segs_q, params=b'{"axis":0}'),
        Ent(b"s", 1, 3, [5], segs_s),
        Ent(b"f", 8, 4, [3], segs_f, params=b'{"modulus_bits":12}'),
    ])
    blob = spec.build()
    for backend in ("numpy", "pure"):
        f = mle.loads(blob, backend=backend)
        expected_q = (q.astype(np.float64) - zp[:, None]) * scale.astype(np.float64)[:, None]
        np.testing.assert_array_equal(np.asarray(f["q"], np.float32).reshape(2, 3), expected_q.astype(np.float32))
        np.testing.assert_array_equal(np.asarray(f["s"], np.float32), [0, 1.5, 0, 0, -2.0])
        assert f.field_values("f")[0] == 12 and list(f.field_values("f")[1]) == [0, 5, 4095]


def _one(**kw: object) -> Spec:
    """A valid single-tensor file (f32 (4,) at 128) with overrides applied to its entry/segment."""
    seg = Seg(0, 1, 128, 16)
    ent = Ent(b"t", 1, 0, [4], [seg])
    for k, v in kw.items():
        setattr(seg if hasattr(seg, k) and k not in ("dtype",) else ent, k, v)
    return Spec(data=np.arange(4, dtype="<f4").tobytes() + bytes(64), entries=[ent])


@pytest.mark.parametrize(("spec", "error", "words"), [
    (_one(offset=132), mle.AlignmentError, "aligned"),
    (_one(offset=192, length=32), mle.BoundsError, "outside the data section"),
    (_one(offset=64), mle.BoundsError, "outside the data section"),
    (_one(length=15), mle.BoundsError, "multiple"),
    (_one(length=12), mle.BoundsError, "elements"),
    (_one(offset=(1 << 64) - 64), mle.BoundsError, "outside"),
    (_one(length=(1 << 64) - 16), mle.BoundsError, "outside"),
    (_one(shape=[1 << 47, 1 << 47]), mle.LimitError, "element count"),
    (_one(shape=[(1 << 64) - 1]), mle.LimitError, "dimension"),
    (_one(shape=[0] * 9), mle.LimitError, "rank"),
    (_one(dtype=99), mle.TableError, "dtype code 99"),
    (_one(encoding=7), mle.TableError, "encoding code 7"),
    (_one(role=5), mle.TableError, "values"),
    (_one(reserved=1), mle.TableError, "reserved"),
    (_one(crc=0), mle.ChecksumError, "CRC32"),
    (_one(params=b'{"axis":0}'), mle.TableError, "params"),
    (_one(params=b"[1]"), mle.TableError, "JSON object"),
    (_one(name=b"\xff\xfe"), mle.TableError, "UTF-8"),
    (_one(encoding=4), mle.TableError, "u16 or u32"),
])
def test_table_violations_raise_the_documented_error(spec: Spec, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        f = mle.loads(spec.build())
        f["t"]  # the CRC is checked on access


def test_overlap_duplicate_count_and_trailing_bytes() -> None:
    data = np.arange(4, dtype="<f4").tobytes()
    a = Ent(b"a", 1, 0, [4], [Seg(0, 1, 128, 16)])
    b = Ent(b"b", 1, 0, [2], [Seg(0, 1, 128, 8)])
    with pytest.raises(mle.BoundsError, match="overlap"):
        mle.loads(Spec(data=data, entries=[a, b]).build())
    with pytest.raises(mle.TableError, match="duplicate tensor name 'a'"):
        mle.loads(Spec(data=data + bytes(48) + data, entries=[a, Ent(b"a", 1, 0, [4], [Seg(0, 1, 192, 16)])]).build())
    with pytest.raises(mle.TruncatedError, match="entry 1"):
        mle.loads(Spec(data=data, entries=[a], tensor_count=2).build())
    with pytest.raises(mle.TableError, match="trailing bytes"):
        mle.loads(Spec(data=data, entries=[a, a], tensor_count=1).build())


def test_header_rules() -> None:
    good = bytearray(Spec(data=W.tobytes(), entries=[Ent(b"w", 1, 0, [2, 2], [Seg(0, 1, 128, 16)])]).build())

    def patched(off: int, fmt: str, value: int) -> bytes:
        b = bytearray(good)
        struct.pack_into(fmt, b, off, value)
        struct.pack_into("<I", b, 76, zlib.crc32(bytes(b[:76])))
        return bytes(b)

    with pytest.raises(mle.HeaderError, match="flag"):
        mle.loads(patched(8, "<I", 2))
    with pytest.raises(mle.HeaderError, match="reserved"):
        mle.loads(patched(72, "<I", 1))
    with pytest.raises(mle.AlignmentError, match="data_offset"):
        mle.loads(patched(32, "<Q", 100))
    with pytest.raises(mle.BoundsError, match="metadata_offset"):
        mle.loads(patched(16, "<Q", 88))
    with pytest.raises(mle.LimitError, match="metadata_length"):
        mle.loads(patched(24, "<Q", 1 << 40))
    with pytest.raises(mle.VersionError, match="version 4"):
        mle.loads(patched(4, "<H", 4))
    with pytest.raises(mle.HeaderError, match="header_size"):
        mle.loads(patched(6, "<H", 84))
    with pytest.raises(mle.ChecksumError, match="header CRC32"):
        b = bytearray(good)
        b[12] ^= 1
        mle.loads(bytes(b))
    with pytest.raises(mle.FormatError, match="bytes"):
        mle.loads(bytes(good) + b"\x00")  # unsigned: the file must end right after the table
    with pytest.raises(mle.FormatError, match="signature trailer"):
        mle.loads(patched(8, "<I", 1))  # flagged as signed but no trailer
    # a longer header (a later minor addition) is skipped by readers, covered by the header CRC
    meta = json.dumps({}).encode()
    long_header = bytearray(good[:80]) + bytes(8)
    struct.pack_into("<H", long_header, 6, 88)
    struct.pack_into("<Q", long_header, 16, 88)
    struct.pack_into("<I", long_header, 76, zlib.crc32(bytes(long_header[:76]) + bytes(long_header[80:])))
    blob = bytes(long_header) + meta + bytes(128 - 88 - len(meta)) + bytes(good[128:])
    np.testing.assert_array_equal(mle.loads(blob)["w"], W)
