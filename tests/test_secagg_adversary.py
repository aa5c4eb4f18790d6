"""Routes 3a/3b/3c and 9 (docs/threat-model.md): a malicious coordinator against the real SecAgg+ clients.

The adversary (tests/secagg_adversary.py) withholds share ciphertexts, shows different survivor sets to
different clients and signs anything on behalf of colluders; it then tries to reconstruct the target's exact
input from what the honest clients released. The sparse-graph and weak-threshold configurations fall (which is
why clients refuse them); the configurations the client policy accepts withstand every split the adversary can
try with the colluders the policy admits.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from secagg_adversary import SplitViewAdversary, make_group

from flcore.policy import PolicyViolation, PrivacyPolicy, colluders_withstood, required_threshold
from flcrypto import default_crypto
from privacy.secagg import GroupConfig, SecAggSignatureError
from privacy.secagg.graph import default_degree
from privacy.secagg.messages import Message


def _split_attack(n: int, t: int | None, colluders: int, degree: int | None = None) -> bool:
    """Try every split of the honest members into a view that contains the target (A) and one that does not
    (B); True if any split gives the adversary the target's exact input."""
    cfg, inputs, seeds = make_group(n, degree=degree, threshold=t)
    members = list(cfg.members)
    target, bad = members[0], set(members[n - colluders:]) if colluders else set()
    honest = [m for m in members if m not in bad and m != target]
    for r in range(len(honest) + 1):
        for a_side in itertools.combinations(honest, r):
            a = {target, *a_side}
            v1 = tuple(sorted(set(members)))
            v2 = tuple(sorted(set(members) - {target}))
            views = {m: (v1 if m in a else v2) for m in members if m not in bad}
            adv = SplitViewAdversary(cfg, inputs, seeds, bad)
            adv.run(views)
            x = adv.recover(target)
            if x is not None:
                assert np.array_equal(x, inputs[target])
                return True
    return False


def test_route_3b_one_colluder_breaks_a_majority_threshold_on_odd_groups() -> None:
    # t = ⌊(k+1)/2⌋ + 1 = 3 for a group of 5: the coordinator and ONE colluding member recover x_u exactly
    assert _split_attack(5, 3, colluders=1)
    # the policy refuses that threshold, and the one it requires withstands the split with the same colluder
    with pytest.raises(PolicyViolation):
        PrivacyPolicy().check_group(5, 4, 3)
    t = required_threshold(5, "two-thirds", 1)
    assert t == 4 and colluders_withstood(5, t) >= 1
    assert not _split_attack(5, t, colluders=1)
    assert not _split_attack(5, t, colluders=colluders_withstood(5, t))
    assert _split_attack(5, t, colluders=colluders_withstood(5, t) + 1)  # the bound is tight


@pytest.mark.parametrize("n", [6, 7])
def test_split_view_needs_more_colluders_than_the_policy_admits(n: int) -> None:
    t = required_threshold(n, "two-thirds", 1)
    c = colluders_withstood(n, t)
    assert c >= 1
    assert not _split_attack(n, t, colluders=c)


def test_route_3a_sparse_graph_falls_to_a_coordinator_with_no_colluder() -> None:
    """Bell et al.'s sparse graph (n = 11, k = 8, t = 5): the coordinator forwards to u only the shares of t − 1
    neighbours S, shows {u} ∪ S one survivor set and everyone else another containing u: u's self-mask share and
    the S members' mask keys are released, and x_u falls – no colluding client needed."""
    n = 11
    cfg, inputs, seeds = make_group(n, degree=default_degree(n))
    t, members = cfg.t, list(cfg.members)
    u = members[0]
    for cand in itertools.combinations(sorted(cfg.neighbours(u)), t - 1):
        s = set(cand)
        rest = set(members) - s - {u}
        if all(len(cfg.holders(r) & rest) >= t for r in rest) and all(len(cfg.holders(w) & rest) >= t for w in s) \
                and len(cfg.holders(u) & rest) + 1 >= t:
            break
    else:  # pragma: no cover - the graph of this seed admits such an S (checked)
        pytest.fail("no suitable S")
    v1, v2 = tuple(sorted({u} | s)), tuple(sorted(set(members) - s))
    adv = SplitViewAdversary(cfg, inputs, seeds, set())
    adv.run({m: (v1 if m in s or m == u else v2) for m in members}, shares_from={u: s})
    x = adv.recover(u)
    assert x is not None and np.array_equal(x, inputs[u])
    # clients refuse sparse graphs; on the complete graph the same coordinator learns nothing
    with pytest.raises(PolicyViolation, match="sparse"):
        PrivacyPolicy(min_group_size=5).check_group(n, default_degree(n), t)
    cfg2, inputs2, seeds2 = make_group(n, threshold=required_threshold(n, "two-thirds", 1))
    adv2 = SplitViewAdversary(cfg2, inputs2, seeds2, set())
    adv2.run({m: (v1 if m in s or m == u else v2) for m in members}, shares_from={u: s})
    assert adv2.recover(u) is None


def test_route_3a_complete_graph_without_colluders_every_split_fails() -> None:
    assert not _split_attack(7, required_threshold(7, "majority", 0), colluders=0)


def test_route_3c_groups_of_three_are_refused() -> None:
    """n = 3, t = 2: the coordinator, one colluding member and one natural dropout leave a 'sum' of the target
    and the colluder – the target's input minus a value the coordinator knows. The policy refuses such groups;
    with n = 5 and t = 4 a released sum holds ≥ 3 honest inputs against one colluder."""
    policy = PrivacyPolicy()
    for t in (1, 2, 3):
        with pytest.raises(PolicyViolation, match="group of 3"):
            policy.check_group(3, 2, t)
    policy.check_group(5, 4, 4)
    assert required_threshold(5, policy.threshold_rule, policy.colluders) - policy.colluders >= 3


def test_route_9_a_retried_attempt_never_verifies_the_first_attempts_signatures() -> None:
    """Round, group and seed are the same in a retried attempt; the binding (configuration hash with the
    attempt) is not, so a message signed in attempt 1 does not verify in attempt 2."""
    c = default_crypto()
    seed = b"\x05" * 32
    pk = c.ed25519_public_key(seed)
    common = dict(round=4, group=1, members=("a", "b"), identity_keys={"a": pk, "b": pk}, vector_length=8,
                  modulus_bits=32, public_seed=b"q" * 32)
    first = GroupConfig(**common, binding=b"1" * 32)
    second = GroupConfig(**common, binding=b"2" * 32)
    msg = Message("advertise", 4, 1, "a", "server", {"x": b"1"}).sign(c, seed, first.binding)
    msg.verify(c, pk, first.binding)
    with pytest.raises(SecAggSignatureError):
        msg.verify(c, pk, second.binding)
    assert first.context() != second.context()  # and every KDF output differs too
