"""Robust + secure aggregation for Flower: :class:`GroupedSecureFitWorkflow`, a legacy ``fit_workflow``.

Flower's ``SecAggPlusWorkflow`` releases one sum of all sampled clients and hands the strategy that sum in place
of every client's result, so ``Krum``/``FedMedian``/``FedTrimmedAvg`` under SecAgg+ compute the plain average.
Robust and secure aggregation compose only through groups (docs/aggregation.md, "groups"): this workflow
partitions the sampled nodes into groups from a public per-round seed (:mod:`flower_interop.grouping`), runs
secure aggregation **per group, all groups' stages concurrently** – one ``grid.send_and_receive`` per stage for
all groups – and applies :func:`aggregation.aggregate_groups` (any pipeline: median, Krum, trimmed mean, CC…)
across the group means. f Byzantine clients corrupt at most f groups, so a rule that tolerates f groups keeps
the model at the honest value.

Two client protocols:

- ``"fl-secagg"`` (recommended): our SecAgg+ in :mod:`flower_interop.secagg_mod` on the clients – signed
  messages bound to the group's configuration, ChaCha20 masks, the complete graph, a threshold against colluders,
  distributed discrete-Gaussian noise, and the client's own privacy policy and ledger;
- ``"flower-secaggplus"``: Flower's own ``secaggplus_mod`` on the clients, unchanged (its quantisation of the
  *weights* to ±``clipping_range``, its 32-bit-seeded mask PRG, no client-side policy, no DP).

After the rule, the strategy's ``aggregate_fit`` is called with every surviving result's parameters replaced by
the new global model (as Flower's own SecAgg+ workflow does), so FedAvg-derived strategies pass it through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import Context
from flwr.common import Code, FitRes, Status
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from aggregation import PipelineState, aggregate_groups, parse_pipeline
from flcore.policy import required_threshold
from flower_interop.arrays import Layout
from flower_interop.fl_secagg_server import run_fl_secagg
from flower_interop.flower_secaggplus import run_flower_secaggplus
from flower_interop.grouping import group_seed, selection_hash
from flower_interop.stages import Exchange
from privacy.client_pipeline import DistributedDPConfig
from privacy.secagg import partition

log = logging.getLogger(__name__)
PROTOCOLS = ("fl-secagg", "flower-secaggplus")


@dataclass
class GroupedSecureFitWorkflow:
    """``DefaultWorkflow(fit_workflow=GroupedSecureFitWorkflow(...))``.

    ``group_size`` s: groups of ⌊n/s⌋ (the first n mod s get one more); ``aggregation``: the pipeline across group
    means; ``num_malicious_nodes`` f: Byzantine clients to tolerate – the pipeline is validated for G groups of
    which min(f, G) may be corrupted before any message is sent; ``threshold_rule``/``colluders``: each group's
    threshold t (:func:`flcore.policy.required_threshold`, the same function our clients check it with);
    ``l2_clip``/``noise_multiplier``/``quantization_bits``/``modulus_bits``: the distributed-DP parameters
    (``fl-secagg``; z is each released group sum's noise multiplier, calibrated for t contributors);
    ``clipping_range``/``quantization_range``/``modulus_range``/``max_weight``: Flower's quantisation
    (``flower-secaggplus``); ``timeout``: seconds per stage (None: wait for every reply)."""

    group_size: int = 5
    aggregation: str = "median"
    num_malicious_nodes: int = 1
    protocol: str = "fl-secagg"
    threshold_rule: str = "two-thirds"
    colluders: int = 1
    l2_clip: float = 1.0
    noise_multiplier: float = 1.0
    quantization_bits: int = 16
    modulus_bits: int = 32
    clipping_range: float = 8.0
    quantization_range: int = 1 << 22
    modulus_range: int = 1 << 32
    max_weight: float = 1000.0
    timeout: float | None = None
    seed: int = 0
    state: PipelineState = field(default_factory=PipelineState, repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2: a group of one is that client's update in the clear")
        if self.num_malicious_nodes < 0:
            raise ValueError("num_malicious_nodes must be >= 0")
        self.pipeline = parse_pipeline(self.aggregation)
        self._rng = np.random.default_rng(self.seed)
        self.history: list[dict[str, Any]] = []

    def validate(self, num_nodes: int) -> int:
        """The number of groups for ``num_nodes`` sampled nodes; ``ValueError`` unless the pipeline holds for
        them with min(f, G) corrupted groups."""
        g = max(1, num_nodes // self.group_size)
        self.pipeline.validate(g, min(self.num_malicious_nodes, g), has_weights=True, unit="groups")
        return g

    def __call__(self, grid: Grid, context: Context) -> None:
        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected a LegacyContext, got {type(context).__name__}")
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        rnd = cast(int, cfg[WorkflowKey.CURRENT_ROUND])
        arrays = context.state.array_records[MAIN_PARAMS_RECORD]
        parameters = compat.arrayrecord_to_parameters(arrays, keep_input=True)
        layout = Layout.of(arrays)
        base = layout.flatten(arrays)
        instructions = context.strategy.configure_fit(rnd, parameters, context.client_manager)
        if not instructions:
            log.info("round %d: no clients sampled", rnd)
            return
        self.validate(len(instructions))  # before anything is sent
        fitins = {proxy.node_id: compat.fitins_to_recorddict(ins, True) for proxy, ins in instructions}
        proxies = {proxy.node_id: proxy for proxy, _ in instructions}
        dimension = layout.size
        exchange = Exchange(grid, rnd, self.timeout)
        if self.protocol == "fl-secagg":
            outcomes = run_fl_secagg(exchange, int(context.run_id), rnd, fitins, self.group_size,
                                     lambda n: self._dp(n, dimension), self.validate)
        else:
            outcomes = run_flower_secaggplus(exchange, rnd, fitins, base, layout.shapes,
                                             self._group_ids(rnd, list(fitins)),
                                             self._threshold, self.clipping_range, self.quantization_range,
                                             self.modulus_range, self.max_weight)
        done = [o for o in outcomes if o.sum is not None]
        info: dict[str, Any] = {"round": rnd, "groups": len(outcomes), "groups_released": len(done),
                                "failures": [o.failure for o in outcomes if o.failure]}
        for o in outcomes:
            if o.failure:
                log.warning("round %d: group of %s released nothing: %s", rnd, o.members, o.failure)
        if not done:
            log.error("round %d: no group released a sum; the global model is kept", rnd)
            self.history.append(info)
            return
        sums = np.stack([o.sum for o in done])
        sizes = np.array([len(o.survivors) for o in done], dtype=float)
        try:
            result, self.state = aggregate_groups(self.pipeline, sums, sizes, self.num_malicious_nodes,
                                                  state=self.state, rng=self._rng)
        except ValueError as exc:
            log.error("round %d: %s; the global model is kept", rnd, exc)
            info["error"] = str(exc)
            self.history.append(info)
            return
        new_params = compat.arrayrecord_to_parameters(layout.unflatten(base + result.value), keep_input=True)
        info.update(selected_groups=int(np.count_nonzero(result.diagnostics.selected)),
                    update_norm=float(np.linalg.norm(result.value)), group_sizes=sizes.tolist())
        self.history.append(info)
        results = [(proxies[nid], FitRes(Status(Code.OK, ""), new_params, 1, {})) for o in done
                   for nid in o.survivors]
        params, metrics = context.strategy.aggregate_fit(rnd, results, [])  # type: ignore[arg-type]
        params = params if params is not None else new_params
        context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(params, True)
        context.history.add_metrics_distributed_fit(server_round=rnd, metrics={
            **(metrics or {}), "groups": len(outcomes), "groups_released": len(done),
            "selected_groups": info["selected_groups"]})

    # ── group set-up ─────────────────────────────────────────────────────────────────────────────────
    def _threshold(self, n: int) -> int:
        return required_threshold(n, self.threshold_rule, self.colluders)

    def _group_ids(self, rnd: int, nids: list[int]) -> list[list[int]]:
        """Flower's protocol has no identities to bind: groups of node ids from the public seed."""
        seed = group_seed(selection_hash(0, rnd, self.group_size, {str(n): b"" for n in nids}))
        return [[int(x) for x in g] for g in partition(sorted(str(n) for n in nids), self.group_size, seed)]

    def _dp(self, n: int, dimension: int) -> DistributedDPConfig:
        dp = DistributedDPConfig(self.l2_clip, self.noise_multiplier, self.quantization_bits, self.modulus_bits,
                                 self._threshold(n), dimension)
        dp.validate(n)
        return dp
