"""Byzantine-robust aggregation for Flower's Message API: :class:`RobustFedAvg`.

Flower's own ``Krum``/``FedMedian``/``FedTrimmedAvg`` each hard-code one rule over the clients' *weights*. This
strategy runs any :mod:`aggregation` pipeline – ``"clip(median)|bucket(2)|cc(tau=1)"`` (Karimireddy, He & Jaggi
ICLR'22), ``"krum"`` (Blanchard et al. NeurIPS'17), ``"trmean"`` (Yin et al. ICML'18), … – over the replies'
*updates* (reply − the global model they were trained from), so norm clipping, bucketing and centered clipping
mean what their papers mean, and keeps the stateful steps' state (the CC centre, server momentum) across rounds.

Checks: the pipeline is validated for the sampled (n, f) before any message is sent (``ValueError`` stating the
failed precondition, e.g. ``krum needs n >= 2f+3``), and again for the replies that came back; a reply whose
arrays do not have the global model's names and shapes is refused (counted in the metrics), a non-finite one is
excluded by the pipeline and reported. Nothing a client sends can raise out of ``aggregate_train``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from aggregation import Pipeline, PipelineState, parse_pipeline
from flower_interop.arrays import Layout

log = logging.getLogger(__name__)


class RobustFedAvg(FedAvg):
    """FedAvg's sampling and messages with a robust aggregation pipeline.

    ``aggregation``: a pipeline spec (:mod:`aggregation.pipeline`); ``num_malicious_nodes`` f: how many sampled
    nodes may be Byzantine (the pipeline's preconditions are checked for it); ``weighted``: pass each reply's
    ``weighted_by_key`` value as its weight to the rules that use weights (``mean``, ``wmean``, Multi-Krum's
    mean; a Byzantine node can claim any weight, so the default is unweighted); ``seed``: for the randomised
    steps (bucketing). The other arguments are :class:`flwr.serverapp.strategy.FedAvg`'s.
    """

    def __init__(self, aggregation: str | Pipeline = "median", num_malicious_nodes: int = 0, *,
                 weighted: bool = False, seed: int = 0, **fedavg_kwargs: Any) -> None:
        super().__init__(**fedavg_kwargs)
        if isinstance(num_malicious_nodes, bool) or not isinstance(num_malicious_nodes, int) \
                or num_malicious_nodes < 0:
            raise ValueError(f"num_malicious_nodes must be a non-negative integer, got {num_malicious_nodes!r}")
        self.pipeline = aggregation if isinstance(aggregation, Pipeline) else parse_pipeline(aggregation)
        self.num_malicious_nodes = num_malicious_nodes
        self.weighted = weighted
        self.state = PipelineState()
        self._rng = np.random.default_rng(seed)
        self.current_arrays: ArrayRecord | None = None  # the global model of the round being configured
        self.validate(max(self.min_train_nodes, 1))

    def validate(self, n: int) -> None:
        """``ValueError`` unless the pipeline's preconditions hold for n nodes of which f are Byzantine."""
        self.pipeline.validate(n, self.num_malicious_nodes, has_weights=self.weighted, unit="nodes")

    def summary(self) -> None:
        super().summary()
        log.info("robust aggregation: %s, f = %d, %s", self.pipeline, self.num_malicious_nodes,
                 "weighted" if self.weighted else "unweighted")

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
                        ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if messages:
            self.validate(len(messages))  # before anything is sent: n = the sample, f = num_malicious_nodes
        self.current_arrays = arrays
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The global model plus the pipeline's aggregate of the replies' updates, and metrics: FedAvg's
        aggregated client metrics plus ``robust-*`` diagnostics."""
        if self.current_arrays is None:
            raise RuntimeError("aggregate_train before configure_train: no global model to compute updates from")
        replies = list(replies)
        valid = [m for m in replies if not m.has_error()]
        layout = Layout.of(self.current_arrays)
        base = layout.flatten(self.current_arrays)
        rows, weights, used, refused = [], [], [], 0
        for msg in valid:
            try:
                record = _only_array_record(msg)
                rows.append(layout.flatten(record) - base)
                weights.append(_weight(msg, self.weighted_by_key) if self.weighted else 1.0)
                used.append(msg)
            except ValueError as exc:
                refused += 1
                log.warning("round %d: reply from node %d refused: %s", server_round, msg.metadata.src_node_id, exc)
        if not rows:
            return None, None
        x = np.stack(rows)
        try:
            result, self.state = self.pipeline(x, self.num_malicious_nodes,
                                               weights=np.asarray(weights) if self.weighted else None,
                                               state=self.state, rng=self._rng, unit="replies")
        except ValueError as exc:  # too few usable replies for the rule: keep the model, say why
            log.error("round %d: robust aggregation not possible: %s; the global model is kept", server_round, exc)
            return None, MetricRecord({"robust-replies": len(rows), "robust-refused": refused,
                                       "robust-errors": len(replies) - len(valid), "robust-skipped": 1})
        new = layout.unflatten(base + np.asarray(result.value, dtype=np.float64))
        metrics = self._client_metrics(used)
        d = result.diagnostics
        metrics.update({
            "robust-replies": len(rows), "robust-refused": refused, "robust-errors": len(replies) - len(valid),
            "robust-selected": int(np.count_nonzero(d.selected)),
            "robust-nonfinite": int(np.count_nonzero(d.excluded_nonfinite)),
            "robust-selected-nodes": [int(m.metadata.src_node_id) for m, s in zip(used, d.selected) if s],
            "robust-update-norm": float(np.linalg.norm(result.value)),
            "robust-max-outlier-score": float(np.max(np.where(np.isfinite(d.outlier_scores), d.outlier_scores,
                                                                 0.0))),
        })
        return new, metrics

    def _client_metrics(self, used: list[Message]) -> MetricRecord:
        """FedAvg's aggregate of the clients' own metrics (only when every reply carries the weight key)."""
        contents = [m.content for m in used]
        try:
            if all(len(c.metric_records) == 1 for c in contents):
                return self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("client metrics not aggregated: %s", exc)
        return MetricRecord()


def _only_array_record(msg: Message) -> ArrayRecord:
    records = list(msg.content.array_records.values())
    if len(records) != 1:
        raise ValueError(f"a train reply needs exactly one ArrayRecord, got {len(records)}")
    return records[0]


def _weight(msg: Message, key: str) -> float:
    records = list(msg.content.metric_records.values())
    if len(records) != 1 or key not in records[0]:
        raise ValueError(f"weighted aggregation needs the metric {key!r} in one MetricRecord")
    w = float(records[0][key])  # type: ignore[arg-type]
    if not (np.isfinite(w) and w > 0):
        raise ValueError(f"weight {key!r} = {w} must be finite and positive")
    return w
