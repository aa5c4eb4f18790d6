"""The PyNaCl (libsodium on CPython) implementation of :class:`flcrypto.Crypto`."""

from __future__ import annotations

import nacl.bindings as b
import nacl.exceptions
import nacl.hash
import nacl.utils
from nacl.encoding import RawEncoder

from flcrypto.interface import (
    AEAD_KEY_BYTES,
    AEAD_NONCE_BYTES,
    AEAD_TAG_BYTES,
    ED25519_PUBLIC_BYTES,
    ED25519_SEED_BYTES,
    ED25519_SIGNATURE_BYTES,
    PRG_SEED_BYTES,
    X25519_BYTES,
    CryptoError,
    DecryptionError,
    SignatureError,
)


def _check_len(what: str, value: bytes, n: int) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise CryptoError(f"{what} must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) != n:
        raise CryptoError(f"{what} must be {n} bytes, got {len(value)}")
    return value


class PyNaClCrypto:
    """libsodium through PyNaCl. Stateless; safe to share."""

    name = "pynacl"

    def random_bytes(self, n: int) -> bytes:
        if n < 0:
            raise CryptoError("random_bytes: n must be >= 0")
        return nacl.utils.random(n)

    def ed25519_public_key(self, seed: bytes) -> bytes:
        pk, _sk = b.crypto_sign_seed_keypair(_check_len("Ed25519 seed", seed, ED25519_SEED_BYTES))
        return pk

    def ed25519_sign(self, seed: bytes, message: bytes) -> bytes:
        _pk, sk = b.crypto_sign_seed_keypair(_check_len("Ed25519 seed", seed, ED25519_SEED_BYTES))
        return b.crypto_sign(bytes(message), sk)[:ED25519_SIGNATURE_BYTES]

    def ed25519_verify(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        try:
            pk = _check_len("Ed25519 public key", public_key, ED25519_PUBLIC_BYTES)
            sig = _check_len("Ed25519 signature", signature, ED25519_SIGNATURE_BYTES)
        except CryptoError as exc:
            raise SignatureError(str(exc)) from None
        try:
            b.crypto_sign_open(sig + bytes(message), pk)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            raise SignatureError("Ed25519 signature does not verify against the trusted key") from None

    def x25519_public_key(self, secret: bytes) -> bytes:
        return b.crypto_scalarmult_base(_check_len("X25519 secret", secret, X25519_BYTES))

    def x25519(self, secret: bytes, peer_public: bytes) -> bytes:
        sk = _check_len("X25519 secret", secret, X25519_BYTES)
        pk = _check_len("X25519 peer public key", peer_public, X25519_BYTES)
        try:
            out = b.crypto_scalarmult(sk, pk)
        except (nacl.exceptions.RuntimeError, RuntimeError):
            raise CryptoError("X25519: peer public key is of low order") from None
        if out == bytes(X25519_BYTES):
            raise CryptoError("X25519: peer public key is of low order")
        return out

    def blake2b(self, message: bytes, key: bytes = b"", digest_size: int = 32) -> bytes:
        if not 16 <= digest_size <= 64:
            raise CryptoError("blake2b: digest_size must be in [16, 64]")
        if len(key) > 64:
            raise CryptoError("blake2b: key must be at most 64 bytes")
        return nacl.hash.blake2b(bytes(message), digest_size=digest_size, key=bytes(key), encoder=RawEncoder)

    def prg(self, seed: bytes, n: int) -> bytes:
        if n < 0:
            raise CryptoError("prg: n must be >= 0")
        return nacl.utils.randombytes_deterministic(n, _check_len("PRG seed", seed, PRG_SEED_BYTES), RawEncoder)

    def aead_encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes = b"") -> bytes:
        return b.crypto_aead_xchacha20poly1305_ietf_encrypt(
            bytes(plaintext),
            bytes(associated_data) or None,
            _check_len("AEAD nonce", nonce, AEAD_NONCE_BYTES),
            _check_len("AEAD key", key, AEAD_KEY_BYTES),
        )

    def aead_decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes = b"") -> bytes:
        if len(ciphertext) < AEAD_TAG_BYTES:
            raise DecryptionError(f"AEAD ciphertext too short ({len(ciphertext)} bytes < {AEAD_TAG_BYTES}-byte tag)")
        try:
            return b.crypto_aead_xchacha20poly1305_ietf_decrypt(
                bytes(ciphertext),
                bytes(associated_data) or None,
                _check_len("AEAD nonce", nonce, AEAD_NONCE_BYTES),
                _check_len("AEAD key", key, AEAD_KEY_BYTES),
            )
        except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, nacl.exceptions.ValueError, ValueError):
            raise DecryptionError("AEAD authentication failed") from None
