"""The public per-round group assignment and task description shared by :mod:`flower_interop.secure_workflow`
(server) and :mod:`flower_interop.secagg_mod` (client): each client recomputes its group from the sampled
members' identity keys, so the server cannot place a client in a group of its choosing *after* sampling.

The seed is a hash of what the server publishes (run, round, group size, the sampled clients' ids and keys): the
server still chooses whom it samples (docs/flower.md; our own coordinator adds a commit–reveal over the clients'
secrets, flcore/assignment.py, which Flower's four-message SecAgg+ shape does not leave room for).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from flcore import assignment
from flcore.wire import client_id_for
from privacy.secagg import partition

RECORD = "fl-secagg"  # the ConfigRecord our workflow and Mod exchange
STATE = "fl-secagg.state"  # the node's context: this round's protocol state
IDENTITY = "fl-secagg.identity"  # the node's context: its Ed25519 identity seed (when no file is given)
LEDGER = "fl-secagg.ledger"  # the node's context: its privacy ledger (when no file is given)


def selection_hash(run_id: int, round_: int, group_size: int, members: Mapping[str, bytes]) -> bytes:
    """32 bytes binding the round's public selection: run, round, group size, every member's id and key."""
    h = hashlib.blake2b(digest_size=32, person=b"fl-flower-select")
    h.update(struct.pack("<QQI", run_id, round_, group_size))
    for cid in sorted(members):
        h.update(cid.encode() + bytes(members[cid]))
    return h.digest()


def group_seed(selection: bytes) -> bytes:
    return hashlib.blake2b(selection, digest_size=32, person=b"fl-flower-groups").digest()


@dataclass(frozen=True)
class GroupTask:
    """What the server tells one client about its group (sent as JSON in the ``task`` stage)."""

    run_id: int
    round: int
    group_size: int
    members: dict[str, bytes]  # every sampled client: id → Ed25519 public key
    group: int
    threshold: int
    dp: dict[str, Any]  # privacy.client_pipeline.DistributedDPConfig fields

    # derived once per task (a frozen dataclass keeps cached_property values in its __dict__): the Mod and the
    # server read them for the membership check, the binding and the SecAgg+ configuration
    @cached_property
    def selection(self) -> bytes:
        return selection_hash(self.run_id, self.round, self.group_size, self.members)

    @cached_property
    def seed(self) -> bytes:
        return group_seed(self.selection)

    @cached_property
    def _groups(self) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(g) for g in partition(sorted(self.members), self.group_size, self.seed))

    def groups(self) -> list[list[str]]:
        return [list(g) for g in self._groups]

    def group_members(self) -> list[str]:
        return list(self._groups[self.group])

    @property
    def attempt(self) -> str:
        return self.selection[:16].hex()

    def binding(self) -> bytes:
        ids = self.group_members()
        return assignment.group_binding(self.seed, self.selection, self.group, ids, self.members, len(ids) - 1,
                                        self.threshold, self.dp)

    def to_bytes(self) -> bytes:
        return json.dumps({"run_id": self.run_id, "round": self.round, "group_size": self.group_size,
                           "members": {k: v.hex() for k, v in sorted(self.members.items())}, "group": self.group,
                           "threshold": self.threshold, "dp": self.dp}, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> GroupTask:
        """Parse and check what a client can check: ids are the hashes of their keys, the group exists.
        ``ValueError`` on anything malformed."""
        try:
            d = json.loads(data)
            task = cls(int(d["run_id"]), int(d["round"]), int(d["group_size"]),
                       {str(k): bytes.fromhex(v) for k, v in dict(d["members"]).items()}, int(d["group"]),
                       int(d["threshold"]), dict(d["dp"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed group task: {exc!r}") from None
        if any(len(k) != 32 or client_id_for(k) != cid for cid, k in task.members.items()):
            raise ValueError("group task: a member id is not the hash of its identity key")
        if not (task.group_size >= 1 and 0 <= task.group < len(task.groups())):
            raise ValueError(f"group task: no group {task.group} with groups of {task.group_size}")
        return task
