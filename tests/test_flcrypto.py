"""The PyNaCl implementation of the crypto interface, checked against independent routes where one exists."""

from __future__ import annotations

import hashlib

import pytest

from flcrypto import (
    Crypto,
    CryptoError,
    DecryptionError,
    SignatureError,
    default_crypto,
    set_default_crypto,
)
from flcrypto.pynacl_impl import PyNaClCrypto

C = PyNaClCrypto()


def test_implements_protocol() -> None:
    assert isinstance(C, Crypto)
    set_default_crypto(None)
    assert default_crypto().name == "pynacl"


def test_ed25519_rfc8032_vector() -> None:
    # RFC 8032 §7.1, TEST 1 (empty message).
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    pk = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert C.ed25519_public_key(seed) == pk
    assert C.ed25519_sign(seed, b"") == sig
    C.ed25519_verify(pk, b"", sig)


def test_ed25519_rejects_anything_else() -> None:
    seed = bytes(range(32))
    pk = C.ed25519_public_key(seed)
    sig = C.ed25519_sign(seed, b"message")
    with pytest.raises(SignatureError):
        C.ed25519_verify(pk, b"messagE", sig)
    with pytest.raises(SignatureError):
        C.ed25519_verify(C.ed25519_public_key(bytes(32)), b"message", sig)
    bad = bytearray(sig)
    bad[10] ^= 1
    with pytest.raises(SignatureError):
        C.ed25519_verify(pk, b"message", bytes(bad))
    with pytest.raises(SignatureError):
        C.ed25519_verify(pk, b"message", sig[:63])
    with pytest.raises(SignatureError):
        C.ed25519_verify(pk[:31], b"message", sig)


def test_x25519_rfc7748_vector_and_agreement() -> None:
    # RFC 7748 §6.1.
    a = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    a_pub = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    b = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    b_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert C.x25519_public_key(a) == a_pub
    assert C.x25519(a, b_pub) == shared == C.x25519(b, a_pub)


def test_x25519_low_order_point_rejected() -> None:
    with pytest.raises(CryptoError):
        C.x25519(bytes(range(32)), bytes(32))


def test_blake2b_matches_hashlib() -> None:
    for key in (b"", b"k" * 32, bytes(range(64))):
        for size in (16, 32, 64):
            expected = hashlib.blake2b(b"some message", key=key, digest_size=size).digest()
            assert C.blake2b(b"some message", key=key, digest_size=size) == expected
    with pytest.raises(CryptoError):
        C.blake2b(b"x", key=bytes(65))


def test_prg_is_deterministic_chacha20_stream() -> None:
    seed = bytes(range(32))
    a = C.prg(seed, 1000)
    assert a == C.prg(seed, 1000)
    assert C.prg(seed, 100) == a[:100]  # a prefix of the same stream
    assert C.prg(bytes(32), 100) != a[:100]
    with pytest.raises(CryptoError):
        C.prg(b"short", 10)


def test_aead_round_trip_and_tamper() -> None:
    key, nonce = bytes(range(32)), bytes(range(24))
    ct = C.aead_encrypt(key, nonce, b"secret share", b"round=1")
    assert len(ct) == len(b"secret share") + 16
    assert C.aead_decrypt(key, nonce, ct, b"round=1") == b"secret share"
    for mutate in (
        lambda: C.aead_decrypt(key, nonce, ct, b"round=2"),
        lambda: C.aead_decrypt(bytes(32), nonce, ct, b"round=1"),
        lambda: C.aead_decrypt(key, bytes(24), ct, b"round=1"),
        lambda: C.aead_decrypt(key, nonce, ct[:-1] + bytes([ct[-1] ^ 1]), b"round=1"),
        lambda: C.aead_decrypt(key, nonce, ct[:5], b"round=1"),
    ):
        with pytest.raises(DecryptionError):
            mutate()


def test_random_bytes() -> None:
    a, b = C.random_bytes(32), C.random_bytes(32)
    assert len(a) == 32 and a != b
