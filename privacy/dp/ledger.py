"""A client's own privacy ledger: ε of everything its updates have been released in, computed on the client.

Pure Python (stdlib only, no numpy or dp_accounting at import or call time): it runs in the browser under
Pyodide, so a client can keep and check its budget without trusting the coordinator's accountant.

**Mechanism.** Each recorded participation is one Gaussian mechanism *without* subsampling: the client knows
its input entered a released sum, so no amplification by sampling is claimed. For a composition of Gaussian
mechanisms with noise multipliers z_i (σ_i / L2 sensitivity) the Rényi DP of order α is

    RDP(α) = α/2 · Σ_i 1/z_i²                         (Mironov, CSF'17, "Rényi Differential Privacy", Prop. 7),

so the whole ledger is summarised by the single number ``inv_z2 = Σ 1/z_i²``. It is converted to (ε, δ) with
the bound of Canonne, Kamath & Steinke (NeurIPS'20, Prop. 12) / Balle, Barthe, Gaboardi, Hsu & Sato
(AISTATS'20, Thm. 21):

    ε = min_α  RDP(α) + log((α − 1)/α) − (log δ + log α)/(α − 1),

taken over exactly the orders :data:`ORDERS` and with exactly the special cases of ``dp_accounting``'s
``RdpAccountant`` (``compute_epsilon``), so the figure equals the coordinator's RDP accountant to rounding.

**Two figures per entry.** In the distributed discrete Gaussian of Kairouz, Liu & Steinke (ICML'21) every
client adds a noise share σ_c = z·Δ/√t sized for the secure-aggregation threshold t: any released sum contains
at least t inputs, hence at least t shares, hence noise of variance ≥ z²Δ² – *if those t inputs are honest*.
``z_guaranteed`` is that multiplier (the one the budget applies to); ``z_own`` = σ_c/Δ is the client's own
share alone, the figure that remains if secure aggregation is broken and the client's input is released with
nothing but its own noise (:meth:`PrivacyLedger.epsilon_worst_case`).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# The RDP orders of the coordinator's accountant (privacy.dp.accounting re-exports this same tuple).
ORDERS = tuple(sorted({*(1.75 + x / 4 for x in range(0, 41)), *range(12, 64), 128, 256, 512, 1024}))

_HEX = re.compile(r"[0-9a-f]{1,128}")
_LEDGER_VERSION = 1
_ENTRY_KEYS = ("round", "attempt", "group_size", "threshold", "z_guaranteed", "z_own", "config_hash")


def inv_z2_of(z: float) -> float:
    """1/z² of one Gaussian release with noise multiplier ``z`` (``inf`` for z = 0: no noise, no privacy)."""
    if isinstance(z, bool) or not isinstance(z, (int, float)) or not (z >= 0 and math.isfinite(z)):
        raise ValueError(f"noise multiplier must be a finite number >= 0, got {z!r}")
    zz = float(z) * float(z)
    return math.inf if zz == 0 else 1.0 / zz


def z_from_inv(inv_z2: float) -> float:
    """The single noise multiplier equivalent to a composition with Σ 1/z_i² = ``inv_z2``: (Σ 1/z_i²)^(−1/2)
    (``inf`` for 0 – nothing released – and 0 for ``inf``)."""
    _check_inv(inv_z2)
    if inv_z2 == 0:
        return math.inf
    return 0.0 if math.isinf(inv_z2) else 1.0 / math.sqrt(inv_z2)


def _check_inv(inv_z2: Any) -> None:
    if isinstance(inv_z2, bool) or not isinstance(inv_z2, (int, float)) or not inv_z2 >= 0:  # also NaN
        raise ValueError(f"inv_z2 (Σ 1/z²) must be a number >= 0 or inf, got {inv_z2!r}")


def _check_delta(delta: Any) -> None:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise ValueError(f"δ must be in (0, 1), got {delta!r}")


def gaussian_rdp_epsilon(inv_z2: float, delta: float) -> float:
    """ε at ``delta`` of a composition of full-participation Gaussian mechanisms with Σ 1/z_i² = ``inv_z2``.

    RDP(α) = α·inv_z2/2 (Mironov CSF'17), converted with the Canonne–Kamath–Steinke / Balle et al. bound over
    :data:`ORDERS`, replicating ``dp_accounting.rdp.compute_epsilon`` case by case. 0 for ``inv_z2 == 0``,
    ``inf`` for ``inv_z2 == inf``. Non-decreasing in ``inv_z2``. Memoized (it depends on two floats only).
    """
    _check_inv(inv_z2)
    _check_delta(delta)
    return _epsilon(float(inv_z2), float(delta))


@lru_cache(maxsize=4096)
def _epsilon(inv_z2: float, delta: float) -> float:
    if inv_z2 == 0:
        return 0.0
    if math.isinf(inv_z2):
        return math.inf
    best = math.inf
    log_delta2 = delta * delta
    for a in ORDERS:
        r = a * inv_z2 / 2
        if log_delta2 + math.expm1(-r) > 0:  # KL bound: δ ≤ sqrt(1 − exp(−RDP)) already gives ε = 0
            eps = 0.0
        else:  # every order is > 1.01, the branch dp_accounting takes for such orders
            eps = r + math.log1p(-1 / a) - math.log(delta * a) / (a - 1)
        if eps < best:
            best = eps
    return max(0.0, best)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class LedgerEntry:
    """One participation: this client's input went into the released sums of ``round`` / ``attempt``."""

    round: int
    attempt: str  # hex identifier of the round attempt (a round can be re-run after an abort)
    group_size: int  # n: members of the client's secure-aggregation group
    threshold: int  # t: fewest inputs in a sum the group releases (SecAgg+ threshold)
    z_guaranteed: float  # noise multiplier of a released sum when t honest inputs carry their shares (0 = no noise)
    z_own: float  # this client's own noise share alone (σ_c/Δ): the figure if secure aggregation is broken
    config_hash: str  # hex hash of the task configuration the client checked

    def __post_init__(self) -> None:
        if not _is_int(self.round) or not 0 <= self.round < 1 << 63:
            raise ValueError(f"round must be an int in [0, 2^63), got {self.round!r}")
        for name in ("attempt", "config_hash"):
            v = getattr(self, name)
            if not isinstance(v, str) or not _HEX.fullmatch(v):
                raise ValueError(f"{name} must be 1-128 lowercase hex digits, got {v!r}")
        if not _is_int(self.group_size) or not 1 <= self.group_size < 1 << 31:
            raise ValueError(f"group_size must be an int in [1, 2^31), got {self.group_size!r}")
        if not _is_int(self.threshold) or not 1 <= self.threshold <= self.group_size:
            raise ValueError(f"threshold must be an int in 1..group_size={self.group_size}, got {self.threshold!r}")
        for name in ("z_guaranteed", "z_own"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
            object.__setattr__(self, name, float(v))
        # a released sum holds the client's own share plus the other t − 1: it never carries less noise than
        # the share alone (tolerance: the two figures are computed along different float paths when t = 1)
        if self.z_own > self.z_guaranteed * (1 + 1e-9):
            raise ValueError(f"z_own={self.z_own} exceeds z_guaranteed={self.z_guaranteed}: a released sum carries "
                             f"at least the client's own noise share")

    @property
    def key(self) -> tuple[int, str]:
        return self.round, self.attempt

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _ENTRY_KEYS}

    @classmethod
    def from_dict(cls, d: Any) -> LedgerEntry:
        """Strict: exactly the entry's keys, ints as ints, numbers as numbers; anything else is ``ValueError``."""
        if not isinstance(d, dict):
            raise ValueError(f"ledger entry must be an object, got {type(d).__name__}")
        if set(d) != set(_ENTRY_KEYS):
            raise ValueError(f"ledger entry keys must be {sorted(_ENTRY_KEYS)}, got {sorted(map(str, d))}")
        kw = dict(d)
        for k in ("z_guaranteed", "z_own"):
            kw[k] = _number(kw[k], k)
        return cls(**kw)


class LedgerBudgetExceeded(Exception):
    """Recording the participation would take the client's guaranteed ε above its budget; nothing recorded."""

    def __init__(self, epsilon_after: float, budget: float, delta: float) -> None:
        super().__init__(f"taking part would bring this client's ε to {epsilon_after:.4f} > its budget "
                         f"{budget:.4f} (δ={delta:g}); participation refused")
        self.epsilon_after, self.budget, self.delta = epsilon_after, budget, delta


def _number(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(v).__name__}")
    try:
        return float(v)
    except OverflowError as e:
        raise ValueError(f"{name} out of range") from e


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass
class PrivacyLedger:
    """The client's record of participations and its (ε, δ) budget on the guaranteed figure.

    Change ``entries`` only through :meth:`record` (the Σ 1/z² sums are cached; appending directly is noticed,
    other edits are not). ``epsilon_budget`` may be ``math.inf`` (no budget).
    """

    epsilon_budget: float
    delta: float
    entries: list[LedgerEntry] = field(default_factory=list)
    _inv_guaranteed: float = field(default=0.0, init=False, repr=False, compare=False)
    _inv_own: float = field(default=0.0, init=False, repr=False, compare=False)
    _keys: set[tuple[int, str]] = field(default_factory=set, init=False, repr=False, compare=False)
    _synced: int = field(default=-1, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        b = self.epsilon_budget
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not b > 0:  # NaN fails too
            raise ValueError(f"ε budget must be > 0 (math.inf: no budget), got {b!r}")
        _check_delta(self.delta)
        self.epsilon_budget, self.delta = float(b), float(self.delta)
        if not isinstance(self.entries, list):
            raise ValueError("entries must be a list of LedgerEntry")
        self._sync()

    def _sync(self) -> None:
        if self._synced == len(self.entries):
            return
        inv_g = inv_o = 0.0
        keys: set[tuple[int, str]] = set()
        for e in self.entries:
            if not isinstance(e, LedgerEntry):
                raise ValueError(f"ledger entries must be LedgerEntry, got {type(e).__name__}")
            if e.key in keys:
                raise ValueError(f"round {e.round} attempt {e.attempt} is recorded twice")
            keys.add(e.key)
            inv_g += inv_z2_of(e.z_guaranteed)
            inv_o += inv_z2_of(e.z_own)
        self._inv_guaranteed, self._inv_own, self._keys, self._synced = inv_g, inv_o, keys, len(self.entries)

    # ── figures ──────────────────────────────────────────────────────────────────────────────────────
    def inv_z2(self) -> float:
        """Σ 1/z_guaranteed² over the recorded entries."""
        self._sync()
        return self._inv_guaranteed

    def epsilon(self) -> float:
        """The guaranteed ε (honest threshold inputs carry their noise): ``inf`` if any entry had no noise."""
        return gaussian_rdp_epsilon(self.inv_z2(), self.delta)

    def epsilon_worst_case(self) -> float:
        """ε from the client's own noise shares alone (secure aggregation broken); never below :meth:`epsilon`."""
        self._sync()
        return max(gaussian_rdp_epsilon(self._inv_own, self.delta), self.epsilon())

    def recorded(self, entry: LedgerEntry) -> bool:
        self._sync()
        return entry.key in self._keys

    def epsilon_after(self, entry: LedgerEntry) -> float:
        """The guaranteed ε if ``entry`` were recorded (unchanged if its (round, attempt) already is)."""
        if self.recorded(entry):
            return self.epsilon()
        return gaussian_rdp_epsilon(self._inv_guaranteed + inv_z2_of(entry.z_guaranteed), self.delta)

    def check(self, entry: LedgerEntry) -> float:
        """Raise :class:`LedgerBudgetExceeded` if ``entry`` would take the guaranteed ε above the budget; else
        return ε after it."""
        after = self.epsilon_after(entry)
        if after > self.epsilon_budget:
            raise LedgerBudgetExceeded(after, self.epsilon_budget, self.delta)
        return after

    def record(self, entry: LedgerEntry) -> float:
        """Check, then append (once per (round, attempt)). Returns the guaranteed ε after it."""
        if not isinstance(entry, LedgerEntry):
            raise ValueError(f"expected a LedgerEntry, got {type(entry).__name__}")
        after = self.check(entry)
        if entry.key not in self._keys:
            self.entries.append(entry)
            self._inv_guaranteed += inv_z2_of(entry.z_guaranteed)
            self._inv_own += inv_z2_of(entry.z_own)
            self._keys.add(entry.key)
            self._synced = len(self.entries)
        return after

    def participations(self) -> int:
        """How many releases the client's input entered (distinct (round, attempt) pairs)."""
        self._sync()
        return len(self.entries)

    def summary(self) -> dict[str, Any]:
        """JSON-safe overview. Infinite figures are ``None`` (``private`` False: some release carried no noise;
        ``budget`` None: no budget)."""
        eps, worst = self.epsilon(), self.epsilon_worst_case()
        return {"budget": _json_float(self.epsilon_budget), "delta": self.delta,
                "epsilon": _json_float(eps), "private": math.isfinite(eps),
                "epsilon_worst_case": _json_float(worst), "participations": self.participations(),
                "last_round": max((e.round for e in self.entries), default=None)}

    # ── persistence ──────────────────────────────────────────────────────────────────────────────────
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (no inf/NaN): ``{"version", "epsilon_budget" (None = no budget), "delta", "entries"}``."""
        return {"version": _LEDGER_VERSION, "epsilon_budget": _json_float(self.epsilon_budget), "delta": self.delta,
                "entries": [e.to_dict() for e in self.entries]}

    @classmethod
    def from_dict(cls, d: Any) -> PrivacyLedger:
        """Inverse of :meth:`to_dict`. Malformed input (missing/extra keys, wrong types, out-of-range values,
        a (round, attempt) twice) raises ``ValueError``."""
        if not isinstance(d, dict):
            raise ValueError(f"ledger must be an object, got {type(d).__name__}")
        want = {"version", "epsilon_budget", "delta", "entries"}
        if set(d) != want:
            raise ValueError(f"ledger keys must be {sorted(want)}, got {sorted(map(str, d))}")
        if not _is_int(d["version"]) or d["version"] != _LEDGER_VERSION:
            raise ValueError(f"unsupported ledger version {d['version']!r}")
        budget = math.inf if d["epsilon_budget"] is None else _number(d["epsilon_budget"], "epsilon_budget")
        if not isinstance(d["entries"], list):
            raise ValueError("ledger entries must be a list")
        return cls(budget, _number(d["delta"], "delta"), [LedgerEntry.from_dict(e) for e in d["entries"]])


def write_ledger_file(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Atomically replace the ledger file at ``path`` with ``state`` (:meth:`PrivacyLedger.to_dict`): write a
    sibling ``.tmp``, fsync, rename – a crash leaves the old ledger or the new one, never a torn file. Native
    clients and the Flower Mod write their ledgers through it (the browser keeps its ledger in IndexedDB)."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
