"""Ed25519 signatures over a .mle body (docs/mle-format.md §Signature).

The signature covers every byte before the trailer: ``Ed25519(seed, "mle-v3-signature\\0" ‖ BLAKE2b-512(body))``.
Hashing first lets the writer sign a file of any size in one streaming pass, and the browser do the same with
libsodium (``crypto_generichash(64, body)``). Verification only ever uses keys the caller trusts.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterable
from typing import Any

from mle.errors import FormatError, SignatureError
from mle.layout import parse_header
from mle.spec import (
    FLAG_SIGNED,
    HEADER_SIZE,
    SIG_ALG_ED25519_BLAKE2B512,
    SIG_CONTEXT,
    SIG_MAGIC,
    SIG_TRAILER_SIZE,
)


def public_key(seed: bytes) -> bytes:
    """The Ed25519 public key (32 bytes) of a 32-byte signing seed."""
    from flcrypto import default_crypto

    return default_crypto().ed25519_public_key(bytes(seed))


def body_digest(buf: Any, body_length: int) -> bytes:
    h = hashlib.blake2b(digest_size=64)
    mv = memoryview(buf)
    for i in range(0, body_length, 1 << 22):
        h.update(mv[i: min(body_length, i + (1 << 22))])
    return h.digest()


def split_trailer(buf: Any, body_length: int) -> bytes:
    """Return the 64-byte signature from the trailer at ``body_length``; raise if the trailer is malformed."""
    mv = memoryview(buf)
    if len(mv) != body_length + SIG_TRAILER_SIZE:
        raise FormatError(f"signed file must be {body_length + SIG_TRAILER_SIZE} bytes, is {len(mv)}")
    trailer = bytes(mv[body_length:])
    if trailer[:4] != SIG_MAGIC:
        raise FormatError(f"bad signature trailer magic {trailer[:4]!r} at offset {body_length}")
    (alg,) = struct.unpack_from("<I", trailer, 4)
    if alg != SIG_ALG_ED25519_BLAKE2B512:
        raise FormatError(f"unknown signature algorithm {alg} at offset {body_length + 4}")
    return trailer[8:]


def verify_body(buf: Any, body_length: int, trusted_keys: Iterable[bytes]) -> bytes:
    """Check the trailer's signature against each trusted key; return the key that verifies."""
    from flcrypto import default_crypto

    keys = [bytes(k) for k in trusted_keys]
    if not keys:
        raise SignatureError("no trusted keys given: a signature is only checked against keys the caller trusts")
    sig = split_trailer(buf, body_length)
    message = SIG_CONTEXT + body_digest(buf, body_length)
    crypto = default_crypto()
    for k in keys:
        try:
            crypto.ed25519_verify(k, message, sig)
            return k
        except Exception:
            continue
    raise SignatureError("signature does not verify against any trusted key")


def verify(buf: Any, trusted_keys: Iterable[bytes]) -> bytes:
    """Verify a signed .mle buffer against trusted keys; returns the matching key, else raises
    :class:`SignatureError` (unsigned or bad signature) or :class:`FormatError` (not a valid file)."""
    mv = memoryview(buf).cast("B")
    h = parse_header(mv, len(mv))
    if not h.flags & FLAG_SIGNED:
        raise SignatureError("file is not signed")
    return verify_body(mv, h.body_length, trusted_keys)


def sign(buf: Any, seed: bytes) -> bytes:
    """Return a signed copy of an *unsigned* .mle buffer (sets the signed flag, appends the trailer)."""
    from mle.layout import _CRC, _HEADER

    mv = memoryview(buf).cast("B")
    h = parse_header(mv, len(mv))
    if h.flags & FLAG_SIGNED:
        raise FormatError("file is already signed")
    if len(mv) != h.body_length:
        raise FormatError(f"unsigned file must be {h.body_length} bytes, is {len(mv)}")
    body = bytearray(mv)
    struct.pack_into("<I", body, 8, h.flags | FLAG_SIGNED)
    crc = zlib.crc32(bytes(body[HEADER_SIZE: h.header_size]),
                     zlib.crc32(bytes(body[: _HEADER.size])))
    _CRC.pack_into(body, _HEADER.size, crc)
    from flcrypto import default_crypto

    sig = default_crypto().ed25519_sign(bytes(seed), SIG_CONTEXT + body_digest(body, len(body)))
    return bytes(body) + SIG_MAGIC + struct.pack("<I", SIG_ALG_ED25519_BLAKE2B512) + sig
