"""Flower interop (flower_interop/, docs/flower.md), in Flower's own simulation engine (Ray backend).

One attacker among 10–15 clients (partition 0 moves its weights by +5.0 per coordinate, the honest clients by
0.015–0.08): our strategy and our grouped secure workflow keep the model at the honest value, while Flower's
Krum under its SecAgg+ – handed only the sum – lands at the plain average.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

import flower_apps as fa

from flower_interop.grouping import GroupTask
from flower_interop.secure_workflow import GroupedSecureFitWorkflow
from flower_interop.strategy import RobustFedAvg

REPO = Path(__file__).resolve().parent.parent


def _legacy_model(ctx) -> np.ndarray:  # type: ignore[no-untyped-def]
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    return ctx.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()[0]


def _legacy_run(context, strategy, fit_workflow, grid) -> np.ndarray:  # type: ignore[no-untyped-def]
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow

    ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=1), strategy=strategy)
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, ctx)
    return _legacy_model(ctx)


def _fedavg(n: int, strategy_cls=None, **kw):  # type: ignore[no-untyped-def]
    from flwr.common import ndarrays_to_parameters
    from flwr.server.strategy import FedAvg

    return (strategy_cls or FedAvg)(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n,
                                    fraction_evaluate=0.0,
                                    initial_parameters=ndarrays_to_parameters([np.zeros(fa.D, np.float32)]), **kw)


# ── 1. RobustFedAvg, Message API ─────────────────────────────────────────────────────────────────────────
def test_robust_strategy_keeps_the_honest_value_where_fedavg_does_not() -> None:
    from flwr.app import ArrayRecord
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg

    n = 10
    got: dict[str, object] = {}
    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:  # type: ignore[no-untyped-def]
        init = ArrayRecord([np.zeros(fa.D, np.float32)])
        common = {"fraction_evaluate": 0.0, "min_train_nodes": n, "min_available_nodes": n}
        median = RobustFedAvg("median", num_malicious_nodes=1, **common)
        got["median"] = median.start(grid, initial_arrays=init, num_rounds=2)
        cc = RobustFedAvg("clip(median)|bucket(2)|cc(tau=1)", num_malicious_nodes=1, **common)
        got["cc"] = cc.start(grid, initial_arrays=init, num_rounds=2)
        got["cc_state"] = cc.state
        got["fedavg"] = FedAvg(**common).start(grid, initial_arrays=init, num_rounds=1)

    fa.run(app, fa.message_api_client_app(), n)
    honest = fa.honest_offsets(n)
    median_model = got["median"].arrays.to_numpy_ndarrays()[0]  # type: ignore[attr-defined]
    # two rounds of the median of the ten offsets (nine honest, one at +5): exactly the honest median, twice
    np.testing.assert_allclose(median_model, 2 * np.median([*honest, fa.ATTACK]), rtol=1e-6)
    metrics = got["median"].train_metrics_clientapp[1]  # type: ignore[attr-defined]
    assert metrics["robust-replies"] == n and metrics["robust-refused"] == 0
    assert metrics["robust-max-outlier-score"] > 10  # the attacker stands out in the diagnostics
    # clipping, bucketing and centered clipping over updates, with the CC centre kept across rounds
    cc_model = got["cc"].arrays.to_numpy_ndarrays()[0]  # type: ignore[attr-defined]
    assert 0 < cc_model.mean() < 2 * honest.max()
    assert got["cc_state"].cc and next(iter(got["cc_state"].cc.values())).center is not None  # type: ignore[attr-defined]
    # Flower's FedAvg: dragged to the plain mean
    fedavg = got["fedavg"].arrays.to_numpy_ndarrays()[0]  # type: ignore[attr-defined]
    np.testing.assert_allclose(fedavg, np.mean([*honest, fa.ATTACK]), rtol=1e-5)
    assert fedavg.mean() > 5 * honest.max()


def test_robust_strategy_validates_n_and_f_before_sending() -> None:
    with pytest.raises(ValueError, match=r"krum needs n >= 2f\+3"):
        RobustFedAvg("krum", num_malicious_nodes=3, min_train_nodes=8)
    with pytest.raises(ValueError, match="num_malicious_nodes"):
        RobustFedAvg("median", num_malicious_nodes=-1)
    with pytest.raises(ValueError, match="exactly one aggregator"):
        RobustFedAvg("clip(1)")
    RobustFedAvg("krum", num_malicious_nodes=3, min_train_nodes=9)  # 9 >= 2·3 + 3


@pytest.mark.usefixtures("server_process_identity")
def test_robust_strategy_refuses_malformed_replies_and_excludes_nonfinite_ones() -> None:
    """Real Flower reply messages: five honest, one NaN, one with another shape, one error reply. Nothing
    raises; the malformed ones are counted and the result is the honest median."""
    from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

    strategy = RobustFedAvg("median", num_malicious_nodes=1, min_train_nodes=5)
    base = [np.zeros(4, np.float32), np.zeros((2, 2), np.float32)]
    strategy.current_arrays = ArrayRecord(base)

    def reply(node: int, arrays: list[np.ndarray] | None) -> Message:
        out = Message(RecordDict({"arrays": ArrayRecord(base), "config": ConfigRecord({})}), dst_node_id=node,
                      message_type="train")
        if arrays is None:
            return Message(Error(code=0, reason="client crashed"), reply_to=out)
        return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": 1})}),
                       reply_to=out)

    honest = [0.1, 0.2, 0.3, 0.4, 0.5]
    replies = [reply(i + 1, [b + np.float32(v) for b in base]) for i, v in enumerate(honest)]
    replies.append(reply(10, [np.full(4, np.nan, np.float32), np.zeros((2, 2), np.float32)]))
    replies.append(reply(11, [np.zeros(5, np.float32), np.zeros((2, 2), np.float32)]))
    replies.append(reply(12, None))
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    for a in arrays.to_numpy_ndarrays():
        np.testing.assert_allclose(a, 0.3, rtol=1e-6)
    assert (metrics["robust-replies"], metrics["robust-refused"], metrics["robust-errors"],
            metrics["robust-nonfinite"]) == (6, 1, 1, 1)
    assert 10 not in metrics["robust-selected-nodes"]  # type: ignore[operator]
    # too few usable replies for the rule (Krum with f = 1 needs 5): the model is kept, the metrics say why
    krum = RobustFedAvg("krum", num_malicious_nodes=1, min_train_nodes=5)
    krum.current_arrays = ArrayRecord(base)
    arrays, metrics = krum.aggregate_train(1, replies[:3])
    assert arrays is None and metrics is not None and metrics["robust-skipped"] == 1


# ── 2. Flower's own SecAgg+ Mod: Krum under SecAgg+ vs our grouped workflow ─────────────────────────────────
def test_grouped_workflow_over_flowers_secaggplus_mod_keeps_the_honest_value_krum_does_not() -> None:
    from flwr.client.mod import secaggplus_mod
    from flwr.server import ServerApp
    from flwr.server.strategy import Krum
    from flwr.server.workflow import SecAggPlusWorkflow

    n = 15
    got: dict[str, np.ndarray] = {}
    grouped = GroupedSecureFitWorkflow(protocol="flower-secaggplus", group_size=5, aggregation="median",
                                       num_malicious_nodes=1)
    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:  # type: ignore[no-untyped-def]
        got["krum"] = _legacy_run(context, _fedavg(n, Krum, num_malicious_clients=1),
                                  SecAggPlusWorkflow(num_shares=n, reconstruction_threshold=11), grid)
        got["grouped"] = _legacy_run(context, _fedavg(n, on_fit_config_fn=fa.corrupt_partition(n - 1)), grouped,
                                     grid)

    fa.run(app, fa.legacy_client_app([fa.corrupt_masked_vector_mod, secaggplus_mod]), n)
    honest = fa.honest_offsets(n)
    # Krum is handed the unmasked sum in place of every client's result: the plain average, attacker included
    np.testing.assert_allclose(got["krum"], np.mean([*honest, fa.ATTACK]), atol=5e-4)  # its quantisation: 16/2^22 per client
    assert got["krum"].mean() > 4 * honest.max()
    # per-group SecAgg+ (Flower's Mod, unchanged) + the median of 3 group means: the attacker's group is outvoted;
    # the client whose masked vector does not parse (it shared its keys) is refused, not a crash: its pairwise masks
    # are removed from its group's sum like a dropout's
    assert honest.min() - 5e-4 <= got["grouped"].min() and got["grouped"].max() <= honest.max() + 5e-4
    info = grouped.history[-1]
    assert (info["groups"], info["groups_released"]) == (3, 3) and sorted(info["group_sizes"]) == [4.0, 5.0, 5.0]


# ── 3. Our SecAgg+ as a client Mod: policy, ledger, distributed DP, robust across groups ────────────────────
def test_grouped_workflow_with_our_mod_policy_ledger_and_robustness(tmp_path: Path) -> None:
    from flwr.server import ServerApp

    from flower_interop.secagg_mod import make_secagg_mod

    n = 15
    got: dict[str, np.ndarray] = {}
    too_little_noise = GroupedSecureFitWorkflow(group_size=5, aggregation="median", num_malicious_nodes=1,
                                                noise_multiplier=0.5, l2_clip=3.0)
    private = GroupedSecureFitWorkflow(group_size=5, aggregation="median", num_malicious_nodes=1,
                                       noise_multiplier=1.0, l2_clip=3.0)
    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:  # type: ignore[no-untyped-def]
        got["refused"] = _legacy_run(context, _fedavg(n), too_little_noise, grid)
        got["private"] = _legacy_run(context, _fedavg(n, on_fit_config_fn=fa.fail_partition(n - 1)), private, grid)

    mod = make_secagg_mod(identity_file=str(tmp_path / "{node_id}" / "identity.key"),
                          ledger_file=str(tmp_path / "{node_id}" / "ledger.json"))
    fa.run(app, fa.legacy_client_app([mod]), n)
    # z = 0.5 would bring every client's own ε above its default budget (10): all decline, the model stays
    assert not got["refused"].any()
    assert too_little_noise.history[-1]["groups_released"] == 0
    # z = 1: three groups of five release noisy sums; the median of the group means is at the honest value
    # (the noise on the mean over 1000 coordinates is ≈ 0.02; the plain average would be at 0.38)
    honest = fa.honest_offsets(n)
    assert private.history[-1]["groups_released"] == 3  # one client crashed in its fit: its group has 4 of 5
    assert sorted(private.history[-1]["group_sizes"]) == [4.0, 5.0, 5.0]
    assert honest.min() - 0.1 < float(got["private"].mean()) < honest.max() + 0.1
    # each client's ledger holds exactly the one participation it released (the declined round is not in it; the
    # client that crashed before its masked input left has none)
    ledgers = [json.loads(p.read_text()) for p in tmp_path.glob("*/ledger.json")]
    assert len(ledgers) == n - 1 and all(len(led["entries"]) == 1 for led in ledgers)
    assert {e["group_size"] for led in ledgers for e in led["entries"]} == {5}


def test_grouped_workflow_validates_groups_before_sending() -> None:
    wf = GroupedSecureFitWorkflow(group_size=5, aggregation="median", num_malicious_nodes=2)
    with pytest.raises(ValueError, match=r"median needs n >= 2f\+1: got n=3 groups, f=2"):
        wf.validate(15)
    assert wf.validate(25) == 5
    with pytest.raises(ValueError, match="protocol"):
        GroupedSecureFitWorkflow(protocol="plain")
    with pytest.raises(ValueError, match="group_size"):
        GroupedSecureFitWorkflow(group_size=1)


def test_group_task_is_checked_by_the_client() -> None:
    from flcore.wire import client_id_for
    from flcrypto import default_crypto

    cr = default_crypto()
    keys = [cr.ed25519_public_key(cr.random_bytes(32)) for _ in range(6)]
    members = {client_id_for(k): k for k in keys}
    task = GroupTask(7, 3, 3, members, 1, 2, {"l2_clip": 1.0})
    back = GroupTask.from_bytes(task.to_bytes())
    assert back == task and back.group_members() == task.groups()[1] and len(task.groups()) == 2
    forged = json.loads(task.to_bytes())
    forged["members"][next(iter(members))] = keys[-1].hex()  # an id with another client's key
    with pytest.raises(ValueError, match="not the hash of its identity key"):
        GroupTask.from_bytes(json.dumps(forged).encode())
    with pytest.raises(ValueError, match="no group 5"):
        GroupTask.from_bytes(task.to_bytes().replace(b'"group": 1', b'"group": 5'))
    with pytest.raises(ValueError, match="malformed"):
        GroupTask.from_bytes(b"{not json")


def test_secagg_client_state_survives_a_fresh_process_per_message() -> None:
    """Flower rebuilds the ClientApp for every message: a group whose clients are exported to JSON and restored
    between all messages releases exactly the plain sum."""
    from flcrypto import default_crypto
    from privacy.backends import NumpyBackend
    from privacy.secagg import GroupConfig, SecAggClient, SecAggServer

    cr, be = default_crypto(), NumpyBackend()
    ids = [f"c{i}" for i in range(5)]
    seeds = {u: cr.random_bytes(32) for u in ids}
    cfg = GroupConfig(1, 0, tuple(ids), {u: cr.ed25519_public_key(seeds[u]) for u in ids}, 64, 32, b"\1" * 32,
                      None, 4)
    rng = np.random.default_rng(0)
    xs = {u: rng.integers(0, 2**32, 64, dtype=np.uint64).astype(np.uint32) for u in ids}
    srv, state = SecAggServer(cfg, be), {}
    for u in ids:
        c = SecAggClient(cfg, u, seeds[u], xs[u], be)
        srv.receive(c.start())
        state[u] = json.dumps(c.export_state())
    while srv.phase != "done":
        for u, msg in srv.close_phase().items():
            c = SecAggClient.restore(cfg, seeds[u], json.loads(state[u]), be)
            for reply in c.handle(msg):
                srv.receive(reply)
            state[u] = json.dumps(c.export_state())
    want = sum(xs[u].astype(np.uint64) for u in ids) % 2**32
    np.testing.assert_array_equal(np.asarray(srv.result.sum, dtype=np.uint64), want)
    with pytest.raises(ValueError, match="malformed"):
        SecAggClient.restore(cfg, seeds["c0"], {"me": "c0"}, be)


def test_the_core_never_imports_flwr() -> None:
    code = ("import sys; sys.modules['flwr'] = None; sys.modules['flwr_datasets'] = None\n"
            "import coordinator.service.server, coordinator.federation.engine, aggregation, privacy.secagg, flcore.session\n"
            "import client_native.client, simulations.runner\n"
            "assert not any(m.startswith('flower_interop') for m in sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ── a malicious Flower server against our Mod (hand-written adversary, the real SecAggMod) ─────────────────
@pytest.fixture
def server_process_identity():  # type: ignore[no-untyped-def]
    from flwr.supercore.task_identity import TaskIdentity

    saved = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # as Flower sets in its processes
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _to_node(record: dict, node: int = 5):  # type: ignore[no-untyped-def]
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.common import FitIns, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    content = compat.fitins_to_recorddict(FitIns(ndarrays_to_parameters([np.zeros(fa.D, np.float32)]), {}), True) \
        if record.get("stage") == "task" else RecordDict()
    content.config_records["fl-secagg"] = ConfigRecord(record)
    return Message(content, dst_node_id=node, message_type="train")


@pytest.mark.parametrize("forgery, code", [
    ("threshold_two", "policy_threshold"), ("group_of_three", "policy_group_size"),
    ("no_noise", "policy_noise"), ("victim_moved", "bad_task"), ("miscalibrated", "policy_calibration")])
@pytest.mark.usefixtures("server_process_identity")
def test_a_malicious_server_gets_a_decline_and_nothing_derived_from_the_update(forgery: str, code: str) -> None:
    from dataclasses import asdict

    from flwr.app import Context, RecordDict

    from flcore.wire import client_id_for
    from flcrypto import default_crypto
    from flower_interop.secagg_mod import make_secagg_mod
    from privacy.client_pipeline import DistributedDPConfig

    mod, ctx = make_secagg_mod(), Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    trained: list[object] = []

    def app(msg, context):  # type: ignore[no-untyped-def]  # the Flower app: must never be asked to train
        trained.append(msg)
        raise AssertionError("the update was computed for a task the policy refuses")

    hello = mod(_to_node({"stage": "hello"}), ctx, app).content.config_records["fl-secagg"]
    victim_key = bytes(hello["identity_key"])
    cr = default_crypto()
    others = [cr.ed25519_public_key(cr.random_bytes(32)) for _ in range(9)]
    members = {client_id_for(k): k for k in [victim_key, *others]}
    victim = client_id_for(victim_key)
    size, t, z = 5, 4, 1.0
    if forgery == "group_of_three":
        size, t = 3, 3
    if forgery == "threshold_two":
        t = 2
    if forgery == "no_noise":
        z = 0.0
    probe = GroupTask(1, 1, size, members, 0, t, {})
    group = next(i for i, g in enumerate(probe.groups()) if victim in g)
    if forgery == "victim_moved":
        group = next(i for i, g in enumerate(probe.groups()) if victim not in g)
    dp = asdict(DistributedDPConfig(1.0, z, 16, 32, 3 if forgery == "miscalibrated" else t, fa.D))
    task = GroupTask(1, 1, size, members, group, t, dp)
    reply = mod(_to_node({"stage": "task", "task": task.to_bytes()}), ctx, app)
    out = dict(reply.content.config_records["fl-secagg"])
    assert out["declined"] == code, out
    assert "payload" not in out and not trained and not reply.content.array_records
    assert "fl-secagg.state" not in ctx.state.config_records  # nothing kept for a later stage either
    late = dict(mod(_to_node({"stage": "secagg", "payload": b"x"}), ctx, app).content.config_records["fl-secagg"])
    assert late["declined"] == "unexpected"


@pytest.mark.usefixtures("server_process_identity")
def test_our_mod_writes_its_ledger_before_its_masked_input_leaves(tmp_path: Path) -> None:
    """Five real Mods (default policy, ledgers in files) against the real per-group SecAgg+ server, in-process:
    no ledger exists before a client's masked input, and the entry is on disk when the reply carrying it is
    returned; the group then releases its sum."""
    from flwr.app import Context, Message, RecordDict
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    from flcore.policy import required_threshold
    from flower_interop.fl_secagg_server import _Groups
    from flower_interop.secagg_mod import make_secagg_mod
    from privacy.client_pipeline import DistributedDPConfig
    from privacy.secagg.messages import Message as SecAggMessage

    mod = make_secagg_mod(ledger_file=str(tmp_path / "{node_id}" / "ledger.json"))
    nodes = [1, 2, 3, 4, 5]
    contexts = {n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={}) for n in nodes}

    def app(msg, context):  # type: ignore[no-untyped-def]  # a Flower client's fit: weights + 0.01
        ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        weights = [a + np.float32(0.01) for a in parameters_to_ndarrays(ins.parameters)]
        return Message(compat.fitres_to_recorddict(FitRes(Status(Code.OK, ""), ndarrays_to_parameters(weights), 10,
                                                          {}), True), reply_to=msg)

    def ledger_entries(node: int) -> int:
        path = tmp_path / str(node) / "ledger.json"
        return len(json.loads(path.read_text())["entries"]) if path.exists() else 0

    masked_seen: list[int] = []

    def send(records: dict[int, dict]) -> dict[int, dict]:  # type: ignore[type-arg]
        out = {}
        for n, rec in records.items():
            reply = dict(mod(_to_node(rec, n), contexts[n], app).content.config_records["fl-secagg"])
            payload = reply.get("payload")
            if payload and SecAggMessage.from_bytes(bytes(payload)).phase == "masked":
                assert ledger_entries(n) == 1  # recorded and on disk before the masked input is handed over
                masked_seen.append(n)
            elif reply["stage"] != "secagg" or not payload or \
                    SecAggMessage.from_bytes(bytes(payload)).phase in ("advertise", "shares"):
                assert ledger_entries(n) == 0  # nothing recorded before
            out[n] = reply
        return out

    keys = {n: bytes(r["identity_key"]) for n, r in send({n: {"stage": "hello"} for n in nodes}).items()}
    groups = _Groups(1, 1, 5, keys, lambda n: DistributedDPConfig(1.0, 1.0, 16, 32,
                                                                  required_threshold(n, "two-thirds", 1), fa.D))
    replies = send(groups.tasks)
    while True:
        groups.receive(1, replies)
        out = groups.close_phase()
        if not out:
            break
        replies = send(out)
    outcome = groups.outcomes[0]
    assert outcome.failure == "" and sorted(outcome.survivors) == nodes and outcome.sum is not None
    assert sorted(masked_seen) == nodes and all(ledger_entries(n) == 1 for n in nodes)
