""":class:`SodiumCrypto`: :class:`flcrypto.Crypto` on libsodium-wrappers (libsodium compiled to WebAssembly),
called from Pyodide through the JS FFI. Byte-identical to :class:`flcrypto.pynacl_impl.PyNaClCrypto` (both are
libsodium; tests/test_browser_crypto.py runs tests/vectors/secagg_vectors.json in the browser).
"""

from __future__ import annotations

from typing import Any

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


def _check_len(what: str, value: Any, n: int) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise CryptoError(f"{what} must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) != n:
        raise CryptoError(f"{what} must be {n} bytes, got {len(value)}")
    return value


class SodiumCrypto:
    """``sodium``: the ready ``libsodium-wrappers`` module object (a JsProxy). Stateless; safe to share."""

    name = "libsodium-wrappers"

    def __init__(self, sodium: Any) -> None:
        import js  # Pyodide only
        from pyodide.ffi import JsException

        self.s = sodium
        self._u8 = js.Uint8Array
        self._jserr = JsException

    def _js(self, data: Any) -> Any:
        mv = memoryview(bytes(data))
        arr = self._u8.new(mv.nbytes)
        if mv.nbytes:
            arr.assign(mv)
        return arr

    @staticmethod
    def _py(arr: Any) -> bytes:
        return arr.to_bytes()

    def random_bytes(self, n: int) -> bytes:
        if n < 0:
            raise CryptoError("random_bytes: n must be >= 0")
        return self._py(self.s.randombytes_buf(n)) if n else b""

    def _keypair(self, seed: bytes) -> Any:
        return self.s.crypto_sign_seed_keypair(self._js(_check_len("Ed25519 seed", seed, ED25519_SEED_BYTES)))

    def ed25519_public_key(self, seed: bytes) -> bytes:
        return self._py(self._keypair(seed).publicKey)

    def ed25519_sign(self, seed: bytes, message: bytes) -> bytes:
        kp = self._keypair(seed)
        return self._py(self.s.crypto_sign_detached(self._js(message), kp.privateKey))

    def ed25519_verify(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        try:
            pk = _check_len("Ed25519 public key", public_key, ED25519_PUBLIC_BYTES)
            sig = _check_len("Ed25519 signature", signature, ED25519_SIGNATURE_BYTES)
        except CryptoError as exc:
            raise SignatureError(str(exc)) from None
        try:
            ok = self.s.crypto_sign_verify_detached(self._js(sig), self._js(message), self._js(pk))
        except self._jserr:
            ok = False
        if not ok:
            raise SignatureError("Ed25519 signature does not verify against the trusted key")

    def x25519_public_key(self, secret: bytes) -> bytes:
        return self._py(self.s.crypto_scalarmult_base(self._js(_check_len("X25519 secret", secret, X25519_BYTES))))

    def x25519(self, secret: bytes, peer_public: bytes) -> bytes:
        sk = _check_len("X25519 secret", secret, X25519_BYTES)
        pk = _check_len("X25519 peer public key", peer_public, X25519_BYTES)
        try:
            out = self._py(self.s.crypto_scalarmult(self._js(sk), self._js(pk)))
        except self._jserr:
            raise CryptoError("X25519: peer public key is of low order") from None
        if out == bytes(X25519_BYTES):
            raise CryptoError("X25519: peer public key is of low order")
        return out

    def blake2b(self, message: bytes, key: bytes = b"", digest_size: int = 32) -> bytes:
        if not 16 <= digest_size <= 64:
            raise CryptoError("blake2b: digest_size must be in [16, 64]")
        if len(key) > 64:
            raise CryptoError("blake2b: key must be at most 64 bytes")
        k = self._js(key) if len(key) else None
        return self._py(self.s.crypto_generichash(digest_size, self._js(message), k))

    def prg(self, seed: bytes, n: int) -> bytes:
        if n < 0:
            raise CryptoError("prg: n must be >= 0")
        s = _check_len("PRG seed", seed, PRG_SEED_BYTES)
        if n == 0:
            return b""
        return self._py(self.s.randombytes_buf_deterministic(n, self._js(s)))

    def aead_encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes = b"") -> bytes:
        k = _check_len("AEAD key", key, AEAD_KEY_BYTES)
        npub = _check_len("AEAD nonce", nonce, AEAD_NONCE_BYTES)
        ad = self._js(associated_data) if len(associated_data) else None
        return self._py(self.s.crypto_aead_xchacha20poly1305_ietf_encrypt(self._js(plaintext), ad, None,
                                                                          self._js(npub), self._js(k)))

    def aead_decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes = b"") -> bytes:
        if len(ciphertext) < AEAD_TAG_BYTES:
            raise DecryptionError(f"AEAD ciphertext too short ({len(ciphertext)} bytes < {AEAD_TAG_BYTES}-byte tag)")
        k = _check_len("AEAD key", key, AEAD_KEY_BYTES)
        npub = _check_len("AEAD nonce", nonce, AEAD_NONCE_BYTES)
        ad = self._js(associated_data) if len(associated_data) else None
        try:
            return self._py(self.s.crypto_aead_xchacha20poly1305_ietf_decrypt(None, self._js(ciphertext), ad,
                                                                              self._js(npub), self._js(k)))
        except self._jserr:
            raise DecryptionError("AEAD authentication failed") from None
