"""Messages on the wire: an :class:`~flcore.protocol.Envelope` carried in the metadata of a signed .mle file,
with payload tensors. Used identically by the coordinator and every client (pure Python)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import mle
from flcore.protocol import Envelope, ProtocolError, envelope_from_metadata

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def client_id_for(public_key: bytes) -> str:
    """A client's id: the first 16 bytes of BLAKE2b(public key), hex."""
    import hashlib

    return hashlib.blake2b(bytes(public_key), digest_size=16).hexdigest()


def encode(env: Envelope, signing_seed: bytes, tensors: Mapping[str, Any] | None = None) -> bytes:
    return mle.dumps(dict(tensors or {}), env.metadata(), signing_key=signing_seed)


def decode(data: bytes, key_for: Callable[[Envelope], bytes | None], max_bytes: int = MAX_MESSAGE_BYTES
           ) -> tuple[Envelope, mle.MleFile]:
    """Parse, validate and verify one message. ``key_for(envelope)`` returns the sender's trusted public key
    (or None: unknown sender). Raises :class:`ProtocolError` with a code for every failure."""
    if len(data) > max_bytes:
        raise ProtocolError("too_large", f"message of {len(data)} bytes exceeds the limit {max_bytes}")
    try:
        f = mle.loads(bytes(data))
    except mle.FormatError as exc:
        raise ProtocolError("bad_format", f"not a valid .mle message: {exc}") from None
    if not f.signed:
        raise ProtocolError("unsigned", "message is not signed")
    env = envelope_from_metadata(f.metadata)
    key = key_for(env)
    if key is None:
        raise ProtocolError("unknown_sender", f"no trusted key for sender {env.sender!r}")
    try:
        mle.verify(data, [key])
    except (mle.SignatureError, mle.FormatError) as exc:  # a corrupted trailer is a FormatError (issue 13 F9)
        raise ProtocolError("bad_signature", f"{env.type} message from {env.sender!r}: signature does not "
                            f"verify ({type(exc).__name__})") from None
    try:
        f.verify_all()
    except mle.FormatError as exc:
        raise ProtocolError("bad_format", str(exc)) from None
    return env, f


def tensor_bytes(f: mle.MleFile, name: str) -> bytes:
    """A u8 tensor's bytes (used to carry nested signed blobs: models, SecAgg+ messages)."""
    if name not in f:
        raise ProtocolError("bad_message", f"missing tensor {name!r}")
    e = f.entry(name)
    if e.dtype.name != "u8" or e.encoding_name != "raw" or len(e.shape) != 1:
        raise ProtocolError("bad_message", f"tensor {name!r} must be a raw u8 vector")
    return bytes(f.raw(name))


def as_u8(blob: bytes) -> mle.Tensor:
    return mle.Tensor(blob, "u8", (len(blob),))
