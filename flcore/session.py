"""The client session: the client side of the protocol as a sans-I/O state machine (pure Python).

The same file runs in the native client (driven by asyncio over gRPC/WebSocket) and in the browser (driven by
JS over a WebSocket). Feed it every frame from the coordinator with :meth:`ClientSession.receive`; it returns
actions: :class:`SendFrame` (send these bytes), :class:`Train` (train on local data starting from these
parameters, then call :meth:`ClientSession.training_done` with the delta), :class:`RoundDone`,
:class:`Failed` (the coordinator or the protocol reported an error; the session stays usable).

Handshake: ``hello`` (our public key, signed: proof of possession) → ``challenge`` (signed by the coordinator
key we trust) → ``auth`` (the challenge, signed) → ``welcome``; then ``ready``. Every later message carries the
session (the challenge) and a strictly increasing sequence number, both signed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import mle
from flcore.modelspec import ModelSpec
from flcore.protocol import COORDINATOR_ID, PROTOCOL_VERSIONS, Envelope, ProtocolError, ReplayGuard
from flcore.wire import as_u8, client_id_for, decode, encode, tensor_bytes
from flcrypto import Crypto, default_crypto


@dataclass(frozen=True)
class SendFrame:
    data: bytes


@dataclass(frozen=True)
class Train:
    round: int
    spec: ModelSpec
    parameters: dict[str, Any]  # name → flat list/array (spec order and shapes)
    hyperparameters: dict[str, Any]


@dataclass(frozen=True)
class RoundDone:
    round: int
    status: str


@dataclass(frozen=True)
class Stopped:
    """The coordinator ended the federation; the driver should disconnect and not reconnect."""

    reason: str


@dataclass(frozen=True)
class Failed:
    code: str
    message: str


Action = SendFrame | Train | RoundDone | Stopped | Failed


@dataclass
class ClientSession:
    identity_seed: bytes
    coordinator_key: bytes | None  # None: trust on first use (pin the key the first challenge carries)
    kind: str = "native"
    backend: Any = None
    crypto: Crypto = field(default_factory=default_crypto)
    stream: Any = None  # privacy.randomness.RandomStream for rounding and DP noise
    max_message_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        from privacy.backends import default_backend
        from privacy.randomness import RandomStream

        self.backend = self.backend or default_backend()
        self.stream = self.stream or RandomStream.from_os(self.crypto)
        self.public_key = self.crypto.ed25519_public_key(self.identity_seed)
        self.client_id = client_id_for(self.public_key)
        self.session = ""
        self.seq = 0
        self.state = "new"
        self.guard = ReplayGuard()
        self._task: dict[str, Any] | None = None
        self._secagg: Any = None
        self.last_input: Any = None  # the field vector this client fed into the last secure aggregation

    # ── sending ──────────────────────────────────────────────────────────────────────────────────────
    def _send(self, msg_type: str, body: dict[str, Any], round_: int = -1, tensors: dict[str, Any] | None = None
              ) -> SendFrame:
        env = Envelope(msg_type, self.client_id, COORDINATOR_ID, self.session, self.seq, round_, body)
        self.seq += 1
        return SendFrame(encode(env, self.identity_seed, tensors))

    def start(self) -> list[Action]:
        """Begin (or, after a reconnect, restart) the handshake."""
        self.session, self.seq, self.state = "", 0, "hello"
        self._task, self._secagg = None, None
        return [self._send("hello", {"public_key": self.public_key.hex(), "kind": self.kind,
                                     "versions": list(PROTOCOL_VERSIONS)})]

    # ── receiving ────────────────────────────────────────────────────────────────────────────────────
    def receive(self, data: bytes) -> list[Action]:
        try:
            env, f = decode(data, self._coordinator_key_for, self.max_message_bytes)
            # an error about a first frame the coordinator could not attribute (malformed, bad signature) is
            # addressed to "": bound to no client, so accepted only during our handshake and never as fatal
            anonymous = env.type == "error" and env.recipient == "" and self.state == "hello"
            if env.recipient != self.client_id and not anonymous:
                raise ProtocolError("misrouted", f"message for {env.recipient}, we are {self.client_id}")
            if anonymous:
                self.guard.check(env.sender, env.session, env.seq)
                return [Failed("rejected", f"{env.body.get('code')}: {env.body.get('message')}")]
            self.guard.check(env.sender, env.session, env.seq)
            return self._dispatch(env, f)
        except ProtocolError as exc:
            if self.state == "hello" and exc.code in ("bad_signature", "unknown_sender") and \
                    self.coordinator_key is not None:
                # the handshake's first answer is not from the coordinator we trust: fatal, not retryable
                return [Failed("handshake", f"the coordinator is not the one whose key is pinned ({exc.message})")]
            return [Failed(exc.code, exc.message)]

    def _coordinator_key_for(self, env: Envelope) -> bytes | None:
        if env.sender != COORDINATOR_ID:
            return None
        if self.coordinator_key is None and env.type == "challenge" and self.state == "hello":
            try:  # trust on first use: the challenge must at least be signed by the key it announces
                key = bytes.fromhex(str(env.body["coordinator_key"]))
            except ValueError:
                return None
            return key if len(key) == 32 else None
        return self.coordinator_key

    def _dispatch(self, env: Envelope, f: mle.MleFile) -> list[Action]:
        t, b = env.type, env.body
        if t == "error":
            return [Failed(str(b["code"]), str(b["message"]))]
        if t == "challenge":
            if self.state != "hello":
                raise ProtocolError("unexpected", "challenge outside the handshake")
            announced = bytes.fromhex(b["coordinator_key"])
            if self.coordinator_key is None:
                self.coordinator_key = announced  # pinned from now on; the driver persists it
            if b["version"] not in PROTOCOL_VERSIONS or announced != self.coordinator_key:
                raise ProtocolError("handshake", "coordinator offered an unsupported version or another key")
            self.session, self.state = b["challenge"], "auth"
            return [self._send("auth", {"challenge": b["challenge"]})]
        if env.session != self.session:
            raise ProtocolError("replay", "message from another session")
        if t == "welcome":
            if self.state != "auth" or b["client_id"] != self.client_id:
                raise ProtocolError("handshake", "unexpected welcome")
            self.state = "ready"
            return [self._send("ready", {})]
        if t == "task":
            return self._on_task(env, f)
        if t == "secagg":
            return self._on_secagg(env, f)
        if t == "stop":
            self._task, self._secagg, self.state = None, None, "stopped"
            return [Stopped(str(b["reason"]))]
        if t == "round_end":
            self._task, self._secagg = None, None
            return [RoundDone(b["round"], b["status"]), self._send("ready", {})]
        raise ProtocolError("unexpected", f"unexpected {t} message")

    def _on_task(self, env: Envelope, f: mle.MleFile) -> list[Action]:
        config = env.body["config"]
        blob = tensor_bytes(f, "global_model")
        try:
            model = mle.loads(blob, trusted_keys=[self.coordinator_key], require_signature=True)
        except (mle.FormatError, mle.SignatureError) as exc:
            raise ProtocolError("bad_model", f"global model rejected: {exc}") from None
        if hashlib.sha256(model.body).hexdigest() != config.get("model_sha256"):
            raise ProtocolError("bad_model", "global model does not match the task's SHA-256")
        try:
            spec = ModelSpec.from_dict(model.metadata["model"])
        except (KeyError, ValueError) as exc:
            raise ProtocolError("bad_model", f"model spec: {exc}") from None
        params = {name: model[name] for name, _ in spec.parameter_shapes()}
        self._task = dict(config)
        self._task["_round"] = env.round
        self.state = "training"
        return [Train(env.round, spec, params, dict(config.get("train", {})))]

    def training_done(self, delta: Any, loss: float | None = None, num_samples: int | None = None) -> list[Action]:
        """The local update (flat, spec order). Prepares it (clip, quantize, DP noise) and starts SecAgg+.

        ``loss``/``num_samples``, when given, are reported to the coordinator first (informational metrics).
        A non-finite update is refused here (:class:`Failed`); the client then simply does not take part in
        this round's secure aggregation, which the coordinator handles as a dropout."""
        from privacy.client_pipeline import DistributedDPConfig, prepare_update
        from privacy.secagg import GroupConfig, SecAggClient

        if self._task is None or self.state != "training":
            return [Failed("unexpected", "no task in progress")]
        c = self._task
        dp = DistributedDPConfig(**c["dp"])
        try:
            field_vec, _norm = prepare_update(delta, dp, self.stream, self.backend)
        except ValueError as exc:
            self.state = "ready"
            return [Failed("bad_update", f"local update refused: {exc}")]
        self.last_input = field_vec
        out: list[Action] = []
        if loss is not None and loss == loss and abs(loss) != float("inf"):
            out.append(self._send("metrics", {"round": c["_round"], "loss": float(loss),
                                              "num_samples": int(num_samples or 0)}, c["_round"]))
        gc = GroupConfig(c["_round"], c["group"], tuple(c["members"]),
                         {k: bytes.fromhex(v) for k, v in c["identity_keys"].items()}, dp.dimension,
                         dp.modulus_bits, bytes.fromhex(c["public_seed"]), c.get("degree"), c.get("threshold"))
        self._secagg = SecAggClient(gc, self.client_id, self.identity_seed, field_vec, self.backend, self.crypto)
        self.state = "secagg"
        return [*out, self._send("secagg", {"group": c["group"]}, c["_round"], {"secagg": as_u8(self._secagg.start())})]

    def _on_secagg(self, env: Envelope, f: mle.MleFile) -> list[Action]:
        from privacy.secagg import SecAggError

        if self._secagg is None or self._task is None:
            raise ProtocolError("unexpected", "secure-aggregation message outside a round")
        try:
            replies = self._secagg.handle(tensor_bytes(f, "secagg"))
        except SecAggError as exc:
            raise ProtocolError("secagg", str(exc)) from None
        return [self._send("secagg", {"group": self._task["group"]}, self._task["_round"], {"secagg": as_u8(r)})
                for r in replies]
