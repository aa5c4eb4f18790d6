"""The browser client's Python side as one object for the JS SDK: the protocol session (``flcore.session`` – the
same file the native client runs, with the same privacy policy and privacy ledger), the local data, training on
the kernel, SecAgg+/DP through the WasmBackend and libsodium. Sans-I/O: JS owns the WebSocket, the timers and the
storage (IndexedDB).

JS drives it like this (``rt`` from ``loadRuntime()``)::

    const client = rt.pyodide.pyimport("client_pyodide.client").BrowserClient.callKwargs(
        {identity_seed: seedBytes /* 32 bytes kept in IndexedDB, or omit for a fresh one */,
         coordinator_key: keyBytes /* or null: trust on first use */,
         policy: JSON.stringify({min_group_size: 5, /* … */}) /* or omit: PrivacyPolicy() defaults */,
         ledger: JSON.stringify(storedLedgerState) /* or omit: a new, empty ledger */});
    client.set_data(xFloat32Array, yInt32Array);
    for (const f of client.start().toJs()) ws.send(f);                    // hello
    ws.onmessage = (e) => queue(async () => {                            // one frame at a time, in order
      for (const f of client.receive(new Uint8Array(e.data)).toJs()) ws.send(f);
      for (const ev of client.take_events().toJs({dict_converter: Object.fromEntries})) {
        if (ev.type === "ledger") {
          await idbPut(key, {...record, ledger: JSON.parse(ev.state_json)});   // durable first …
          for (const f of client.ledger_persisted().toJs()) ws.send(f);        // … then the masked input
        }
        emit(ev);
      }
    });

**The ledger contract.** The session records a participation in the client's privacy ledger the moment its
masked input is about to leave (:class:`flcore.session.LedgerUpdated`), and the ledger must be durable before
that input is sent: a page reloaded after sending but before storing would forget a release and could overspend
its ε budget. So :meth:`receive` returns only the frames *before* a ``ledger`` event; the frames after it (the
masked input) are withheld inside this object until the driver has stored the event's state and calls
:meth:`ledger_persisted`, which returns them (one call per ``ledger`` event, in order). Nothing withheld can be
sent by mistake, because JS never sees it before that call. Frames produced by a :meth:`receive` while frames
are still withheld queue behind them (a driver that handles one frame at a time never does this). :meth:`start`
(a new connection) discards withheld frames: they belonged to the lost connection, whose round is lost anyway;
the ledger entry stays (a conservative over-count, never an under-count). The event carries the state twice:
``state`` (a dict, for Python drivers) and ``state_json`` (the same as JSON text – Pyodide turns ``None`` into
JS ``undefined``, which would drop the "no budget" ``null``; JS should store ``JSON.parse(state_json)``).

**Declines.** A task the policy or the ledger's budget refuses is answered with a ``decline`` frame (returned
by :meth:`receive` like any other frame) and reported as a ``declined`` event ``{round, code, message}``
(codes ``policy_*``, ``budget``, ``bad_task``, … as :mod:`flcore.session` gives them) *instead of* ``failed``:
a decline is the policy working, not an error. The ``round_done`` that ends that round says ``declined: true``.

``receive`` runs local training synchronously when the coordinator hands out a task (seconds for small models;
run the runtime in a Web Worker to keep a page responsive). The local loss is only reported in the page's own
``trained`` event: the protocol no longer sends it anywhere.
"""

from __future__ import annotations

import array
import json
from typing import Any

from client_pyodide import runtime


def _absent(v: Any) -> bool:
    """``None``, or JS ``null``/``undefined`` as Pyodide passes them (``JsNull`` / ``None``)."""
    return v is None or type(v).__name__ == "JsNull"


def _bytes(data: Any) -> bytes:
    if hasattr(data, "to_bytes") and not isinstance(data, int):  # a JS Uint8Array / ArrayBuffer view
        return bytes(data.to_bytes())
    return bytes(data)


def _mapping(value: Any, what: str) -> dict[str, Any] | None:
    """A dict from a dict, JSON text or a JS object (``None``/null/undefined: ``None``). JSON text is what the SDK
    passes: it keeps ``null`` (Pyodide would turn a JS object's ``null`` into ``JsNull``)."""
    if _absent(value):
        return None
    if hasattr(value, "to_py") and not isinstance(value, (str, bytes, dict)):  # a JS object
        value = value.to_py()
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"invalid {what}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"invalid {what}: expected an object, got {type(value).__name__}")
    return value


class BrowserClient:
    """One federated client in this page. ``identity_seed``: the 32-byte Ed25519 seed (the SDK persists it);
    ``coordinator_key``: the coordinator's public key to trust (``None``: pin the first one seen); ``policy``: the
    client's :class:`flcore.policy.PrivacyPolicy` as a dict (``PrivacyPolicy.from_dict`` keys; ``None``: the safe
    defaults); ``ledger``: a stored ledger state (``PrivacyLedger.to_dict()``, as the ``ledger`` events carry
    it; ``None``: a new ledger). An invalid policy or ledger raises ``ValueError`` ("invalid privacy policy: …",
    "invalid privacy ledger: …") – a stored ledger is never silently reset."""

    def __init__(self, identity_seed: Any = None, coordinator_key: Any = None, max_batch: int = 64,
                 policy: Any = None, ledger: Any = None, enrolment_token: Any = None) -> None:
        from flcore.policy import PrivacyPolicy
        from flcore.session import ClientSession

        policy_dict = _mapping(policy, "privacy policy")
        try:
            pol = PrivacyPolicy() if policy_dict is None else PrivacyPolicy.from_dict(policy_dict)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"invalid privacy policy: {exc}") from None
        ledger_state = _mapping(ledger, "privacy ledger")
        crypto = runtime.crypto()
        self.identity_seed = crypto.random_bytes(32) if _absent(identity_seed) else _bytes(identity_seed)
        key = None if _absent(coordinator_key) else _bytes(coordinator_key)
        try:
            self.session = ClientSession(self.identity_seed, key, kind="browser", backend=runtime.backend(),
                                         crypto=crypto, policy=pol, ledger_state=ledger_state,
                                         enrolment_token="" if _absent(enrolment_token) else str(enrolment_token))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"invalid privacy ledger: {exc}") from None
        self.max_batch = int(max_batch)
        self.x: array.array | None = None
        self.y: array.array | None = None
        self.model: Any = None
        self.global_parameters: dict[str, Any] | None = None
        self.model_round: int | None = None  # the rounds completed when the global model was released
        self._model_file = b""  # that model as received: a .mle file signed by the coordinator
        self._events: list[dict[str, Any]] = []
        self._last_round, self._last_bits = -1, 0
        # frames withheld behind ledger events not yet confirmed by ledger_persisted(): one list per event
        self._held: list[list[bytes]] = []
        self._declined: set[int] = set()  # rounds whose task this client declined (until their round_done)

    @property
    def client_id(self) -> str:
        return self.session.client_id

    @property
    def public_key(self) -> bytes:
        return self.session.public_key

    @property
    def public_key_hex(self) -> str:
        return self.session.public_key.hex()

    def set_data(self, x: Any, y: Any) -> None:
        """Local training data: examples as float32 (flat row-major, a Float32Array or bytes), labels as ints."""
        from client_pyodide.engine import _floats

        self.x = _floats(x)
        if hasattr(y, "to_py") and hasattr(y, "BYTES_PER_ELEMENT"):
            y = y.to_py()
        self.y = array.array("i", (int(v) for v in y))
        if not self.y:
            raise ValueError("no training examples")

    # ── privacy ─────────────────────────────────────────────────────────────────────────────────────
    def policy(self) -> dict[str, Any]:
        """The privacy policy this client enforces (``PrivacyPolicy.to_dict()``: ``epsilon_budget`` None = no
        budget)."""
        return self.session.policy.to_dict()

    @staticmethod
    def default_policy() -> dict[str, Any]:
        """The defaults of :class:`flcore.policy.PrivacyPolicy` (what a client enforces unless told otherwise)."""
        from flcore.policy import PrivacyPolicy

        return PrivacyPolicy().to_dict()

    def ledger_summary(self) -> dict[str, Any]:
        """The privacy ledger at a glance (``PrivacyLedger.summary()``: budget, delta, epsilon – if secure
        aggregation holds –, epsilon_worst_case – if it is broken –, participations, last_round, private)."""
        return self.session.ledger.summary()

    def ledger_state(self) -> dict[str, Any]:
        """The whole ledger (``PrivacyLedger.to_dict()``), what a driver persists."""
        return self.session.ledger.to_dict()

    def ledger_state_json(self) -> str:
        return json.dumps(self.session.ledger.to_dict(), allow_nan=False)

    def ledger_persisted(self) -> list[bytes]:
        """Call once the state of the oldest unconfirmed ``ledger`` event is stored durably: returns the frames
        withheld behind it (the masked input), to send now and in order."""
        return self._held.pop(0) if self._held else []

    @property
    def withheld(self) -> int:
        """How many ``ledger`` events still wait for :meth:`ledger_persisted`."""
        return len(self._held)

    # ── protocol ────────────────────────────────────────────────────────────────────────────────────
    def start(self) -> list[bytes]:
        """The first frames to send after the connection opens (frames still withheld for the previous
        connection are discarded: its round is lost)."""
        self._held = []
        return self._run(self.session.start())

    def receive(self, frame: Any) -> list[bytes]:
        """Feed one frame from the coordinator; returns the frames to send back now, in order – those before a
        ``ledger`` event (see the module docstring: the rest comes from :meth:`ledger_persisted`). The
        ``welcome`` that completes the handshake adds a ``connected`` event (with the pinned coordinator key)."""
        before = self.session.state
        frames = self._run(self.session.receive(_bytes(frame)), declining=before != "declined")
        if before == "auth" and self.session.state == "ready":
            self._events.append({"type": "connected", "client_id": self.client_id,
                                 "coordinator_key": self.coordinator_key})
        return frames

    def leave(self, reason: str = "left") -> list[bytes]:
        """The ``bye`` frame to send before closing (none if the handshake is not complete)."""
        if self.session.state in ("new", "hello", "auth", "stopped"):
            return []
        return [self.session._send("bye", {"reason": str(reason)[:200]}).data]

    @property
    def coordinator_key(self) -> str | None:
        """The coordinator's public key this session trusts (hex; pinned on first use), or ``None`` yet."""
        key = self.session.coordinator_key
        return None if key is None else key.hex()

    @property
    def state(self) -> str:
        return self.session.state

    def last_input(self) -> dict[str, Any] | None:
        """Debugging/tests: the field vector this client fed into its last secure aggregation (after clipping,
        quantization and its DP noise share – what the masks hide), as ``{"round", "modulus_bits", "values"}``."""
        values = self.session.last_input
        if values is None:
            return None
        return {"round": self._last_round, "modulus_bits": self._last_bits, "values": [int(v) for v in values]}

    def take_events(self) -> list[dict[str, Any]]:
        """Progress events since the last call, in order: ``{"type": "connected" | "train" | "trained" |
        "ledger" | "declined" | "round_done" | "stopped" | "failed", …}``. ``ledger``: ``{round, summary, state,
        state_json}`` – store the state, then call :meth:`ledger_persisted`; ``declined``: ``{round, code,
        message}``; ``round_done``: ``{round, status, declined}``."""
        out, self._events = self._events, []
        return out

    @staticmethod
    def describe_frame(frame: Any) -> dict[str, Any]:
        """Debugging/tests: what a frame (either direction) is, without verifying it: ``{"type", "round",
        "sender", "phase"}`` (``phase``: the SecAgg+ phase of a ``secagg`` message, else ``None``)."""
        import mle
        from flcore.protocol import envelope_from_metadata
        from flcore.wire import tensor_bytes

        f = mle.loads(_bytes(frame))
        env = envelope_from_metadata(f.metadata)
        phase = None
        if env.type == "secagg":
            from privacy.secagg.messages import Message

            phase = Message.from_bytes(tensor_bytes(f, "secagg")).phase
        return {"type": env.type, "round": env.round, "sender": env.sender, "phase": phase}

    def _run(self, actions: list[Any], declining: bool = False) -> list[bytes]:
        """Execute the session's actions in order (a ``Train`` action's follow-ups run in its place); returns the
        frames that may be sent now – everything after a ``ledger`` event is withheld."""
        from flcore.session import Failed, LedgerUpdated, RoundDone, SendFrame, Stopped, Train

        now: list[bytes] = []
        todo = list(actions)
        while todo:
            a = todo.pop(0)
            if isinstance(a, SendFrame):
                (self._held[-1] if self._held else now).append(a.data)
            elif isinstance(a, Train):
                todo[:0] = self._train(a)
            elif isinstance(a, LedgerUpdated):
                entries = a.state.get("entries") or [{}]
                self._events.append({"type": "ledger", "round": entries[-1].get("round"), "summary": a.summary,
                                     "state": a.state, "state_json": json.dumps(a.state, allow_nan=False)})
                self._held.append([])  # what follows waits for ledger_persisted()
            elif isinstance(a, RoundDone):
                declined = a.round in self._declined
                self._declined.discard(a.round)
                self._events.append({"type": "round_done", "round": a.round, "status": a.status,
                                     "declined": declined})
            elif isinstance(a, Stopped):
                self._events.append({"type": "stopped", "reason": a.reason})
            elif isinstance(a, Failed):
                if declining and self.session.state == "declined":  # the session answered with a decline frame
                    sel = self.session._selection
                    r = int(sel["round"]) if sel else -1
                    self._declined.add(r)
                    self._events.append({"type": "declined", "round": r, "code": a.code, "message": a.message})
                else:
                    self._events.append({"type": "failed", "code": a.code, "message": a.message})
        return now

    def _train(self, task: Any) -> list[Any]:
        """Train on the kernel; returns the session's actions for the update (the first SecAgg+ message)."""
        if self.x is None or self.y is None:
            self._events.append({"type": "failed", "code": "no_data", "message": "set_data() was not called"})
            return []
        hp = task.hyperparameters
        self._events.append({"type": "train", "round": task.round, "examples": len(self.y)})
        self.model = runtime.model(task.spec.to_json(), self.max_batch)
        self.model.set_parameters(task.parameters)
        self.global_parameters = task.parameters
        if task.model_file:  # the driver keeps it (IndexedDB): inference after the federation ends and on reload
            self.model_round = task.round - 1
            self._model_file = bytes(task.model_file)
            self._events.append({"type": "model", "round": self.model_round})  # events stay JSON: model_file()
        delta, loss = self.model.train(self.x, self.y, epochs=int(hp.get("epochs", 1)),
                                       batch_size=min(int(hp.get("batch_size", 32)), self.max_batch),
                                       lr=float(hp.get("lr", 0.1)), momentum=float(hp.get("momentum", 0.0)),
                                       seed=task.round)
        self._events.append({"type": "trained", "round": task.round, "loss": loss})
        self._last_round = task.round
        self._last_bits = int((self.session._task or {}).get("dp", {}).get("modulus_bits", 0))
        # the loss stays in this page (its own "trained" event): the session never sends it
        return self.session.training_done(delta, loss, len(self.y))

    # ── inference ───────────────────────────────────────────────────────────────────────────────────
    def model_file(self) -> bytes:
        """The global model of the last task as received (signed by the coordinator), b"" before any: what a
        driver keeps to restore it with :meth:`load_model`."""
        return self._model_file

    def load_model(self, model_file: Any) -> int:
        """Restore a global model kept by the driver (a ``model`` event's file): accepted only with a valid
        signature of the pinned coordinator key – a page cannot be made to classify with a model the coordinator
        did not release. Returns the rounds completed when it was released. Raises ValueError otherwise."""
        import mle
        from flcore.modelspec import ModelSpec

        key = self.session.coordinator_key
        if key is None:
            raise ValueError("no pinned coordinator key: a stored model cannot be verified")
        try:
            f = mle.loads(_bytes(model_file), trusted_keys=[key], require_signature=True)
            spec = ModelSpec.from_dict(f.metadata["model"])
            params = {name: f[name] for name, _ in spec.parameter_shapes()}
            rnd = int(f.metadata.get("round", 0))
        except (mle.FormatError, mle.SignatureError, KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"stored global model rejected: {exc}") from None
        self.model = runtime.model(spec.to_json(), self.max_batch)
        self.model.set_parameters(params)
        self.global_parameters, self.model_round, self._model_file = params, rnd, _bytes(model_file)
        return rnd

    def predict(self, x: Any) -> list[int]:
        """Class predictions of the latest global model received (``x`` as for :meth:`set_data`)."""
        if self.model is None or self.global_parameters is None:
            raise RuntimeError("no global model yet")
        self.model.set_parameters(self.global_parameters)
        return self.model.predict(x)
