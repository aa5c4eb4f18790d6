"""The client's own privacy ledger (privacy/dp/ledger.py): the pure-Python RDP figure against two accountant
libraries (dp_accounting, opacus), the budget, de-duplication, persistence and its strictness, and that it runs
without numpy (the browser)."""

from __future__ import annotations

import copy
import json
import math
import random
import subprocess
import sys
import textwrap
import warnings

import dp_accounting
import pytest
from dp_accounting.rdp import RdpAccountant
from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

from privacy.dp import ledger as ledger_mod
from privacy.dp.accounting import ORDERS
from privacy.dp.ledger import (
    LedgerBudgetExceeded,
    LedgerEntry,
    PrivacyLedger,
    gaussian_rdp_epsilon,
    inv_z2_of,
    z_from_inv,
)

DELTAS = (0.3, 1e-3, 1e-5, 1e-9, 1e-15)


def _dp_accounting_epsilon(zs: list[float], delta: float) -> float:
    acc = RdpAccountant(list(ORDERS))
    acc.compose(dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z) for z in zs]))
    return float(acc.get_epsilon(delta))


@pytest.mark.parametrize("delta", DELTAS)
@pytest.mark.parametrize("z", [0.05, 0.3, 0.5, 1.0, 2.0, 5.0, 20.0, 100.0, 1000.0])
def test_rdp_epsilon_equals_dp_accounting(z: float, delta: float) -> None:
    for count in (1, 3, 10, 100):
        theirs = _dp_accounting_epsilon([z] * count, delta)
        ours = gaussian_rdp_epsilon(count / z**2, delta)
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12), (z, count, delta)


def test_rdp_epsilon_equals_dp_accounting_for_mixed_noise_multipliers() -> None:
    rng = random.Random(7)
    for _ in range(60):
        zs = [rng.choice([0.2, 0.7, 1.0, 3.0]) * rng.uniform(0.5, 2.0) for _ in range(rng.randint(1, 40))]
        delta = rng.choice(DELTAS)
        inv = sum(1 / z**2 for z in zs)
        assert gaussian_rdp_epsilon(inv, delta) == pytest.approx(_dp_accounting_epsilon(zs, delta), rel=1e-9, abs=1e-12)


def test_rdp_epsilon_edge_cases_and_validation() -> None:
    assert gaussian_rdp_epsilon(0.0, 1e-5) == 0.0 and gaussian_rdp_epsilon(0, 1e-5) == 0.0
    assert gaussian_rdp_epsilon(math.inf, 1e-5) == math.inf
    assert gaussian_rdp_epsilon(1e-12, 1e-5) == 0.0  # the KL branch: nothing measurable
    for bad_inv in (-1e-9, math.nan, -math.inf, True, "1", None):
        with pytest.raises(ValueError):
            gaussian_rdp_epsilon(bad_inv, 1e-5)  # type: ignore[arg-type]
    for bad_delta in (0.0, 1.0, -0.1, 2.0, math.nan, False, None):
        with pytest.raises(ValueError):
            gaussian_rdp_epsilon(1.0, bad_delta)  # type: ignore[arg-type]
    # non-decreasing in Σ 1/z² (what max_epsilon over clients relies on)
    rng = random.Random(1)
    invs = sorted(10 ** rng.uniform(-14, 4) for _ in range(400))
    eps = [gaussian_rdp_epsilon(v, 1e-6) for v in invs]
    assert eps == sorted(eps) and eps[0] == 0.0 < eps[-1]


def test_inverse_helpers() -> None:
    assert inv_z2_of(0.5) == 4.0 and inv_z2_of(0.0) == math.inf
    assert z_from_inv(4.0) == 0.5 and z_from_inv(0.0) == math.inf and z_from_inv(math.inf) == 0.0
    assert z_from_inv(inv_z2_of(1.0) + inv_z2_of(1.0)) == pytest.approx(2**-0.5)
    for bad in (-1.0, math.nan, math.inf, True):
        with pytest.raises(ValueError):
            inv_z2_of(bad)
    with pytest.raises(ValueError):
        z_from_inv(-1.0)


# ── a second library: opacus ─────────────────────────────────────────────────────────────────────────────
def _opacus(z: float, steps: int, delta: float, orders: list[float]) -> tuple[float, float]:
    from opacus.accountants.analysis import rdp as ordp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # opacus warns when its optimum is at the end of its order grid
        rdp = ordp.compute_rdp(q=1.0, noise_multiplier=z, steps=steps, orders=orders)
        eps, alpha = ordp.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(eps), float(alpha)


def test_opacus_agrees() -> None:
    """opacus (sample_rate = 1) computes the same RDP and the same conversion (Balle et al. AISTATS'20,
    Thm. 21). Tolerances:
    - on our orders: equal to 1e-9 relative (opacus does not clamp at 0; we return max(0, ·) as dp_accounting);
    - on opacus' own default orders (1.1…10.9 step 0.1, 12…63; ours: 1.75…11.75 step 0.25, 12…63, 128…1024)
      the figures differ only where one side's optimal order is missing from the other's grid: ours is larger
      when opacus' optimum is an order we lack (below 1.75 for huge ε, or between our quarter steps), smaller
      when ours is an order opacus lacks (above 63, small ε). For ε in [0.5, 60] they agree within 1 %, and
      ours ≤ opacus' + 10 % wherever opacus' ε ≤ 100 (not "ours ≤ opacus'" in general: at z = 100 ours is
      3-5× smaller thanks to the orders up to 1024).
    """
    from opacus.accountants.rdp import RDPAccountant

    opacus_orders = list(RDPAccountant.DEFAULT_ALPHAS)
    checked = 0
    for z in (0.3, 0.5, 0.8, 1.0, 2.0, 5.0, 20.0, 100.0):
        for steps in (1, 10, 100):
            for delta in (1e-5, 1e-9):
                ours = gaussian_rdp_epsilon(steps / z**2, delta)
                same, _ = _opacus(z, steps, delta, list(ORDERS))
                assert ours == pytest.approx(max(0.0, same), rel=1e-9)
                theirs, alpha = _opacus(z, steps, delta, opacus_orders)
                if ours > theirs * (1 + 1e-9):  # opacus' optimum is an order we do not have
                    assert not any(math.isclose(alpha, a) for a in ORDERS)
                if ours < theirs * (1 - 1e-9):  # ours is an order opacus does not have
                    _, our_alpha = compute_epsilon(list(ORDERS), [a * steps / (2 * z * z) for a in ORDERS], delta)
                    assert not any(math.isclose(our_alpha, a) for a in opacus_orders)
                if 0.5 <= ours <= 60:
                    assert ours == pytest.approx(theirs, rel=0.01)
                    checked += 1
                if theirs <= 100:
                    assert ours <= theirs * 1.10
    assert checked >= 20


# ── the ledger ───────────────────────────────────────────────────────────────────────────────────────────
def _entry(rnd: int, z: float = 2.0, t: int = 3, n: int = 5, attempt: str = "a1") -> LedgerEntry:
    return LedgerEntry(round=rnd, attempt=attempt, group_size=n, threshold=t, z_guaranteed=z, z_own=z / math.sqrt(t),
                       config_hash="c0ffee" * 4)


def test_ledger_matches_dp_accounting_and_worst_case_is_larger() -> None:
    led = PrivacyLedger(epsilon_budget=math.inf, delta=1e-6)
    zs = [1.0, 2.0, 0.7, 3.0]
    for i, z in enumerate(zs):
        led.record(_entry(i, z=z, t=4))
    assert led.epsilon() == pytest.approx(_dp_accounting_epsilon(zs, 1e-6), rel=1e-9)
    own = [z / 2 for z in zs]  # z / √t with t = 4
    assert led.epsilon_worst_case() == pytest.approx(_dp_accounting_epsilon(own, 1e-6), rel=1e-9)
    assert led.epsilon_worst_case() > 2 * led.epsilon()
    # t = 1: the own share is the whole noise, the two figures coincide
    solo = PrivacyLedger(math.inf, 1e-6)
    solo.record(_entry(1, z=1.3, t=1, n=1))
    assert solo.epsilon_worst_case() == pytest.approx(solo.epsilon(), rel=1e-12)
    assert solo.participations() == 1 and led.participations() == 4


def test_ledger_refuses_what_would_exceed_the_budget() -> None:
    budget, delta, z = 5.0, 1e-6, 2.0
    led = PrivacyLedger(budget, delta)
    allowed = max(k for k in range(1, 1000) if gaussian_rdp_epsilon(k / z**2, delta) <= budget)
    for r in range(allowed):
        after = led.record(_entry(r, z=z))
        assert after == led.epsilon() <= budget
    eps_before = led.epsilon()
    with pytest.raises(LedgerBudgetExceeded, match="participation refused") as info:
        led.record(_entry(allowed, z=z))
    assert info.value.budget == budget and info.value.delta == delta
    assert info.value.epsilon_after == led.epsilon_after(_entry(allowed, z=z)) > budget
    assert led.participations() == allowed and led.epsilon() == eps_before  # nothing recorded
    with pytest.raises(LedgerBudgetExceeded):
        led.check(_entry(allowed, z=z))
    # a less noisy participation that fits is still accepted; a noiseless one never is under a finite budget
    led2 = PrivacyLedger(budget, delta)
    with pytest.raises(LedgerBudgetExceeded):
        led2.record(_entry(0, z=0.0))
    assert led2.participations() == 0
    # the budget applies to the guaranteed figure, not the worst case
    led3 = PrivacyLedger(3.0, delta)
    e = _entry(0, z=3.0, t=9, n=10)
    led3.record(e)
    assert led3.epsilon() <= 3.0 < led3.epsilon_worst_case()


def test_ledger_records_a_round_attempt_once() -> None:
    led = PrivacyLedger(100.0, 1e-6)
    e = _entry(3, z=1.0, attempt="ab")
    first = led.record(e)
    assert led.record(e) == first and led.participations() == 1
    assert led.record(_entry(3, z=0.1, attempt="ab")) == first  # same (round, attempt): not charged again
    assert led.epsilon_after(e) == led.epsilon() == first
    second = led.record(_entry(3, z=1.0, attempt="ac"))  # a re-run of the round is another release
    assert led.participations() == 2 and second > first
    assert second == pytest.approx(gaussian_rdp_epsilon(2.0, 1e-6), rel=1e-12)


def test_ledger_epsilon_uses_cached_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    led = PrivacyLedger(math.inf, 1e-6)
    for r in range(500):
        led.record(_entry(r, z=5.0))
    calls = []
    real = ledger_mod.inv_z2_of
    monkeypatch.setattr(ledger_mod, "inv_z2_of", lambda z: calls.append(z) or real(z))
    for _ in range(20):
        led.epsilon(), led.epsilon_worst_case(), led.summary()
    assert calls == []  # no pass over the entries
    assert led.epsilon() == pytest.approx(gaussian_rdp_epsilon(500 / 25, 1e-6), rel=1e-12)
    led.entries.append(_entry(500, z=5.0))  # appending directly is noticed
    assert led.epsilon() == pytest.approx(gaussian_rdp_epsilon(501 / 25, 1e-6), rel=1e-12)


def test_ledger_summary_and_round_trip_are_json_safe() -> None:
    led = PrivacyLedger(8.0, 1e-6)
    for r in range(4):
        led.record(_entry(r, z=1.5 + r / 7, attempt=f"{r:x}f"))
    text = json.dumps(led.to_dict(), allow_nan=False)
    back = PrivacyLedger.from_dict(json.loads(text))
    assert back == led and back.epsilon() == led.epsilon() and back.epsilon_worst_case() == led.epsilon_worst_case()
    assert back.to_dict() == led.to_dict()
    s = led.summary()
    assert s == {"budget": 8.0, "delta": 1e-6, "epsilon": led.epsilon(), "private": True,
                 "epsilon_worst_case": led.epsilon_worst_case(), "participations": 4, "last_round": 3}
    # no budget, and a release without noise: infinities become None, never Infinity in JSON
    free = PrivacyLedger(math.inf, 1e-6)
    assert free.summary()["last_round"] is None and free.summary()["epsilon"] == 0.0
    free.record(_entry(9, z=0.0))
    s = free.summary()
    json.dumps(s, allow_nan=False)
    assert s["budget"] is None and s["epsilon"] is None and s["private"] is False and s["epsilon_worst_case"] is None
    back = PrivacyLedger.from_dict(json.loads(json.dumps(free.to_dict(), allow_nan=False)))
    assert back == free and back.epsilon_budget == math.inf and back.epsilon() == math.inf


@pytest.mark.parametrize("bad", [
    {"round": -1}, {"round": True}, {"round": 1.0}, {"round": 1 << 63}, {"attempt": ""}, {"attempt": "XYZ"},
    {"attempt": "AB"}, {"attempt": 12}, {"config_hash": "0" * 129}, {"config_hash": None}, {"group_size": 0},
    {"threshold": 0}, {"threshold": 6}, {"threshold": 2.0}, {"z_guaranteed": -1.0}, {"z_guaranteed": math.nan},
    {"z_guaranteed": math.inf}, {"z_own": True}, {"z_own": "1"}, {"z_own": 2.0},  # z_own > z_guaranteed
])
def test_ledger_entry_validation(bad: dict) -> None:
    kw = {"round": 1, "attempt": "ab", "group_size": 5, "threshold": 3, "z_guaranteed": 1.0, "z_own": 0.5,
          "config_hash": "ff"}
    LedgerEntry(**kw)
    with pytest.raises(ValueError):
        LedgerEntry(**{**kw, **bad})


def test_ledger_validation() -> None:
    for budget, delta in [(0.0, 1e-6), (-1.0, 1e-6), (math.nan, 1e-6), (1.0, 0.0), (1.0, 1.0), (1.0, math.nan)]:
        with pytest.raises(ValueError):
            PrivacyLedger(budget, delta)
    with pytest.raises(ValueError, match="twice"):
        PrivacyLedger(1.0, 1e-6, [_entry(1), _entry(1)])
    with pytest.raises(ValueError):
        PrivacyLedger(1.0, 1e-6, [{"round": 1}])  # type: ignore[list-item]


_GARBAGE = [None, True, False, -1, 0, 1, 7, 2**70, 10**400, -0.0, 0.25, 1.5, 1e308, math.inf, -math.inf, math.nan,
            "", "ab", "xyz", "AB", "0" * 129, [], {}, [1], {"a": 1}, 3.0, b"ab"]


def _mutate(d: dict, rng: random.Random) -> None:
    where = rng.random()
    if where < 0.35 or not isinstance(d.get("entries"), list) or not d["entries"]:
        target = d
    elif where < 0.5:
        op = rng.randrange(3)
        if op == 0:
            d["entries"].append(copy.deepcopy(rng.choice(d["entries"])))  # a duplicate (round, attempt)
        elif op == 1:
            d["entries"][rng.randrange(len(d["entries"]))] = rng.choice(_GARBAGE)
        else:
            d["entries"] = rng.choice(_GARBAGE)
        return
    else:
        target = rng.choice(d["entries"])
        if not isinstance(target, dict):
            return
    op = rng.randrange(6)  # mostly wrong values, sometimes a missing or an unknown key
    keys = list(target)
    if op == 0 and keys:
        del target[rng.choice(keys)]
    elif op == 1:
        target[rng.choice(["extra", 5, "Round", "version"])] = rng.choice(_GARBAGE)
    elif keys:
        target[rng.choice(keys)] = rng.choice(_GARBAGE)


def test_ledger_from_dict_rejects_malformed_input_with_value_error_only() -> None:
    led = PrivacyLedger(6.0, 1e-6)
    for r in range(3):
        led.record(_entry(r, z=2.0, attempt=f"{r + 10:x}"))
    base = led.to_dict()
    rng = random.Random(20240611)
    rejected = accepted = 0
    for _ in range(600):
        d = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            _mutate(d, rng)
        try:
            got = PrivacyLedger.from_dict(d)
        except ValueError:
            rejected += 1
            continue
        accepted += 1  # a mutation that kept the ledger valid (e.g. another valid round number)
        again = PrivacyLedger.from_dict(json.loads(json.dumps(got.to_dict(), allow_nan=False)))
        assert again == got
    assert rejected > 450 and accepted > 0
    for bad in (None, [], "ledger", 3, {"version": 1}, {**base, "version": 2}, {**base, "version": True},
                {**base, "delta": None}, {**base, "epsilon_budget": "inf"}, {**base, "entries": {}}):
        with pytest.raises(ValueError):
            PrivacyLedger.from_dict(bad)


PURE = textwrap.dedent(
    """
    import builtins, math, sys
    _real = builtins.__import__
    BLOCKED = ("numpy", "scipy", "dp_accounting", "opacus", "torch")
    def _blocked(name, *a, **k):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return _real(name, *a, **k)
    builtins.__import__ = _blocked
    from privacy.dp.ledger import LedgerEntry, PrivacyLedger, gaussian_rdp_epsilon
    from privacy.dp import ParticipationAccountant, PrivacyLedger as P2
    assert P2 is PrivacyLedger
    led = PrivacyLedger(50.0, 1e-6)
    for r in range(3):
        led.record(LedgerEntry(r, "0a", 5, 3, 1.0, 1.0 / math.sqrt(3), "ff"))
    assert PrivacyLedger.from_dict(led.to_dict()) == led
    pa = ParticipationAccountant()
    pa.record(["a", "b"], 1.0)
    print("EPS", led.epsilon(), gaussian_rdp_epsilon(3.0, 1e-6), pa.max_epsilon(1e-6), led.summary()["private"])
    assert not any(m.split(".")[0] in BLOCKED for m in sys.modules), sorted(sys.modules)
    print("PURE-OK")
    """
)


def test_ledger_runs_without_numpy_or_accounting_libraries() -> None:
    out = subprocess.run([sys.executable, "-c", PURE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "PURE-OK" in out.stdout
    eps = [float(x) for x in out.stdout.split("EPS ")[1].split()[:3]]
    assert eps[0] == eps[1] == pytest.approx(_dp_accounting_epsilon([1.0] * 3, 1e-6), rel=1e-9)
