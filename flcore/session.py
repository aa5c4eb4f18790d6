"""The client session: the client side of the protocol as a sans-I/O state machine (pure Python).

The same file runs in the native client (driven by asyncio over gRPC/WebSocket) and in the browser (driven by
JS over a WebSocket). Feed it every frame from the coordinator with :meth:`ClientSession.receive`; it returns
actions: :class:`SendFrame` (send these bytes), :class:`Train` (train on local data starting from these
parameters, then call :meth:`ClientSession.training_done` with the delta), :class:`RoundDone`,
:class:`Failed` (the coordinator or the protocol reported an error; the session stays usable).

Handshake: ``hello`` (our public key, signed: proof of possession) → ``challenge`` (signed by the coordinator
key we trust) → ``auth`` (the challenge, signed) → ``welcome``; then ``ready`` (with a commitment to a fresh
secret). A round: ``select`` (the signed selection: members, keys, commitments) → ``reveal`` (our secret) →
``task`` (the reveals, our group, the model) → the client recomputes the seed and its group and checks every
parameter against its :class:`~flcore.policy.PrivacyPolicy` and its own privacy ledger (a refusal is a
``decline`` message and a :class:`Failed` action; nothing about the update is sent) → ``Train`` → SecAgg+ →
``round_end``. Every later message carries the session (the challenge) and a strictly increasing sequence
number, both signed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import mle
from flcore import assignment
from flcore.modelspec import ModelSpec
from flcore.policy import PolicyViolation, PrivacyPolicy
from flcore.protocol import COORDINATOR_ID, PROTOCOL_VERSIONS, Envelope, ProtocolError, ReplayGuard
from flcore.wire import as_u8, client_id_for, decode, encode, tensor_bytes
from flcrypto import Crypto, default_crypto
from privacy.dp.ledger import LedgerBudgetExceeded, LedgerEntry, PrivacyLedger
from privacy.rotation import rotation_seed


@dataclass(frozen=True)
class SendFrame:
    data: bytes


@dataclass(frozen=True)
class Train:
    round: int
    spec: ModelSpec
    parameters: dict[str, Any]  # name → flat list/array (spec order and shapes)
    hyperparameters: dict[str, Any]
    model_file: bytes = b""  # the global model as received: a .mle file signed by the (pinned) coordinator


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


@dataclass(frozen=True)
class LedgerUpdated:
    """The client's privacy ledger changed (an input of ours is about to enter a released sum): persist
    ``state`` (``PrivacyLedger.to_dict()``) *before* sending the frames that follow; ``summary`` is for display."""

    summary: dict[str, Any]
    state: dict[str, Any]


Action = SendFrame | Train | RoundDone | Stopped | Failed | LedgerUpdated


class _DeltaRefused(Exception):
    """A task's delta chain does not rebuild a model from the one we hold."""


def _hex(value: Any, length: int, what: str) -> bytes:
    try:
        out = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        out = None
    if out is None or len(out) != length:
        raise ProtocolError("bad_message", f"{what} must be {length} bytes of hex")
    return out


@dataclass
class ClientSession:
    identity_seed: bytes
    coordinator_key: bytes | None  # None: trust on first use (pin the key the first challenge carries)
    kind: str = "native"
    backend: Any = None
    crypto: Crypto = field(default_factory=default_crypto)
    stream: Any = None  # privacy.randomness.RandomStream for rounding and DP noise
    max_message_bytes: int = 64 * 1024 * 1024
    policy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    ledger_state: dict[str, Any] | None = None  # a persisted PrivacyLedger.to_dict(), or None: a new ledger
    secret_source: Any = None  # n → n secret bytes for the seed commitments (default: crypto.random_bytes)
    enrolment_token: str = ""  # sent in the hello when set (a coordinator with enrolment = "token" needs it once)
    # compact downlink (docs/protocol.md "Compact downlink"): the last verified global model (a .mle file signed by
    # the coordinator; a driver may pass one it kept) and whether the coordinator's tasks announce model deltas –
    # then each ready names the held model and a task may carry only the deltas from it
    model_file: bytes = b""
    delta_downlink: bool = False

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
        ledger = PrivacyLedger.from_dict(self.ledger_state) if self.ledger_state is not None else None
        self.ledger = PrivacyLedger(self.policy.epsilon_budget, self.policy.delta, list(ledger.entries) if ledger
                                    else [])
        self._secret: bytes | None = None  # the reveal secret behind our current commitment (single use)
        self._commitment = b""
        self._selection: dict[str, Any] | None = None
        self._entry: LedgerEntry | None = None  # this round's ledger entry, recorded when our masked input leaves
        self.aborted_reveals = 0  # consecutive attempts (any round number) we revealed for that did not complete
        self._held_sha = ""  # SHA-256 of model_file's body ("" until computed, or no usable model)
        self._hold(bytes(self.model_file))

    # ── sending ──────────────────────────────────────────────────────────────────────────────────────
    def _send(self, msg_type: str, body: dict[str, Any], round_: int = -1, tensors: dict[str, Any] | None = None
              ) -> SendFrame:
        env = Envelope(msg_type, self.client_id, COORDINATOR_ID, self.session, self.seq, round_, body)
        self.seq += 1
        return SendFrame(encode(env, self.identity_seed, tensors))

    def _ready(self) -> SendFrame:
        """``ready`` with a commitment to a fresh secret (revealed only for a selection that carries it)."""
        self._secret = (self.secret_source or self.crypto.random_bytes)(assignment.SECRET_BYTES)
        self._commitment = assignment.commitment(self._secret, self.client_id)
        self.state = "ready"
        body = {"commitment": self._commitment.hex()}
        if self.delta_downlink and self._held_sha:  # only to a coordinator that announced deltas (older ones refuse it)
            body["model_sha256"] = self._held_sha
        return self._send("ready", body)

    def _hold(self, model_file: bytes) -> None:
        """Keep ``model_file`` as the base of the next delta download (b"": forget it)."""
        self.model_file, self._held_sha = model_file, ""
        if model_file:
            try:
                self._held_sha = mle.loads(model_file).sha256()
            except mle.FormatError:
                self.model_file = b""

    def _task_model(self, f: mle.MleFile) -> tuple[bytes, bool]:
        """The task's global model file and whether it was rebuilt from deltas: the ``global_model`` tensor, or the
        held model with the chain ``model_delta.0`` … ``model_delta.{n-1}`` applied link by link (each delta signed
        by the coordinator, its base the model so far, the rebuilt model's SHA-256 the one it names). Raises
        :class:`_DeltaRefused` for a chain that does not rebuild a model; the caller still checks the result's
        signature and the task's ``model_sha256``."""
        from mle.delta import apply_model_delta

        names = [n for n in f.tensor_names if n.startswith("model_delta.")]
        if "global_model" in f:
            if names:
                raise ProtocolError("bad_message", "task carries both the full model and deltas")
            return tensor_bytes(f, "global_model"), False
        if names != [f"model_delta.{i}" for i in range(len(names))]:
            raise _DeltaRefused(f"the delta chain is not model_delta.0 … model_delta.{len(names) - 1} in order")
        if not self.model_file:
            raise _DeltaRefused("the task carries deltas but we hold no model to apply them to")
        model = self.model_file
        for name in names:
            try:
                delta = mle.loads(tensor_bytes(f, name), trusted_keys=[self.coordinator_key], require_signature=True)
                model = apply_model_delta(mle.loads(model), delta)
            except (mle.FormatError, mle.SignatureError, mle.DeltaBaseError, ValueError) as exc:
                raise _DeltaRefused(f"{name}: {exc}") from None
        return model, True

    def _decline(self, round_: int, code: str, message: str) -> list[Action]:
        """Refuse this round: tell the coordinator (nothing about the update is sent) and the driver."""
        self._task, self._secagg, self._entry, self.state = None, None, None, "declined"
        return [Failed(code, message), self._send("decline", {"round": round_, "code": code,
                                                              "message": message[:500]}, round_)]

    def start(self) -> list[Action]:
        """Begin (or, after a reconnect, restart) the handshake."""
        self.session, self.seq, self.state = "", 0, "hello"
        self._task, self._secagg, self._selection, self._entry = None, None, None, None
        body: dict[str, Any] = {"public_key": self.public_key.hex(), "kind": self.kind,
                                "versions": list(PROTOCOL_VERSIONS)}
        if self.enrolment_token:  # only when set: coordinators that predate the field accept the hello as before
            body["enrolment_token"] = self.enrolment_token
        return [self._send("hello", body)]

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
            return [self._ready()]
        if t == "select":
            return self._on_select(env)
        if t == "task":
            return self._on_task(env, f)
        if t == "secagg":
            return self._on_secagg(env, f)
        if t == "stop":
            self._task, self._secagg, self.state = None, None, "stopped"
            return [Stopped(str(b["reason"]))]
        if t == "round_end":
            sel = self._selection
            if b["status"] == "ok" and sel is not None and sel["round"] == b["round"]:
                self.aborted_reveals = 0
            self._task, self._secagg, self._selection, self._entry = None, None, None, None
            return [RoundDone(b["round"], b["status"]), self._ready()]
        raise ProtocolError("unexpected", f"unexpected {t} message")

    def _on_select(self, env: Envelope) -> list[Action]:
        """The signed selection of a round attempt: check it carries us and our commitment, then reveal."""
        b = env.body
        r = b["round"]
        if self.state != "ready" or self._secret is None:
            raise ProtocolError("unexpected", "selection while not ready (or our commitment is already opened)")
        if env.round != r or r < 0 or not 0 < len(b["attempt"]) <= 64:
            raise ProtocolError("bad_message", "select: inconsistent round or attempt")
        members = {str(k): _hex(v, 32, "identity key") for k, v in b["members"].items()}
        commits = {str(k): _hex(v, 32, "commitment") for k, v in b["commitments"].items()}
        if set(members) != set(commits) or members.get(self.client_id) != self.public_key:
            raise ProtocolError("bad_message", "select: we are not in the selection with our key")
        if commits[self.client_id] != self._commitment:
            raise ProtocolError("bad_message", "select: our commitment is not the one we sent")
        if any(client_id_for(k) != cid for cid, k in members.items()):
            raise ProtocolError("bad_message", "select: an identity key does not match its client id")
        s = b["group_size"]
        if s < 1:
            raise ProtocolError("bad_message", "select: group size must be >= 1")
        self._selection = {"round": r, "attempt": b["attempt"], "group_size": s, "members": members,
                           "commitments": commits,
                           "hash": assignment.selection_hash(r, b["attempt"], s, members, commits)}
        secret, self._secret = self._secret, None  # single use, whatever happens next
        smallest = min(s, len(members))
        if smallest < self.policy.min_group_size:
            return self._decline(r, "policy_group_size", f"groups of {smallest} < the client's minimum "
                                 f"{self.policy.min_group_size}")
        if self.aborted_reveals >= self.policy.max_aborted_reveals:
            return self._decline(r, "policy_aborts", f"{self.aborted_reveals} consecutive attempts were aborted "
                                 "after our reveal (a coordinator grinding the group seed?)")
        if any(e.round == r and e.attempt == b["attempt"] for e in self.ledger.entries):
            return self._decline(r, "bad_task", f"round {r} attempt {b['attempt']} was already released once: a "
                                 "replayed attempt would release our update twice under one ledger entry")
        self.aborted_reveals += 1
        self.state = "selected"
        return [self._send("reveal", {"round": r, "attempt": b["attempt"], "secret": secret.hex()}, r)]

    def _on_task(self, env: Envelope, f: mle.MleFile) -> list[Action]:
        from flcore.task_admission import admit_group_task
        from privacy.secagg import GroupConfig, partition

        config = env.body["config"]
        sel = self._selection
        if self.state != "selected" or sel is None or env.round != sel["round"]:
            raise ProtocolError("unexpected", "task without a matching selection")
        r = env.round
        rebuilt = False
        try:
            blob, rebuilt = self._task_model(f)
            model = mle.loads(blob, trusted_keys=[self.coordinator_key], require_signature=True)
            if hashlib.sha256(model.body).hexdigest() != config.get("model_sha256"):
                raise ProtocolError("bad_model", "global model does not match the task's SHA-256")
            spec = ModelSpec.from_dict(model.metadata["model"])
        except _DeltaRefused as exc:
            rebuilt, reason = True, str(exc)
        except (mle.FormatError, mle.SignatureError) as exc:
            reason = f"global model rejected: {exc}"
        except ProtocolError as exc:
            if exc.code != "bad_model":
                raise
            reason = exc.message
        except (KeyError, ValueError) as exc:
            reason = f"model spec: {exc}"
        else:
            reason = ""
        if reason:
            if not rebuilt:  # the full model itself is bad: refused locally, as always
                raise ProtocolError("bad_model", reason)
            # deltas that do not rebuild the signed model: never trained on; we drop our model (the next ready
            # names none, so the next task brings the full model) and decline, so our group does not wait for us
            self._hold(b"")
            return self._decline(r, "bad_model", f"model deltas refused: {reason}")
        self._hold(blob)  # verified: the base of the next delta download
        self.delta_downlink = bool(config.get("downlink"))
        try:
            if config.get("attempt") != sel["attempt"]:
                raise ProtocolError("bad_task", "task for another attempt than the selection")
            reveals = {str(k): _hex(v, 32, "reveal") for k, v in dict(config["reveals"]).items()}
            try:
                assignment.check_reveals(sel["commitments"], reveals)
            except ValueError as exc:
                raise ProtocolError("bad_task", str(exc)) from None
            seed = assignment.round_seed(sel["hash"], reveals)
            if config.get("public_seed") != seed.hex():
                raise ProtocolError("bad_task", "the public seed is not the one the reveals determine")
            groups = partition(sorted(sel["members"]), sel["group_size"], seed)
            g = config["group"]
            if not (isinstance(g, int) and 0 <= g < len(groups)) or list(config["members"]) != groups[g] \
                    or self.client_id not in groups[g]:
                raise ProtocolError("bad_task", "the group is not the one the public seed assigns us")
            keys = {m: _hex(config["identity_keys"].get(m), 32, "identity key") for m in groups[g]}
            if any(keys[m] != sel["members"][m] for m in groups[g]) or len(config["identity_keys"]) != len(keys):
                raise ProtocolError("bad_task", "group identity keys differ from the signed selection")
            n, degree, threshold = len(groups[g]), config["degree"], config["threshold"]
            if not (isinstance(degree, int) and isinstance(threshold, int)):
                raise ProtocolError("bad_task", "degree and threshold must be integers")
            binding = assignment.group_binding(seed, sel["hash"], g, groups[g], keys, degree, threshold,
                                               config["dp"])
            dp, entry = admit_group_task(self.policy, self.ledger, round_=r, attempt=sel["attempt"], n=n,
                                         degree=degree, threshold=threshold, dp_params=config["dp"],
                                         dimension=spec.num_parameters(), binding=binding)
            if dp.rotation_seed and dp.rotation_seed != rotation_seed(seed, self.crypto).hex():
                raise ProtocolError("bad_task", "the rotation seed is not the one the public seed determines")
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            return self._decline(r, "bad_task", f"malformed task: {exc!r}")
        except ProtocolError as exc:
            return self._decline(r, exc.code, exc.message)
        except PolicyViolation as exc:
            return self._decline(r, exc.code, exc.message)
        except LedgerBudgetExceeded as exc:
            return self._decline(r, "budget", str(exc))
        params = {name: model[name] for name, _ in spec.parameter_shapes()}
        self._task = dict(config)
        self._task["_round"] = r
        self._task["_group_config"] = GroupConfig(r, g, tuple(groups[g]), keys, dp.field_length, dp.modulus_bits, seed,
                                                  degree, threshold, binding)
        self._task["_dp"] = dp
        self._entry = entry
        self.state = "training"
        return [Train(r, spec, params, dict(config.get("train", {})), blob)]

    def training_done(self, delta: Any, loss: float | None = None, num_samples: int | None = None) -> list[Action]:
        """The local update (flat, spec order). Prepares it (clip, quantize, DP noise) and starts SecAgg+.

        ``loss``/``num_samples`` are accepted for the drivers' own display and never leave the client (they
        would bypass DP). A non-finite update is refused here (:class:`Failed`); the client then simply does
        not take part in this round's secure aggregation, which the coordinator handles as a dropout."""
        from privacy.secagg import SecAggClient

        if self._task is None or self.state != "training":
            return [Failed("unexpected", "no task in progress")]
        c = self._task
        try:
            field_vec = self._prepare(delta, c["_dp"])
        except ValueError as exc:
            self.state = "ready"
            return [Failed("bad_update", f"local update refused: {exc}")]
        self.last_input = field_vec
        self._secagg = SecAggClient(c["_group_config"], self.client_id, self.identity_seed, field_vec, self.backend,
                                    self.crypto)
        self.state = "secagg"
        return [self._send("secagg", {"group": c["group"]}, c["_round"], {"secagg": as_u8(self._secagg.start())})]

    def _prepare(self, delta: Any, dp: Any) -> Any:
        """The field vector of this client's input: :func:`privacy.client_pipeline.prepare_update` (clip,
        quantize, noise share, and the clipped indicator when the task asks for adaptive clipping)."""
        from privacy.client_pipeline import prepare_update

        return prepare_update(delta, dp, self.stream, self.backend)[0]

    def _on_secagg(self, env: Envelope, f: mle.MleFile) -> list[Action]:
        from privacy.secagg import SecAggError

        if self._secagg is None or self._task is None:
            raise ProtocolError("unexpected", "secure-aggregation message outside a round")
        before = self._secagg.phase
        try:
            replies = self._secagg.handle(tensor_bytes(f, "secagg"))
        except SecAggError as exc:
            raise ProtocolError("secagg", str(exc)) from None
        out: list[Action] = []
        if before != "masked" and self._secagg.phase == "masked" and self._entry is not None:
            # our masked input is about to leave: from here a sum containing it can be released
            self.ledger.record(self._entry)
            self._entry = None
            out.append(LedgerUpdated(self.ledger.summary(), self.ledger.to_dict()))
        return out + [self._send("secagg", {"group": self._task["group"]}, self._task["_round"],
                                 {"secagg": as_u8(r)}) for r in replies]
