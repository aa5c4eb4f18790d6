"""Constants of the .mle format, version 3 (docs/mle-format.md is the normative text)."""

from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"MLE\x00"
VERSION = 3
HEADER_SIZE = 80
ALIGNMENT = 64

FLAG_SIGNED = 0x1
KNOWN_FLAGS = FLAG_SIGNED

SIG_MAGIC = b"MLSG"
SIG_ALG_ED25519_BLAKE2B512 = 1
SIG_TRAILER_SIZE = 4 + 4 + 64
SIG_CONTEXT = b"mle-v3-signature\x00"

# Reader limits.
MAX_TENSORS = 65_536
MAX_RANK = 8
MAX_METADATA_BYTES = 16 * 1024 * 1024
MAX_TABLE_BYTES = 64 * 1024 * 1024
MAX_NAME_BYTES = 1024
MAX_PARAMS_BYTES = 64 * 1024
MAX_SEGMENTS = 4
MAX_ELEMENTS = 1 << 48
MAX_DIM = 1 << 48


@dataclass(frozen=True)
class DType:
    code: int
    name: str
    itemsize: int
    fmt: str  # struct / array / memoryview format character ("" when none exists: bf16)
    numpy: str  # numpy dtype string ("" for bf16: no native numpy dtype)


DTYPES: tuple[DType, ...] = (
    DType(1, "f32", 4, "f", "<f4"),
    DType(2, "f16", 2, "e", "<f2"),
    DType(3, "bf16", 2, "", ""),
    DType(4, "f64", 8, "d", "<f8"),
    DType(5, "i8", 1, "b", "i1"),
    DType(6, "u8", 1, "B", "u1"),
    DType(7, "i16", 2, "h", "<i2"),
    DType(8, "u16", 2, "H", "<u2"),
    DType(9, "i32", 4, "i", "<i4"),
    DType(10, "u32", 4, "I", "<u4"),
    DType(11, "i64", 8, "q", "<i8"),
)
DTYPE_BY_CODE = {d.code: d for d in DTYPES}
DTYPE_BY_NAME = {d.name: d for d in DTYPES}
FLOAT_DTYPES = frozenset({"f32", "f16", "bf16", "f64"})

ENC_RAW = 0
ENC_INT8 = 1
ENC_INT8_CHANNEL = 2
ENC_SPARSE = 3
ENC_FIELD = 4
ENC_FIELD_PACKED = 5
ENCODING_NAMES = {
    ENC_RAW: "raw",
    ENC_INT8: "int8",
    ENC_INT8_CHANNEL: "int8_channel",
    ENC_SPARSE: "sparse",
    ENC_FIELD: "field",
    ENC_FIELD_PACKED: "field_packed",
}
ENCODING_CODES = {v: k for k, v in ENCODING_NAMES.items()}

ROLE_DATA = 0
ROLE_Q = 1
ROLE_SCALE = 2
ROLE_ZERO_POINT = 3
ROLE_INDICES = 4
ROLE_VALUES = 5
ROLE_NAMES = {
    ROLE_DATA: "data",
    ROLE_Q: "q",
    ROLE_SCALE: "scale",
    ROLE_ZERO_POINT: "zero_point",
    ROLE_INDICES: "indices",
    ROLE_VALUES: "values",
}
ROLE_CODES = {v: k for k, v in ROLE_NAMES.items()}


def align(n: int) -> int:
    """The smallest multiple of :data:`ALIGNMENT` that is >= n."""
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
