"""The compact downlink (issue 16 item 2, docs/protocol.md "Compact downlink"): the global model moves on the int8
grid of each round's step (server-side error feedback); a client that holds an earlier model gets the signed
deltas from it and rebuilds, byte for byte, the model file the coordinator signed – or declines the task and gets
the full model next time. Cheap: small MLPs, synthetic updates, no torch."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from coordinator_adversary import SPEC, MaliciousCoordinator, outcome

import mle
from coordinator.federation.config import FederationConfig
from coordinator.federation.downlink import Downlink
from coordinator.federation.engine import Engine
from coordinator.federation.events import Connected, DataReceived, PersistRound, Send, SetTimer, TimerFired
from flcore.modelspec import CNN_DIGITS, mlp
from flcore.policy import PrivacyPolicy
from flcore.protocol import COORDINATOR_ID
from flcore.session import ClientSession, Failed, SendFrame, Train
from flcore.wire import as_u8, decode, encode
from flcrypto import default_crypto
from mle.delta import apply_model_delta, model_delta_metadata

CRYPTO = default_crypto()


def _sha(model: bytes) -> str:
    return mle.loads(model).sha256()


# ── the delta rebuilds the signed model, bit for bit, on both reader paths ──────────────────────────────────
def _engine(spec: Any = None, **kw: Any) -> Engine:
    cfg = FederationConfig(model=spec or mlp([64, 32, 10]), rounds=10, clients_per_round=5, group_size=5,
                           aggregator="mean", **kw)
    return Engine(cfg, b"\x07" * 32, seed=3)


def _engine_round(e: Engine, rng: np.random.Generator, clip: float | None = None) -> None:
    """What complete_round does from the optimizer's output to the signed model (a random optimizer output)."""
    e.params = e.downlink.snap(e.model_bytes, e.params + rng.normal(0, 0.05, e.params.size).astype(np.float32))
    e.round_number += 1
    if clip is not None:
        e.clip = clip  # adaptive clipping moved C: the model's metadata changes too
    e.model_bytes = e._model_file()
    e.downlink.commit(e.model_bytes, e.seed)


@pytest.mark.parametrize("spec", [mlp([64, 32, 10]), CNN_DIGITS], ids=["mlp", "cnn"])
def test_the_delta_rebuilds_the_signed_model_bit_exact_with_numpy_and_in_pure_python(spec: Any) -> None:
    e = _engine(spec)
    rng = np.random.default_rng(0)
    m0 = e.model_bytes
    _engine_round(e, rng, clip=0.625)
    (d,) = e.downlink.deltas
    assert d.base == _sha(m0) and d.target == _sha(e.model_bytes)
    for backend in ("numpy", "pure"):
        delta = mle.loads(d.data, trusted_keys=[e.public_key], require_signature=True, backend=backend)
        rebuilt = apply_model_delta(mle.loads(m0, backend=backend), delta)
        assert rebuilt == e.model_bytes  # the signed file itself: body and trailer
        mle.loads(rebuilt, trusted_keys=[e.public_key], require_signature=True)
    assert e.downlink.residual.any()  # what the int8 grid left out of this step, carried to the next
    assert len(d.data) < len(e.model_bytes) // 2


def test_the_rebuild_needs_no_numpy(tmp_path: Path) -> None:
    """As in Pyodide without numpy: the chain m0 → m1 → m2 rebuilt with numpy unimportable gives the coordinator's
    signed file."""
    import subprocess

    e = _engine(CNN_DIGITS)
    files = [e.model_bytes]
    for clip in (0.5, 0.25):
        _engine_round(e, np.random.default_rng(4), clip=clip)
        files.append(e.model_bytes)
    assert len(e.downlink.deltas) == 2  # together still smaller than the model: both kept
    for i, blob in enumerate([files[0], *(d.data for d in e.downlink.deltas), files[-1]]):
        (tmp_path / f"{i}.mle").write_bytes(blob)
    script = f"""
import builtins, sys
real = builtins.__import__
def blocked(name, *a, **k):
    if name == "numpy" or name.startswith("numpy."):
        raise ImportError("numpy is blocked")
    return real(name, *a, **k)
builtins.__import__ = blocked
import mle
from mle.delta import apply_model_delta
d = {str(tmp_path)!r}
key = bytes.fromhex({e.public_key.hex()!r})
model = open(d + "/0.mle", "rb").read()
for i in (1, 2):
    delta = mle.loads(open(f"{{d}}/{{i}}.mle", "rb").read(), trusted_keys=[key], require_signature=True)
    model = apply_model_delta(mle.loads(model), delta)
assert "numpy" not in sys.modules
print(model == open(d + "/3.mle", "rb").read())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(Path(__file__).parent.parent)})
    assert out.stdout.strip() == "True", out.stderr[-2000:]


def test_error_feedback_keeps_the_model_within_one_step_of_the_unquantized_trajectory() -> None:
    """The residual carries what quantization left out: the int8 model stays within one round's rounding of the
    optimizer's own trajectory however many rounds pass (no drift)."""
    e = _engine()
    rng = np.random.default_rng(1)
    exact = e.params.astype(np.float64)
    for _ in range(20):
        step = rng.normal(0, 0.05, e.params.size)
        exact = exact + step
        e.params = e.downlink.snap(e.model_bytes, (e.params + step).astype(np.float32))
        e.round_number += 1
        e.model_bytes = e._model_file()
        e.downlink.commit(e.model_bytes, e.seed)
        # optimizer output + residual = the exact trajectory (to float32 rounding)
        assert np.allclose(e.params + e.downlink.residual, exact, atol=1e-5)
        assert np.abs(e.downlink.residual).max() < 0.05 * 6 / 254 + 1e-6


def test_full_downlink_leaves_the_model_as_the_optimizer_made_it() -> None:
    e = _engine(downlink="full")
    before = e.params.copy()
    new = before + 0.01
    assert e.downlink.snap(e.model_bytes, new) is new
    e.downlink.commit(e._model_file(), e.seed)
    assert not e.downlink.deltas and "downlink" not in e.state()
    assert set(e.downlink.payload(_sha(e.model_bytes), e.model_bytes, _sha(e.model_bytes))) == {"global_model"}


def test_a_client_without_the_base_gets_the_full_model_and_chains_are_kept_while_smaller() -> None:
    e = _engine()
    rng = np.random.default_rng(2)
    shas = [_sha(e.model_bytes)]
    for _ in range(4):
        _engine_round(e, rng)
        shas.append(_sha(e.model_bytes))
    cur = shas[-1]
    dl = e.downlink
    assert set(dl.payload("", e.model_bytes, cur)) == {"global_model"}  # announced nothing (an older client)
    assert set(dl.payload("ab" * 32, e.model_bytes, cur)) == {"global_model"}  # a model we never made
    assert dl.payload(cur, e.model_bytes, cur) == {}  # holds the current model: nothing to send
    assert set(dl.payload(shas[-2], e.model_bytes, cur)) == {"model_delta.0"}
    kept = len(dl.deltas)
    assert 1 <= kept < 4 and sum(len(d.data) for d in dl.deltas) < len(e.model_bytes)
    assert list(dl.payload(shas[-1 - kept], e.model_bytes, cur)) == [f"model_delta.{i}" for i in range(kept)]
    assert set(dl.payload(shas[-2 - kept], e.model_bytes, cur)) == {"global_model"}  # dropped: the chain got too long


def test_engine_state_resume_keeps_the_residual_and_reproduces_the_models() -> None:
    e = _engine()
    rng = np.random.default_rng(3)
    for _ in range(3):
        _engine_round(e, rng)
    state = json.loads(json.dumps(e.state()))  # what the store keeps (JSON)
    params = np.concatenate([np.asarray(mle.loads(e.model_bytes)[n]).ravel() for n, _ in e.spec.parameter_shapes()])
    r = Engine(e.cfg, e.seed, seed=3, params=params, state=state)
    assert r.model_bytes == e.model_bytes
    assert np.array_equal(r.downlink.residual, e.downlink.residual) and e.downlink.residual.any()
    fresh = Engine(e.cfg, e.seed, seed=3, params=params, state={k: v for k, v in state.items() if k != "downlink"})
    for x in (e, r, fresh):
        _engine_round(x, np.random.default_rng(9))
    assert r.model_bytes == e.model_bytes and r.downlink.deltas[-1].data == e.downlink.deltas[-1].data
    assert fresh.model_bytes != e.model_bytes  # without the residual the next model differs


# ── a tampered chain is refused and never trained on ───────────────────────────────────────────────────────
def _chain(coord: MaliciousCoordinator, n: int, seed: int = 0) -> tuple[list[bytes], list[bytes]]:
    """n signed model deltas from the coordinator's model: (models m0 … mn, deltas)."""
    dl = Downlink.from_state("int8-delta", SPEC, None)
    rng = np.random.default_rng(seed)
    models, deltas = [coord.model], []
    params = np.zeros(SPEC.num_parameters(), np.float32)
    for r in range(1, n + 1):
        params = dl.snap(models[-1], params + rng.normal(0, 0.1, params.size).astype(np.float32))
        tensors, pos = {}, 0
        for name, shape in SPEC.parameter_shapes():
            k = int(np.prod(shape))
            tensors[name] = params[pos: pos + k].reshape(shape)
            pos += k
        models.append(mle.dumps(tensors, {"kind": "model", "round": r, "model": SPEC.to_dict()},
                                signing_key=coord.seed))
        assert dl._pending is not None  # the model is tiny: signed here, since commit() keeps no delta this large
        base, encoded = dl._pending
        deltas.append(mle.dumps(encoded, model_delta_metadata(base, mle.loads(models[-1])), signing_key=coord.seed))
    return models, deltas


def _victim_task(held: bytes) -> tuple[MaliciousCoordinator, ClientSession, dict[str, Any], dict[str, Any]]:
    from test_client_policy import _selected

    coord, victim, sel, reveal = _selected(model_file=held, delta_downlink=True)
    return coord, victim, sel, coord.honest_task(victim, sel, reveal)


def _send_task(coord: MaliciousCoordinator, victim: ClientSession, config: dict[str, Any],
               tensors: dict[str, Any]) -> list[Any]:
    return victim.receive(coord.frame(victim, "task", {"config": config}, 1, tensors))


def _resign(delta: bytes, key: bytes, **meta: Any) -> bytes:
    f = mle.loads(delta)
    return mle.dumps({n: _encoded(f, n) for n in f.tensor_names}, {**f.metadata, **meta}, signing_key=key)


def _encoded(f: mle.MleFile, name: str) -> mle.Encoded:
    e = f.entry(name)
    return mle.Encoded(e.dtype.name, e.encoding, e.shape, dict(e.params),
                       tuple((s.role, s.dtype.name, bytes(f._segment_bytes(e, s))) for s in e.segments))


def test_an_honest_chain_is_applied_and_trained_on() -> None:
    models, deltas = _chain(MaliciousCoordinator(), 2)
    coord, victim, _, task = _victim_task(models[0])
    task["model_sha256"] = hashlib.sha256(mle.loads(models[2]).body).hexdigest()
    task["downlink"] = "int8-delta"
    actions = _send_task(coord, victim, task, {"model_delta.0": as_u8(deltas[0]), "model_delta.1": as_u8(deltas[1])})
    (train,) = [a for a in actions if isinstance(a, Train)]
    assert train.model_file == models[2] and victim.model_file == models[2] and victim.delta_downlink
    assert _ready_body(coord, victim)["model_sha256"] == _sha(models[2])


def _ready_body(coord: MaliciousCoordinator, victim: ClientSession) -> dict[str, Any]:
    """The body of the next ready the victim sends (as after its round_end)."""
    return coord.read(victim._ready().data, victim).body


@pytest.mark.parametrize("case", ["one byte", "wrong base", "foreign history", "gap", "missing link",
                                  "forged signature", "another model", "no base held"])
def test_a_tampered_chain_is_declined_never_trained_on_and_the_model_dropped(case: str) -> None:
    coord = MaliciousCoordinator()
    models, deltas = _chain(coord, 3)
    held = models[0]
    target = models[2]
    chain = [deltas[0], deltas[1]]
    names = ["model_delta.0", "model_delta.1"]
    if case == "one byte":
        b = bytearray(chain[1])
        b[len(b) // 2] ^= 1
        chain[1] = bytes(b)
    elif case == "wrong base":  # we hold m1, the chain starts from m0
        held = models[1]
    elif case == "foreign history":  # a genuine delta from m0 to another model, then ours from m1
        _, other = _chain(coord, 1, seed=5)
        chain = [other[0], deltas[1]]
    elif case == "gap":
        names = ["model_delta.0", "model_delta.2"]
    elif case == "missing link":  # m0 → m1, then m2 → m3: the second does not apply to m1
        chain, target = [deltas[0], deltas[2]], models[3]
    elif case == "forged signature":
        chain[1] = _resign(chain[1], b"\x99" * 32)
    elif case == "another model":  # the chain is fine, but the task signed another model's SHA-256
        target = models[3]
    elif case == "no base held":
        held = b""
    coord, victim, _, task = _victim_task(held)
    task["model_sha256"] = _sha(target)
    actions = _send_task(coord, victim, task, {n: as_u8(d) for n, d in zip(names, chain, strict=True)})
    code, frames = outcome(actions, victim)
    assert (code, frames) == ("bad_model", ["decline"]), [a for a in actions if isinstance(a, Failed)]
    assert not any(isinstance(a, Train) for a in actions)
    assert victim.model_file == b""  # the next ready names no model: the next task brings the full model
    assert "model_sha256" not in _ready_body(coord, victim)


def test_a_trailer_that_does_not_sign_the_rebuilt_model_is_refused() -> None:
    """A delta (signed by the coordinator) that carries a forged trailer for the model it builds: the rebuilt
    file's own signature does not verify, so the model is refused (the SHA-256 alone would not catch it)."""
    coord = MaliciousCoordinator()
    models, deltas = _chain(coord, 1)
    f = mle.loads(deltas[0])
    bad = bytearray.fromhex(f.metadata["model_trailer"])
    bad[-1] ^= 1
    forged = _resign(deltas[0], coord.seed, model_trailer=bytes(bad).hex())
    coord, victim, _, task = _victim_task(models[0])
    task["model_sha256"] = _sha(models[1])
    code, frames = outcome(_send_task(coord, victim, task, {"model_delta.0": as_u8(forged)}), victim)
    assert (code, frames) == ("bad_model", ["decline"]) and victim.model_file == b""


def test_a_full_model_task_still_works_and_no_sha_is_announced_to_a_coordinator_that_did_not_ask() -> None:
    from test_client_policy import _selected

    coord, victim, sel, reveal = _selected()
    code, _ = outcome(coord.task(victim, 1, coord.honest_task(victim, sel, reveal)), victim)
    assert code == "train" and victim.model_file == coord.model
    assert not victim.delta_downlink and "model_sha256" not in _ready_body(coord, victim)


# ── the engine with real sessions: every client's model is the coordinator's, and the downlink is small ────
def _federation(cfg: FederationConfig, n: int, rounds_seen: list[dict[str, Any]], tamper: Any = None) -> Engine:
    coord_seed = b"\x05" * 32
    engine = Engine(cfg, coord_seed, seed=1)
    sessions = {f"c{i}": ClientSession(CRYPTO.blake2b(bytes([i]), key=b"k" * 32), engine.public_key,
                                       policy=PrivacyPolicy.permissive()) for i in range(n)}
    outbox: list[tuple[str, bytes]] = []
    timers: dict[str, float] = {}
    now = 0.0

    def run(actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Send):
                data = a.data
                env, f = decode(data, lambda e: engine.public_key)
                if env.type == "task":
                    if tamper is not None:
                        data = tamper(a.conn, env, f, coord_seed) or data
                    rounds_seen.append({"conn": a.conn, "round": env.round, "bytes": len(data),
                                        "model": sum(f.entry(t).shape[0] for t in f.tensor_names),
                                        "full": len(engine.model_bytes), "sha": _sha(engine.model_bytes),
                                        "tensors": list(f.tensor_names)})
                client(a.conn, sessions[a.conn].receive(data))
            elif isinstance(a, SetTimer):
                timers[a.name] = a.at
            elif isinstance(a, PersistRound):
                assert a.model_bytes == engine.model_bytes

    def client(conn: str, actions: list[Any]) -> None:
        s = sessions[conn]
        for a in actions:
            if isinstance(a, SendFrame):
                outbox.append((conn, a.data))
            elif isinstance(a, Train):
                # the model this client trains on is exactly the coordinator's signed model of this round
                assert a.model_file == engine.model_bytes == s.model_file
                i = int(conn[1:])
                upd = np.random.default_rng([a.round, i]).normal(0, 0.02, cfg.model.num_parameters())
                client(conn, s.training_done(upd.astype(np.float32)))

    for conn, s in sessions.items():
        run(engine.handle(Connected(conn, "inprocess", now)))
        client(conn, s.start())
    steps = 0
    while not engine.finished and steps < 50_000:
        steps += 1
        if outbox:
            conn, data = outbox.pop(0)
            run(engine.handle(DataReceived(conn, data, now)))
        else:
            now = max(now + 1.0, timers.get("phase", now + 1.0))
            run(engine.handle(TimerFired("phase", now)))
    return engine


def test_in_process_federation_with_int8_delta_downlink() -> None:
    cfg = FederationConfig(model=mlp([64, 32, 10]), rounds=4, clients_per_round=5, group_size=5, aggregator="mean",
                           quantization_bits=14)
    seen: list[dict[str, Any]] = []
    engine = _federation(cfg, 5, seen)
    assert engine.round_number == 4 and len(seen) == 20
    for row in seen:
        if row["round"] == 1:  # nobody holds a model yet
            assert row["tensors"] == ["global_model"]
        else:  # everyone took part in the previous round: a chain of one delta
            assert row["tensors"] == ["model_delta.0"]
            assert row["model"] < 0.5 * row["full"], row
    assert engine.downlink.sent["delta"] == 15 and engine.downlink.sent["full"] == 5
    full = [r["model"] for r in seen if r["round"] == 1]
    delta = [r["model"] for r in seen if r["round"] > 1]
    print(f"downlink per client per round: full {full[0]} B, int8 delta {delta[0]} B")


def test_a_client_whose_delta_is_tampered_in_transit_declines_and_gets_the_full_model_next() -> None:
    """The coordinator's own frame replaced by one with a corrupted delta (signed again with its key – a
    coordinator bug): the client declines (bad_model), its group carries on without it, and its next task brings
    the full model, on which it trains again."""
    cfg = FederationConfig(model=mlp([64, 32, 10]), rounds=4, clients_per_round=5, min_clients_per_round=5,
                           group_size=5, aggregator="mean", quantization_bits=14, threshold_rule="majority",
                           colluders=0)

    def tamper(conn: str, env: Any, f: mle.MleFile, seed: bytes) -> bytes | None:
        if conn != "c0" or env.round != 2 or "model_delta.0" not in f:
            return None
        blob = bytearray(f.raw("model_delta.0"))
        blob[300] ^= 0x10
        return encode(env, seed, {"model_delta.0": as_u8(bytes(blob))})

    seen: list[dict[str, Any]] = []
    engine = _federation(cfg, 5, seen, tamper)
    assert engine.round_number == 4
    c0 = {r["round"]: r["tensors"] for r in seen if r["conn"] == "c0"}
    assert c0[2] == ["model_delta.0"] and c0[3] == ["global_model"] and c0[4] == ["model_delta.0"]
    assert engine.history[1]["survivors"] == 4 and engine.history[2]["survivors"] == 5
    assert not next(c for c in engine.conns.values() if c.conn == "c0").declined  # selected again


def test_ready_with_a_malformed_model_sha_is_refused() -> None:
    e = _engine()
    s = ClientSession(b"\x01" * 32, e.public_key)
    out: list[bytes] = []

    def pump(actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Send):
                for b in s.receive(a.data):
                    if isinstance(b, SendFrame):
                        out.append(b.data)

    pump(e.handle(Connected("x", "inprocess", 0.0)))
    for a in s.start():
        pump(e.handle(DataReceived("x", a.data, 0.0)))
    while out:
        pump(e.handle(DataReceived("x", out.pop(0), 0.0)))
    env = __import__("flcore.protocol", fromlist=["Envelope"]).Envelope(
        "ready", s.client_id, COORDINATOR_ID, s.session, s.seq, -1, {"commitment": "00" * 32, "model_sha256": "XY"})
    acts = e.handle(DataReceived("x", encode(env, s.identity_seed), 0.0))
    errs = [decode(a.data, lambda _: e.public_key)[0].body for a in acts if isinstance(a, Send)]
    assert errs and errs[0]["code"] == "bad_message"
