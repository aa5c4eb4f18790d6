"""The coordinator engine and client sessions driven in-process (no sockets): real crypto, real SecAgg+ in
groups, distributed DP, robust aggregation, torch training on a non-IID digits split."""

from __future__ import annotations

import numpy as np
import torch

from client_native.torch_model import build_module, evaluate, flatten, set_parameters, train_local
from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.federation.events import (
    Connected,
    DataReceived,
    Log,
    PersistRound,
    Send,
    SetTimer,
    TimerFired,
)
from federated_data import dirichlet, load_digits
from flcore.modelspec import mlp
from flcore.policy import PrivacyPolicy
from flcore.session import Failed, RoundDone, SendFrame, Train
from flcrypto import default_crypto

torch.set_num_threads(1)


def run_federation(n_clients: int, cfg: FederationConfig, byzantine: set[int] = frozenset(), drop_after_train=None,
                   policy: PrivacyPolicy | None = None):
    """``policy``: every client's privacy policy (default: permissive – these runs are about the engine)."""
    c = default_crypto()
    ds = load_digits()
    parts = dirichlet(ds.y_train, n_clients, 1.0, np.random.default_rng(0), min_size=20)
    spec = cfg.model
    module = build_module(spec)

    def evaluator(params):
        set_parameters(module, params)
        loss, acc = evaluate(module, ds.x_test, ds.y_test)
        return {"loss": loss, "accuracy": acc}

    coord_seed = c.random_bytes(32)
    engine = Engine(cfg, coord_seed, seed=1, evaluator=evaluator)
    from flcore.session import ClientSession

    policy = policy or PrivacyPolicy.permissive()
    sessions = {f"conn{i}": ClientSession(c.random_bytes(32), engine.public_key, policy=policy)
                for i in range(n_clients)}
    index = {k: i for i, k in enumerate(sessions)}
    outbox: list[tuple[str, bytes]] = []  # (conn, frame) client → coordinator
    now = 0.0
    persisted, failures, timers = [], [], {}

    def run_actions(actions):
        for a in actions:
            if isinstance(a, Send):
                deliver(a.conn, a.data)
            elif isinstance(a, PersistRound):
                persisted.append(a.round)
            elif isinstance(a, SetTimer):
                timers[a.name] = a.at
            elif isinstance(a, Log):
                pass

    def deliver(conn, data):
        for act in sessions[conn].receive(data):
            client_actions(conn, act)

    def client_actions(conn, act):
        i = index[conn]
        if isinstance(act, SendFrame):
            outbox.append((conn, act.data))
        elif isinstance(act, Train):
            local = build_module(act.spec)
            set_parameters(local, act.parameters)
            idx = parts[i]
            delta, _ = train_local(local, ds.x_train[idx], ds.y_train[idx], epochs=act.hyperparameters["epochs"],
                                   batch_size=act.hyperparameters["batch_size"], lr=act.hyperparameters["lr"],
                                   seed=act.round * 100 + i)
            vec = flatten(delta, act.spec)
            if i in byzantine:
                vec = -10.0 * vec
            if drop_after_train is not None and drop_after_train(act.round, i):
                return  # this client vanishes after training (never answers again this round)
            for a2 in sessions[conn].training_done(vec):
                client_actions(conn, a2)
        elif isinstance(act, Failed):
            failures.append((conn, act.code))
        elif isinstance(act, RoundDone):
            pass

    for conn, s in sessions.items():
        run_actions(engine.handle(Connected(conn, "inprocess", now)))
        for act in s.start():
            client_actions(conn, act)
    steps = 0
    while not engine.finished and steps < 100_000:
        steps += 1
        if outbox:
            conn, data = outbox.pop(0)
            run_actions(engine.handle(DataReceived(conn, data, now)))
        else:
            now = max(now + 1.0, timers.get("phase", now + 1.0))
            run_actions(engine.handle(TimerFired("phase", now)))
    return engine, persisted, failures, sessions


def test_federation_in_process_learns_with_secure_aggregation_and_dp() -> None:
    """The safe defaults end to end: groups of 5 on the complete graph with t = 4 (two-thirds, one colluder),
    clients enforcing the default policy except for a small noise floor and no ε budget (utility test)."""
    cfg = FederationConfig(model=mlp([64, 32, 10]), rounds=8, clients_per_round=15, group_size=5,
                           aggregator="median", byzantine=0, local_epochs=3, lr=0.2, l2_clip=2.0,
                           noise_multiplier=0.05, quantization_bits=16, modulus_bits=32, epsilon=1e6)
    policy = PrivacyPolicy(min_noise_multiplier=0.05, epsilon_budget=float("inf"))
    engine, persisted, failures, sessions = run_federation(15, cfg, policy=policy)
    assert persisted == list(range(1, 9))
    assert not failures
    acc = [h["accuracy"] for h in engine.history]
    assert acc[-1] > 0.6 and acc[-1] > acc[0] + 0.2, acc  # learning through SecAgg+, DP and the median
    assert engine.history[-1]["epsilon"] > 0 and engine.history[-1]["groups_ok"] == 3
    # every client kept its own ledger: one entry per round it took part in, the coordinator agrees
    for s in sessions.values():
        assert s.ledger.participations() == engine.participation.count(s.client_id) > 0
        assert s.ledger.epsilon_worst_case() > s.ledger.epsilon()


def test_dropout_after_training_still_completes_rounds() -> None:
    cfg = FederationConfig(model=mlp([64, 16, 10]), rounds=3, clients_per_round=10, group_size=5,
                           aggregator="mean", local_epochs=1, quantization_bits=14, modulus_bits=32)
    policy = PrivacyPolicy(min_noise_multiplier=0.0, epsilon_budget=float("inf"))
    engine, persisted, _, _ = run_federation(10, cfg, drop_after_train=lambda r, i: r == 2 and i == 0, policy=policy)
    assert persisted == [1, 2, 3]
    assert engine.history[1]["survivors"] in (9, 10)
