"""Simulation harness: experiments with honest and Byzantine clients that drive the real coordinator engine
in-process (docs/simulation.md).

```python
from simulations import load_config, run_simulation, run_grid, load_grid
result = run_simulation(load_config("exp.toml"), out_dir="runs/exp")
print(result.final_accuracy, result.history[-1])
```
Names are imported lazily, so ``fl-coordinator`` does not load torch unless a simulation runs.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ATTACKS": "simulations.attacks", "Attack": "simulations.attacks", "AttackContext": "simulations.attacks",
    "make_attack": "simulations.attacks", "ConfigError": "simulations.config",
    "SimulationConfig": "simulations.config", "load_config": "simulations.config", "GridSpec": "simulations.grid",
    "load_grid": "simulations.grid", "run_grid": "simulations.grid", "Simulation": "simulations.runner",
    "SimulationResult": "simulations.runner", "run_simulation": "simulations.runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'simulations' has no attribute {name!r}")
