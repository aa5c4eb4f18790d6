"""The .mle tensor container (format version 3; docs/mle-format.md is the specification).

Write::

    mle.save("model.mle", {"w": array, "b": array}, metadata={...}, signing_key=seed32)
    blob = mle.dumps({"delta": mle.quantize_int8(d), "mask": mle.FieldElements(v, modulus_bits=16)})
    mle.FieldElements(v, modulus_bits=20, packed=True)   # field_packed: exactly 20 bits per element (mle.bitpack)

Read::

    f = mle.load("model.mle", trusted_keys=[pk], require_signature=True)   # memory-mapped
    f = mle.loads(blob)                                                      # any buffer
    f.metadata, f.tensor_names, f.entry(name).shape, f[name], f.raw(name)

With numpy importable, ``f[name]`` is a numpy array (a zero-copy view for raw tensors); without numpy (or with
``backend="pure"``) it is a flat ``memoryview`` or ``array.array``. Every problem with the bytes raises a
subclass of :class:`FormatError`; signature problems raise :class:`SignatureError`.

Pure Python at import time: the browser client imports this package in Pyodide.
"""

from __future__ import annotations

from mle.delta import BASE_KEY, apply_delta, delta_metadata, model_sha256
from mle.encodings import quantize_int8, sparse_topk
from mle.errors import (
    AlignmentError,
    BoundsError,
    ChecksumError,
    DeltaBaseError,
    EncodingError,
    FormatError,
    HeaderError,
    LimitError,
    MagicError,
    MetadataError,
    SignatureError,
    TableError,
    TruncatedError,
    VersionError,
)
from mle.layout import Entry, Header, Segment
from mle.reader import MleFile, load, loads
from mle.signing import public_key, sign, verify
from mle.spec import ALIGNMENT, DTYPES, VERSION
from mle.tensors import Encoded, FieldElements, Tensor
from mle.writer import dumps, save, write_stream

__all__ = [
    "ALIGNMENT",
    "BASE_KEY",
    "DTYPES",
    "VERSION",
    "AlignmentError",
    "BoundsError",
    "ChecksumError",
    "DeltaBaseError",
    "Encoded",
    "EncodingError",
    "Entry",
    "FieldElements",
    "FormatError",
    "Header",
    "HeaderError",
    "LimitError",
    "MagicError",
    "MetadataError",
    "MleFile",
    "Segment",
    "SignatureError",
    "TableError",
    "Tensor",
    "TruncatedError",
    "VersionError",
    "apply_delta",
    "delta_metadata",
    "dumps",
    "load",
    "loads",
    "model_sha256",
    "public_key",
    "quantize_int8",
    "save",
    "sign",
    "sparse_topk",
    "verify",
    "write_stream",
]
