"""The SecAgg message codec: canonical encoding round-trips, and any truncation, bit flip or non-canonical form
raises a typed error (ProtocolError / SecAggSignatureError), never another exception or a silent acceptance."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flcrypto import default_crypto
from privacy.secagg import ProtocolError, SecAggError, SecAggSignatureError
from privacy.secagg.messages import Message

C = default_crypto()
SEED = bytes(range(32))
PK = C.ed25519_public_key(SEED)
ids = st.text(min_size=1, max_size=12)
items = st.dictionaries(st.text(max_size=10), st.binary(max_size=40), max_size=5)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["advertise", "shares", "masked", "consistency", "unmask"]), st.integers(0, 2**64 - 1),
       st.integers(0, 2**32 - 1), ids, ids, items)
def test_round_trip_and_signature(phase, rnd, grp, sender, recipient, its) -> None:
    m = Message(phase, rnd, grp, sender, recipient, its).sign(C, SEED)
    wire = m.to_bytes()
    back = Message.from_bytes(wire)
    assert back == m and back.to_bytes() == wire
    back.verify(C, PK)


def _sample() -> bytes:
    return Message("shares", 9, 2, "alice", "server", {"bob": b"x" * 30, "carol": b"y" * 7}).sign(C, SEED).to_bytes()


def test_every_truncation_and_extension_is_a_protocol_error() -> None:
    wire = _sample()
    for n in range(len(wire)):
        with pytest.raises(ProtocolError):
            Message.from_bytes(wire[:n])
    with pytest.raises(ProtocolError, match="trailing"):
        Message.from_bytes(wire + b"\0")


def test_every_bit_flip_is_rejected_by_parsing_or_signature() -> None:
    wire = _sample()
    for i in range(len(wire)):
        for bit in (0, 7):
            bad = bytearray(wire)
            bad[i] ^= 1 << bit
            try:
                m = Message.from_bytes(bytes(bad))
            except ProtocolError:
                continue
            with pytest.raises(SecAggSignatureError):
                m.verify(C, PK)


def test_non_canonical_forms_are_refused() -> None:
    body = Message("shares", 1, 0, "a", "server", {"k1": b"1", "k2": b"2"}).signed_bytes()
    head, _, _ = body.partition(struct.pack("<I", 2))
    swapped = head + struct.pack("<I", 2) + struct.pack("<H", 2) + b"k2" + struct.pack("<I", 1) + b"2" + \
        struct.pack("<H", 2) + b"k1" + struct.pack("<I", 1) + b"1" + struct.pack("<H", 0)
    with pytest.raises(ProtocolError, match="sorted"):
        Message.from_bytes(swapped)
    with pytest.raises(ProtocolError, match="unknown phase"):
        Message.from_bytes(Message("hello", 1, 0, "a", "b").to_bytes())
    with pytest.raises(ProtocolError, match="signature length"):
        Message.from_bytes(body + struct.pack("<H", 3) + b"abc")
    with pytest.raises(ProtocolError, match="magic"):
        Message.from_bytes(b"XXXXX" + body[5:])
    assert issubclass(SecAggSignatureError, SecAggError)
