"""An example simulation plug-in (``fl-coordinator simulate CONFIG --plugin test_simulation_plugin_example``,
with ``tests/`` on the import path); used by tests/test_simulation_harness_fixes.py. It holds no tests itself.

A plug-in is an ordinary module: importing it registers its attacks with
:func:`simulations.attacks.register_attack` and its defences with :func:`aggregation.registry.register_rule`.
The harness imports it before checking the config, in every grid worker process too, and records it in the
config's ``plugins`` so that a saved ``config.toml`` reruns with it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aggregation.coordinatewise import median
from aggregation.registry import RuleSpec, is_registered, register_rule
from simulations.attacks import Attack, AttackContext, register_attack


@register_attack
class ScaledCopy(Attack):
    """Every attacker sends ``scale`` × the mean of its colluders' own updates (a toy attack for the tests)."""

    name = "scaled_copy"
    allowed = ("scale",)

    def craft(self, ctx: AttackContext) -> np.ndarray:
        v = float(self.p("scale", 2.0)) * ctx.own.mean(axis=0)
        return np.repeat(v[None].astype(np.float32), ctx.f, axis=0)


@register_attack
class Explode(Attack):
    """Raises in round ``at`` (default 1): a run that fails, for the grid's failed-run recording."""

    name = "explode"
    allowed = ("at",)

    def craft(self, ctx: AttackContext) -> np.ndarray:
        if ctx.round >= int(self.p("at", 1)):
            raise RuntimeError(f"explode: boom in round {ctx.round}")
        return ctx.own.astype(np.float32, copy=True)


# A defence: the coordinate-wise median of the inputs shrunk towards 0 by ``shrink`` (a toy rule for the tests),
# with the median's precondition n >= 2f + 1.
if not is_registered("shrunk_median"):
    register_rule(RuleSpec(
        "shrunk_median", "aggregator", ("shrink",),
        run=lambda x, f, w, args, ctx: _shrunk(median(x), float(args.get("shrink", 0.5))),
        precondition=lambda args, f: (2 * f + 1, "2f+1"), paper="(test plug-in)"))


def _shrunk(result, shrink):
    return dataclasses.replace(result, value=(1.0 - shrink) * result.value)
