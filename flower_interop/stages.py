"""What every secure-aggregation protocol of :class:`~flower_interop.secure_workflow.GroupedSecureFitWorkflow`
shares: one ``grid.send_and_receive`` per stage for all groups, and each group's outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.serverapp import Grid

from flower_interop.grouping import RECORD


@dataclass
class GroupOutcome:
    """One group's released sum (float, d values: Σ over its survivors) or why it has none."""

    members: list[int]  # node ids
    survivors: list[int] = field(default_factory=list)
    sum: np.ndarray | None = None
    failure: str = ""


class Exchange:
    """One ``grid.send_and_receive`` per stage for all groups; replies by node id as our record's dict (a node
    that failed or did not answer is absent)."""

    def __init__(self, grid: Grid, rnd: int, timeout: float | None) -> None:
        self.grid, self.rnd, self.timeout = grid, rnd, timeout
        self.stages = 0

    def send(self, records: dict[int, dict[str, Any]], base: dict[int, RecordDict] | None = None,
             key: str = RECORD) -> dict[int, dict[str, Any]]:
        msgs = []
        for nid, rec in records.items():
            content = base[nid] if base is not None else RecordDict()
            content.config_records[key] = ConfigRecord(rec)  # type: ignore[arg-type]
            msgs.append(Message(content=content, dst_node_id=nid, message_type=MessageType.TRAIN,
                                group_id=str(self.rnd)))
        self.stages += 1
        out: dict[int, dict[str, Any]] = {}
        for m in self.grid.send_and_receive(msgs, timeout=self.timeout):
            if m.has_error() or key not in m.content.config_records:
                continue
            out[m.metadata.src_node_id] = dict(m.content.config_records[key])
        return out
