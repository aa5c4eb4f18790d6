"""Unmodified Flower clients (client_native/flower_app.py) joining `fl-coordinator serve`.

Unit tests (no server): the parameter layout (spec ↔ ndarray list, torch's ``nn.Sequential`` order), the fit
config, the update (returned − sent), clear errors for results that do not map and for bad ``module:attr``
references, the CLI's flag rules, and importing client_native without flwr.

End to end: ten Flower clients (tests/fixtures/flower_digits_app.py, torch, each on its digits shard) – two
``fl-client --flower-app`` processes (gRPC, WebSocket), eight in this process through
:func:`run_flower_client_async` (the Message API and a client_fn) – complete three rounds of SecAgg+ in two groups
of five with distributed DP against a real `fl-coordinator serve`.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e_support import REPO, Coordinator, _env, free_port

pytest.importorskip("flwr")

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from client_native import cli
from client_native.client import ClientOptions
from client_native.flower_app import (
    FlowerAppClient,
    FlowerFitError,
    FlowerLoadError,
    NonFiniteUpdate,
    as_trainer,
    load_flower_app,
    parse_config_string,
    spec_to_ndarrays,
    update_from_fit,
)
from flcore.modelspec import CNN_DIGITS, mlp
from flcore.policy import PrivacyPolicy
from flcore.session import Failed, Train

FIXTURES = REPO / "tests" / "fixtures"
SPEC = mlp([64, 32, 10])
HP = {"epochs": 2, "lr": 0.05, "batch_size": 16}


def _params(spec: Any = SPEC) -> dict[str, np.ndarray]:
    """Distinct values per position (position k holds k/1000), flat as the session hands them over."""
    out, pos = {}, 0
    for name, shape in spec.parameter_shapes():
        n = math.prod(shape)
        out[name] = (np.arange(pos, pos + n, dtype=np.float32) / 1000).ravel()
        pos += n
    return out


def _task(round_: int = 7, spec: Any = SPEC) -> Train:
    return Train(round_, spec, _params(spec), dict(HP))


def _client(app: Any, **kw: Any) -> FlowerAppClient:
    return FlowerAppClient(app, ClientOptions("127.0.0.1:1"), **kw)


class Offset(NumPyClient):
    """Returns every array + (i + 1)/4, records what it got."""

    def __init__(self) -> None:
        self.configs: list[dict[str, Any]] = []
        self.shapes: list[tuple[int, ...]] = []

    def fit(self, parameters, config):
        self.configs.append(dict(config))
        self.shapes = [p.shape for p in parameters]
        return [p + (i + 1) / 4 for i, p in enumerate(parameters)], 42, {"loss": 0.5}


def _expected_offsets(spec: Any = SPEC) -> np.ndarray:
    return np.concatenate([np.full(math.prod(s), (i + 1) / 4, np.float32)
                           for i, (_, s) in enumerate(spec.parameter_shapes())])


# ── the layout ────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("spec", [SPEC, CNN_DIGITS], ids=["mlp", "cnn"])
def test_layout_is_spec_order_and_shapes_like_a_torch_sequential_state_dict(spec: Any) -> None:
    from torch import nn

    from client_native.torch_model import build_module, flatten

    params = _params(spec)
    arrays = spec_to_ndarrays(spec, params)
    assert [a.shape for a in arrays] == [s for _, s in spec.parameter_shapes()]
    assert all(a.dtype == np.float32 for a in arrays)
    # the order and shapes of a torch nn.Sequential's state_dict, as Flower users write get_parameters
    state = build_module(spec).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == spec.parameter_shapes()
    if spec is SPEC:  # a user's own nn.Sequential, written by hand
        user = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).state_dict()
        assert [(k, tuple(v.shape)) for k, v in user.items()] == [("0.weight", (32, 64)), ("0.bias", (32,)),
                                                                  ("2.weight", (10, 32)), ("2.bias", (10,))]
        assert list(user) == [n for n, _ in spec.parameter_shapes()]
    # round trip: the list flattened back is the spec-order vector the session works on
    np.testing.assert_array_equal(np.concatenate([a.ravel() for a in arrays]), flatten(params, spec))
    assert not update_from_fit(spec, arrays, arrays).any()
    moved = update_from_fit(spec, arrays, [a + (i + 1) / 4 for i, a in enumerate(arrays)])
    assert moved.dtype == np.float32
    np.testing.assert_allclose(moved, _expected_offsets(spec), atol=1e-6)


def test_fit_gets_the_config_and_the_update_is_returned_minus_sent() -> None:
    flower = Offset()
    client = _client(flower)
    delta, loss = client._train_sync(_task(7))
    assert flower.configs == [{"epochs": 2, "lr": 0.05, "batch_size": 16, "server_round": 7}]
    assert flower.shapes == [(32, 64), (32,), (10, 32), (10,)]
    np.testing.assert_allclose(delta, _expected_offsets(), atol=1e-6)
    assert loss == 0.5 and client.local_sample_count() == 42


def test_message_api_app_gets_named_arrays_and_server_round() -> None:
    seen: dict[str, Any] = {}
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        arrays = msg.content["arrays"]
        seen.update(keys=list(arrays.keys()), config=dict(msg.content["config"]), node=dict(context.node_config))
        out = {k: arrays[k].numpy() + 1.0 for k in reversed(list(arrays.keys()))}  # by name, any order
        return Message(RecordDict({"arrays": _record(out),
                                   "metrics": MetricRecord({"train_loss": 0.25, "num-examples": 9})}), reply_to=msg)

    client = _client(app, node_config={"partition-id": 3})
    delta, loss = client._train_sync(_task(2))
    assert seen["keys"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert seen["config"] == {"epochs": 2, "lr": 0.05, "batch_size": 16, "server_round": 2, "server-round": 2}
    assert seen["node"] == {"partition-id": 3}
    np.testing.assert_allclose(delta, np.ones(SPEC.num_parameters()), atol=1e-6)
    assert loss == 0.25 and client.local_sample_count() == 9


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    from flwr.app import Array

    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def test_client_fn_and_legacy_client_app_see_the_node_config_and_keep_state() -> None:
    calls: list[int] = []

    def client_fn(context: Context):
        calls.append(int(context.node_config["partition-id"]))
        context.state.config_records.setdefault("n", ConfigRecord({"fits": 0}))
        context.state.config_records["n"]["fits"] += 1
        return Offset().to_client()

    for app in (client_fn, ClientApp(client_fn=client_fn)):
        client = _client(app, node_config={"partition-id": 4, "num-partitions": 10})
        for r in (1, 2):
            delta, _ = client._train_sync(_task(r))
            np.testing.assert_allclose(delta, _expected_offsets(), atol=1e-6)
        assert client.context.state.config_records["n"]["fits"] == 2
    assert calls == [4, 4, 4, 4]


class Returns(NumPyClient):
    def __init__(self, make: Any) -> None:
        self.make = make

    def fit(self, parameters, config):
        return self.make(parameters)


@pytest.mark.parametrize(("make", "error", "match"), [
    (lambda p: (p[:3], 1, {}), FlowerFitError, r"returned 3 arrays, the coordinator's model has 4 parameter tensors"),
    (lambda p: ([p[0].T, *p[1:]], 1, {}), FlowerFitError, r"array 0 \(0.weight\) with shape \(64, 32\), expected "
     r"\(32, 64\)"),
    (lambda p: ([p[0], p[1][:5], *p[2:]], 1, {}), FlowerFitError, r"array 1 \(0.bias\) with shape \(5,\)"),
    (lambda p: ([p[0], p[1], p[2].astype(str), p[3]], 1, {}), FlowerFitError, r"array 2 \(2.weight\) of dtype"),
    (lambda p: (p, 1), FlowerFitError, r"fit raised TypeError"),  # Flower's own return-type check
    (lambda p: 1 / 0, FlowerFitError, r"fit raised ZeroDivisionError"),
    (lambda p: ([p[0], p[1] * np.nan, *p[2:]], 1, {}), NonFiniteUpdate, r"32 non-finite value\(s\) in array 1 "
     r"\(0.bias\)"),
], ids=["count", "transposed", "shape", "dtype", "flower-type-check", "raises", "nan"])
def test_results_that_do_not_map_are_clear_errors(make: Any, error: type, match: str) -> None:
    client = _client(Returns(make))
    with pytest.raises(error, match=match):
        client._train_sync(_task())


def test_a_non_finite_fit_sits_the_round_out_and_a_broken_one_stops_the_client() -> None:
    client = _client(Returns(lambda p: ([np.full_like(a, np.inf) for a in p], 1, {})))
    out = asyncio.run(client._train(_task()))
    assert len(out) == 1 and isinstance(out[0], Failed) and out[0].code == "bad_update"
    assert "non-finite" in out[0].message and "not taking part" in out[0].message
    broken = _client(Returns(lambda p: (p[:1], 1, {})))
    with pytest.raises(FlowerFitError):  # a ClientError: NativeClient.run ends, the CLI exits 1
        asyncio.run(broken._train(_task()))


def test_message_replies_that_do_not_map_are_clear_errors() -> None:
    def app_returning(content: Any) -> ClientApp:
        app = ClientApp()

        @app.train()
        def train(msg: Message, context: Context) -> Message:
            return Message(content(msg), reply_to=msg)

        return app

    two = app_returning(lambda m: RecordDict({"a": m.content["arrays"], "b": m.content["arrays"]}))
    with pytest.raises(FlowerFitError, match="exactly one ArrayRecord, it carries 2"):
        _client(two)._train_sync(_task())
    positional = app_returning(lambda m: RecordDict({"arrays": ArrayRecord(m.content["arrays"].to_numpy_ndarrays())}))
    delta, loss = _client(positional)._train_sync(_task())  # keys "0".."3": read by position
    assert not delta.any() and loss is None
    short = app_returning(lambda m: RecordDict({"arrays": ArrayRecord(m.content["arrays"].to_numpy_ndarrays()[:2])}))
    with pytest.raises(FlowerFitError, match="returned 2 arrays"):
        _client(short)._train_sync(_task())


# ── loading ───────────────────────────────────────────────────────────────────────────────────────────
def test_the_loader_refuses_what_it_cannot_drive() -> None:
    for ref, match in [("flower_digits_app", "expected 'package.module:attribute'"),
                       (":app", "expected 'package.module:attribute'"),
                       ("flower_digits_app:", "expected 'package.module:attribute'"),
                       ("no_such_module_x1:app", "cannot import 'no_such_module_x1'"),
                       ("flower_digits_app:nothing", "has no attribute 'nothing'")]:
        with pytest.raises(FlowerLoadError, match=match):
            load_flower_app(ref, FIXTURES)
    assert isinstance(load_flower_app("flower_digits_app:app", FIXTURES), ClientApp)
    evaluate_only = ClientApp()
    evaluate_only.evaluate()(lambda msg, context: msg)
    custom_only = ClientApp()
    custom_only.train("custom")(lambda msg, context: msg)

    class NeedsArgs(NumPyClient):
        def __init__(self, data: Any) -> None:
            self.data = data

    for obj, match in [(evaluate_only, "neither a client_fn nor a default @app.train"),
                       (custom_only, "neither a client_fn nor a default @app.train"),
                       (json.dumps, "is not a client_fn"), (42, "a int is not a Flower client"),
                       (dict, "dict is a class but not a NumPyClient"), (NeedsArgs, r"NeedsArgs\(\) needs arguments")]:
        with pytest.raises(FlowerLoadError, match=match):
            as_trainer(obj)
    assert as_trainer(Offset).form == "Offset class" and as_trainer(Offset()).form == "Offset instance"


def test_config_strings_parse_like_flower_supernode() -> None:
    assert parse_config_string("partition-id=0 num-partitions=10 name='a b' lr=0.1 on=true") == \
        {"partition-id": 0, "num-partitions": 10, "name": "a b", "lr": 0.1, "on": True}
    assert parse_config_string("") == {}
    for bad in ("partition-id", "x=[1, 2]", "x=nope"):
        with pytest.raises(ValueError, match="--node-config"):
            parse_config_string(bad)


def test_cli_flag_rules(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--server", "127.0.0.1:1"]
    cases = [([*base, "--flower-app", "flower_digits_app:app", "--data", "digits:0/5"], "exclude each other"),
             ([*base, "--flower-app", "flower_digits_app:app", "--dp-sgd-noise", "1"], "built-in torch trainer"),
             ([*base, "--data", "digits:0/5", "--node-config", "partition-id=0"], "need --flower-app"),
             ([*base, "--flower-app", "flower_digits_app:app", "--node-config", "partition-id"], "--node-config"),
             ([*base, "--flower-app", "nope_module_x2:app", "--app-dir", str(FIXTURES)], "cannot import"),
             (["--flower-app", "flower_digits_app:app"], "required: --server")]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_client_native_imports_without_flwr() -> None:
    code = ("import sys; sys.modules['flwr'] = None\n"
            "import client_native.cli, client_native.client, client_native.flower_app as f\n"
            "try:\n    f.as_trainer(object())\nexcept f.FlowerLoadError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "refused: Flower clients need flwr (pip install 'fl-coordinator[flower]')" in out.stdout


# ── end to end ────────────────────────────────────────────────────────────────────────────────────────
ROUNDS, CLIENTS = 3, 10
FLAGS = ["--rounds", str(ROUNDS), "--clients-per-round", str(CLIENTS), "--population", str(CLIENTS),
         "--group-size", "5", "--aggregator", "mean", "--local-epochs", "3", "--lr", "0.2", "--l2-clip", "3.0",
         "--noise-multiplier", "0.05", "--epsilon", "1e6", "--delta", "1e-5", "--ban-threshold", "0",
         "--train-timeout", "60", "--exit-when-finished",
         "--probation", "0"]  # the clients are new identities: no 10 s wait before the first selection
# the clients' default policy (groups ≥ 5, two-thirds threshold against 1 colluder) with a small noise floor and no
# ε budget of their own – the utility settings of the other end-to-end tests
POLICY_FLAGS = ["--min-noise", "0.05", "--epsilon-budget", "inf"]
POLICY = PrivacyPolicy(min_noise_multiplier=0.05, epsilon_budget=math.inf)


def _initial_metrics() -> dict[str, float]:
    """Loss and accuracy on the test split (what the coordinator evaluates each round) of the initial model
    (``serve``'s default seed 0)."""
    from coordinator.federation.evaluation import evaluator
    from federated_data import load_digits

    init = SPEC.init_parameters(0)
    ds = load_digits()
    return evaluator(SPEC, ds.x_test, ds.y_test)({n: np.asarray(init[n], np.float32).reshape(s)
                                                  for n, s in SPEC.parameter_shapes()})


def test_flower_clients_complete_three_rounds_of_secagg_in_groups(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from coordinator.service.store import Store
    from privacy.dp.ledger import PrivacyLedger

    coord = Coordinator(tmp_path, FLAGS)
    coord.ws_port, coord.grpc_port = free_port(), free_port()
    procs = []  # started first: they import torch and flwr while the coordinator starts (and retry until it listens)
    for i in range(2):  # fl-client --flower-app, over gRPC and over WebSocket
        port, transport = [(coord.grpc_port, "grpc"), (coord.ws_port, "websocket")][i]
        cmd = [sys.executable, "-m", "client_native.cli", "--server", f"127.0.0.1:{port}", "--transport", transport,
               "--flower-app", "flower_digits_app:app", "--app-dir", str(FIXTURES),
               "--node-config", f"partition-id={i} num-partitions={CLIENTS}", "--state-dir", str(tmp_path / f"c{i}"),
               *POLICY_FLAGS]
        log = tmp_path / f"client-{i}.log"
        with open(log, "wb") as out:
            procs.append((subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=_env()), log))
    monkeypatch.syspath_prepend(str(FIXTURES))
    import flower_digits_app

    coord.start()

    async def in_process() -> list[Any]:
        from client_native.flower_app import run_flower_client_async

        apps = ["flower_digits_app:message_app"] * 4 + [flower_digits_app.client_fn] * 4
        runs = [run_flower_client_async(app, f"127.0.0.1:{coord.grpc_port}", state_dir=tmp_path / f"c{i}",
                                        policy=POLICY, node_config={"partition-id": i, "num-partitions": CLIENTS},
                                        app_dir=FIXTURES, seed=i)
                for i, app in enumerate(apps, start=2)]
        return await asyncio.wait_for(asyncio.gather(*runs), 150)

    try:
        summaries = asyncio.run(in_process())
        for proc, log in procs:
            assert proc.wait(60) == 0, log.read_text()[-3000:]
        assert coord.wait(60) == 0, coord.log_text()
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
    # every client took part in all three rounds and stopped when the federation ended
    assert all(s.rounds == [1, 2, 3] and s.stop_reason == f"all {ROUNDS} rounds done" and not s.errors
               for s in summaries), [(s.rounds, s.stop_reason, s.errors) for s in summaries]
    for _, log in procs:
        assert "3 rounds, " in log.read_text().splitlines()[-1], log.read_text()[-2000:]
    # each client's own ledger (persisted in its state dir) holds its three participations, each in a SecAgg+
    # group of 5 of the 10 clients (two groups) with the threshold its policy requires
    for i in range(CLIENTS):
        ledger = PrivacyLedger.from_dict(json.loads((tmp_path / f"c{i}" / "privacy-ledger.json").read_text()))
        assert [(e.round, e.group_size, e.threshold) for e in ledger.entries] == [(r, 5, 4) for r in (1, 2, 3)]
        assert (tmp_path / f"c{i}" / "coordinator.pub").read_text().strip() == coord.key
    assert all(s.ledger["participations"] == 3 for s in summaries)
    # the global model learnt from the Flower clients' updates: from chance to well above it in three rounds
    store = Store.open(coord.data_dir)
    try:
        metrics = dict(store.metrics())
    finally:
        store.close()
    assert sorted(metrics) == [1, 2, 3]
    start, end = _initial_metrics(), metrics[ROUNDS]
    assert end["accuracy"] >= start["accuracy"] + 0.4 and end["accuracy"] >= 0.6, (start, metrics)
    assert end["loss"] < start["loss"] / 2, (start, metrics)
