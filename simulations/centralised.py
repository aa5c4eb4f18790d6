"""The centralised reference of a federated scenario: the same MLP trained on the union of the honest clients'
training data (same partition, same seed, same Byzantine clients left out), evaluated on the same test set.

Everything comes from the harness: :class:`simulations.runner.Simulation` builds the data (``build_data``), draws
the Byzantine clients and evaluates; :func:`simulations.training.train_clients` trains (one "client" holding all
the honest data, plain mini-batch SGD with the federation's batch size and learning rate, one epoch per call with
a seeded shuffle). The model starts from the engine's initial parameters (``ModelSpec.init_parameters(seed)``).
The reported accuracy is the mean test accuracy of the last 3 epochs – the same statistic as a grid cell.

    python -m simulations.centralised simulations/configs/suite_digits_a1.toml --byzantine 30 --epochs 60
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulations.config import SimulationConfig, load_config
from simulations.grid import LAST_ROUNDS

DEFAULT_EPOCHS = 60


@dataclass
class CentralisedResult:
    accuracy: float  # mean test accuracy of the last LAST_ROUNDS epochs
    history: list[float]  # test accuracy after each epoch
    honest_clients: list[int]
    byzantine: list[int]
    examples: int  # training examples used (the honest clients' union)
    honest_accuracy: float | None = None  # the same on the honest clients' own test data (per-client test sets)
    extra: dict[str, Any] = field(default_factory=dict)


def honest_simulation(cfg: SimulationConfig, num_byzantine: int) -> Any:
    """A :class:`Simulation` of the scenario with ``num_byzantine`` Byzantine clients drawn exactly as the
    federated runs draw them (same seed, same population) – built only for its data, its Byzantine indices and
    its evaluation. Nothing is federated, so the federation is replaced by one the grouping planner judges quickly
    (all clients per round, median: the planner's check of it takes 0.1 s instead of up to 10 s) – the data, the
    Byzantine draw, the batch size and the learning rate do not depend on it."""
    import logging

    from simulations.runner import Simulation

    base = cfg.replace(**{"attack.name": "none", "attack.num_byzantine": num_byzantine, "plots": False,
                          "federation.clients_per_round": cfg.data.num_clients, "federation.group_size": 1,
                          "federation.min_clients_per_round": 0, "federation.aggregator": "median",
                          "federation.byzantine": 0, "federation.accept_grouping_risk": True})
    quiet = logging.getLogger("simulations")  # the accepted-risk warning is about a federation we do not run
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return Simulation(base)
    finally:
        quiet.setLevel(level)


def pooled_honest_data(sim: Any) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The union of the honest clients' training data (the Byzantine clients' examples excluded)."""
    byz = set(sim.byzantine)
    honest = [i for i in range(sim.data.num_clients) if i not in byz]
    x = np.concatenate([sim.data.xs[i] for i in honest]).astype(np.float32)
    y = np.concatenate([sim.data.ys[i] for i in honest])
    return x, y, honest


def train_centralised(cfg: SimulationConfig, num_byzantine: int, epochs: int = DEFAULT_EPOCHS
                      ) -> CentralisedResult:
    """Train the scenario's MLP on the pooled honest data for ``epochs`` epochs; evaluate after each."""
    from client_native.torch_model import unflatten
    from simulations.runner import training_seed
    from simulations.training import train_clients

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    sim = honest_simulation(cfg, num_byzantine)
    x, y, honest = pooled_honest_data(sim)
    init = sim.spec.init_parameters(cfg.seed)
    params = np.concatenate([np.asarray(init[n], np.float32) for n, _ in sim.spec.parameter_shapes()])
    fed = sim.fed
    history, honest_history = [], []
    for epoch in range(epochs):
        delta, _ = train_clients(sim.spec, params, [x], [y], epochs=1, batch_size=fed.batch_size, lr=fed.lr,
                                 seeds=[training_seed(cfg.seed, epoch, cfg.data.num_clients)])  # an index no client has
        params = params + delta[0]
        ev = sim.evaluate(unflatten(params, sim.spec))
        history.append(ev["accuracy"])
        if "honest_accuracy" in ev:
            honest_history.append(ev["honest_accuracy"])
    return CentralisedResult(float(np.mean(history[-LAST_ROUNDS:])), history, honest, list(sim.byzantine), len(y),
                             float(np.mean(honest_history[-LAST_ROUNDS:])) if honest_history else None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="a simulation config (its [data], [model], seed, batch size and lr are used)")
    p.add_argument("--byzantine", type=int, default=None, help="Byzantine clients left out (default: the config's)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    if args.seed is not None:
        cfg = cfg.replace(seed=args.seed)
    nb = cfg.attack.num_byzantine if args.byzantine is None else args.byzantine
    r = train_centralised(cfg, nb, args.epochs)
    print(f"centralised on {r.examples} examples of {len(r.honest_clients)} honest clients ({nb} Byzantine left "
          f"out): accuracy {100 * r.accuracy:.1f}% (mean of the last {LAST_ROUNDS} of {args.epochs} epochs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
