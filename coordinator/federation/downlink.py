"""The compact downlink (issue 16 item 2): the global model sent as a chain of signed int8 deltas from the model a
client already holds, the whole signed model otherwise (docs/protocol.md "Compact downlink").

Lossy int8 deltas can only reproduce a model that lies on their grid, so with ``downlink = "int8-delta"`` the global
model itself moves on the int8 grid of each round's step (:meth:`Downlink.snap`): after the server optimizer, the
step s = (new − old) + e is quantized per tensor (weights per output channel, ``mle.quantize_int8``), the new global
model is old + dequantized step computed exactly as ``mle.delta.apply_delta`` computes it on every client (float64
addition rounded to float32: the engine builds the delta file and applies it with that very function), and the
rounding residual e is carried into the next round's step – server-side error feedback (Seide, Fu, Droppo, Li &
Yu, Interspeech 2014 "1-bit SGD"; Karimireddy, Rebjock, Stich & Jaggi, ICML'19 "Error Feedback Fixes SignSGD"), so
what quantization leaves out of one round's step is sent in a later one instead of lost. The residual is a
function of released (post-DP) aggregates only: no privacy cost; it is part of the engine state
(:meth:`Downlink.state`) so that a restarted coordinator produces the same models.

Once the round's model file is signed (:meth:`Downlink.commit`), the step becomes a signed model delta
(``mle.delta.model_delta_metadata``: base and produced model SHA-256, the metadata merge patch, the produced
model's signature trailer). The last deltas are kept – as many as are together smaller than the full model, at
most :data:`MAX_CHAIN` –, and :meth:`Downlink.payload` gives a client that announced the model it holds the
chain from it, or nothing when it already holds the current model, or the full model.

Sans-I/O like the engine: no clock, no file.
"""

from __future__ import annotations

import base64
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import mle
from flcore.modelspec import ModelSpec
from flcore.wire import as_u8
from mle.delta import model_delta_metadata

DOWNLINK_MODES = ("int8-delta", "full")
MAX_CHAIN = 16  # deltas kept at most (fewer when together they reach the full model's size)
DELTA_TENSOR = "model_delta."  # task tensors model_delta.0 … model_delta.{n-1}: the chain, oldest first
FULL_TENSOR = "global_model"


@dataclass(frozen=True)
class ModelDelta:
    base: str  # SHA-256 of the model it applies to
    target: str  # SHA-256 of the model it produces
    data: bytes  # the signed .mle model delta


@dataclass
class Downlink:
    mode: str
    spec: ModelSpec
    residual: np.ndarray | None = None  # float32, the error-feedback residual (int8-delta only)
    deltas: list[ModelDelta] = field(default_factory=list)  # oldest first, each one's target the next one's base
    sent: dict[str, int] = field(default_factory=lambda: {"full": 0, "delta": 0, "held": 0, "bytes": 0})
    _pending: tuple[mle.MleFile, dict[str, Any]] | None = None

    @classmethod
    def from_state(cls, mode: str, spec: ModelSpec, state: dict[str, Any] | None) -> Downlink:
        if mode not in DOWNLINK_MODES:
            raise ValueError(f"downlink must be one of {DOWNLINK_MODES}, got {mode!r}")
        d = spec.num_parameters()
        residual = None
        if mode == "int8-delta":
            residual = np.zeros(d, np.float32)
            blob = (state or {}).get("residual")
            if blob:
                residual = np.frombuffer(base64.b64decode(blob), "<f4").astype(np.float32)
                if residual.size != d:
                    raise ValueError(f"downlink residual has {residual.size} values, the model {d}")
        return cls(mode, spec, residual)

    def state(self) -> dict[str, Any]:
        """What a restarted coordinator needs: the residual (little-endian float32, base64). The kept deltas are
        not persisted: after a restart every client gets the full model once."""
        if self.residual is None:
            return {}
        return {"residual": base64.b64encode(np.ascontiguousarray(self.residual, "<f4").tobytes()).decode("ascii")}

    # ── the model on the int8 grid ───────────────────────────────────────────────────────────────────────────
    def snap(self, base_model: bytes, params: np.ndarray) -> np.ndarray:
        """The next global model: ``params`` (the optimizer's output) itself with ``full``; with ``int8-delta``
        the current model ``base_model`` plus the int8-quantized step towards ``params`` + the residual, exactly as
        clients rebuild it, and the new residual. A non-finite step (a diverged model) is taken unquantized, the
        residual dropped and no delta made (clients get the full model)."""
        self._pending = None
        if self.mode != "int8-delta":
            return params
        assert self.residual is not None
        base = mle.loads(base_model)
        names = self.spec.parameter_shapes()
        old = np.concatenate([np.asarray(base[n], np.float64).ravel() for n, _ in names])
        target = params.astype(np.float64) + self.residual.astype(np.float64)
        step = target - old
        if not np.all(np.isfinite(step)):
            self.residual = np.zeros_like(self.residual)
            return params
        encoded: dict[str, Any] = {}
        pos = 0
        for name, shape in names:
            n = math.prod(shape)
            s = step[pos: pos + n].reshape(shape).astype(np.float32)
            pos += n
            # weights per output channel (axis 0 of Linear (out, in) and Conv2d (out, in, kh, kw)): a channel's
            # scale follows its own range; biases per tensor
            encoded[name] = mle.quantize_int8(s, axis=0 if len(shape) >= 2 and shape[0] > 1 else None)
        # the new model is what apply_delta makes of the delta file's bytes: the clients' computation, by
        # construction (the signed file, made in commit(), carries the same tensors)
        applied = mle.apply_delta(base, mle.loads(mle.dumps(encoded, mle.delta_metadata(base))))
        new = np.concatenate([np.asarray(applied[n], np.float32).ravel() for n, _ in names])
        self.residual = (target - new.astype(np.float64)).astype(np.float32)
        self._pending = (base, encoded)
        return new

    def commit(self, model_bytes: bytes, signing_key: bytes) -> None:
        """The round's model file is signed: turn the pending step into a signed model delta and keep it."""
        pending, self._pending = self._pending, None
        if pending is None:
            self.deltas.clear()  # no delta reaches the new model: no chain can end there
            return
        base, encoded = pending
        target = mle.loads(model_bytes)
        try:
            meta = model_delta_metadata(base, target)
        except ValueError:  # metadata the merge patch cannot express: full models this round
            self.deltas.clear()
            return
        self.deltas.append(ModelDelta(base.sha256(), target.sha256(), mle.dumps(encoded, meta, signing_key=signing_key)))
        kept, size = [], 0
        for d in reversed(self.deltas):  # the newest first: a longer chain than the full model is never sent
            size += len(d.data)
            if size >= len(model_bytes) or len(kept) >= MAX_CHAIN:
                break
            kept.append(d)
        self.deltas = kept[::-1]

    # ── what a client is sent ────────────────────────────────────────────────────────────────────────────────
    def payload(self, held: str, model_bytes: bytes, model_sha: str) -> dict[str, Any]:
        """The task's model tensors for a client that holds the model ``held`` ("" = none announced): nothing if
        it holds the current model, the chain of deltas from it if that is kept and smaller than the full model,
        else the full model (``global_model``)."""
        if self.mode == "int8-delta" and held:
            if held == model_sha:
                self.sent["held"] += 1
                return {}
            chain = self.chain(held, model_sha)
            if chain is not None and sum(len(d.data) for d in chain) < len(model_bytes):
                self.sent["delta"] += 1
                self.sent["bytes"] += sum(len(d.data) for d in chain)
                return {f"{DELTA_TENSOR}{i}": as_u8(d.data) for i, d in enumerate(chain)}
        self.sent["full"] += 1
        self.sent["bytes"] += len(model_bytes)
        return {FULL_TENSOR: as_u8(model_bytes)}

    def chain(self, held: str, model_sha: str) -> list[ModelDelta] | None:
        """The kept deltas from ``held`` to ``model_sha`` (None: no such chain)."""
        for i, d in enumerate(self.deltas):
            if d.base == held:
                chain = self.deltas[i:]
                linked = all(a.target == b.base for a, b in itertools.pairwise(chain))
                return chain if linked and chain[-1].target == model_sha else None
        return None
