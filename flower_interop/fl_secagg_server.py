"""The server side of our SecAgg+ Mod (:mod:`flower_interop.secagg_mod`) for
:class:`~flower_interop.secure_workflow.GroupedSecureFitWorkflow`: one :class:`privacy.secagg.SecAggServer` per
group, every group's phase in the same ``send_and_receive``.

Stages: ``hello`` (each node's Ed25519 identity key), ``task`` (the group task – members, keys, threshold, DP
parameters – with the fit instructions; the client checks it, trains, prepares its update and advertises its
keys), then ``secagg`` messages until every group has released its sum or failed (keys → shares, shares → masked
input, survivors → consistency signatures, unmask request → shares; Bonawitz et al. CCS'17 with Bell et al.'s
refinements, privacy/secagg). A node whose reply does not verify, declines or is missing is dropped from its group;
a group below its threshold releases nothing and tells its members so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
from flwr.app import RecordDict

from flcore.wire import client_id_for
from flower_interop.grouping import GroupTask
from flower_interop.stages import Exchange, GroupOutcome
from privacy.backends import NumpyBackend
from privacy.client_pipeline import DistributedDPConfig, decode_sum
from privacy.secagg import GroupConfig, SecAggError, SecAggServer

log = logging.getLogger(__name__)


def identities(hello: dict[int, dict[str, Any]]) -> dict[int, bytes]:
    """Node id → its 32-byte identity key; a key shown by two nodes is dropped for both (one identity, one node)."""
    keys = {nid: rep["identity_key"] for nid, rep in hello.items()
            if isinstance(rep.get("identity_key"), bytes) and len(rep["identity_key"]) == 32}
    seen: dict[bytes, int] = {}
    for k in keys.values():
        seen[k] = seen.get(k, 0) + 1
    return {nid: k for nid, k in keys.items() if seen[k] == 1}


class _Groups:
    """Every group's SecAgg+ server, DP configuration and outcome, addressed by node id."""

    def __init__(self, run_id: int, rnd: int, group_size: int, keys: dict[int, bytes],
                 dp_for: Callable[[int], DistributedDPConfig]) -> None:
        self.cid_of = {nid: client_id_for(k) for nid, k in keys.items()}
        self.nid_of = {c: nid for nid, c in self.cid_of.items()}
        members = {self.cid_of[nid]: k for nid, k in keys.items()}
        groups = GroupTask(run_id, rnd, group_size, members, 0, 1, {}).groups()
        self.backend = NumpyBackend()
        self.outcomes = [GroupOutcome([self.nid_of[c] for c in ids]) for ids in groups]
        self.servers: dict[int, SecAggServer] = {}
        self.dps: dict[int, DistributedDPConfig] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.group_of = {self.nid_of[c]: gi for gi, ids in enumerate(groups) for c in ids}
        for gi, ids in enumerate(groups):
            dp = dp_for(len(ids))
            task = GroupTask(run_id, rnd, group_size, members, gi, dp.min_contributors, asdict(dp))
            self.dps[gi] = dp
            cfg = GroupConfig(rnd, gi, tuple(ids), {c: members[c] for c in ids}, dp.length, dp.modulus_bits,
                              task.seed, len(ids) - 1, dp.min_contributors, task.binding())
            self.servers[gi] = SecAggServer(cfg, self.backend)
            self.tasks.update({self.nid_of[c]: {"stage": "task", "task": task.to_bytes()} for c in ids})

    def receive(self, rnd: int, replies: dict[int, dict[str, Any]]) -> None:
        """Feed every group's replies; a node without a valid one leaves its group's protocol."""
        for nid, gi in self.group_of.items():
            srv = self.servers.get(gi)
            if srv is None:
                continue
            rep = replies.get(nid)
            payload = None if rep is None else rep.get("payload")
            if isinstance(payload, bytes) and payload:
                try:
                    srv.receive(payload)
                    continue
                except (SecAggError, ValueError) as exc:
                    log.warning("round %d: node %d: %s", rnd, nid, exc)
            elif rep is not None and "declined" in rep:
                log.warning("round %d: node %d declined: %s: %s", rnd, nid, rep["declined"], rep.get("reason"))
            srv.drop(self.cid_of[nid])

    def close_phase(self) -> dict[int, dict[str, Any]]:
        """Close every live group's phase; returns the next messages by node id (failure notices included)."""
        out: dict[int, dict[str, Any]] = {}
        for gi, srv in list(self.servers.items()):
            try:
                msgs = srv.close_phase()
            except SecAggError as exc:
                self.outcomes[gi].failure = str(exc)
                msgs = srv.failure_messages
                del self.servers[gi]
            if srv.phase == "done" and srv.result is not None:
                self.outcomes[gi].survivors = [self.nid_of[c] for c in srv.result.survivors]
                self.outcomes[gi].sum = np.asarray(decode_sum(srv.result.sum, self.dps[gi], self.backend),
                                                   dtype=np.float64)
                del self.servers[gi]
            out.update({self.nid_of[c]: {"stage": "secagg", "payload": m} for c, m in msgs.items()})
        return out


def run_fl_secagg(ex: Exchange, run_id: int, rnd: int, fitins: dict[int, RecordDict], group_size: int,
                  dp_for: Callable[[int], DistributedDPConfig], validate: Callable[[int], int]
                  ) -> list[GroupOutcome]:
    """One round for every group: ``dp_for(n)`` is a group of n's DP configuration (calibrated for its threshold),
    ``validate(n)`` checks the robust rule for n members before the tasks go out."""
    keys = identities(ex.send({nid: {"stage": "hello"} for nid in fitins}))
    if len(keys) < group_size:
        return [GroupOutcome(sorted(fitins), failure=f"only {len(keys)} nodes sent usable identity keys")]
    validate(len(keys))
    groups = _Groups(run_id, rnd, group_size, keys, dp_for)
    replies = ex.send(groups.tasks, fitins)
    while True:
        groups.receive(rnd, replies)
        out = groups.close_phase()
        if not out:
            break
        replies = ex.send(out)
        if not groups.servers:  # only failure notices went out
            break
    for gi, srv in groups.servers.items():
        groups.outcomes[gi].failure = groups.outcomes[gi].failure or f"stopped in phase {srv.phase}"
    return groups.outcomes
