"""The browser client's Python side as one object for the JS SDK: the protocol session (``flcore.session`` – the
same file the native client runs), the local data, training on the kernel, SecAgg+/DP through the WasmBackend and
libsodium. Sans-I/O: JS owns the WebSocket and the timers.

JS drives it like this (``rt`` from ``loadRuntime()``)::

    const client = rt.pyodide.pyimport("client_pyodide.client").BrowserClient.callKwargs(
        {identity_seed: seedBytes /* 32 bytes kept in IndexedDB, or omit for a fresh one */,
         coordinator_key: keyBytes /* or null: trust on first use */});
    client.set_data(xFloat32Array, yInt32Array);
    for (const f of client.start().toJs()) ws.send(f);                    // hello
    ws.onmessage = (e) => {
      for (const f of client.receive(new Uint8Array(e.data)).toJs()) ws.send(f);
      for (const ev of client.take_events().toJs({dict_converter: Object.fromEntries})) emit(ev);
    };

``receive`` runs local training synchronously when the coordinator hands out a task (seconds for small models;
run the runtime in a Web Worker to keep a page responsive).
"""

from __future__ import annotations

import array
from typing import Any

from client_pyodide import runtime


def _absent(v: Any) -> bool:
    """``None``, or JS ``null``/``undefined`` as Pyodide passes them (``JsNull`` / ``None``)."""
    return v is None or type(v).__name__ == "JsNull"


def _bytes(data: Any) -> bytes:
    if hasattr(data, "to_bytes") and not isinstance(data, int):  # a JS Uint8Array / ArrayBuffer view
        return bytes(data.to_bytes())
    return bytes(data)


class BrowserClient:
    """One federated client in this page. ``identity_seed``: the 32-byte Ed25519 seed (the SDK persists it);
    ``coordinator_key``: the coordinator's public key to trust (``None``: pin the first one seen)."""

    def __init__(self, identity_seed: Any = None, coordinator_key: Any = None, max_batch: int = 64) -> None:
        from flcore.session import ClientSession

        crypto = runtime.crypto()
        self.identity_seed = crypto.random_bytes(32) if _absent(identity_seed) else _bytes(identity_seed)
        key = None if _absent(coordinator_key) else _bytes(coordinator_key)
        self.session = ClientSession(self.identity_seed, key, kind="browser", backend=runtime.backend(),
                                     crypto=crypto)
        self.max_batch = int(max_batch)
        self.x: array.array | None = None
        self.y: array.array | None = None
        self.model: Any = None
        self.global_parameters: dict[str, Any] | None = None
        self._events: list[dict[str, Any]] = []
        self._last_round, self._last_bits = -1, 0

    @property
    def client_id(self) -> str:
        return self.session.client_id

    @property
    def public_key(self) -> bytes:
        return self.session.public_key

    def set_data(self, x: Any, y: Any) -> None:
        """Local training data: examples as float32 (flat row-major, a Float32Array or bytes), labels as ints."""
        from client_pyodide.engine import _floats

        self.x = _floats(x)
        if hasattr(y, "to_py") and hasattr(y, "BYTES_PER_ELEMENT"):
            y = y.to_py()
        self.y = array.array("i", (int(v) for v in y))
        if not self.y:
            raise ValueError("no training examples")

    # ── protocol ────────────────────────────────────────────────────────────────────────────────────
    def start(self) -> list[bytes]:
        """The first frames to send after the connection opens."""
        return self._run(self.session.start())

    def receive(self, frame: Any) -> list[bytes]:
        """Feed one frame from the coordinator; returns the frames to send back (in order). The ``welcome``
        that completes the handshake adds a ``connected`` event (with the pinned coordinator key)."""
        before = self.session.state
        frames = self._run(self.session.receive(_bytes(frame)))
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
        """Progress events since the last call: ``{"type": "connected" | "train" | "trained" | "round_done" |
        "stopped" | "failed", …}``."""
        out, self._events = self._events, []
        return out

    def _run(self, actions: list[Any]) -> list[bytes]:
        from flcore.session import Failed, RoundDone, SendFrame, Stopped, Train

        frames: list[bytes] = []
        for a in actions:
            if isinstance(a, SendFrame):
                frames.append(a.data)
            elif isinstance(a, Train):
                frames.extend(self._train(a))
            elif isinstance(a, RoundDone):
                self._events.append({"type": "round_done", "round": a.round, "status": a.status})
            elif isinstance(a, Stopped):
                self._events.append({"type": "stopped", "reason": a.reason})
            elif isinstance(a, Failed):
                self._events.append({"type": "failed", "code": a.code, "message": a.message})
        return frames

    def _train(self, task: Any) -> list[bytes]:
        if self.x is None or self.y is None:
            self._events.append({"type": "failed", "code": "no_data", "message": "set_data() was not called"})
            return []
        hp = task.hyperparameters
        self._events.append({"type": "train", "round": task.round, "examples": len(self.y)})
        self.model = runtime.model(task.spec.to_json(), self.max_batch)
        self.model.set_parameters(task.parameters)
        self.global_parameters = task.parameters
        delta, loss = self.model.train(self.x, self.y, epochs=int(hp.get("epochs", 1)),
                                       batch_size=min(int(hp.get("batch_size", 32)), self.max_batch),
                                       lr=float(hp.get("lr", 0.1)), momentum=float(hp.get("momentum", 0.0)),
                                       seed=task.round)
        self._events.append({"type": "trained", "round": task.round, "loss": loss})
        self._last_round = task.round
        self._last_bits = int((self.session._task or {}).get("dp", {}).get("modulus_bits", 0))
        return self._run(self.session.training_done(delta, loss, len(self.y)))

    # ── inference ───────────────────────────────────────────────────────────────────────────────────
    def predict(self, x: Any) -> list[int]:
        """Class predictions of the latest global model received (``x`` as for :meth:`set_data`)."""
        if self.model is None or self.global_parameters is None:
            raise RuntimeError("no global model yet")
        self.model.set_parameters(self.global_parameters)
        return self.model.predict(x)
