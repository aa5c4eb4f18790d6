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

The state blob is the engine's ``state()`` dict minus what is stored incrementally (schema 3, issue 13 F14), so
that what a round writes grows neither with the number of rounds nor with the number of idle identities:
``"trust"`` (``TrustState.to_dict()``) → one row per client in ``trust``, written only when it changed (bans copied
to ``clients.banned``); ``"participation"`` (the per-client accountant against the coordinator) → ``participation``,
rows written when they change; ``"accountant"`` (``{"events": [...]}``) → appended to ``dp_ledger``; ``"history"`` →
the rounds' ``metrics``. :meth:`Store.latest_completed_round` puts them back. Only the latest completed round keeps
its blob. :meth:`Store.record_release` writes the privacy spend of group sums *before* they are released (F5): a
restarted coordinator resumes with it even if that round never committed, and the round's commit finds it already
recorded. Identities that never took part are removed by :meth:`Store.prune_identities`.

At open: ``PRAGMA quick_check`` (a corrupt or truncated file is refused), every committed round's model file must
exist and the latest must match its SHA-256 (refused otherwise, nothing deleted); only crash leftovers are removed
(``*.mle.tmp`` and model files of rounds after the last committed one).

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk when ``COMMIT`` returns). The schema
has a version (``meta.schema_version``) and forward migrations (:data:`MIGRATIONS`), applied at open, each in
its own transaction.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
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
    # 2 → 3: state stored incrementally (issue 13 F14): per-client participation rows (the DP accountant against
    # the coordinator), written when they change – also at each release of group sums, before the round commits
    # (F5); the state blob no longer repeats the metrics history, the trust of every client or the ledger
    """
    CREATE TABLE participation (client_id TEXT PRIMARY KEY, count INTEGER NOT NULL, inv_z2 REAL NOT NULL);
    CREATE INDEX clients_enrolled_at ON clients (enrolled_at);
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


_MODEL_NAME = re.compile(r"round-(\d{6,})\.mle")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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

    def _rollback(self) -> None:
        """Roll back if a transaction is still open (a failed COMMIT – a full disk – has already rolled it back:
        a second ROLLBACK would hide the real error)."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

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
        self.db: sqlite3.Connection = None  # type: ignore[assignment]
        try:
            self.db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            check = self.db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                what = " ".join(str(check[0]).split())[:200] if check else "no answer"
                raise StoreError(f"{self.db_path}: corrupt SQLite database ({what}): "
                                 "restore it from a backup (nothing was changed or deleted)")
            migrated_from = self.schema_version()
            self._migrate()
            if migrated_from < 3 <= SCHEMA_VERSION:
                self._backfill_participation()
            self.db.execute("UPDATE rounds SET status='interrupted' WHERE status='running'")
            self._check_model_files()
            self._remove_orphans()
            self._load_caches()
        except BaseException as exc:
            if self.db is not None:
                self.db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(f"{self.db_path}: not a usable SQLite database ({exc}): restore it from a backup "
                                 "(nothing was changed or deleted)") from None
            raise

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
                self._rollback()
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

    def register_clients(self, clients: list[tuple[str, bytes, str, float]]) -> int:
        """Record a batch of enrolments ``(id, public key, kind, enrolled_at)`` in ONE fsync'ed transaction (issue
        13 F15: not one per client on the event loop). Ids already present are left as they are (an id is the
        hash of its key). Returns the number of new clients."""
        if not clients:
            return 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            before = self.db.total_changes
            self.db.executemany("INSERT OR IGNORE INTO clients (id, public_key, kind, enrolled_at) VALUES (?, ?, ?, ?)",
                                [(c, bytes(k), kind, float(t)) for c, k, kind, t in clients])
            added = self.db.total_changes - before
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return added

    def prune_identities(self, enrolled_before: float, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Delete identities enrolled before ``enrolled_before`` that never took part (no participation, no trust
        observation), are not banned and are not in ``keep`` (the connected ones) – issue 13 F14: Sybil
        identities must not be kept (and rewritten) forever. Returns the deleted ids; such a client that comes
        back simply enrols again."""
        rows = [r[0] for r in self.db.execute(
            "SELECT c.id FROM clients c LEFT JOIN trust t ON t.client_id = c.id "
            "LEFT JOIN participation p ON p.client_id = c.id WHERE c.enrolled_at < ? AND c.banned = 0 "
            "AND p.client_id IS NULL AND (t.client_id IS NULL OR json_extract(t.state, '$.observations') = 0)",
            (enrolled_before,)) if r[0] not in keep]
        if not rows:
            return []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("DELETE FROM trust WHERE client_id=?", [(c,) for c in rows])
            self.db.executemany("DELETE FROM clients WHERE id=?", [(c,) for c in rows])
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        for c in rows:
            self._trust_cache.pop(c, None)
            self._trust_seen.pop(c, None)
        return rows

    def is_empty(self) -> bool:
        """No client, no round, no privacy spend: nothing a lost identity key would orphan."""
        return not any(self.db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()
                       for t in ("clients", "rounds", "dp_ledger", "participation"))

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
        module docstring for the keys stored incrementally: what did not change since the last round costs no
        write, and nothing in the state blob grows with the number of rounds)."""
        rec = record if isinstance(record, RoundRecord) else RoundRecord(record)
        metrics = dict(metrics or {})
        blob, incremental = self._split_state(state)
        state_json, metrics_json = _json(blob, "round state"), _json(metrics, "metrics")
        self._check_after_last(rec.round)
        trust_rows = self._changed_trust_rows(state.get("trust"))
        participation = self._changed_participation(state.get("participation"))
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
            # only the latest completed round's blob is ever resumed from: older rows keep their metrics
            if self._last_round is not None:
                self.db.execute("UPDATE rounds SET state='{}' WHERE round=?", (self._last_round,))
            self.db.executemany("INSERT INTO metrics VALUES (?, ?, ?)",
                                [(rec.round, k, float(v)) for k, v in metrics.items()
                                 if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)])
            self._write_trust(rec.round, trust_rows)
            self._write_participation(participation)
            self.db.executemany("INSERT INTO dp_ledger (round, event) VALUES (?, ?)",
                                [(rec.round, e) for e in ledger])
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            self._load_caches()
            raise
        self._trust_cache.update({cid: blob for cid, _, blob in trust_rows})
        self._participation_cache.update(participation)
        self._ledger_cache.extend(ledger)
        self._last_round = rec.round
        out = {k: v for k, v in json.loads(state_json).items() if k not in ("_incremental", "trust_params")}
        out.update(incremental)
        return Checkpoint(rec.round, path, sha, out, metrics, seed)

    def record_release(self, round_number: int, participation: Mapping[str, Any] | None,
                       accountant: Mapping[str, Any] | None) -> int:
        """Make the privacy spend of group sums about to be released durable (issue 13 F5): the changed
        per-client participation rows and the new accountant events, in one fsync'ed transaction – called
        *before* the messages that let the coordinator reconstruct the sums (the unmask requests) are sent, so a
        crash between the release and the round's commit cannot lose ε. Returns the number of rows written.
        The round's :meth:`commit_round` later finds these events already recorded (never counted twice)."""
        participation_rows = self._changed_participation(participation)
        ledger = self._new_ledger_events(accountant)
        if not participation_rows and not ledger:
            return 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self._write_participation(participation_rows)
            self.db.executemany("INSERT INTO dp_ledger (round, event) VALUES (?, ?)",
                                [(round_number, e) for e in ledger])
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            self._load_caches()
            raise
        self._participation_cache.update(participation_rows)
        self._ledger_cache.extend(ledger)
        return len(participation_rows) + len(ledger)

    def latest_round(self) -> int | None:
        """The number of the last completed round (``None`` before the first)."""
        row = self.db.execute("SELECT MAX(round) FROM rounds WHERE status='completed'").fetchone()
        return None if row[0] is None else int(row[0])

    def latest_completed_round(self) -> Checkpoint | None:
        """What to resume from: the last completed round, its model file verified against the recorded SHA-256
        (:class:`StoreError` if missing or altered), its state with the incrementally stored parts put back
        (trust from ``trust``, the participation accountant from ``participation`` and the third-party
        accountant from ``dp_ledger`` – both including spends released after that round –, the history from
        the rounds' metrics)."""
        row = self.db.execute("SELECT round, model_file, model_sha256, state, metrics, seed FROM rounds "
                              "WHERE status='completed' ORDER BY round DESC LIMIT 1").fetchone()
        if row is None:
            return None
        path = self.models / row[1]
        if not path.exists():
            raise StoreError(f"round {row[0]} names model file {path}, which is missing")
        sha = _sha256_file(path)
        if sha != row[2]:
            raise StoreError(f"model file {path} does not match its recorded SHA-256: restore the data dir from a "
                             "backup (nothing was deleted)")
        return Checkpoint(int(row[0]), path, row[2], self._join_state(json.loads(row[3])),
                          json.loads(row[4] or "{}"), row[5])

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

    _INCREMENTAL = ("trust", "participation", "accountant", "history")

    @staticmethod
    def _split_state(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The state blob to store (without what is stored incrementally) and the parts left out of it."""
        blob = {k: v for k, v in state.items() if k not in Store._INCREMENTAL}
        parts = {k: state[k] for k in Store._INCREMENTAL if k in state}
        if parts:
            blob["_incremental"] = sorted(parts)
            if isinstance(state.get("trust"), Mapping):
                blob["trust_params"] = {k: v for k, v in state["trust"].items() if k != "clients"}
        return blob, parts

    def _join_state(self, blob: dict[str, Any]) -> dict[str, Any]:
        """A stored blob with its incremental parts put back (legacy blobs that still hold them: the
        accountants are taken from the tables, which may hold spends released after that round)."""
        parts = blob.pop("_incremental", None)
        trust_params = blob.pop("trust_params", None)
        if parts is None:  # a blob written before schema 3
            if "participation" in blob:
                blob["participation"] = self._participation_state()
            if "accountant" in blob:
                blob["accountant"] = {"events": [json.loads(e) for e in self._ledger_cache]}
            return blob
        if "trust" in parts:
            blob["trust"] = {**(trust_params or {}),
                             "clients": {c: json.loads(v) for c, v in sorted(self._trust_cache.items())}}
        if "participation" in parts:
            blob["participation"] = self._participation_state()
        if "accountant" in parts:
            blob["accountant"] = {"events": [json.loads(e) for e in self._ledger_cache]}
        if "history" in parts:
            blob["history"] = [json.loads(r[0]) for r in self.db.execute(
                "SELECT metrics FROM rounds WHERE status='completed' ORDER BY round")]
        return blob

    def _participation_state(self) -> dict[str, Any]:
        return {"clients": {c: {"count": n, "inv_z2": z} for c, (n, z) in sorted(self._participation_cache.items())}}

    def _changed_trust_rows(self, trust: Any) -> list[tuple[str, float, str]]:
        """Trust rows that differ from what is stored (a client nobody observed since costs no write)."""
        if trust is None:
            return []
        clients = trust.get("clients") if isinstance(trust, Mapping) else None
        if not isinstance(clients, Mapping):
            raise StoreError("state['trust'] must be TrustState.to_dict() output (a 'clients' mapping)")
        rows = []
        seen = self._trust_seen
        for cid, c in clients.items():
            if seen.get(cid) is c:  # the very row object found stored last time (TrustState.to_dict reuses it)
                continue
            blob = _json(c, f"trust of {cid}")
            if self._trust_cache.get(str(cid)) == blob:
                seen[cid] = c
                continue
            try:
                value = float(c["alpha"]) / (float(c["alpha"]) + float(c["beta"]))
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
                raise StoreError(f"state['trust'] client {cid!r}: bad entry {c!r} ({exc})") from None
            rows.append((str(cid), value, blob))
        return rows

    def _write_trust(self, round_number: int, rows: list[tuple[str, float, str]]) -> None:
        for cid, value, blob in rows:
            self.db.execute("INSERT OR REPLACE INTO trust VALUES (?, ?, ?, ?)", (cid, round_number, value, blob))
            if json.loads(blob).get("banned"):
                self.db.execute("UPDATE clients SET banned=1 WHERE id=?", (cid,))

    def _changed_participation(self, participation: Any) -> dict[str, tuple[int, float]]:
        if participation is None:
            return {}
        clients = participation.get("clients") if isinstance(participation, Mapping) else None
        if not isinstance(clients, Mapping):
            raise StoreError("state['participation'] must be ParticipationAccountant.to_dict() output")
        out = {}
        for cid, c in clients.items():
            try:
                row = (int(c["count"]), float(c["inv_z2"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise StoreError(f"state['participation'] client {cid!r}: bad entry {c!r} ({exc})") from None
            old = self._participation_cache.get(str(cid))
            if old == row:
                continue
            if old is not None and (row[0] < old[0] or row[1] < old[1]):
                raise StoreError(f"the participation of client {cid} would go down ({old} → {row}): privacy "
                                 "spending cannot be rewritten")
            out[str(cid)] = row
        return out

    def _write_participation(self, rows: Mapping[str, tuple[int, float]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO participation VALUES (?, ?, ?)",
                            [(c, n, z) for c, (n, z) in rows.items()])

    def _new_ledger_events(self, accountant: Any) -> list[str]:
        if accountant is None:
            return []
        events = accountant.get("events") if isinstance(accountant, Mapping) else None
        if not isinstance(events, list):
            raise StoreError("state['accountant'] must have an 'events' list")
        recorded = self._ledger_cache
        encoded = [_json(e, "accountant event") for e in events]
        if encoded[: len(recorded)] != recorded:
            raise StoreError(f"the accountant's events do not extend the stored DP ledger ({len(recorded)} "
                             f"recorded, {len(events)} given): privacy spending cannot be rewritten")
        return encoded[len(recorded):]

    def _load_caches(self) -> None:
        """What the incremental writes are compared with: the stored trust rows, participation and ledger."""
        self._trust_cache: dict[str, str] = {r[0]: r[1] for r in self.db.execute("SELECT client_id, state FROM trust")}
        self._trust_seen: dict[str, object] = {}  # client → the state row object last found equal to the stored one
        self._participation_cache: dict[str, tuple[int, float]] = {
            r[0]: (int(r[1]), float(r[2])) for r in self.db.execute("SELECT client_id, count, inv_z2 FROM participation")}
        self._ledger_cache: list[str] = [r[0] for r in self.db.execute("SELECT event FROM dp_ledger ORDER BY id")]
        self._last_round = self.latest_round()

    def _backfill_participation(self) -> None:
        """Schema 3: the participation accountant of the latest (legacy) state blob into its table."""
        row = self.db.execute("SELECT state FROM rounds WHERE status='completed' ORDER BY round DESC LIMIT 1"
                              ).fetchone()
        clients = (json.loads(row[0]).get("participation") or {}).get("clients", {}) if row else {}
        if clients:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT OR REPLACE INTO participation VALUES (?, ?, ?)",
                                [(c, int(v["count"]), float(v["inv_z2"])) for c, v in clients.items()])
            self.db.execute("COMMIT")

    def _check_model_files(self) -> None:
        """Every committed round's model file exists and the latest matches its recorded SHA-256 (issue 13 F19):
        otherwise refuse, deleting nothing."""
        rows = self.db.execute("SELECT round, model_file, model_sha256 FROM rounds WHERE status='completed' "
                               "ORDER BY round").fetchall()
        missing = [r for r, f, _ in rows if not (self.models / f).is_file()]
        if missing:
            raise StoreError(f"{self.models}: the model file(s) of {len(missing)} committed round(s) are missing "
                             f"(round {missing[0]}{'' if len(missing) == 1 else f' … {missing[-1]}'}): restore them "
                             "from a backup (nothing was deleted)")
        if rows:
            r, f, sha = rows[-1]
            if _sha256_file(self.models / f) != sha:
                raise StoreError(f"{self.models / f}: does not match the SHA-256 recorded for round {r}: restore it "
                                 "from a backup (nothing was deleted)")

    def _remove_orphans(self) -> None:
        """Delete crash leftovers only: ``*.mle.tmp`` files and model files of rounds *after* the last committed
        one (written before a commit that never happened). Anything else is left alone."""
        last = self.latest_round() or 0
        removed = False
        for p in self.models.iterdir():
            m = _MODEL_NAME.fullmatch(p.name)
            if p.name.endswith(".mle.tmp") or (m is not None and int(m.group(1)) > last):
                p.unlink()
                removed = True
        if removed:
            _fsync_dir(self.models)
