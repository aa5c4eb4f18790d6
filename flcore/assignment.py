"""Verifiable group assignment: a partition seed the coordinator cannot grind, and the hash that binds a group's
whole configuration into every SecAgg+ key derivation and signature.

Commit–reveal (Blum's coin flipping by telephone, with many parties): every ``ready`` message carries a
commitment BLAKE2b(r) to a fresh 32-byte secret r. The coordinator selects the round's clients and sends each of
them the signed selection: (round, attempt, group size, every selected client's identity key and commitment).
Only after seeing the selection – fixed, with its own commitment in it – does a client reveal r. The seed is
BLAKE2b over the selection hash and *all* the selected clients' reveals, so it is unpredictable to the
coordinator until the last honest reveal and fixed once the selection is; a missing reveal aborts the attempt
(the coordinator cannot choose a subset of reveals). The only lever left is to abort after the reveals and try
again; clients count such aborts (``PrivacyPolicy.max_aborted_reveals``). Every client recomputes the seed, the
partition and its own group, and refuses a task that differs.

Pure Python (stdlib only): the browser runs this file.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from typing import Any

SECRET_BYTES = 32


def _h(*parts: bytes, person: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=32, person=person[:16])
    for p in parts:
        h.update(struct.pack("<Q", len(p)))
        h.update(p)
    return h.digest()


def commitment(secret: bytes, client_id: str) -> bytes:
    """The commitment a client puts in its ``ready`` message (binding, hiding: BLAKE2b of a 256-bit secret)."""
    if len(secret) != SECRET_BYTES:
        raise ValueError("the reveal secret must be 32 bytes")
    return _h(secret, client_id.encode(), person=b"fl-seed-commit")


def selection_hash(round_: int, attempt: str, group_size: int, members: Mapping[str, bytes],
                   commitments: Mapping[str, bytes]) -> bytes:
    """Hash of the signed selection of one round attempt: who, with which identity keys and commitments."""
    if set(members) != set(commitments):
        raise ValueError("every selected client needs exactly one commitment")
    body = [struct.pack("<QI", round_, group_size), attempt.encode()]
    for cid in sorted(members):
        body += [cid.encode(), bytes(members[cid]), bytes(commitments[cid])]
    return _h(*body, person=b"fl-selection")


def round_seed(selection: bytes, reveals: Mapping[str, bytes]) -> bytes:
    """The public partition seed: BLAKE2b(selection hash ‖ every reveal, in client-id order)."""
    parts = [selection]
    for cid in sorted(reveals):
        parts += [cid.encode(), bytes(reveals[cid])]
    return _h(*parts, person=b"fl-round-seed")


def check_reveals(commitments: Mapping[str, bytes], reveals: Mapping[str, bytes]) -> None:
    """``ValueError`` unless ``reveals`` opens every commitment of the selection (and nothing else)."""
    if set(reveals) != set(commitments):
        raise ValueError("the reveals do not cover exactly the selected clients")
    for cid, r in reveals.items():
        if len(r) != SECRET_BYTES or commitment(r, cid) != commitments[cid]:
            raise ValueError(f"the reveal of {cid} does not open its commitment")


def group_binding(seed: bytes, selection: bytes, group: int, members: list[str], identity_keys: Mapping[str, bytes],
                  degree: int, threshold: int, dp: Mapping[str, Any]) -> bytes:
    """32 bytes that bind a group's full configuration (selection, attempt, seed, members and keys, graph,
    threshold, DP parameters): mixed into every SecAgg+ KDF context and signature, so messages and keys of
    another attempt, group or configuration never verify or decrypt."""
    body = [seed, selection, struct.pack("<III", group, degree, threshold),
            json.dumps(dict(dp), sort_keys=True, separators=(",", ":")).encode()]
    for cid in members:
        body += [cid.encode(), bytes(identity_keys[cid])]
    return _h(*body, person=b"fl-group-config")
