"""One crypto interface for every runtime (design brief: "Crypto is an interface with two implementations").

Pure Python at import time: nothing here imports PyNaCl. :func:`default_crypto` returns the implementation
registered with :func:`set_default_crypto` (the browser registers its libsodium-wrappers bridge), or else the
PyNaCl implementation, created on first use.
"""

from __future__ import annotations

from flcrypto.interface import (
    AEAD_KEY_BYTES,
    AEAD_NONCE_BYTES,
    AEAD_TAG_BYTES,
    ED25519_PUBLIC_BYTES,
    ED25519_SEED_BYTES,
    ED25519_SIGNATURE_BYTES,
    PRG_SEED_BYTES,
    X25519_BYTES,
    Crypto,
    CryptoError,
    DecryptionError,
    SignatureError,
)

_default: Crypto | None = None


def set_default_crypto(impl: Crypto | None) -> None:
    """Register the implementation :func:`default_crypto` returns (``None`` resets to PyNaCl)."""
    global _default
    _default = impl


def default_crypto() -> Crypto:
    """The registered implementation, else PyNaCl's (raises ``ImportError`` if PyNaCl is absent)."""
    global _default
    if _default is None:
        from flcrypto.pynacl_impl import PyNaClCrypto

        _default = PyNaClCrypto()
    return _default


__all__ = [
    "AEAD_KEY_BYTES",
    "AEAD_NONCE_BYTES",
    "AEAD_TAG_BYTES",
    "ED25519_PUBLIC_BYTES",
    "ED25519_SEED_BYTES",
    "ED25519_SIGNATURE_BYTES",
    "PRG_SEED_BYTES",
    "X25519_BYTES",
    "Crypto",
    "CryptoError",
    "DecryptionError",
    "SignatureError",
    "default_crypto",
    "set_default_crypto",
]
