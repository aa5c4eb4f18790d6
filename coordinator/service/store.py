"""SQLite store: clients, trust, rounds, metrics, the DP ledger and the coordinator's resumable state; global
models as signed ``.mle`` files under ``data_dir/models/``. One coordinator per data dir: an exclusive ``flock`` on
``data_dir/.lock`` (holding the owner's pid) is taken on open and released on close; a missing or empty store
beside saved model files is refused (it would restart at round 0 and delete them as orphans).

A completed round becomes durable in one step (:meth:`Store.commit_round`): the signed model file is written
to a temporary name, fsync'ed and renamed into ``models/round-000042.mle`` (and the directory fsync'ed)
*before* the single SQLite transaction that records the round, its metrics, the trust mirror and the new DP
ledger entries commits. Killing the process at any moment therefore leaves either the previous round (plus at
most an orphan model file, removed at the next open) or the new round complete.
:meth:`Store.latest_completed_round` returns what a restarted coordinator resumes from: round number, model
path and SHA-256 (checked against the file), and the state blob (trust, accountant, optimizer, …).

The state blob is the engine's ``state()`` dict and is the source of truth for resuming. Two well-known keys
are also mirrored into queryable tables in the same transaction: ``"trust"`` (``TrustState.to_dict()``: one row
per client in ``trust``, bans copied to ``clients.banned``) and ``"accountant"`` (``{"events": [...]}``: the
events added since the last round are appended to ``dp_ledger``). Numeric metrics go to ``metrics``.

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk when ``COMMIT`` returns). The schema
has a version (``meta.schema_version``) and forward migrations (:data:`MIGRATIONS`), applied at open, each in
its own transaction.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# MIGRATIONS[i] takes the schema from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    # 0 → 1: the first released schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE clients (
        id TEXT PRIMARY KEY, public_key BLOB NOT NULL, kind TEXT NOT NULL, enrolled_at REAL NOT NULL,
        banned INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE rounds (
        round INTEGER PRIMARY KEY, completed_at REAL NOT NULL, model_file TEXT NOT NULL,
        model_sha256 TEXT NOT NULL, state TEXT NOT NULL, metrics TEXT NOT NULL);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, round INTEGER, kind TEXT NOT NULL,
        detail TEXT NOT NULL);
    """,
    # 1 → 2: round status/seed/start time (rows for rounds in progress), trust mirror, metrics, DP ledger, kv
    """
    CREATE TABLE rounds_v2 (
        round INTEGER PRIMARY KEY, status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'interrupted')),
        seed TEXT, started_at REAL, completed_at REAL, model_file TEXT, model_sha256 TEXT, state TEXT,
        metrics TEXT,
        CHECK (status != 'completed' OR (completed_at IS NOT NULL AND model_file IS NOT NULL
                                         AND model_sha256 IS NOT NULL AND state IS NOT NULL)));
    INSERT INTO rounds_v2 (round, status, completed_at, model_file, model_sha256, state, metrics)
        SELECT round, 'completed', completed_at, model_file, model_sha256, state, metrics FROM rounds;
    DROP TABLE rounds;
    ALTER TABLE rounds_v2 RENAME TO rounds;
    CREATE TABLE trust (
        client_id TEXT PRIMARY KEY, round INTEGER NOT NULL, trust REAL NOT NULL, state TEXT NOT NULL);
    CREATE TABLE metrics (
        round INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (round, name));
    CREATE TABLE dp_ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, round INTEGER NOT NULL, event TEXT NOT NULL);
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The data directory is unusable (wrong schema version, corrupt database, missing or altered model file)
    or a request contradicts what is stored (a round that is not after the last one, a key change)."""


@dataclass(frozen=True)
class RoundRecord:
    """A round's bookkeeping. ``seed`` is the public round seed (hex); times are Unix seconds, filled in by
    the store when ``None``."""

    round: int
    seed: str | None = None
    started_at: float | None = None
    completed_at: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.round, bool) or not isinstance(self.round, int) or self.round < 1:
            raise StoreError(f"round number must be an integer >= 1, got {self.round!r}")


@dataclass(frozen=True)
class ClientRecord:
    id: str
    public_key: bytes
    kind: str
    enrolled_at: float
    banned: bool


@dataclass(frozen=True)
class Checkpoint:
    """A completed round: everything needed to resume from it."""

    round: int
    model_path: Path
    model_sha256: str
    state: dict[str, Any]
    metrics: dict[str, Any]
    seed: str | None = None

    @property
    def trust(self) -> dict[str, Any] | None:
        """The trust state (``TrustState.to_dict()``) if the state blob has one."""
        return self.state.get("trust")

    @property
    def accountant(self) -> dict[str, Any] | None:
        """The privacy accountant's state if the state blob has one."""
        return self.state.get("accountant")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not JSON-serializable: {exc}") from None


class Store:
    """One coordinator's data directory. Not thread-safe: one owner (the coordinator's driver) at a time."""

    DB_NAME = "coordinator.sqlite"

    LOCK_NAME = ".lock"

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._lock(self.dir / self.LOCK_NAME)
        try:
            self._open()
        except BaseException:
            self._unlock()
            raise

    @staticmethod
    def _lock(path: Path) -> int:
        """An exclusive advisory lock on the data dir (``flock`` on ``.lock``, holding the owner's pid), held
        until :meth:`close`: a second coordinator on the same dir is refused instead of overwriting its files."""
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreError(f"{path.parent}: in use by another coordinator (pid {owner}); one data dir, one "
                             "coordinator") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _open(self) -> None:
        self.models = self.dir / "models"
        self.models.mkdir(parents=True, exist_ok=True)
        self.db_path = self.dir / self.DB_NAME
        saved = sorted(p.name for p in self.models.glob("round-*.mle"))
        if saved and (not self.db_path.exists() or self.db_path.stat().st_size == 0):
            raise StoreError(f"{self.db_path}: missing or empty, but {self.models} holds {len(saved)} saved model(s) "
                             f"(up to {saved[-1]}): refusing to start again at round 0 and to delete them – restore "
                             "the store from a backup, or use an empty data dir")
        try:
            self.db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._migrate()
            self.db.execute("UPDATE rounds SET status='interrupted' WHERE status='running'")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.db_path}: not a usable SQLite database: {exc}") from None
        self._remove_orphans()

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str]) -> Store:
        """Open (creating or migrating as needed) the store in ``data_dir``."""
        return cls(data_dir)

    def close(self) -> None:
        self.db.close()
        self._unlock()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ── schema ───────────────────────────────────────────────────────────────────────────────────────
    def schema_version(self) -> int:
        has_meta = self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not has_meta:
            return 0
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            raise StoreError(f"{self.db_path}: table meta has no schema_version")
        return int(row[0])

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.db_path}: schema version {version} is newer than this coordinator's "
                             f"{SCHEMA_VERSION}")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[target - 1].split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(target),))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    # ── clients ──────────────────────────────────────────────────────────────────────────────────────
    def register_client(self, client_id: str, public_key: bytes, kind: str, enrolled_at: float | None = None
                        ) -> bool:
        """Record a client (idempotent for the same key). Returns True if new; raises :class:`StoreError`
        if the id is taken by another key."""
        if not client_id or not isinstance(client_id, str):
            raise StoreError(f"client id must be a non-empty string, got {client_id!r}")
        row = self.db.execute("SELECT public_key FROM clients WHERE id=?", (client_id,)).fetchone()
        if row is not None:
            if bytes(row[0]) != bytes(public_key):
                raise StoreError(f"client id {client_id} is registered with another key")
            return False
        self.db.execute("INSERT INTO clients (id, public_key, kind, enrolled_at) VALUES (?, ?, ?, ?)",
                        (client_id, bytes(public_key), kind, time.time() if enrolled_at is None else enrolled_at))
        return True

    def get_client(self, client_id: str) -> ClientRecord | None:
        row = self.db.execute("SELECT id, public_key, kind, enrolled_at, banned FROM clients WHERE id=?",
                              (client_id,)).fetchone()
        return None if row is None else ClientRecord(row[0], bytes(row[1]), row[2], float(row[3]), bool(row[4]))

    def client_key(self, client_id: str) -> bytes | None:
        c = self.get_client(client_id)
        return None if c is None else c.public_key

    def clients(self) -> list[ClientRecord]:
        return [ClientRecord(r[0], bytes(r[1]), r[2], float(r[3]), bool(r[4])) for r in self.db.execute(
            "SELECT id, public_key, kind, enrolled_at, banned FROM clients ORDER BY id")]

    def set_banned(self, client_id: str, banned: bool) -> None:
        if self.db.execute("UPDATE clients SET banned=? WHERE id=?", (int(banned), client_id)).rowcount != 1:
            raise StoreError(f"unknown client {client_id}")

    # ── rounds ───────────────────────────────────────────────────────────────────────────────────────
    def model_path(self, round_number: int) -> Path:
        return self.models / f"round-{round_number:06d}.mle"

    def begin_round(self, record: RoundRecord) -> None:
        """Optionally note that a round started (status 'running'; a restart marks it 'interrupted')."""
        self._check_after_last(record.round)
        self.db.execute("INSERT OR REPLACE INTO rounds (round, status, seed, started_at) VALUES (?, 'running', ?, ?)",
                        (record.round, record.seed, time.time() if record.started_at is None else record.started_at))

    def commit_round(self, record: RoundRecord | int, model_bytes: bytes, state: Mapping[str, Any],
                     metrics: Mapping[str, Any] | None = None) -> Checkpoint:
        """Make a completed round durable: the model file first (temp file, fsync, atomic rename, directory
        fsync), then ONE transaction with the round row, metrics, trust mirror and DP ledger entries.

        ``model_bytes`` are the already-signed .mle bytes; ``state`` is the resumable engine state (see the
        module docstring for the keys mirrored into tables)."""
        rec = record if isinstance(record, RoundRecord) else RoundRecord(record)
        metrics = dict(metrics or {})
        state_json, metrics_json = _json(dict(state), "round state"), _json(metrics, "metrics")
        self._check_after_last(rec.round)
        trust_rows = self._trust_rows(state.get("trust"))
        ledger = self._new_ledger_events(state.get("accountant"))
        path = self.model_path(rec.round)
        tmp = path.with_suffix(".mle.tmp")
        with open(tmp, "wb") as f:
            f.write(model_bytes)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.models)
        sha = hashlib.sha256(model_bytes).hexdigest()
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            prev = self.db.execute("SELECT seed, started_at FROM rounds WHERE round=?", (rec.round,)).fetchone()
            seed = rec.seed if rec.seed is not None else (prev[0] if prev else None)
            started = rec.started_at if rec.started_at is not None else (prev[1] if prev else None)
            self.db.execute(
                "INSERT OR REPLACE INTO rounds (round, status, seed, started_at, completed_at, model_file, "
                "model_sha256, state, metrics) VALUES (?, 'completed', ?, ?, ?, ?, ?, ?, ?)",
                (rec.round, seed, started, now if rec.completed_at is None else rec.completed_at, path.name, sha,
                 state_json, metrics_json))
            self.db.executemany("INSERT INTO metrics VALUES (?, ?, ?)",
                                [(rec.round, k, float(v)) for k, v in metrics.items()
                                 if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)])
            for cid, value, blob in trust_rows:
                self.db.execute("INSERT OR REPLACE INTO trust VALUES (?, ?, ?, ?)", (cid, rec.round, value, blob))
                if json.loads(blob).get("banned"):
                    self.db.execute("UPDATE clients SET banned=1 WHERE id=?", (cid,))
            self.db.executemany("INSERT INTO dp_ledger (round, event) VALUES (?, ?)",
                                [(rec.round, e) for e in ledger])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return Checkpoint(rec.round, path, sha, json.loads(state_json), metrics, seed)

    def latest_round(self) -> int | None:
        """The number of the last completed round (``None`` before the first)."""
        row = self.db.execute("SELECT MAX(round) FROM rounds WHERE status='completed'").fetchone()
        return None if row[0] is None else int(row[0])

    def latest_completed_round(self) -> Checkpoint | None:
        """What to resume from: the last completed round, its model file verified against the recorded SHA-256
        (:class:`StoreError` if missing or altered)."""
        row = self.db.execute("SELECT round, model_file, model_sha256, state, metrics, seed FROM rounds "
                              "WHERE status='completed' ORDER BY round DESC LIMIT 1").fetchone()
        if row is None:
            return None
        path = self.models / row[1]
        if not path.exists():
            raise StoreError(f"round {row[0]} names model file {path}, which is missing")
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if sha != row[2]:
            raise StoreError(f"model file {path} does not match its recorded SHA-256")
        return Checkpoint(int(row[0]), path, row[2], json.loads(row[3]), json.loads(row[4] or "{}"), row[5])

    latest_checkpoint = latest_completed_round

    def round_status(self, round_number: int) -> str | None:
        row = self.db.execute("SELECT status FROM rounds WHERE round=?", (round_number,)).fetchone()
        return None if row is None else row[0]

    # ── queries ──────────────────────────────────────────────────────────────────────────────────────
    def metrics(self) -> list[tuple[int, dict[str, Any]]]:
        """Every completed round's metrics dict, in round order."""
        return [(int(r[0]), json.loads(r[1])) for r in self.db.execute(
            "SELECT round, metrics FROM rounds WHERE status='completed' ORDER BY round")]

    def metric_series(self, name: str) -> list[tuple[int, float]]:
        return [(int(r[0]), float(r[1])) for r in self.db.execute(
            "SELECT round, value FROM metrics WHERE name=? ORDER BY round", (name,))]

    def trust_table(self) -> dict[str, float]:
        """Client id → trust as of the last round that observed the client."""
        return {r[0]: float(r[1]) for r in self.db.execute("SELECT client_id, trust FROM trust ORDER BY client_id")}

    def dp_ledger(self) -> list[tuple[int, dict[str, Any]]]:
        """Every accountant event in order, with the round that released it."""
        return [(int(r[0]), json.loads(r[1])) for r in self.db.execute("SELECT round, event FROM dp_ledger ORDER BY id")]

    def set_config(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, _json(value, f"config {key!r}")))

    def get_config(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def log_event(self, kind: str, detail: Mapping[str, Any], round_number: int | None = None) -> None:
        self.db.execute("INSERT INTO events (at, round, kind, detail) VALUES (?, ?, ?, ?)",
                        (time.time(), round_number, kind, _json(dict(detail), "event detail")))

    def events(self, kind: str | None = None) -> list[tuple[int | None, str, dict[str, Any]]]:
        q = "SELECT round, kind, detail FROM events" + (" WHERE kind=?" if kind else "") + " ORDER BY id"
        return [(r[0], r[1], json.loads(r[2])) for r in self.db.execute(q, (kind,) if kind else ())]

    # ── internals ────────────────────────────────────────────────────────────────────────────────────
    def _check_after_last(self, round_number: int) -> None:
        last = self.latest_round()
        if last is not None and round_number <= last:
            raise StoreError(f"round {round_number} is not after the last committed round {last}")

    @staticmethod
    def _trust_rows(trust: Any) -> list[tuple[str, float, str]]:
        if trust is None:
            return []
        clients = trust.get("clients") if isinstance(trust, Mapping) else None
        if not isinstance(clients, Mapping):
            raise StoreError("state['trust'] must be TrustState.to_dict() output (a 'clients' mapping)")
        rows = []
        for cid, c in clients.items():
            try:
                value = float(c["alpha"]) / (float(c["alpha"]) + float(c["beta"]))
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
                raise StoreError(f"state['trust'] client {cid!r}: bad entry {c!r} ({exc})") from None
            rows.append((str(cid), value, _json(c, f"trust of {cid}")))
        return rows

    def _new_ledger_events(self, accountant: Any) -> list[str]:
        if accountant is None:
            return []
        events = accountant.get("events") if isinstance(accountant, Mapping) else None
        if not isinstance(events, list):
            raise StoreError("state['accountant'] must have an 'events' list")
        recorded = [r[0] for r in self.db.execute("SELECT event FROM dp_ledger ORDER BY id")]
        encoded = [_json(e, "accountant event") for e in events]
        if encoded[: len(recorded)] != recorded:
            raise StoreError(f"the accountant's events do not extend the stored DP ledger ({len(recorded)} "
                             f"recorded, {len(events)} given): privacy spending cannot be rewritten")
        return encoded[len(recorded):]

    def _remove_orphans(self) -> None:
        """Delete model files no completed round names (a crash between the file write and the DB commit)."""
        named = {r[0] for r in self.db.execute("SELECT model_file FROM rounds WHERE status='completed'")}
        removed = False
        for p in self.models.iterdir():
            if p.name.endswith(".tmp") or (p.suffix == ".mle" and p.name not in named):
                p.unlink()
                removed = True
        if removed:
            _fsync_dir(self.models)
