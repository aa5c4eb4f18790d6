"""client_pyodide.client.BrowserClient on CPython (no browser): the browser client's privacy policy, its privacy
ledger and the frame-withholding contract of ``receive`` / ``ledger_persisted``, against the real coordinator
engine driven in-process. The Pyodide-only pieces are replaced: PyNaCl instead of libsodium-wrappers, the pure
backend instead of the WASM one, and a stand-in model for the kernel (training itself is tested in
tests/test_browser_kernel.py and tests/test_browser_session.py). Also: every module the session imports is in the
Python bundle the browser loads, and imports without numpy/torch/grpc (as in Pyodide)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from client_pyodide import bundle, runtime
from client_pyodide.client import BrowserClient
from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.federation.events import Connected, DataReceived, Log, Send, SetTimer, TimerFired
from flcore.modelspec import ModelSpec, mlp
from flcore.policy import PrivacyPolicy
from flcrypto import default_crypto
from privacy.backends import pure_backend
from privacy.dp.ledger import LedgerEntry, PrivacyLedger

RELAXED_GROUPS = {"min_group_size": 3, "min_noise_multiplier": 0.0, "epsilon_budget": None}


class StandInModel:
    """What ``runtime.model`` returns in the browser (a KernelModel), minus the kernel: a fixed small update."""

    def __init__(self, spec: ModelSpec) -> None:
        self.n = spec.num_parameters()

    def set_parameters(self, params: Any) -> None:
        self.params = params

    def train(self, x: Any, y: Any, epochs: int, batch_size: int, lr: float, momentum: float, seed: int
              ) -> tuple[list[float], float]:
        return [0.01 * (((i + seed) % 7) - 3) for i in range(self.n)], 0.25

    def predict(self, x: Any) -> list[int]:
        return [0]


@pytest.fixture(autouse=True)
def cpython_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_state", {"crypto": default_crypto(), "backend": pure_backend()})
    monkeypatch.setattr(runtime, "model", lambda spec_json, max_batch=64, fresh=False:
                        StandInModel(ModelSpec.from_json(spec_json)))


def _client(name: str, **kw: Any) -> BrowserClient:
    cl = BrowserClient(default_crypto().blake2b(name.encode()), **kw)
    cl.set_data(bytes(4 * 8 * 3), [0, 1, 2])
    return cl


class Federation:
    """The engine and BrowserClients, frames passed in memory. ``persist`` simulates the SDK's IndexedDB write:
    it records the ledger state, checks that nothing withheld had been handed out, then releases the frames."""

    def __init__(self, cfg: FederationConfig, clients: dict[str, BrowserClient]) -> None:
        self.engine = Engine(cfg, default_crypto().blake2b(b"coordinator"), seed=1)
        self.clients = clients
        self.outbox: list[tuple[str, bytes]] = []
        self.events: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
        self.sent: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}  # describe_frame of every frame
        self.stored: dict[str, dict[str, Any]] = {}
        self.logs: list[str] = []
        self.timers: dict[str, float] = {}
        self.now = 0.0

    def _send(self, name: str, frames: list[bytes]) -> None:
        for f in frames:
            self.sent[name].append(BrowserClient.describe_frame(f))
            self.outbox.append((name, f))

    def _client_step(self, name: str, frames: list[bytes]) -> None:
        cl = self.clients[name]
        self._send(name, frames)
        for ev in cl.take_events():
            self.events[name].append(ev)
            if ev["type"] == "ledger":
                # the masked input has not left: it waits for the stored ledger
                assert not any(d["phase"] == "masked" and d["round"] == ev["round"] for d in self.sent[name])
                state = json.loads(ev["state_json"])
                assert state == ev["state"]
                self.stored[name] = state
                released = cl.ledger_persisted()
                assert [BrowserClient.describe_frame(f)["phase"] for f in released] == ["masked"]
                self._send(name, released)

    def _actions(self, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self._client_step(a.conn, self.clients[a.conn].receive(a.data))
            elif isinstance(a, SetTimer):
                self.timers[a.name] = a.at
            elif isinstance(a, Log):
                self.logs.append(a.message)

    def run(self, max_steps: int = 20_000, until: Any = None) -> None:
        for name, cl in self.clients.items():
            self._actions(self.engine.handle(Connected(name, "inprocess", self.now)))
            self._client_step(name, cl.start())
        for _ in range(max_steps):
            if self.engine.finished or (until is not None and until()):
                return
            if self.outbox:
                conn, data = self.outbox.pop(0)
                self._actions(self.engine.handle(DataReceived(conn, data, self.now)))
            elif "phase" in self.timers:
                self.now = max(self.now + 1.0, self.timers.pop("phase"))
                self._actions(self.engine.handle(TimerFired("phase", self.now)))
            else:
                return


def _cfg(**kw: Any) -> FederationConfig:
    base = dict(model=mlp([8, 4, 3]), rounds=3, clients_per_round=5, group_size=5, aggregator="mean",
                l2_clip=1.0, noise_multiplier=2.0, epsilon=1e6, delta=1e-5, phase_timeout=5, train_timeout=5)
    base.update(kw)
    return FederationConfig(**base)


# ── policy and ledger arguments ─────────────────────────────────────────────────────────────────────────
def test_policy_defaults_and_options() -> None:
    assert _client("a").policy() == PrivacyPolicy().to_dict() == BrowserClient.default_policy()
    cl = _client("b", policy={"min_group_size": 7, "threshold_rule": "majority", "min_noise_multiplier": 1,
                              "epsilon_budget": None, "delta": 1e-7})
    p = cl.policy()
    assert p["min_group_size"] == 7 and p["threshold_rule"] == "majority" and p["min_noise_multiplier"] == 1.0
    assert p["epsilon_budget"] is None and cl.ledger_summary()["budget"] is None
    assert cl.ledger_summary()["delta"] == 1e-7
    # the SDK passes JSON text (it keeps null: "no budget")
    assert _client("c", policy=json.dumps({"epsilon_budget": None, "colluders": 2})).policy()["colluders"] == 2


@pytest.mark.parametrize("bad, why", [({"min_group_sise": 5}, "unknown policy option"),
                                      ({"min_group_size": "5"}, "must be int"),
                                      ({"min_group_size": 0}, "min_group_size must be >= 1"),
                                      ({"threshold_rule": "half"}, "threshold_rule"),
                                      ({"epsilon_budget": -1.0}, "epsilon_budget"),
                                      ({"delta": 1.5}, "delta"),
                                      ("[1, 2]", "expected an object"), ("{", "not JSON")])
def test_invalid_policy_is_a_clear_error(bad: Any, why: str) -> None:
    with pytest.raises(ValueError, match="invalid privacy policy") as e:
        _client("a", policy=bad)
    assert why in str(e.value)


def test_ledger_is_restored_and_a_corrupt_one_refused() -> None:
    entry = LedgerEntry(round=3, attempt="ab", group_size=5, threshold=4, z_guaranteed=2.0, z_own=1.0,
                        config_hash="cd")
    state = PrivacyLedger(10.0, 1e-6, [entry]).to_dict()
    cl = _client("a", ledger=json.dumps(state))
    s = cl.ledger_summary()
    assert s["participations"] == 1 and s["last_round"] == 3 and 0 < s["epsilon"] < s["epsilon_worst_case"]
    assert cl.ledger_state() == state and json.loads(cl.ledger_state_json()) == state
    assert _client("b", ledger=state).ledger_summary() == s  # a dict works too
    for bad in ({**state, "entries": [{**state["entries"][0], "z_own": "x"}]}, {"version": 99}, "[]"):
        with pytest.raises(ValueError, match="invalid privacy ledger"):
            _client("c", ledger=bad)


# ── against the engine ──────────────────────────────────────────────────────────────────────────────────
def test_ledger_event_precedes_the_withheld_masked_input_and_matches_the_coordinator() -> None:
    """Default policy (groups ≥ 5, z ≥ 0.5, ε ≤ 10) against a coordinator that satisfies it: every round each
    client emits a ``ledger`` event whose state holds the round, the masked input is handed out only by
    ``ledger_persisted()``, and the ledger counts exactly the participations the coordinator accounts."""
    names = [f"web{i}" for i in range(5)]
    fed = Federation(_cfg(), {n: _client(n) for n in names})
    fed.run()
    assert fed.engine.finished and [h["survivors"] for h in fed.engine.history] == [5, 5, 5]
    for n in names:
        cl = fed.clients[n]
        ledger_events = [e for e in fed.events[n] if e["type"] == "ledger"]
        assert [e["round"] for e in ledger_events] == [1, 2, 3]
        assert [e["summary"]["participations"] for e in ledger_events] == [1, 2, 3]
        assert [[x["round"] for x in e["state"]["entries"]] for e in ledger_events][-1] == [1, 2, 3]
        assert not [e for e in fed.events[n] if e["type"] in ("failed", "declined")], fed.events[n]
        assert [e["declined"] for e in fed.events[n] if e["type"] == "round_done"] == [False] * 3
        assert cl.withheld == 0 and cl.ledger_persisted() == []
        # the ledger the page stored is the client's ledger; the coordinator counted the same participations
        assert fed.stored[n] == cl.ledger_state()
        assert cl.ledger_summary()["participations"] == fed.engine.participation.count(cl.client_id) == 3
        # the guaranteed ε (≥ t − colluders honest shares) is below the worst case (own share only)
        s = cl.ledger_summary()
        assert 0 < s["epsilon"] < s["epsilon_worst_case"] and s["epsilon"] <= 10
        # a reloaded page restores it from the stored state
        again = BrowserClient(cl.identity_seed, ledger=json.dumps(fed.stored[n]))
        assert again.ledger_summary() == s and again.client_id == cl.client_id
        # the local loss stays local: no message the client sent carries it (the metrics message is gone)
        assert {d["type"] for d in fed.sent[n]} == {"hello", "auth", "ready", "reveal", "secagg"}


def test_default_policy_declines_groups_of_three_before_revealing() -> None:
    """A coordinator configured with groups of 3: the default-policy client declines at the selection (no
    reveal, no SecAgg+ message), the coordinator logs it and never counts it; relaxed clients are unaffected."""
    clients = {"strict": _client("strict")}
    clients.update({f"ok{i}": _client(f"ok{i}", policy=RELAXED_GROUPS) for i in range(3)})
    fed = Federation(_cfg(group_size=3, clients_per_round=3, min_clients_per_round=3, noise_multiplier=0.5,
                          rounds=2), clients)
    fed.run()
    strict = fed.clients["strict"]
    declined = [e for e in fed.events["strict"] if e["type"] == "declined"]
    assert declined and all(e["code"] == "policy_group_size" for e in declined), fed.events["strict"]
    assert "groups of 3 < the client's minimum 5" in declined[0]["message"]
    assert not [e for e in fed.events["strict"] if e["type"] in ("failed", "train", "ledger")]
    sent = {d["type"] for d in fed.sent["strict"]}
    assert "decline" in sent and not sent & {"reveal", "secagg"}, fed.sent["strict"]
    assert any(f"client {strict.client_id[:8]} declined round" in m and "policy_group_size" in m for m in fed.logs)
    assert fed.engine.participation.count(strict.client_id) == 0 and strict.ledger_summary()["participations"] == 0
    # its round_done (the abandoned attempt) is marked as declined
    assert [e["declined"] for e in fed.events["strict"] if e["type"] == "round_done"] == [True] * len(declined)
    assert fed.engine.finished and all(h["survivors"] == 3 for h in fed.engine.history)


def test_budget_decline_at_the_task() -> None:
    """A client whose stored ledger is close to its ε budget declines the task that would exceed it (code
    ``budget``; its group completes without it) and records nothing."""
    z = _cfg().dp_config(4).noise_multiplier_with(3)  # the guaranteed multiplier of a group of 5, t = 4
    entries: list[LedgerEntry] = []
    ledger = PrivacyLedger(10.0, 1e-6, entries)
    while True:
        e = LedgerEntry(round=1000 + len(entries), attempt="aa", group_size=5, threshold=4, z_guaranteed=z,
                        z_own=z / 2, config_hash="bb")
        if ledger.epsilon_after(e) > 10.0:
            break
        ledger.record(e)
    assert ledger.epsilon() <= 10.0
    clients = {f"web{i}": _client(f"web{i}") for i in range(5)}
    clients["web0"] = _client("web0", ledger=ledger.to_dict())
    fed = Federation(_cfg(rounds=1), clients)
    fed.run()
    ev = fed.events["web0"]
    declined = [e for e in ev if e["type"] == "declined"]
    assert [e["code"] for e in declined] == ["budget"] and declined[0]["round"] == 1, ev
    assert "budget" in declined[0]["message"] and not [e for e in ev if e["type"] == "ledger"]
    assert [(e["round"], e["declined"]) for e in ev if e["type"] == "round_done"] == [(1, True)]
    assert fed.clients["web0"].ledger_summary()["participations"] == len(entries)
    assert "secagg" not in {d["type"] for d in fed.sent["web0"]}
    assert fed.engine.history[0]["survivors"] == 4


def test_withheld_frames_queue_and_are_dropped_with_the_connection() -> None:
    """A driver that feeds another frame before confirming the ledger gets nothing to send from it (its frames
    queue behind the masked input); a new connection (start) discards what was withheld."""
    names = [f"web{i}" for i in range(5)]
    fed = Federation(_cfg(rounds=1), {n: _client(n) for n in names})
    orig = Federation._client_step

    def step(self: Federation, name: str, frames: list[bytes]) -> None:  # web0 never confirms
        if name != "web0":
            return orig(self, name, frames)
        self._send(name, frames)
        self.events[name] += self.clients[name].take_events()

    fed._client_step = step.__get__(fed)  # type: ignore[method-assign]
    fed.run(until=lambda: fed.clients["web0"].withheld > 0)
    cl = fed.clients["web0"]
    assert cl.withheld == 1 and [e["type"] for e in fed.events["web0"]][-1] == "ledger"
    assert cl.ledger_summary()["participations"] == 1  # recorded before anything left
    assert not [d for d in fed.sent["web0"] if d["phase"] == "masked"]
    cl.start()  # reconnect: the lost connection's masked input is never sent
    assert cl.withheld == 0 and cl.ledger_persisted() == []
    assert cl.ledger_summary()["participations"] == 1  # the entry stays (conservative)


# ── the bundle ──────────────────────────────────────────────────────────────────────────────────────────
BUNDLE_CLOSURE = textwrap.dedent(
    """
    import builtins, json, sys
    _real = builtins.__import__
    BLOCKED = ("numpy", "torch", "grpc", "scipy", "dp_accounting", "opacus", "nacl")
    def _blocked(name, *a, **k):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return _real(name, *a, **k)
    builtins.__import__ = _blocked
    import client_pyodide.client, client_pyodide.runtime, client_pyodide.engine, client_pyodide.backend
    import client_pyodide.sodium_crypto, client_pyodide.kernel
    import flcore.session, flcore.policy, flcore.assignment, privacy.dp.ledger
    from flcore.policy import PrivacyPolicy
    from privacy.dp.ledger import PrivacyLedger
    from privacy.client_pipeline import DistributedDPConfig
    from privacy.secagg import GroupConfig, SecAggClient, partition
    PrivacyPolicy.from_dict({"epsilon_budget": None})
    PrivacyLedger(10.0, 1e-6).summary()
    root = sys.argv[1]
    mods = sorted({m.__file__[len(root) + 1:] for m in list(sys.modules.values())
                   if getattr(m, "__file__", None) and m.__file__.startswith(root + "/")
                   and "site-packages" not in m.__file__})
    print(json.dumps(mods))
    """
)


def test_bundle_holds_everything_the_session_imports() -> None:
    files = set(bundle.python_files())
    assert {"flcore/policy.py", "flcore/assignment.py", "privacy/dp/ledger.py", "flcore/session.py"} <= files
    out = subprocess.run([sys.executable, "-c", BUNDLE_CLOSURE, str(bundle.REPO_ROOT)], capture_output=True,
                         text=True, timeout=120, cwd=bundle.REPO_ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "flcore/policy.py" in loaded and "privacy/dp/ledger.py" in loaded
    assert loaded <= files, sorted(loaded - files)


def test_the_global_model_is_kept_and_restored_only_with_the_coordinators_signature() -> None:
    """Each task's global model comes out as a ``model`` event with the signed file (the SDK keeps it in IndexedDB);
    a new BrowserClient of the same identity restores it for inference – after the federation ended, after a
    reload – but only with a valid signature of its pinned coordinator key: a tampered file, a model signed by
    another key, or no pinned key at all is refused (ValueError) and nothing is loaded."""
    import mle

    clients = {f"c{i}": _client(f"c{i}", policy=RELAXED_GROUPS) for i in range(3)}
    fed = Federation(_cfg(group_size=3, clients_per_round=3, min_clients_per_round=3, noise_multiplier=0.5,
                          rounds=2), clients)
    fed.run()
    models = [e for e in fed.events["c0"] if e["type"] == "model"]
    assert [e["round"] for e in models] == [0, 1]  # the models the tasks of rounds 1 and 2 carried
    kept = fed.clients["c0"].model_file()
    json.dumps(fed.events["c0"])  # events stay JSON (the model file comes from model_file())
    assert mle.loads(kept, trusted_keys=[fed.engine.public_key], require_signature=True).metadata["round"] == 1
    coordinator_key = fed.clients["c0"].session.coordinator_key

    again = BrowserClient(default_crypto().blake2b(b"c0"), coordinator_key=coordinator_key, policy=None)
    assert again.load_model(kept) == 1 and again.model_round == 1
    assert again.predict(bytes(4 * 8)) == [0]

    for bad in (kept[:-1] + bytes([kept[-1] ^ 1]),  # the signature trailer
                kept[:40] + bytes([kept[40] ^ 1]) + kept[41:]):  # the header/body
        fresh = BrowserClient(default_crypto().blake2b(b"c0"), coordinator_key=coordinator_key, policy=None)
        with pytest.raises(ValueError, match="stored global model rejected"):
            fresh.load_model(bad)
        assert fresh.global_parameters is None and fresh.model_round is None
    original = mle.loads(kept)
    forged = mle.dumps(dict(original.items()), original.metadata,
                       signing_key=default_crypto().blake2b(b"not the coordinator"))
    with pytest.raises(ValueError, match="stored global model rejected"):
        BrowserClient(default_crypto().blake2b(b"c0"), coordinator_key=coordinator_key, policy=None).load_model(forged)
    with pytest.raises(ValueError, match="no pinned coordinator key"):
        BrowserClient(default_crypto().blake2b(b"c0"), policy=None).load_model(kept)
