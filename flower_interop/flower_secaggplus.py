"""The server side of Flower's own ``secaggplus_mod``, per group, all groups' stages concurrently – for
:class:`~flower_interop.secure_workflow.GroupedSecureFitWorkflow` with ``protocol="flower-secaggplus"``.

Clients run Flower's Mod unchanged; this module speaks its four stages (setup, share keys, collect masked
vectors, unmask: Bell et al. CCS'20 as Flower implements it) with each group as its own complete graph
(``num_shares`` = the group's size), using Flower's own primitives for the arithmetic its Mod defines (Shamir
recombination, its mask PRG, its quantisation and weighting factor). What comes out of a group is the weighted
mean of its members' *weights* (Flower's Mod quantises the weights, not the update, to ±``clipping_range``); it is
returned as the group's sum of updates, (mean − global) × survivors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from flwr.app import RecordDict
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_extract,
    get_parameters_shape,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

from flower_interop.arrays import flat
from flower_interop.stages import Exchange, GroupOutcome

log = logging.getLogger(__name__)


class _Group:
    """One group's view of the protocol: members, who is still in, keys, forwarded shares, the masked sum."""

    def __init__(self, members: list[int], threshold: int) -> None:
        self.members, self.t = members, threshold
        self.active = set(members)
        self.keys: dict[int, tuple[bytes, bytes]] = {}
        self.forward: dict[int, tuple[list[int], list[bytes]]] = {m: ([], []) for m in members}
        self.shared: set[int] = set()  # answered the share-keys stage: survivors masked with them
        self.masked: list[np.ndarray] | None = None
        self.failure = ""

    def keep(self, replies: dict[int, dict[str, Any]]) -> None:
        self.active &= set(replies)
        self.check()

    def drop(self, member: int, why: str) -> None:
        """A member whose reply does not parse is a dropout (the group goes on without it)."""
        log.warning("node %d dropped from its group: %s", member, why)
        self.active.discard(member)
        self.check()

    def check(self) -> None:
        if not self.failure and len(self.active) < self.t:
            self.failure = f"only {len(self.active)} of {len(self.members)} nodes answered; threshold {self.t}"


def run_flower_secaggplus(ex: Exchange, rnd: int, fitins: dict[int, RecordDict], base: np.ndarray,
                          shapes: tuple[tuple[int, ...], ...], groups: list[list[int]],
                          threshold: Callable[[int], int], clipping_range: float,
                          quantization_range: int, modulus_range: int, max_weight: float) -> list[GroupOutcome]:
    """Run the four stages for every group at once; returns each group's sum of updates (or its failure).
    ``base``: the global model, flat; ``shapes``: its arrays' shapes."""
    gs = [_Group(g, threshold(len(g))) for g in groups]
    live = lambda: [g for g in gs if not g.failure]  # noqa: E731

    def send(build: Callable[[_Group, int], dict[str, Any]], with_fit: bool = False) -> dict[int, dict[str, Any]]:
        recs = {m: build(g, m) for g in live() for m in sorted(g.active)}
        reps = ex.send(recs, {m: fitins[m] for m in recs} if with_fit else None, key=RECORD_KEY_CONFIGS)
        for g in live():
            g.keep(reps)
        return reps

    # stage 0: the configuration, each group its own complete graph
    reps = send(lambda g, m: {Key.STAGE: Stage.SETUP, Key.SAMPLE_NUMBER: len(g.members),
                              Key.SHARE_NUMBER: len(g.members), Key.THRESHOLD: g.t,
                              Key.CLIPPING_RANGE: clipping_range, Key.TARGET_RANGE: quantization_range,
                              Key.MOD_RANGE: modulus_range, Key.MAX_WEIGHT: max_weight})
    for g in live():
        for m in sorted(g.active):
            pk1, pk2 = reps[m].get(Key.PUBLIC_KEY_1), reps[m].get(Key.PUBLIC_KEY_2)
            if isinstance(pk1, bytes) and isinstance(pk2, bytes):
                g.keys[m] = (pk1, pk2)
            else:
                g.drop(m, "setup reply without its two public keys")
    # stage 1: each member gets its group's public keys; encrypted shares come back addressed to members
    reps = send(lambda g, m: {Key.STAGE: Stage.SHARE_KEYS, **{str(v): list(g.keys[v]) for v in sorted(g.active)}})
    for g in live():
        g.shared = set(g.active)
        for src in sorted(g.active):
            dsts, cts = reps[src].get(Key.DESTINATION_LIST), reps[src].get(Key.CIPHERTEXT_LIST)
            if not (isinstance(dsts, list) and isinstance(cts, list) and len(dsts) == len(cts)):
                g.drop(src, "share-keys reply without matching destination and ciphertext lists")
                g.shared.discard(src)
                continue
            for dst, ct in zip(dsts, cts, strict=True):
                if dst in g.forward:  # never forward across groups
                    g.forward[dst][0].append(src)
                    g.forward[dst][1].append(ct)
    # stage 2: the forwarded shares with the fit instructions; masked vectors come back
    reps = send(lambda g, m: {Key.STAGE: Stage.COLLECT_MASKED_VECTORS, Key.SOURCE_LIST: g.forward[m][0],
                              Key.CIPHERTEXT_LIST: g.forward[m][1]}, with_fit=True)
    expected = [(1,), *shapes]  # Flower's weighting factor, then the model's arrays
    for g in live():
        for m in sorted(g.active):
            try:
                vec = [bytes_to_ndarray(b) for b in cast(list[bytes], reps[m][Key.MASKED_PARAMETERS])]
                if [a.shape for a in vec] != expected or any(a.dtype.kind not in "iu" for a in vec):
                    raise ValueError(f"masked vector of shapes {[a.shape for a in vec]}, expected {expected}")
            except (KeyError, TypeError, ValueError) as exc:  # its masks are then removed as a dropout's
                g.drop(m, f"masked-vector reply refused: {exc}")
                continue
            g.masked = vec if g.masked is None else parameters_addition(g.masked, vec)
        g.masked = parameters_mod(g.masked, modulus_range) if g.masked is not None else None
    survivors = {id(g): sorted(g.active) for g in live()}
    # stage 3: shares of the survivors' self-mask seeds and of the dropped members' mask keys
    reps = send(lambda g, m: {Key.STAGE: Stage.UNMASK, Key.ACTIVE_NODE_ID_LIST: survivors[id(g)],
                              Key.DEAD_NODE_ID_LIST: sorted(set(g.members) - set(survivors[id(g)]))})
    out = []
    for g in gs:
        if g.failure or g.masked is None:
            out.append(GroupOutcome(g.members, failure=g.failure or "no masked vectors"))
            continue
        try:
            mean = _unmask(g, survivors[id(g)], reps, clipping_range, quantization_range, modulus_range)
        except (ValueError, KeyError, TypeError) as exc:
            out.append(GroupOutcome(g.members, failure=f"unmasking failed: {exc}"))
            continue
        n = len(survivors[id(g)])
        out.append(GroupOutcome(g.members, survivors[id(g)], (flat(mean) - base) * n))
    return out


def _unmask(g: _Group, survivors: list[int], reps: dict[int, dict[str, Any]], clipping_range: float,
            quantization_range: int, modulus_range: int) -> list[np.ndarray]:
    """The group's weighted mean of weights: remove the survivors' self masks and the dropped members' pairwise
    masks, then undo Flower's quantisation and weighting factor."""
    shares: dict[int, list[bytes]] = {m: [] for m in g.members}
    for m in g.active:
        owners, sent = reps[m].get(Key.NODE_ID_LIST), reps[m].get(Key.SHARE_LIST)
        if not (isinstance(owners, list) and isinstance(sent, list) and len(owners) == len(sent)):
            continue  # a malformed unmask reply contributes no shares
        for owner, share in zip(owners, sent, strict=True):
            if owner in shares and isinstance(share, bytes):
                shares[owner].append(share)
    vec = g.masked
    assert vec is not None
    shapes = get_parameters_shape(vec)
    dead = set(g.members) - set(survivors)
    for owner, got in shares.items():
        if owner not in survivors and owner not in g.shared:
            continue  # dropped before sharing keys: nobody masked with it
        if len(got) < g.t:
            raise ValueError(f"{len(got)} shares of node {owner}'s secret; threshold {g.t}")
        secret = combine_shares(got)
        if owner in survivors:
            vec = parameters_subtraction(vec, pseudo_rand_gen(secret, modulus_range, shapes))
        elif owner in dead:
            for v in survivors:
                key = generate_shared_key(bytes_to_private_key(secret), bytes_to_public_key(g.keys[v][0]))
                mask = pseudo_rand_gen(key, modulus_range, shapes)
                vec = parameters_addition(vec, mask) if owner > v else parameters_subtraction(vec, mask)
    vec = parameters_mod(vec, modulus_range)
    q_total, vec = factor_extract(vec)
    mean = dequantize(vec, clipping_range, quantization_range)
    offset = -(len(survivors) - 1) * clipping_range
    return [(a + offset) * (quantization_range / q_total) for a in mean]
