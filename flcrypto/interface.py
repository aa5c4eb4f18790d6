"""The crypto interface: the libsodium primitives fl-coordinator uses, nothing more.

Every implementation must be byte-identical to libsodium (PyNaCl on CPython, libsodium-wrappers in the
browser); ``tests/test_crypto_vectors.py`` pins fixed inputs to expected outputs for that reason.

Primitive                      libsodium function
-----------------------------  ------------------------------------------------------------
Ed25519 key from 32-byte seed  crypto_sign_seed_keypair
Ed25519 detached sign/verify   crypto_sign_detached / crypto_sign_verify_detached
X25519 public key / DH         crypto_scalarmult_base / crypto_scalarmult
keyed BLAKE2b                  crypto_generichash(outlen, msg, key)
deterministic PRG (ChaCha20)   randombytes_buf_deterministic(n, seed32)
AEAD                           crypto_aead_xchacha20poly1305_ietf_encrypt / _decrypt
CSPRNG                         randombytes_buf
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

ED25519_SEED_BYTES = 32
ED25519_PUBLIC_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
X25519_BYTES = 32
PRG_SEED_BYTES = 32
AEAD_KEY_BYTES = 32
AEAD_NONCE_BYTES = 24
AEAD_TAG_BYTES = 16


class CryptoError(Exception):
    """Base class of every error raised by a crypto implementation."""


class SignatureError(CryptoError):
    """A signature did not verify against the trusted key (or was malformed)."""


class DecryptionError(CryptoError):
    """An AEAD ciphertext failed authentication (tampered, wrong key, wrong nonce or associated data)."""


@runtime_checkable
class Crypto(Protocol):
    """The primitives, as bytes in → bytes out. Implementations hold no secret state of their own."""

    name: str

    def random_bytes(self, n: int) -> bytes:
        """``n`` bytes from the OS CSPRNG (randombytes_buf)."""
        ...

    def ed25519_public_key(self, seed: bytes) -> bytes:
        """The 32-byte Ed25519 public key of a 32-byte secret seed (crypto_sign_seed_keypair)."""
        ...

    def ed25519_sign(self, seed: bytes, message: bytes) -> bytes:
        """A 64-byte detached Ed25519 signature of ``message`` under the key derived from ``seed``."""
        ...

    def ed25519_verify(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        """Return ``None`` if valid, else raise :class:`SignatureError`."""
        ...

    def x25519_public_key(self, secret: bytes) -> bytes:
        """crypto_scalarmult_base(secret)."""
        ...

    def x25519(self, secret: bytes, peer_public: bytes) -> bytes:
        """crypto_scalarmult(secret, peer_public): the raw 32-byte shared point.

        Raises :class:`CryptoError` for a low-order peer key (all-zero output)."""
        ...

    def blake2b(self, message: bytes, key: bytes = b"", digest_size: int = 32) -> bytes:
        """Keyed BLAKE2b (crypto_generichash); ``key`` may be empty (unkeyed)."""
        ...

    def prg(self, seed: bytes, n: int) -> bytes:
        """``n`` deterministic bytes from a 32-byte seed (randombytes_buf_deterministic, ChaCha20)."""
        ...

    def aead_encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes = b"") -> bytes:
        """XChaCha20-Poly1305-IETF; returns ciphertext‖tag."""
        ...

    def aead_decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes = b"") -> bytes:
        """Inverse of :meth:`aead_encrypt`; raises :class:`DecryptionError` on any authentication failure."""
        ...
