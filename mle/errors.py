"""Typed errors. Every problem with a file's bytes raises a subclass of :class:`FormatError`; a signature
problem raises :class:`SignatureError`. Messages say what is wrong and where (byte offset, tensor name)."""

from __future__ import annotations

from flcrypto import SignatureError as _CryptoSignatureError


class FormatError(ValueError):
    """The bytes are not a valid .mle file (or not one this reader supports)."""


class TruncatedError(FormatError):
    """The buffer ends before a structure it declares."""


class MagicError(FormatError):
    """The buffer does not start with ``MLE\\0``."""


class VersionError(FormatError):
    """A format version this reader does not implement (1 and 2 are an older, incompatible format)."""


class HeaderError(FormatError):
    """A header field is out of range, inconsistent, or fails its CRC."""


class MetadataError(FormatError):
    """The metadata section is not a UTF-8 JSON object within limits."""


class TableError(FormatError):
    """A tensor-table entry is malformed (dtype, encoding, rank, shape, name, parameters)."""


class BoundsError(FormatError):
    """An offset or length points outside its section, overlaps another segment, or overflows."""


class AlignmentError(FormatError):
    """A tensor segment does not start on a 64-byte boundary."""


class ChecksumError(FormatError):
    """A CRC32 does not match the bytes it covers."""


class EncodingError(FormatError):
    """Encoded data is inconsistent with its encoding (sparse index out of range, field element ≥ 2^m, …)."""


class LimitError(FormatError):
    """The file exceeds a reader limit (tensor count, rank, metadata size, …)."""


class SignatureError(_CryptoSignatureError):
    """Missing, malformed or invalid signature, or signed by a key the caller does not trust."""


class DeltaBaseError(ValueError):
    """``apply_delta`` was given a delta made for another base model (or tensors that don't match)."""
