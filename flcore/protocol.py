"""The wire protocol shared by the coordinator and every client: message types, schema, replay protection.

Every message is a signed ``.mle`` file (see docs/protocol.md): the metadata carries the envelope
(protocol version, type, sender, recipient, session, sequence number, round, body) and the tensors carry
the payload (a model, a masked vector, …). One format, one parser (bounds-checked and fuzzed), one
signature mechanism for files on disk and messages on the wire.

Pure Python: imported by the browser client in Pyodide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSIONS: tuple[int, ...] = (1,)
COORDINATOR_ID = "coordinator"

# Transport addresses (the same frames on both): gRPC bidirectional stream of raw bytes, WebSocket binary frames.
GRPC_SERVICE = "flcoordinator.v1.Federation"
GRPC_METHOD = f"/{GRPC_SERVICE}/Session"
WS_PATH = "/ws"


def grpc_channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC channel/server options shared by both ends (message size limits, keepalive)."""
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0)]

# Body schema per message type: required field → allowed Python types. Unknown fields are rejected too, so a
# message means exactly one thing.
_INT = (int,)
_STR = (str,)
_LIST = (list,)
_DICT = (dict,)
_FLOAT = (int, float)

MESSAGE_TYPES: dict[str, dict[str, tuple[type, ...]]] = {
    # client → coordinator
    "hello": {"public_key": _STR, "kind": _STR, "versions": _LIST},
    "auth": {"challenge": _STR},
    "ready": {"commitment": _STR},  # BLAKE2b commitment to a fresh secret for the next round's seed (hex)
    "reveal": {"round": _INT, "attempt": _STR, "secret": _STR},  # opens the commitment the selection carries
    "decline": {"round": _INT, "code": _STR, "message": _STR},  # the client's policy or budget refuses the task
    "secagg": {"group": _INT},  # tensor "secagg": one SecAgg+ message (u8)
    "bye": {"reason": _STR},
    # coordinator → client
    "challenge": {"challenge": _STR, "version": _INT, "coordinator_key": _STR},
    "welcome": {"client_id": _STR, "round": _INT},
    # the signed selection of one round attempt: every selected client's identity key and commitment
    "select": {"round": _INT, "attempt": _STR, "group_size": _INT, "members": _DICT, "commitments": _DICT},
    # tensor "global_model": the coordinator-signed model file (u8); or "model_delta.0" … "model_delta.{n-1}": the
    # signed model deltas from the model the client announced in its ready (none: it holds the task's model)
    "task": {"config": _DICT},
    "round_end": {"round": _INT, "status": _STR},
    "stop": {"reason": _STR},  # the federation is over (rounds done or privacy budget spent)
    "error": {"code": _STR, "message": _STR},
}
# Fields a body may carry in addition to its schema (absent unless used, so peers that predate them still accept the
# message): the enrolment token the operator issued for this key (a coordinator with ``enrolment = "token"``); the
# SHA-256 of the model the client holds (compact downlink), sent only to a coordinator whose tasks announce deltas.
OPTIONAL_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "hello": {"enrolment_token": _STR},
    "ready": {"model_sha256": _STR},
}


class ProtocolError(Exception):
    """A message that is malformed, unexpected, unauthenticated or replayed.

    ``code`` is a short machine-readable reason sent back to the peer in an ``error`` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ReplayError(ProtocolError):
    """A message whose (session, sequence number) was already seen or is out of order."""

    def __init__(self, message: str) -> None:
        super().__init__("replay", message)


@dataclass(frozen=True)
class Envelope:
    """A protocol message before signing / after verification."""

    type: str
    sender: str
    recipient: str
    session: str
    seq: int
    round: int = -1
    body: Mapping[str, Any] = field(default_factory=dict)
    version: int = PROTOCOL_VERSIONS[-1]

    def metadata(self) -> dict[str, Any]:
        """The ``.mle`` metadata object that carries this envelope."""
        return {
            "fl": {
                "v": self.version,
                "type": self.type,
                "from": self.sender,
                "to": self.recipient,
                "session": self.session,
                "seq": self.seq,
                "round": self.round,
                "body": dict(self.body),
            }
        }


def validate_body(msg_type: str, body: Mapping[str, Any]) -> None:
    """Raise :class:`ProtocolError` unless ``body`` matches the schema of ``msg_type`` exactly."""
    schema = MESSAGE_TYPES.get(msg_type)
    if schema is None:
        raise ProtocolError("unknown_type", f"unknown message type {msg_type!r}")
    optional = OPTIONAL_FIELDS.get(msg_type, {})
    extra = set(body) - set(schema) - set(optional)
    if extra:
        raise ProtocolError("bad_message", f"{msg_type}: unexpected field(s) {sorted(extra)}")
    for name, types in (*schema.items(), *((k, v) for k, v in optional.items() if k in body)):
        if name not in body:
            raise ProtocolError("bad_message", f"{msg_type}: missing field {name!r}")
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ProtocolError(
                "bad_message", f"{msg_type}.{name}: expected {'/'.join(t.__name__ for t in types)}, "
                f"got {type(value).__name__}"
            )


def envelope_from_metadata(meta: Mapping[str, Any]) -> Envelope:
    """Parse and validate the envelope carried in an ``.mle`` file's metadata."""
    fl = meta.get("fl") if isinstance(meta, Mapping) else None
    if not isinstance(fl, Mapping):
        raise ProtocolError("bad_message", "metadata has no 'fl' envelope object")
    spec: dict[str, tuple[type, ...]] = {
        "v": _INT, "type": _STR, "from": _STR, "to": _STR, "session": _STR, "seq": _INT, "round": _INT,
        "body": _DICT,
    }
    if set(fl) != set(spec):
        raise ProtocolError("bad_message", f"envelope fields must be exactly {sorted(spec)}, got {sorted(fl)}")
    for name, types in spec.items():
        if isinstance(fl[name], bool) or not isinstance(fl[name], types):
            raise ProtocolError("bad_message", f"envelope field {name!r} has type {type(fl[name]).__name__}")
    if fl["v"] not in PROTOCOL_VERSIONS:
        raise ProtocolError("version", f"protocol version {fl['v']} not supported (supported: {PROTOCOL_VERSIONS})")
    if fl["seq"] < 0 or fl["seq"] >= 2**63:
        raise ProtocolError("bad_message", f"sequence number {fl['seq']} out of range")
    validate_body(fl["type"], fl["body"])
    return Envelope(
        type=fl["type"], sender=fl["from"], recipient=fl["to"], session=fl["session"], seq=fl["seq"],
        round=fl["round"], body=dict(fl["body"]), version=fl["v"],
    )


@dataclass
class ReplayGuard:
    """Accepts each (session, seq) once and only in increasing order (per sender).

    Sequence numbers start at 0 in each session and must strictly increase; a session is bound to the
    challenge the coordinator issued, so a message recorded in an earlier session never verifies again."""

    last_seq: dict[tuple[str, str], int] = field(default_factory=dict)

    def check(self, sender: str, session: str, seq: int) -> None:
        """Raise :class:`ReplayError` if this message was seen before or arrives out of order; else record it."""
        key = (sender, session)
        last = self.last_seq.get(key, -1)
        if seq <= last:
            raise ReplayError(f"sequence number {seq} from {sender} in session {session[:16]} is not above {last}")
        self.last_seq[key] = seq

    def forget(self, sender: str, session: str) -> None:
        self.last_seq.pop((sender, session), None)
