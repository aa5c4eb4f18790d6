"""Issue 13 F19: `serve` refuses a data dir it cannot trust – a corrupt or truncated store, a missing or different
identity key, a committed round's model file missing or altered – with exit status 2, ONE line on stderr (no
traceback), and without changing or deleting anything. Only crash leftovers (temporary files, model files of rounds
after the last committed one) are ever removed at start."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from durability_support import InProcessFederation, config

from coordinator.service.server import KEY_FILE, load_or_create_identity
from coordinator.service.store import Store, StoreError


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with two committed rounds of a 64-32-10 MLP (serve's default model), its key file and store."""
    d = tmp_path_factory.mktemp("fed") / "data"
    fed = InProcessFederation(d, config(rounds=2, hidden=32))
    asyncio.run(fed.run(2))
    fed.close()
    fd = os.open(d / KEY_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, fed.seed)
    os.close(fd)
    with Store.open(d) as s:
        load_or_create_identity(d, s)  # records the key the store belongs to
    return d


def _fingerprint(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name not in (".lock", Store.DB_NAME + "-wal", Store.DB_NAME + "-shm")}


def _serve(d: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coordinator.service.cli", "serve", "--data-dir", str(d), "--rounds",
                           "2", "--exit-when-finished", "--evaluation", "none", "--ws-port", "0", "--grpc-port", "0"],
                          capture_output=True, text=True, timeout=120)


def _damage(d: Path, how: str) -> str:
    db, models = d / Store.DB_NAME, d / "models"
    if how == "garbage in the store":
        with open(db, "r+b") as f:
            f.seek(8192)
            f.write(os.urandom(4096))
        return "not a usable SQLite database|corrupt SQLite database"
    if how == "truncated store":
        os.truncate(db, db.stat().st_size // 2)
        return "not a usable SQLite database|corrupt SQLite database"
    if how == "garbage header":
        with open(db, "r+b") as f:
            f.write(os.urandom(100))
        return "not a usable SQLite database"
    if how == "key deleted":
        (d / KEY_FILE).unlink()
        return "coordinator.key is missing but .* belongs to coordinator [0-9a-f]{16}…"
    if how == "another key":
        (d / KEY_FILE).write_bytes(os.urandom(32))
        return "holds key [0-9a-f]{16}… but .* belongs to coordinator"
    if how == "an older model file missing":
        (models / "round-000001.mle").unlink()
        return r"model file\(s\) of 1 committed round\(s\) are missing \(round 1\)"
    if how == "latest model file altered":
        p = models / "round-000002.mle"
        b = bytearray(p.read_bytes())
        b[-1] ^= 1
        p.write_bytes(bytes(b))
        return "round-000002.mle: does not match the SHA-256 recorded for round 2"
    raise AssertionError(how)


def test_an_intact_data_dir_serves(federation: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "data"
    shutil.copytree(federation, d)
    out = _serve(d)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("how", ["garbage in the store", "truncated store", "garbage header", "key deleted",
                                 "another key", "an older model file missing", "latest model file altered"])
def test_an_untrustworthy_data_dir_is_refused_with_one_line(federation: Path, tmp_path: Path, how: str) -> None:
    import shutil

    d = tmp_path / "data"
    shutil.copytree(federation, d)
    expected = _damage(d, how)
    before = _fingerprint(d)
    out = _serve(d)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("fl-coordinator serve: error: ")
    import re

    assert re.search(expected, lines[0]), lines[0]
    assert _fingerprint(d) == before  # nothing changed, nothing deleted, no key generated


def test_only_crash_leftovers_are_removed(tmp_path: Path) -> None:
    with Store.open(tmp_path) as s:
        for r in (1, 2):
            s.commit_round(r, b"model-%d" % r, {}, {})
    models = tmp_path / "models"
    for name in ("round-000003.mle", "round-000003.mle.tmp", "round-000001.mle.bak", "notes.txt"):
        (models / name).write_bytes(b"x")
    with Store.open(tmp_path) as s:
        assert s.latest_round() == 2
    assert sorted(p.name for p in models.iterdir()) == ["notes.txt", "round-000001.mle", "round-000001.mle.bak",
                                                        "round-000002.mle"]


def test_a_store_that_is_not_empty_needs_its_key(tmp_path: Path) -> None:
    with Store.open(tmp_path) as s:
        s.register_clients([("c", b"k" * 32, "grpc", 0.0)])
        with pytest.raises(StoreError, match=r"coordinator\.key is missing"):
            load_or_create_identity(tmp_path, s)
    assert not (tmp_path / KEY_FILE).exists()
