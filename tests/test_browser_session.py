"""Browser clients (client_pyodide.client.BrowserClient in Pyodide: the same flcore.session, kernel training,
WasmBackend, libsodium-wrappers) federate with native clients (CPython session + torch) through the real
coordinator engine, driven in-process: frames go between the engine (in this process) and the page through
Playwright instead of a socket. Groups of 5 (the coordinator's default, two-thirds threshold) mix both kinds;
SecAgg+ and distributed DP are on. Every client checks each task against its privacy policy and records each
participation in its ledger; the browser clients' masked inputs are withheld until the ledger is confirmed
stored (``ledger_persisted``). The network transports and the JS SDK come on top of this; the engine does not
know which kind a client is.

RELAXED POLICY: the accuracy comparison needs little noise (z = 0.01), below the clients' default noise floor
(0.5), and 8 rounds at that noise exceed the default ε budget of 10 – so every client here, browser and native,
runs with ``min_noise_multiplier = 0.01`` and no ε budget. Why so little: the clients draw their noise from the
OS, so the final accuracy is a random variable; at z = 0.05 its spread over runs of the native-only federation
was 0.025 (8 runs), and the 0.06 margin between two independent runs failed about one run in ten (issue 13 F21).
At z = 0.01 the spread is 0.0046 (8 runs: 0.871–0.882), so the margin is ~9 standard deviations of the difference
and what is left for it to catch is a systematic gap between browser and native training. Groups (≥ 5), threshold rule and colluders stay at
the safe defaults. tests/test_browser_client_policy.py covers the default policy."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
import torch
from browser_support import browser_page  # noqa: F401  (module-scoped fixture)

from client_native.torch_model import build_module, evaluate, flatten, set_parameters, train_local
from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.federation.events import Connected, DataReceived, PersistRound, Send, SetTimer, TimerFired
from federated_data import load_digits
from flcore.modelspec import mlp
from flcore.policy import PrivacyPolicy
from flcore.session import ClientSession, Failed, LedgerUpdated, SendFrame, Train
from flcrypto import default_crypto

pytestmark = pytest.mark.browser

# the relaxed policy of this module (see the docstring), as the SDK passes it (JSON) and for the native sessions
RELAXED = {"min_noise_multiplier": 0.01, "epsilon_budget": None}
NATIVE_POLICY = PrivacyPolicy(min_noise_multiplier=0.01, epsilon_budget=math.inf)

SETUP = """
import base64, json, __main__
from client_pyodide.client import BrowserClient
a = json.loads(ARGS)
__main__.CLIENTS = {}
for name, shard in a["shards"].items():
    cl = BrowserClient(bytes.fromhex(shard["seed"]), coordinator_key=bytes.fromhex(a["key"]), max_batch=32,
                       policy=json.dumps(a["policy"]))
    cl.set_data(base64.b64decode(shard["x"]), shard["y"])
    __main__.CLIENTS[name] = cl
result = {name: cl.client_id for name, cl in __main__.CLIENTS.items()}
"""

# one frame in; the frames out. A "ledger" event stands for the SDK's IndexedDB write: only then does
# ledger_persisted() hand out the masked input (checked: it was not among the frames receive() returned)
STEP = """
import __main__
cl = __main__.CLIENTS[NAME]
frames = cl.start() if FRAME is None else cl.receive(bytes.fromhex(FRAME))
early = [cl.describe_frame(f)["phase"] for f in frames]
events = cl.take_events()
for ev in events:
    if ev["type"] == "ledger":
        assert "masked" not in early, early
        held = cl.ledger_persisted()
        ev["released"] = [cl.describe_frame(f)["phase"] for f in held]
        frames += held
        del ev["state"], ev["state_json"]
result = {"frames": [f.hex() for f in frames], "events": events}
"""


def run_federation(page, cfg: FederationConfig, n_browser: int, n_native: int):
    torch.set_num_threads(1)
    c = default_crypto()
    ds = load_digits()
    n = n_browser + n_native
    shards = np.array_split(np.random.default_rng(0).permutation(len(ds.y_train)), n)
    module = build_module(cfg.model)

    def evaluator(params):
        set_parameters(module, params)
        loss, acc = evaluate(module, ds.x_test, ds.y_test)
        return {"loss": loss, "accuracy": acc}

    engine = Engine(cfg, c.blake2b(b"coordinator"), seed=1, evaluator=evaluator)
    seed_of = {name: c.blake2b(name.encode()) for name in [f"web{i}" for i in range(n_browser)] + [f"nat{i}" for i in range(n_native)]}
    web = [f"web{i}" for i in range(n_browser)]
    native = {f"nat{i}": ClientSession(seed_of[f"nat{i}"], engine.public_key, policy=NATIVE_POLICY)
              for i in range(n_native)}
    shard_of = {name: shards[i] for i, name in enumerate(web + list(native))}
    if web:
        args = {"key": engine.public_key.hex(), "policy": RELAXED,
                "shards": {w: {"x": base64.b64encode(ds.x_train[shard_of[w]].tobytes()).decode(), "seed": seed_of[w].hex(),
                               "y": ds.y_train[shard_of[w]].tolist()} for w in web}}
        page.run(f"ARGS = {json.dumps(json.dumps(args))}\n" + SETUP)
    outbox: list[tuple[str, bytes]] = []
    persisted, failures, events, timers = [], [], [], {}
    now = 0.0

    def browser_step(conn: str, frame: bytes | None) -> None:
        out = page.run(f"NAME = {conn!r}\nFRAME = {None if frame is None else frame.hex()!r}\n" + STEP)
        outbox.extend((conn, bytes.fromhex(f)) for f in out["frames"])
        events.extend((conn, e) for e in out["events"])
        failures.extend((conn, e["code"]) for e in out["events"] if e["type"] in ("failed", "declined"))

    def native_actions(conn: str, actions) -> None:
        for a in actions:
            if isinstance(a, SendFrame):
                outbox.append((conn, a.data))
            elif isinstance(a, Train):
                local = build_module(a.spec)
                set_parameters(local, a.parameters)
                idx = shard_of[conn]
                hp = a.hyperparameters
                delta, loss = train_local(local, ds.x_train[idx], ds.y_train[idx], epochs=hp["epochs"],
                                          batch_size=hp["batch_size"], lr=hp["lr"], seed=a.round)
                native_actions(conn, native[conn].training_done(flatten(delta, a.spec), loss, len(idx)))
            elif isinstance(a, Failed):
                failures.append((conn, a.code))
            elif isinstance(a, LedgerUpdated):
                events.append((conn, {"type": "ledger", "summary": a.summary}))

    def run_actions(actions) -> None:
        for a in actions:
            if isinstance(a, Send):
                if a.conn in native:
                    native_actions(a.conn, native[a.conn].receive(a.data))
                else:
                    browser_step(a.conn, a.data)
            elif isinstance(a, PersistRound):
                persisted.append(a.round)
            elif isinstance(a, SetTimer):
                timers[a.name] = a.at

    for conn in web + list(native):
        run_actions(engine.handle(Connected(conn, "inprocess", now)))
        if conn in native:
            native_actions(conn, native[conn].start())
        else:
            browser_step(conn, None)
    steps = 0
    while not engine.finished and steps < 50_000:
        steps += 1
        if outbox:
            conn, data = outbox.pop(0)
            run_actions(engine.handle(DataReceived(conn, data, now)))
        else:
            now = max(now + 1.0, timers.get("phase", now + 1.0))
            run_actions(engine.handle(TimerFired("phase", now)))
    return engine, persisted, failures, events


CFG = dict(model=mlp([64, 32, 10]), rounds=8, clients_per_round=10, group_size=5, aggregator="median",
           local_epochs=3, lr=0.1, l2_clip=2.0, noise_multiplier=0.01, quantization_bits=16, modulus_bits=32,
           epsilon=1e6)


def test_browser_and_native_clients_federate_with_secure_aggregation(browser_page) -> None:  # noqa: F811
    cfg = FederationConfig(**CFG)
    engine, persisted, failures, events = run_federation(browser_page, cfg, n_browser=4, n_native=6)
    assert not failures, failures
    assert persisted == list(range(1, cfg.rounds + 1))
    # every round: both groups of 5 unmasked, all ten inputs (four masked and signed in the browser) summed
    assert all(h["groups_ok"] == 2 and h["survivors"] == 10 for h in engine.history), engine.history
    trained = [e for _, e in events if e["type"] == "trained"]
    assert len(trained) == 4 * cfg.rounds and all(np.isfinite(e["loss"]) for e in trained)
    assert sum(e["type"] == "round_done" for _, e in events) >= 4 * (cfg.rounds - 1)
    # every client's ledger: one entry per round, recorded before its masked input left (the browser's
    # masked input came out of ledger_persisted() only), and the count the coordinator keeps
    for conn in {c for c, _ in events}:
        ledger = [e for c, e in events if c == conn and e["type"] == "ledger"]
        assert [e["summary"]["participations"] for e in ledger] == list(range(1, cfg.rounds + 1)), conn
        assert all(e.get("released", ["masked"]) == ["masked"] for e in ledger), ledger
    assert sorted(engine.participation.count(c) for c in engine.registry) == [cfg.rounds] * 10
    acc = [h["accuracy"] for h in engine.history]
    assert acc[-1] > 0.75 and acc[-1] > acc[0] + 0.3, acc
    # the same configuration with native clients only reaches a comparable accuracy
    native_only, _, nf, _ = run_federation(browser_page, cfg, n_browser=0, n_native=10)
    assert not nf
    print("accuracy per round, mixed:", acc, "native only:", [h["accuracy"] for h in native_only.history])
    assert abs(native_only.history[-1]["accuracy"] - acc[-1]) < 0.06, (native_only.history[-1], acc)


def test_js_drives_browser_client_through_the_handshake(browser_page) -> None:  # noqa: F811
    """The wiring docs/browser-kernel.md gives the SDK, from JS: BrowserClient.callKwargs (JS null = no pinned key),
    start()/receive(Uint8Array) → arrays of Uint8Array frames, take_events(); the engine authenticates the client."""
    from coordinator.federation.events import ClientEnrolled

    c = default_crypto()
    engine = Engine(FederationConfig(**CFG), c.blake2b(b"coordinator"), seed=1)
    browser_page.js("""() => {
        const { BrowserClient } = window.fl.pyodide.pyimport("client_pyodide.client");
        window.jsClient = BrowserClient.callKwargs({ identity_seed: new Uint8Array(32).fill(7), coordinator_key: null });
        window.jsClient.set_data(new Float32Array(64 * 3), new Int32Array([1, 2, 3]));
    }""")
    step = """(hex) => {
        const frames = hex === null ? window.jsClient.start().toJs()
            : window.jsClient.receive(new Uint8Array(hex.match(/../g).map((b) => parseInt(b, 16)))).toJs();
        const events = window.jsClient.take_events().toJs({ dict_converter: Object.fromEntries });
        return { frames: frames.map((f) => (f instanceof Uint8Array ? Array.from(f, (b) => b.toString(16).padStart(2, "0")).join("") : null)), events };
    }"""
    actions = engine.handle(Connected("js", "inprocess", 0.0))
    out = browser_page.js(step, None)
    enrolled = []
    for _ in range(10):
        replies = []
        for f in out["frames"]:
            assert f is not None  # every frame is a Uint8Array
            for a in engine.handle(DataReceived("js", bytes.fromhex(f), 0.0)):
                if isinstance(a, Send):
                    replies.append(a.data)
                elif isinstance(a, ClientEnrolled):
                    enrolled.append(a)
        assert not [e for e in out["events"] if e["type"] == "failed"], out["events"]
        if not replies:
            break
        frames = []
        for r in replies:
            frames.extend(browser_page.js(step, r.hex())["frames"])
        out = {"frames": frames, "events": []}
    assert actions is not None
    assert [e.client_id for e in enrolled] == [browser_page.js("() => window.jsClient.client_id")]


def test_js_passes_policy_and_ledger_as_json(browser_page) -> None:  # noqa: F811
    """What the SDK passes from JS: the policy and a stored ledger as JSON text (null = no budget survives the
    crossing); policy() / ledger_summary() come back; an invalid policy or ledger is a Python ValueError with
    a clear message (the SDK turns it into err.code "policy" / "ledger")."""
    out = browser_page.js("""() => {
        const { BrowserClient } = window.fl.pyodide.pyimport("client_pyodide.client");
        const conv = (p) => p.toJs({ dict_converter: Object.fromEntries });
        const ledger = { version: 1, epsilon_budget: null, delta: 1e-6, entries: [
            { round: 4, attempt: "ab", group_size: 5, threshold: 4, z_guaranteed: 1.5, z_own: 0.75, config_hash: "cd" }] };
        const cl = BrowserClient.callKwargs({ identity_seed: new Uint8Array(32).fill(9), coordinator_key: null,
            policy: JSON.stringify({ min_group_size: 6, epsilon_budget: null }), ledger: JSON.stringify(ledger) });
        const errors = [];
        for (const [policy, led] of [[JSON.stringify({ min_group_sise: 6 }), null], [null, JSON.stringify({ version: 2 })]]) {
            try { BrowserClient.callKwargs({ identity_seed: new Uint8Array(32).fill(9), policy, ledger: led }); }
            catch (err) { errors.push(String(err.message).trim().split("\\n").pop()); }
        }
        return { policy: conv(cl.policy()), summary: conv(cl.ledger_summary()), state: JSON.parse(cl.ledger_state_json()),
                 errors };
    }""")
    assert out["policy"]["min_group_size"] == 6 and out["policy"]["min_noise_multiplier"] == 0.5
    assert out["summary"]["participations"] == 1 and out["summary"]["last_round"] == 4
    assert out["state"]["epsilon_budget"] is None and len(out["state"]["entries"]) == 1
    assert out["errors"][0].startswith("ValueError: invalid privacy policy: unknown policy option"), out["errors"]
    assert out["errors"][1].startswith("ValueError: invalid privacy ledger"), out["errors"]
