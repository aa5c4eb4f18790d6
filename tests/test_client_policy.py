"""Routes 1, 2 and 4 (docs/threat-model.md): the client checks every task parameter it can, against its own
policy and ledger, and refuses a forged task (a ``decline`` frame and a ``Failed`` action; nothing about its
update is sent). Driven by a hand-written malicious coordinator over the real wire format."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from coordinator_adversary import MaliciousCoordinator, outcome

from flcore import assignment
from flcore.policy import PrivacyPolicy
from flcore.session import ClientSession, LedgerUpdated
from flcore.wire import decode
from flcrypto import default_crypto


def _selected(policy: PrivacyPolicy | None = None, n_others: int = 4, group_size: int = 5, **session_kw: Any
              ) -> tuple[MaliciousCoordinator, ClientSession, dict[str, Any], bytes]:
    coord = MaliciousCoordinator()
    victim = ClientSession(default_crypto().random_bytes(32), coord.key, policy=policy or PrivacyPolicy(),
                           **session_kw)
    commitment = coord.connect(victim)
    sel = coord.selection(victim, commitment, n_others, group_size=group_size)
    actions = coord.select(victim, sel)
    _code, frames = outcome(actions, victim)
    if frames != ["reveal"]:
        return coord, victim, sel, b""
    env, _ = decode(actions[0].data, lambda e: victim.public_key)
    return coord, victim, sel, bytes.fromhex(env.body["secret"])


def test_an_honest_task_is_accepted() -> None:
    coord, victim, sel, reveal = _selected()
    assert assignment.commitment(reveal, victim.client_id) == sel["commitments"][victim.client_id]
    code, frames = outcome(coord.task(victim, 1, coord.honest_task(victim, sel, reveal)), victim)
    assert code == "train" and frames == []


def test_route_1_threshold_one_with_coordinator_members_and_no_noise_is_refused() -> None:
    """Today's main accepted this task: the 'group sum' would be the victim's exact quantized update."""
    coord, victim, sel, reveal = _selected(n_others=2, group_size=3)
    assert reveal == b""  # a selection in groups of 3 is declined before anything is revealed
    coord, victim, sel, reveal = _selected()
    task = coord.honest_task(victim, sel, reveal)
    task.update(threshold=1)
    task["dp"].update(noise_multiplier=0.0, min_contributors=1)
    code, frames = outcome(coord.task(victim, 1, task), victim)
    assert code == "policy_threshold" and frames == ["decline"]


@pytest.mark.parametrize("forgery, code", [
    (lambda t: t.update(threshold=3), "policy_threshold"),                       # majority: 1 colluder suffices
    (lambda t: t.update(degree=2), "policy_graph"),                               # sparse graph (route 3a)
    (lambda t: t["dp"].update(noise_multiplier=0.0), "policy_noise"),            # no DP
    (lambda t: t["dp"].update(noise_multiplier=0.1), "policy_noise"),            # below the client's minimum
    (lambda t: t["dp"].update(min_contributors=2), "policy_calibration"),        # route 4: share too small for t
    (lambda t: t["dp"].update(dimension=7), "policy_dimension"),                 # not the model's dimension
    (lambda t: t["dp"].update(modulus_bits=t["dp"]["bits"]), "policy_range"),    # the group sum would wrap
    (lambda t: t["dp"].update(modulus_bits=t["dp"]["modulus_bits"] - 1), "policy_range"),  # one bit short
    (lambda t: t["dp"].update(rotation_seed="ab" * 32), "bad_task"),             # a rotation not from the seed
    (lambda t: t["dp"].update(l2_clip=-1.0), "policy_range"),
    (lambda t: t["dp"].update(bogus=1), "policy_range"),
])
def test_forged_parameters_are_refused(forgery: Any, code: str) -> None:
    coord, victim, sel, reveal = _selected()
    task = coord.honest_task(victim, sel, reveal)
    forgery(task)
    got, frames = outcome(coord.task(victim, 1, task), victim)
    assert (got, frames) == (code, ["decline"])


def test_route_2_the_coordinator_cannot_choose_the_group() -> None:
    """Grinding the model bytes placed a target with chosen identities (today's main). Now the seed is
    fixed by the reveals, and every client recomputes its group from it."""
    coord, victim, sel, reveal = _selected(n_others=9)
    honest = coord.honest_task(victim, sel, reveal)
    chosen = [victim.client_id, *[o.id for o in sel["others"][:4]]]
    for forge in (
        lambda t: t.update(members=sorted(chosen), identity_keys={m: sel["members"][m].hex() for m in chosen}),
        lambda t: t.update(public_seed="00" * 32),
        lambda t: t["reveals"].update({sel["others"][0].id: "11" * 32}),   # a reveal that opens nothing
        lambda t: t["reveals"].pop(sel["others"][0].id),                   # a subset of the reveals
        lambda t: t.update(group=1 - t["group"]),
        lambda t: t["identity_keys"].update({t["members"][-1]: "22" * 32}),
        lambda t: t.update(attempt="another"),
    ):
        coord2, victim2, sel2, reveal2 = _selected(n_others=9)
        task = coord2.honest_task(victim2, sel2, reveal2)
        if sorted(task["members"]) == sorted(chosen):  # pragma: no cover - only the forged placement matters
            continue
        forge(task)
        code, frames = outcome(coord2.task(victim2, 1, task), victim2)
        assert code == "bad_task" and frames == ["decline"], code
    assert honest["members"] != sorted(chosen) or True


def test_route_2_a_commitment_opens_once_and_only_for_a_selection_that_carries_it() -> None:
    coord, victim, sel, reveal = _selected()
    assert reveal
    # the same selection again (a replayed or re-sent selection): the secret is spent
    assert outcome(coord.select(victim, sel), victim)[1] == []
    coord2 = MaliciousCoordinator()
    v2 = ClientSession(default_crypto().random_bytes(32), coord2.key)
    coord2.connect(v2)
    wrong = coord2.selection(v2, b"\x00" * 32, 4)  # not the commitment the client sent
    code, frames = outcome(coord2.select(v2, wrong), v2)
    assert frames == [] and code == "bad_message"


def test_aborted_reveals_are_bounded_whatever_the_round_number() -> None:
    """Grinding the seed means aborting after the reveals and trying again; announcing a new round number each
    time does not reset the client's count (only a completed round does)."""
    policy = PrivacyPolicy(max_aborted_reveals=2)
    coord = MaliciousCoordinator()
    victim = ClientSession(default_crypto().random_bytes(32), coord.key, policy=policy)
    commitment = coord.connect(victim)
    for attempt in range(3):
        sel = coord.selection(victim, commitment, 4, round_=1 + attempt, attempt=f"a{attempt}")
        actions = coord.select(victim, sel)
        code, frames = outcome(actions, victim)
        if attempt < 2:
            assert frames == ["reveal"]
        else:
            assert (code, frames) == ("policy_aborts", ["decline"])
        # the coordinator abandons the attempt after seeing the reveal: round_end failed → a fresh ready
        after = victim.receive(coord.frame(victim, "round_end", {"round": 1 + attempt, "status": "failed"}, 1))
        commitment = bytes.fromhex(coord.read(after[-1].data, victim).body["commitment"])


def test_the_client_budget_refuses_rounds_and_the_ledger_survives_a_restart(tmp_path: Path) -> None:
    policy = PrivacyPolicy(epsilon_budget=8.0)
    seed = default_crypto().random_bytes(32)
    coord = MaliciousCoordinator()
    state = None
    accepted = 0
    for r in range(1, 30):
        victim = ClientSession(seed, coord.key, policy=policy, ledger_state=state)
        commitment = coord.connect(victim)
        sel = coord.selection(victim, commitment, 4, round_=r)
        actions = coord.select(victim, sel)
        reveal = bytes.fromhex(coord.read(actions[0].data, victim).body["secret"])
        code, frames = outcome(coord.task(victim, r, coord.honest_task(victim, sel, reveal)), victim)
        if code == "budget":
            assert frames == ["decline"]
            break
        assert code == "train"
        # the ledger records the round when the masked input is about to leave; emulate that step directly
        victim.ledger.record(victim._entry)
        state = victim.ledger.to_dict()
        accepted += 1
    else:  # pragma: no cover
        pytest.fail("the budget never refused a round")
    assert accepted >= 1
    last = victim.ledger.entries[-1]
    assert victim.ledger.epsilon() <= 8.0 < victim.ledger.epsilon_after(dataclasses.replace(last, round=last.round + 1))
    assert len(victim.ledger.entries) == accepted  # the restarted sessions kept every earlier release
    assert victim.ledger.epsilon_worst_case() > victim.ledger.epsilon()
    assert math.isfinite(victim.ledger.epsilon())
    assert LedgerUpdated  # the action the drivers persist (exercised end to end in tests/test_engine_inprocess.py)


def test_a_replayed_attempt_is_not_released_twice_under_one_ledger_entry() -> None:
    """The ledger charges one release per (round, attempt); a coordinator that reuses the pair for a second task
    would get a second release for free. The client refuses an attempt it already released."""
    coord, victim, sel, reveal = _selected()
    outcome(coord.task(victim, 1, coord.honest_task(victim, sel, reveal)), victim)
    victim.ledger.record(victim._entry)  # the masked input of attempt a1 left (see the budget test)
    after = victim.receive(coord.frame(victim, "round_end", {"round": 1, "status": "ok"}, 1))
    commitment = bytes.fromhex(coord.read(after[-1].data, victim).body["commitment"])
    again = coord.selection(victim, commitment, 4)  # round 1, attempt a1 once more
    code, frames = outcome(coord.select(victim, again), victim)
    assert (code, frames) == ("bad_task", ["decline"])
    assert len(victim.ledger.entries) == 1


def test_a_group_of_one_is_declined_not_a_crash_when_colluders_are_assumed() -> None:
    policy = PrivacyPolicy(min_group_size=1, colluders=1, min_noise_multiplier=0.0, epsilon_budget=math.inf)
    coord, victim, sel, reveal = _selected(policy, n_others=4, group_size=1)
    task = coord.honest_task(victim, sel, reveal)
    task.update(threshold=1)
    task["dp"].update(min_contributors=1)
    code, frames = outcome(coord.task(victim, 1, task), victim)
    assert (code, frames) == ("policy_threshold", ["decline"])


def test_a_task_with_the_rotation_the_public_seed_determines_is_accepted() -> None:
    """The compact uplink's rotation seed is derived from the commit–reveal seed (privacy.rotation.rotation_seed):
    every client recomputes it, so the coordinator cannot pick the rotation; the honest one is accepted."""
    from privacy.rotation import rotation_seed

    coord, victim, sel, reveal = _selected()
    task = coord.honest_task(victim, sel, reveal)
    task["dp"].update(rotation_seed=rotation_seed(bytes.fromhex(task["public_seed"])).hex())
    code, frames = outcome(coord.task(victim, 1, task), victim)
    assert code == "train" and frames == []
