"""Who sees what of the coordinator's status: coordinator.service.status_view.public_status (an allowlist of
federation-level aggregates, no client ids) and, end to end, a real ``fl-coordinator serve`` process queried over
HTTP: ``/status`` is public and client-free, ``/status/operator`` needs ``Authorization: Bearer <token>``."""

from __future__ import annotations

import copy
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Coordinator, Workers

from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.service.status_view import operator_status, public_status
from flcore.modelspec import mlp

TOKEN = "e2e-operator-token-" + "7f3a9c" * 4
SDK_FIELDS = {"round", "rounds", "finished", "metrics", "privacy", "connected", "round_in_progress", "ready",
              "clients_per_round", "min_clients_per_round"}
PUBLIC_FIELDS = {"round", "rounds", "finished", "stopped_reason", "round_in_progress", "clients_per_round",
                 "min_clients_per_round", "group_size", "aggregator", "privacy", "connected", "ready", "coordinator_key", "metrics",
                 "client_counts"}


def engine_like_status(rng: random.Random, n: int = 7) -> dict[str, Any]:
    """A full status dict the way Engine.status() builds it – plus per-client fields a later engine might add
    (top level, inside round_in_progress, inside metrics) that must not reach the public view."""
    ids = [rng.randbytes(16).hex() for _ in range(n)]
    clients = [{"id": cid, "trust": round(rng.uniform(0.01, 0.99), 9), "banned": i % 3 == 0,
                "observations": rng.randrange(1000, 9999), "connected": i % 2 == 0,
                "kind": ("websocket", "grpc", None)[i % 3], "state": ("ready", "busy", "offline")[i % 3],
                "address": f"10.1.2.{i}:5{i}123"}
               for i, cid in enumerate(ids)]
    return {
        "round": 4, "rounds": 30, "finished": False, "stopped_reason": "",
        "round_in_progress": {"round": 5, "groups": 2, "failed_groups": 1, "phases": ["masked_input"],
                              "members": ids[:4], "phase_by_client": {cid: "share_keys" for cid in ids[:4]}},
        "clients_per_round": 4, "min_clients_per_round": 3, "group_size": 2, "aggregator": "median",
        "privacy": {"epsilon": 1.25, "delta": 1e-5, "epsilon_budget": 8.0, "noise_multiplier": 0.7,
                    "l2_clip": 1.0, "epsilon_rdp": {"orders": [2, 4, 8], "values": [0.1, 0.2, 0.3]},
                    "new_figure": 3},
        "clients": clients, "connected": sum(c["connected"] for c in clients), "ready": 1,
        "coordinator_key": "ab" * 32,
        "metrics": {"round": 4, "groups": 2, "groups_ok": 2, "survivors": 4, "epsilon": 1.25, "accuracy": 0.91,
                    "loss": 0.3, "duration": 1.5, "time": 1e9, "per_client_loss": {cid: 0.5 for cid in ids},
                    "survivor_ids": ids[:4]},
        # fields a later engine might add
        "client_ids": ids, "trust": {cid: c["trust"] for cid, c in zip(ids, clients, strict=True)},
        "banned_clients": [ids[0]], "last_seen": {cid: 1e9 for cid in ids}, "kinds": {"grpc": ids[1:2]},
    }


def _leaks(public: dict[str, Any], full: dict[str, Any]) -> list[str]:
    text = json.dumps(public)
    found = [c["id"] for c in full["clients"] if c["id"] in text]
    found += [repr(c["trust"]) for c in full["clients"] if repr(c["trust"]) in text]
    found += [str(c["observations"]) for c in full["clients"] if str(c["observations"]) in text]
    found += [c["address"] for c in full["clients"] if c["address"] in text]
    return found + [k for k in ('"clients"', '"id"', '"trust"', '"kind"', '"state"', '"observations"') if k in text]


# ── public_status: a pure function ────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("seed", range(5))
def test_public_status_has_no_client_ids_trust_or_per_client_state(seed: int) -> None:
    full = engine_like_status(random.Random(seed))
    public = public_status(full)
    assert _leaks(public, full) == []
    assert set(public) == PUBLIC_FIELDS  # an allowlist: the engine's extra fields are not there
    assert "clients" not in public


def test_public_status_keeps_the_federation_level_figures() -> None:
    full = engine_like_status(random.Random(1))
    public = public_status(full)
    for k in ("round", "rounds", "finished", "stopped_reason", "clients_per_round", "min_clients_per_round",
              "group_size", "aggregator", "connected", "ready", "coordinator_key"):
        assert public[k] == full[k], k
    assert public["round_in_progress"] == {"round": 5, "groups": 2, "failed_groups": 1}  # counts, no phases
    assert public["privacy"] == full["privacy"]  # copied whole, whatever keys the accounting adds
    assert public["metrics"] == {k: v for k, v in full["metrics"].items()
                                 if k not in ("per_client_loss", "survivor_ids")}
    assert public["client_counts"] == {"registered": 7, "connected": 4, "banned": 3}
    assert set(public) >= SDK_FIELDS  # what the browser SDK's _pollStatus reads


def test_public_status_is_a_copy() -> None:
    full = engine_like_status(random.Random(2))
    before = copy.deepcopy(full)
    public = public_status(full)
    public["privacy"]["epsilon_rdp"]["orders"].append(99)
    public["metrics"]["accuracy"] = 0.0
    assert full == before
    assert operator_status(full) == full


def test_public_status_counts_never_copy_collections() -> None:
    """A count the engine might turn into a list (or mapping) of ids is published as its length."""
    full = engine_like_status(random.Random(3))
    ids = [c["id"] for c in full["clients"]]
    full.update(connected=ids[:3], ready={cid: True for cid in ids[:2]}, aggregator={"rule": ids[0]},
                round_in_progress={"round": 5, "groups": [ids[:2], ids[2:4]], "failed_groups": {ids[4]: "x"}},
                metrics={"accuracy": 0.5, "survivors": ids}, stopped_reason=["banned", ids[0]])
    public = public_status(full)
    assert _leaks(public, full) == []
    assert public["connected"] == 3 and public["ready"] == 2
    assert public["round_in_progress"] == {"round": 5, "groups": 2, "failed_groups": 1}
    assert "aggregator" not in public and "stopped_reason" not in public and public["metrics"] == {"accuracy": 0.5}


def test_public_status_edge_shapes() -> None:
    assert public_status({}) == {"client_counts": {"registered": 0, "connected": 0, "banned": 0}}
    p = public_status({"round": 0, "round_in_progress": None, "metrics": None, "privacy": None, "clients": []})
    assert p == {"round": 0, "round_in_progress": None, "metrics": None, "privacy": None,
                 "client_counts": {"registered": 0, "connected": 0, "banned": 0}}


def test_public_status_of_a_real_engine() -> None:
    cfg = FederationConfig(model=mlp([4, 3]), rounds=2, clients_per_round=2, group_size=1, aggregator="mean")
    registry = {bytes([i]).hex() * 16: bytes([i]) * 32 for i in range(1, 4)}
    engine = Engine(cfg, b"\x07" * 32, seed=0, registry=registry)
    full = engine.status()
    public = json.loads(json.dumps(public_status(full), allow_nan=False))
    assert set(public) <= PUBLIC_FIELDS and set(public) >= SDK_FIELDS
    assert not any(cid in json.dumps(public) for cid in registry)
    assert public["client_counts"] == {"registered": 3, "connected": 0, "banned": 0}
    assert public["privacy"] == full["privacy"] and public["coordinator_key"] == engine.public_key.hex()


# ── a real `fl-coordinator serve` over real HTTP ──────────────────────────────────────────────────────
@pytest.fixture
def workers() -> Iterator[Workers]:
    w = Workers()
    yield w
    w.kill()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@pytest.mark.slow
def test_real_coordinator_status_is_public_and_operator_status_needs_the_token(tmp_path: Path,
                                                                              workers: Workers) -> None:
    token_file = tmp_path / "operator.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    # two clients per round and one client connecting: it authenticates, is ready, and no round starts
    coord = Coordinator(tmp_path, ["--rounds", "1", "--clients-per-round", "2", "--group-size", "1",
                                   "--aggregator", "mean", "--operator-token-file", str(token_file)]).start()
    try:
        base = f"http://127.0.0.1:{coord.ws_port}"
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        status, headers, body = _get(f"{base}/status/operator")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer "), body
        workers.spawn(tmp_path, f"127.0.0.1:{coord.grpc_port}", [0], 2)
        full: dict[str, Any] = {}
        for _ in range(600):  # a client process needs a few seconds to import and connect
            status, _, body = _get(f"{base}/status/operator", bearer)
            assert status == 200, body
            full = json.loads(body)
            if full["connected"] == 1 and full["clients"]:
                break
            assert workers.procs[0][0].poll() is None, workers.procs[0][1].read_text()
            time.sleep(0.1)
        else:
            raise AssertionError(f"the client did not connect: {full}\n{coord.log_text()}")
        (client,) = full["clients"]
        assert client["connected"] is True and client["kind"] == "grpc" and "trust" in client

        status, headers, body = _get(f"{base}/status")
        assert status == 200 and headers["content-type"] == "application/json"
        public = json.loads(body)
        assert client["id"].encode() not in body and b'"clients"' not in body and b'"trust"' not in body
        assert set(public) <= PUBLIC_FIELDS and set(public) >= SDK_FIELDS
        assert public["connected"] == 1 and public["client_counts"] == {"registered": 1, "connected": 1, "banned": 0}
        assert public["coordinator_key"] == coord.key and public["rounds"] == 1

        for headers_ in ({}, {"Authorization": "Bearer wrong-token-0123456789abcdef"},
                         {"Authorization": f"Basic {TOKEN}"}):
            status, h, body = _get(f"{base}/status/operator", headers_)
            assert status == 401 and h["www-authenticate"].startswith("Bearer "), headers_
            assert client["id"].encode() not in body
        status, _, body = _get(f"{base}/status/operator?token={TOKEN}&access_token={TOKEN}")
        assert status == 401 and client["id"].encode() not in body  # never from the query string
    finally:
        coord.kill()
    assert TOKEN not in coord.log_text()  # never logged
    assert "/status/operator: full status, bearer token required" in coord.log_text()


@pytest.mark.slow
def test_real_coordinator_takes_the_token_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FL_OPERATOR_TOKEN", TOKEN)  # the coordinator process inherits it (e2e_support._env)
    coord = Coordinator(tmp_path, ["--rounds", "1", "--clients-per-round", "2", "--group-size", "1",
                                   "--aggregator", "mean"]).start()
    try:
        base = f"http://127.0.0.1:{coord.ws_port}"
        status, _, body = _get(f"{base}/status/operator", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and json.loads(body)["clients"] == []
        assert _get(f"{base}/status/operator")[0] == 401
        assert "clients" not in json.loads(_get(f"{base}/status")[2])
    finally:
        coord.kill()
    assert TOKEN not in coord.log_text()
