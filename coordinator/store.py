"""SQLite store: clients, rounds, metrics and the coordinator's resumable state; global models as files.

A completed round becomes durable in one step (:meth:`Store.commit_round`): the signed model file is written
to a temporary name, fsync'ed and renamed into ``models/`` (and the directory fsync'ed) *before* the SQLite
transaction that records the round commits. Killing the process at any moment therefore leaves either the
previous round (plus at most an orphan model file, removed at the next open) or the new round complete.
:meth:`latest_checkpoint` returns what a restarted coordinator resumes from: round number, model path and
SHA-256 (checked against the file), and the state blob (trust, accountant, optimizer, …).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clients (
    id TEXT PRIMARY KEY, public_key BLOB NOT NULL, kind TEXT NOT NULL, enrolled_at REAL NOT NULL,
    banned INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, completed_at REAL NOT NULL, model_file TEXT NOT NULL, model_sha256 TEXT NOT NULL,
    state TEXT NOT NULL, metrics TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, round INTEGER, kind TEXT NOT NULL, detail TEXT NOT NULL);
"""


class StoreError(Exception):
    """The data directory is unusable (wrong schema version, corrupt database, missing model file)."""


@dataclass(frozen=True)
class Checkpoint:
    round: int
    model_path: Path
    model_sha256: str
    state: dict[str, Any]
    metrics: dict[str, Any]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(data_dir)
        self.models = self.dir / "models"
        self.models.mkdir(parents=True, exist_ok=True)
        self.db_path = self.dir / "coordinator.sqlite"
        try:
            self.db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.db_path}: not a usable SQLite database: {exc}") from None
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise StoreError(f"{self.db_path}: schema version {row[0]}, this coordinator needs {SCHEMA_VERSION}")
        self._remove_orphans()

    def close(self) -> None:
        self.db.close()

    # ── clients ──────────────────────────────────────────────────────────────────────────────────────
    def register_client(self, client_id: str, public_key: bytes, kind: str) -> bool:
        """Record a client (idempotent for the same key). Returns True if new; raises if the id is taken by
        another key."""
        row = self.db.execute("SELECT public_key FROM clients WHERE id=?", (client_id,)).fetchone()
        if row is not None:
            if bytes(row[0]) != bytes(public_key):
                raise StoreError(f"client id {client_id} is registered with another key")
            return False
        self.db.execute("INSERT INTO clients (id, public_key, kind, enrolled_at) VALUES (?, ?, ?, ?)",
                        (client_id, bytes(public_key), kind, time.time()))
        return True

    def client_key(self, client_id: str) -> bytes | None:
        row = self.db.execute("SELECT public_key FROM clients WHERE id=?", (client_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def clients(self) -> list[tuple[str, bytes, str, bool]]:
        return [(r[0], bytes(r[1]), r[2], bool(r[3]))
                for r in self.db.execute("SELECT id, public_key, kind, banned FROM clients ORDER BY id")]

    def set_banned(self, client_id: str, banned: bool) -> None:
        self.db.execute("UPDATE clients SET banned=? WHERE id=?", (int(banned), client_id))

    # ── rounds ───────────────────────────────────────────────────────────────────────────────────────
    def model_path(self, round_number: int) -> Path:
        return self.models / f"round-{round_number:06d}.mle"

    def commit_round(self, round_number: int, model_bytes: bytes, state: dict[str, Any],
                     metrics: dict[str, Any]) -> Checkpoint:
        """Make round ``round_number`` durable: model file first (atomic rename), then the DB row."""
        last = self.latest_round()
        if last is not None and round_number <= last:
            raise StoreError(f"round {round_number} is not after the last committed round {last}")
        path = self.model_path(round_number)
        tmp = path.with_suffix(".mle.tmp")
        with open(tmp, "wb") as f:
            f.write(model_bytes)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.models)
        sha = hashlib.sha256(model_bytes).hexdigest()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?)",
                            (round_number, time.time(), path.name, sha, json.dumps(state), json.dumps(metrics)))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return Checkpoint(round_number, path, sha, state, metrics)

    def latest_round(self) -> int | None:
        row = self.db.execute("SELECT MAX(round) FROM rounds").fetchone()
        return None if row[0] is None else int(row[0])

    def latest_checkpoint(self) -> Checkpoint | None:
        row = self.db.execute("SELECT round, model_file, model_sha256, state, metrics FROM rounds "
                              "ORDER BY round DESC LIMIT 1").fetchone()
        if row is None:
            return None
        path = self.models / row[1]
        if not path.exists():
            raise StoreError(f"round {row[0]} names model file {path}, which is missing")
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if sha != row[2]:
            raise StoreError(f"model file {path} does not match its recorded SHA-256")
        return Checkpoint(int(row[0]), path, row[2], json.loads(row[3]), json.loads(row[4]))

    def metrics(self) -> list[tuple[int, dict[str, Any]]]:
        return [(int(r[0]), json.loads(r[1])) for r in self.db.execute("SELECT round, metrics FROM rounds ORDER BY round")]

    def log_event(self, kind: str, detail: dict[str, Any], round_number: int | None = None) -> None:
        self.db.execute("INSERT INTO events (at, round, kind, detail) VALUES (?, ?, ?, ?)",
                        (time.time(), round_number, kind, json.dumps(detail)))

    def events(self, kind: str | None = None) -> list[tuple[int | None, str, dict[str, Any]]]:
        q = "SELECT round, kind, detail FROM events" + (" WHERE kind=?" if kind else "") + " ORDER BY id"
        return [(r[0], r[1], json.loads(r[2])) for r in self.db.execute(q, (kind,) if kind else ())]

    def _remove_orphans(self) -> None:
        """Delete model files no committed round names (a crash between file write and DB commit)."""
        named = {r[0] for r in self.db.execute("SELECT model_file FROM rounds")}
        for p in self.models.iterdir():
            if p.name.endswith(".tmp") or (p.suffix == ".mle" and p.name not in named):
                p.unlink()
