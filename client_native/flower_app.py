"""Unmodified Flower clients joining ``fl-coordinator serve``: a Flower ``NumPyClient``, ``client_fn(context)`` or
``ClientApp`` does the local training; :class:`client_native.client.NativeClient` and the shared
:class:`flcore.session.ClientSession` do everything else – identity, coordinator-key pinning, the client's privacy
policy and ledger, clipping, quantisation, the DP noise share and SecAgg+. The Flower code never sees the
coordinator, its key or any other client: it gets parameters and a config, and returns parameters.

    fl-client --flower-app my_app.client_app:app --server HOST:PORT --node-config "partition-id=0 num-partitions=10"

    summary = run_flower_client("my_app.client_app:app", "HOST:PORT", state_dir="~/.fl-client",
                                node_config={"partition-id": 0, "num-partitions": 10})

**What can be loaded** (``"package.module:attr"`` or the object itself):

- a ``client_fn(context) -> Client | NumPyClient`` (also Flower's deprecated ``client_fn(cid: str)``, which Flower
  itself adapts: ``cid`` = ``node_config["partition-id"]``, else the node id);
- a ``NumPyClient`` or ``Client`` instance (used for every round), or a ``NumPyClient`` subclass that takes no
  constructor arguments (instantiated once, when loaded);
- a ``ClientApp(client_fn=...)`` (the legacy form): called as a SuperNode calls it, with a ``train`` message
  holding the legacy ``FitIns`` record, so the app's mods run too;
- a Message-API ``ClientApp`` with a default ``@app.train()`` function: called with a ``train`` message whose
  content is ``{"arrays": ArrayRecord, "config": ConfigRecord}`` (the keys Flower's strategies use). The reply must
  carry exactly one ``ArrayRecord``; its ``MetricRecord`` may hold ``"num-examples"`` and a loss.

Anything else (a ``ClientApp`` with only ``@app.train("custom")`` actions, ``@app.evaluate()``/``@app.query()``
only, other objects) is refused with :class:`FlowerLoadError`. No SuperLink or SuperNode runs: the messages are
built and handled in this process.

**Parameter layout.** The model is the coordinator's (``serve --model``; the Flower client's model must be the
same network). The Flower client gets **one float32 ndarray per parameter tensor, in the model spec's order, with
the spec's shapes** (:meth:`flcore.modelspec.ModelSpec.parameter_shapes`). The spec follows torch's
``nn.Sequential``: names ``"<layer index>.weight"``/``"<layer index>.bias"`` (ReLU, MaxPool2d and Flatten count as
layers but hold no parameters), Linear weights ``(out, in)`` (``y = x @ W.T + b``), Conv2d weights
``(out, in, kh, kw)``. For ``mlp:64-32-10``: ``0.weight (32, 64)``, ``0.bias (32,)``, ``2.weight (10, 32)``,
``2.bias (10,)``; for ``cnn:digits``: ``0.weight (8, 1, 3, 3)``, ``0.bias``, ``3.weight (16, 8, 3, 3)``,
``3.bias``, ``7.weight (10, 64)``, ``7.bias``. This is exactly the order and the shapes of
``nn.Sequential(...).state_dict()`` for the same layers (no buffers: none of the spec's layers has one), so
Flower's usual ``[v.cpu().numpy() for v in net.state_dict().values()]`` / ``load_state_dict(zip(keys, ...))``
round-trips; a custom ``nn.Module`` matches when it registers its layers in forward order. In the Message API the
``ArrayRecord`` sent is keyed by those names (``arrays.to_torch_state_dict()`` loads into the ``nn.Sequential``);
a reply keyed by the same names is read by name, any other keys are read by position (spec order), as
``ArrayRecord.to_numpy_ndarrays()`` would.

**The fit config** is ``{"epochs", "lr", "batch_size", "server_round"}`` (the coordinator's ``--local-epochs``,
``--lr``, ``--batch-size`` and the round number); the Message API's ``ConfigRecord`` also carries
``"server-round"`` (the key Flower's strategies send). ``Context.node_config``/``run_config`` are whatever the
caller passes (``--node-config``/``--run-config``); ``Context.state`` lives as long as the client process;
``Context.node_id`` is derived from this client's id.

**What comes back.** The update is ``returned − sent``, flattened in spec order (float32), then clipped, quantised,
noised and securely aggregated by the session like any native client's. The returned list is checked: the count
and every shape must match, the values must be numeric – otherwise :class:`FlowerFitError` (the client stops:
a client whose model is not the coordinator's cannot take part). An exception in the Flower code is a
:class:`FlowerFitError` too. Non-finite returned values are refused for that round only (a ``bad_update``
failure, nothing is sent; the coordinator sees a dropout), like a non-finite torch update. ``num_examples`` and
the metrics (a ``"loss"``/``"train_loss"`` entry is logged as the round's loss) stay on the client: the
coordinator aggregates clipped updates unweighted and there is no metrics message (docs/architecture.md).
``evaluate`` is never called (the coordinator evaluates centrally with ``--evaluation``).

flwr is imported lazily: this module imports without it; loading a Flower client without it is a
:class:`FlowerLoadError`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import re
import sys
import time
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from client_native.client import ClientError, ClientOptions, ClientSummary, NativeClient
from flcore.modelspec import ModelSpec
from flcore.policy import PrivacyPolicy
from flcore.session import Failed, Train

log = logging.getLogger("fl-client")

LOSS_KEYS = ("loss", "train_loss", "train-loss")
FLOWER_EXTRA = "pip install 'fl-coordinator[flower]'"


class FlowerAppError(ClientError):
    """A Flower client that cannot take part (fatal for the client)."""


class FlowerLoadError(FlowerAppError):
    """``package.module:attr`` cannot be imported, or is not a Flower client this module can drive."""


class FlowerFitError(FlowerAppError):
    """The Flower client's fit raised, or returned something that does not map onto the coordinator's model."""


class NonFiniteUpdate(ValueError):
    """The returned parameters hold NaN or Inf: refused for this round (not fatal)."""


@dataclass(frozen=True)
class FitOutcome:
    """What a Flower fit returned: parameters (not yet checked against the spec), sample count, metrics."""

    parameters: Sequence[Any]
    num_examples: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)


class FlowerTrainer(Protocol):
    """One way of calling a Flower client's fit."""

    form: str

    def fit(self, names: list[str], parameters: list[np.ndarray], config: dict[str, Any], context: Any
            ) -> FitOutcome: ...


# ── the layout: spec ↔ ndarray list ─────────────────────────────────────────────────────────────────────
def spec_to_ndarrays(spec: ModelSpec, parameters: Mapping[str, Any]) -> list[np.ndarray]:
    """One float32 ndarray per parameter tensor, in spec order, with the spec's shapes (fresh copies)."""
    out = []
    for name, shape in spec.parameter_shapes():
        if name not in parameters:
            raise ValueError(f"the model has no parameter {name!r}")
        value = np.array(parameters[name], dtype=np.float32)
        if value.size != math.prod(shape):
            raise ValueError(f"parameter {name!r}: {value.size} values for shape {shape}")
        out.append(value.reshape(shape))
    return out


def ndarrays_to_flat(spec: ModelSpec, arrays: Sequence[Any]) -> np.ndarray:
    """The returned ndarray list as one float64 vector in spec order, after checking the count, every shape and
    the dtype (:class:`FlowerFitError`) and then finiteness (:class:`NonFiniteUpdate`)."""
    expected = spec.parameter_shapes()
    if isinstance(arrays, (str, bytes)) or not isinstance(arrays, Sequence):
        raise FlowerFitError(f"fit returned {type(arrays).__name__} as parameters, expected a list of ndarrays")
    if len(arrays) != len(expected):
        raise FlowerFitError(
            f"fit returned {len(arrays)} arrays, the coordinator's model has {len(expected)} parameter tensors "
            f"({', '.join(f'{n} {s}' for n, s in expected)}): is the Flower client's model the coordinator's "
            "--model, one ndarray per tensor in this order?")
    flat = []
    for i, ((name, shape), value) in enumerate(zip(expected, arrays, strict=True)):
        try:
            a = np.asarray(value)
        except Exception as exc:  # e.g. a torch tensor that requires grad
            raise FlowerFitError(f"fit returned array {i} ({name}) as {type(value).__name__}, which is not "
                                 f"convertible to an ndarray: {exc}") from exc
        if a.dtype.kind not in "fiu":
            raise FlowerFitError(f"fit returned array {i} ({name}) of dtype {a.dtype}, expected numbers")
        if a.shape != shape:
            raise FlowerFitError(f"fit returned array {i} ({name}) with shape {a.shape}, expected {shape} "
                                 "(Linear weights are (out, in), Conv2d weights (out, in, kh, kw), as in torch)")
        flat.append(a.astype(np.float64).reshape(-1))
    for i, ((name, _), a) in enumerate(zip(expected, flat, strict=True)):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise NonFiniteUpdate(f"the Flower client's fit returned {bad} non-finite value(s) in array {i} "
                                  f"({name})")
    return np.concatenate(flat) if flat else np.zeros(0)


def update_from_fit(spec: ModelSpec, sent: Sequence[np.ndarray], returned: Sequence[Any]) -> np.ndarray:
    """The local update: returned − sent, flat in spec order, float32 (checked by :func:`ndarrays_to_flat`)."""
    after = ndarrays_to_flat(spec, returned)
    before = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in sent]) if sent else np.zeros(0)
    return (after - before).astype(np.float32)


def fit_config(task: Train) -> dict[str, Any]:
    """The config a Flower fit gets: the coordinator's training hyperparameters and the round number."""
    hp = task.hyperparameters
    return {"epochs": int(hp["epochs"]), "lr": float(hp["lr"]), "batch_size": int(hp["batch_size"]),
            "server_round": int(task.round)}


def loss_from_metrics(metrics: Mapping[str, Any]) -> float | None:
    """The first finite number under :data:`LOSS_KEYS`, else ``None`` (the session accepts no loss)."""
    for key in LOSS_KEYS:
        v = metrics.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
    return None


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and value >= 0 else None


# ── config strings (--node-config / --run-config) ────────────────────────────────────────────────────────
_PAIR = re.compile(r"(\S+?)=('[^']*'|\"[^\"]*\"|\S+)")  # the pattern of flwr's parse_config_args


def parse_config_string(text: str, what: str = "--node-config") -> dict[str, bool | int | float | str]:
    """``"partition-id=0 num-partitions=10 name='a b'"`` → a flat dict, TOML values (bool, int, float, string),
    nested keys joined with ``.`` – the syntax of ``flower-supernode --node-config``."""
    pairs = _PAIR.findall(text)
    leftover = _PAIR.sub("", text).strip()
    if leftover:
        raise ValueError(f"{what} {text!r}: expected space-separated key=value pairs, cannot read {leftover!r}")
    try:
        doc = tomllib.loads("\n".join(f"{k} = {v}" for k, v in pairs))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{what} {text!r}: values must be TOML bools, ints, floats or quoted strings "
                         f"({exc})") from None
    return _user_config(_flatten(doc), what)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, Mapping) else {key: v})
    return out


def _user_config(d: Mapping[str, Any] | None, what: str) -> dict[str, bool | int | float | str]:
    """Flower's ``UserConfig``: string keys, bool/int/float/str values."""
    out = dict(d or {})
    for k, v in out.items():
        if not isinstance(k, str) or not isinstance(v, (bool, int, float, str)):
            raise ValueError(f"{what}: {k!r} = {v!r}: keys must be strings and values bool, int, float or str")
    return out


# ── loading ──────────────────────────────────────────────────────────────────────────────────────────
def _import_flwr() -> Any:
    try:
        import flwr.app
        import flwr.client
        import flwr.clientapp
    except ImportError as exc:
        raise FlowerLoadError(f"Flower clients need flwr ({FLOWER_EXTRA}): {exc}") from None
    return flwr


def load_flower_app(ref: str, app_dir: str | Path | None = None) -> Any:
    """Import ``"package.module:attr"`` (``attr`` may be dotted) with ``app_dir`` first on ``sys.path``."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name.strip() or not attr.strip() or not all(p.isidentifier()
                                                                          for p in attr.split(".")):
        raise FlowerLoadError(f"Flower app {ref!r}: expected 'package.module:attribute', e.g. "
                              "'my_app.client_app:app' or 'my_app.client:client_fn'")
    if app_dir is not None:
        path = str(Path(app_dir).expanduser().resolve())
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise FlowerLoadError(f"Flower app {ref!r}: cannot import {module_name!r} ({exc}; is its directory "
                              "--app-dir or on PYTHONPATH?)") from exc
    except Exception as exc:
        raise FlowerLoadError(f"Flower app {ref!r}: importing {module_name!r} failed: "
                              f"{type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FlowerLoadError(f"Flower app {ref!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def as_trainer(obj: Any) -> FlowerTrainer:
    """The :class:`FlowerTrainer` for a loaded object (see the module docstring for the supported forms)."""
    flwr = _import_flwr()
    ClientApp, Client, NumPyClient = flwr.clientapp.ClientApp, flwr.client.Client, flwr.client.NumPyClient
    if isinstance(obj, ClientApp):
        if getattr(obj, "_call", None) is not None:
            return LegacyAppTrainer(obj, "ClientApp(client_fn=...)")
        if "train.default" in (getattr(obj, "_registered_funcs", None) or {}):
            return MessageAppTrainer(obj)
        raise FlowerLoadError("this ClientApp has neither a client_fn nor a default @app.train() function "
                              "(custom actions such as @app.train('name'), @app.evaluate() and @app.query() are "
                              "never called: the coordinator only asks for training)")
    if isinstance(obj, NumPyClient | Client):
        client = obj.to_client() if isinstance(obj, NumPyClient) else obj
        return LegacyAppTrainer(ClientApp(client_fn=lambda context: client), f"{type(obj).__name__} instance")
    if isinstance(obj, type):
        if not issubclass(obj, NumPyClient):
            raise FlowerLoadError(f"{obj.__name__} is a class but not a NumPyClient: export a client_fn(context), "
                                  "a NumPyClient, a Client or a ClientApp")
        try:
            client = obj().to_client()
        except TypeError as exc:
            raise FlowerLoadError(f"{obj.__name__}() needs arguments ({exc}): export a client_fn(context) that "
                                  "creates it instead") from exc
        return LegacyAppTrainer(ClientApp(client_fn=lambda context: client), f"{obj.__name__} class")
    if callable(obj):
        try:
            app = ClientApp(client_fn=obj)
        except (TypeError, ValueError) as exc:
            raise FlowerLoadError(f"{getattr(obj, '__name__', obj)!r} is not a client_fn(context): {exc}") from exc
        return LegacyAppTrainer(app, "client_fn")
    raise FlowerLoadError(f"a {type(obj).__name__} is not a Flower client: expected a client_fn(context), a "
                          "NumPyClient (instance or class), a Client or a ClientApp")


def make_context(node_id: int, node_config: Mapping[str, Any] | None = None,
                 run_config: Mapping[str, Any] | None = None) -> Any:
    """The Flower ``Context`` this client's fits see (run id 0, an empty ``state`` kept across rounds)."""
    flwr = _import_flwr()
    return flwr.app.Context(run_id=0, node_id=node_id, node_config=_user_config(node_config, "node_config"),
                            state=flwr.app.RecordDict(), run_config=_user_config(run_config, "run_config"))


def _train_message(content: Any, context: Any, round_: int) -> Any:
    """A ``train`` message as a SuperNode would hand it to the ClientApp (built here, no SuperLink)."""
    flwr = _import_flwr()
    metadata = flwr.app.Metadata(run_id=context.run_id, message_id=uuid.uuid4().hex, src_node_id=1,
                                 dst_node_id=context.node_id, reply_to_message_id="", group_id=str(round_),
                                 created_at=time.time(), ttl=flwr.app.DEFAULT_TTL, message_type="train")
    return flwr.app.Message(content=content, metadata=metadata)


def _call_app(app: Any, content: Any, context: Any, round_: int) -> Any:
    """Run the ClientApp on a train message; its exceptions and error replies are :class:`FlowerFitError`."""
    flwr = _import_flwr()
    try:
        reply = app(_train_message(content, context, round_), context)
    except Exception as exc:
        raise FlowerFitError(f"the Flower client's fit raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(reply, flwr.app.Message):
        raise FlowerFitError(f"the ClientApp returned a {type(reply).__name__}, not a Message")
    if reply.has_error():
        raise FlowerFitError(f"the ClientApp replied with error {reply.error.code}: {reply.error.reason}")
    return reply


@dataclass
class LegacyAppTrainer:
    """A ``ClientApp(client_fn=...)`` (also wrapping client_fns and client objects): the legacy ``FitIns`` message,
    so Flower's own dispatch calls ``client_fn(context).fit(parameters, config)``."""

    app: Any
    form: str

    def fit(self, names: list[str], parameters: list[np.ndarray], config: dict[str, Any], context: Any
            ) -> FitOutcome:
        from flwr.common import Code, FitIns, ndarrays_to_parameters, parameters_to_ndarrays
        from flwr.compat.common.recorddict_compat import fitins_to_recorddict, recorddict_to_fitres

        content = fitins_to_recorddict(FitIns(ndarrays_to_parameters(parameters), dict(config)), keep_input=True)
        reply = _call_app(self.app, content, context, int(config["server_round"]))
        try:
            res = recorddict_to_fitres(reply.content, keep_input=False)
        except Exception as exc:
            raise FlowerFitError(f"the ClientApp's reply is not a FitRes: {type(exc).__name__}: {exc}") from exc
        if res.status.code != Code.OK:
            raise FlowerFitError(f"fit returned status {res.status.code.name}: {res.status.message}")
        return FitOutcome(parameters_to_ndarrays(res.parameters), _count(res.num_examples), dict(res.metrics))


@dataclass
class MessageAppTrainer:
    """A Message-API ``ClientApp`` (``@app.train()``): ``{"arrays": ArrayRecord, "config": ConfigRecord}`` in,
    one ``ArrayRecord`` (+ ``MetricRecord``) out."""

    app: Any
    form: str = "ClientApp with @app.train()"

    def fit(self, names: list[str], parameters: list[np.ndarray], config: dict[str, Any], context: Any
            ) -> FitOutcome:
        from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

        arrays = ArrayRecord({n: Array(a) for n, a in zip(names, parameters, strict=True)})
        cfg = ConfigRecord({**config, "server-round": int(config["server_round"])})
        reply = _call_app(self.app, RecordDict({"arrays": arrays, "config": cfg}), context,
                          int(config["server_round"]))
        records = dict(reply.content.array_records)
        if len(records) != 1:
            raise FlowerFitError(f"the train reply must carry exactly one ArrayRecord, it carries {len(records)} "
                                 f"({sorted(records)})")
        (record,) = records.values()
        keys = list(record.keys())
        try:
            if sorted(keys) == sorted(names):  # by name (any order)
                returned = [record[n].numpy() for n in names]
            else:  # by position, as ArrayRecord.to_numpy_ndarrays() reads it
                returned = [record[k].numpy() for k in keys]
        except Exception as exc:
            raise FlowerFitError(f"the reply's ArrayRecord cannot be read: {type(exc).__name__}: {exc}") from exc
        metrics: dict[str, Any] = {}
        for m in reply.content.metric_records.values():
            metrics.update(m)
        return FitOutcome(returned, _count(metrics.get("num-examples")), metrics)


# ── the client ───────────────────────────────────────────────────────────────────────────────────────
class FlowerAppClient(NativeClient):
    """A :class:`NativeClient` whose local training is a Flower client's fit (see the module docstring)."""

    def __init__(self, app: Any, options: ClientOptions, *, node_config: Mapping[str, Any] | None = None,
                 run_config: Mapping[str, Any] | None = None, app_dir: str | Path | None = None) -> None:
        if options.dp_sgd is not None:
            raise FlowerLoadError("DP-SGD belongs to the built-in torch trainer; a Flower client trains itself "
                                  "(use Opacus inside its fit)")
        obj = load_flower_app(app, app_dir) if isinstance(app, str) else app
        self.flower = as_trainer(obj)
        super().__init__(None, options)
        self.context = make_context(int(self.client_id[:16], 16), node_config, run_config)
        self._num_examples: int | None = None
        log.info("%s: Flower %s", self.client_id[:8], self.flower.form)

    def local_sample_count(self) -> int | None:
        return self._num_examples

    async def _train(self, task: Train) -> list[Any]:
        try:
            return await super()._train(task)
        except NonFiniteUpdate as exc:
            # the session refuses a non-finite update (nothing about it is sent; the round sees a dropout) and
            # is ready for the next round; report why instead of its generic message
            self.session.training_done(np.full(task.spec.num_parameters(), np.nan, np.float32))
            return [Failed("bad_update", f"round {task.round}: {exc}; not taking part in this round")]

    def _train_sync(self, task: Train) -> tuple[np.ndarray, float | None]:
        """Parameters → the Flower fit → the update (returned − sent) and the reported loss."""
        sent = spec_to_ndarrays(task.spec, task.parameters)
        names = [n for n, _ in task.spec.parameter_shapes()]
        outcome = self.flower.fit(names, [a.copy() for a in sent], fit_config(task), self.context)
        delta = update_from_fit(task.spec, sent, outcome.parameters)
        self._num_examples = outcome.num_examples
        loss = loss_from_metrics(outcome.metrics)
        log.info("%s: round %d: Flower fit on %s examples, loss %s", self.client_id[:8], task.round,
                 outcome.num_examples, "?" if loss is None else f"{loss:.4g}")
        return delta, loss  # type: ignore[return-value]  # None: no loss reported (the session accepts it)


def _options(server: str, transport: str, state_dir: str | Path | None, policy: PrivacyPolicy | None,
             options: Mapping[str, Any]) -> ClientOptions:
    return ClientOptions(server, transport, state_dir, policy=policy or PrivacyPolicy(), **options)


async def run_flower_client_async(app: Any, server: str, *, transport: str = "grpc",
                                  state_dir: str | Path | None = None, policy: PrivacyPolicy | None = None,
                                  max_rounds: int | None = None, node_config: Mapping[str, Any] | None = None,
                                  run_config: Mapping[str, Any] | None = None, app_dir: str | Path | None = None,
                                  **options: Any) -> ClientSummary:
    """Join ``server`` with a Flower client (``"module:attr"`` or the object) until the coordinator stops (or
    ``max_rounds`` rounds are done). ``options``: further :class:`ClientOptions` fields (``coordinator_key``,
    ``threads``, ``seed``, ``enrolment_token``, ``ca_file``, …)."""
    client = FlowerAppClient(app, _options(server, transport, state_dir, policy, options),
                             node_config=node_config, run_config=run_config, app_dir=app_dir)
    return await client.run(max_rounds)


def run_flower_client(app: Any, server: str, *, transport: str = "grpc", state_dir: str | Path | None = None,
                      policy: PrivacyPolicy | None = None, max_rounds: int | None = None,
                      node_config: Mapping[str, Any] | None = None, run_config: Mapping[str, Any] | None = None,
                      app_dir: str | Path | None = None, **options: Any) -> ClientSummary:
    """:func:`run_flower_client_async` in a new event loop."""
    return asyncio.run(run_flower_client_async(app, server, transport=transport, state_dir=state_dir,
                                               policy=policy, max_rounds=max_rounds, node_config=node_config,
                                               run_config=run_config, app_dir=app_dir, **options))
