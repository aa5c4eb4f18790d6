"""The SQLite store: round trip, resume after a crash between the model write and the DB commit, and real
SIGKILLs of a process committing rounds."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from coordinator.store import Store, StoreError


def test_round_trip(tmp_path) -> None:
    s = Store(tmp_path)
    assert s.latest_checkpoint() is None
    assert s.register_client("c1", b"k" * 32, "native")
    assert not s.register_client("c1", b"k" * 32, "native")
    with pytest.raises(StoreError, match="another key"):
        s.register_client("c1", b"x" * 32, "native")
    s.commit_round(1, b"model-1", {"trust": {"c1": 0.5}}, {"accuracy": 0.5})
    s.commit_round(2, b"model-2", {"trust": {"c1": 0.6}}, {"accuracy": 0.7})
    with pytest.raises(StoreError, match="not after"):
        s.commit_round(2, b"again", {}, {})
    s.log_event("rejected", {"client": "c1", "reason": "bad signature"}, 2)
    s.close()
    t = Store(tmp_path)
    cp = t.latest_checkpoint()
    assert cp is not None and cp.round == 2 and cp.model_path.read_bytes() == b"model-2"
    assert cp.state == {"trust": {"c1": 0.6}} and cp.metrics == {"accuracy": 0.7}
    assert t.client_key("c1") == b"k" * 32 and [r for r, _ in t.metrics()] == [1, 2]
    assert t.events("rejected")[0][2]["reason"] == "bad signature"


def test_crash_between_model_write_and_commit_resumes_previous_round(tmp_path) -> None:
    s = Store(tmp_path)
    s.commit_round(1, b"model-1", {"r": 1}, {})
    # simulate: round 2's model file reached disk, the process died before the DB commit
    s.model_path(2).write_bytes(b"model-2")
    (tmp_path / "models" / "round-000003.mle.tmp").write_bytes(b"partial")
    s.close()
    t = Store(tmp_path)
    cp = t.latest_checkpoint()
    assert cp.round == 1 and cp.state == {"r": 1}
    assert not t.model_path(2).exists() and not (tmp_path / "models" / "round-000003.mle.tmp").exists()
    t.commit_round(2, b"model-2b", {"r": 2}, {})  # and the round can be redone
    assert t.latest_checkpoint().model_path.read_bytes() == b"model-2b"


def test_tampered_model_file_is_detected(tmp_path) -> None:
    s = Store(tmp_path)
    s.commit_round(1, b"model-1", {}, {})
    s.model_path(1).write_bytes(b"evil")
    with pytest.raises(StoreError, match="SHA-256"):
        s.latest_checkpoint()


WRITER = textwrap.dedent("""
    import os, sys
    from coordinator.store import Store
    s = Store(sys.argv[1])
    last = s.latest_round() or 0
    r = last
    while True:
        r += 1
        s.commit_round(r, os.urandom(200_000) + r.to_bytes(8, "little"), {"round": r}, {"n": r})
        print(r, flush=True)
""")


def test_sigkill_at_random_moments_leaves_a_consistent_store(tmp_path) -> None:
    import random

    rnd = random.Random(7)
    seen = 0
    for _ in range(4):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        # wait until it has committed at least one more round, then kill it at a random moment
        line = p.stdout.readline()
        assert line.strip(), "writer produced no round"
        time.sleep(rnd.uniform(0.0, 0.3))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        s = Store(tmp_path)
        cp = s.latest_checkpoint()
        assert cp is not None and cp.round > seen and cp.state == {"round": cp.round}
        assert hashlib.sha256(cp.model_path.read_bytes()).hexdigest() == cp.model_sha256
        assert cp.model_path.read_bytes()[-8:] == cp.round.to_bytes(8, "little")
        # every model file on disk belongs to a committed round
        assert sorted(p.name for p in (tmp_path / "models").iterdir()) == \
            [f"round-{r:06d}.mle" for r in range(1, cp.round + 1)]
        seen = cp.round
        s.close()
