"""The run store's SQLite schema: tables, version, run statuses and the measured columns.

Constants, and :func:`apply_schema` that :class:`~accelvit.runs.store.RunStore` calls when it
first opens a database; the other modules name statuses and columns from here.

Versions. 1: the tables as first shipped (:data:`V1_SCHEMA`). 2: ``runs.heartbeat_s`` and the
``runs_owner`` index (liveness by heartbeat, :mod:`accelvit.runs.owners`). Each change of the
tables is one step in :data:`MIGRATIONS` (version N -> N+1, run in the opening transaction, so a
failed step changes nothing); :data:`SCHEMA_VERSION` follows from it. An accelvit that finds a
newer version refuses the store instead of writing to tables it does not know.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Callable

from ..errors import AccelvitError

log = logging.getLogger(__name__)

QUEUED, RUNNING, FINISHED, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "finished", "failed", "cancelled", "interrupted")
STATUSES = (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED, INTERRUPTED)
TERMINAL = frozenset({FINISHED, FAILED, CANCELLED, INTERRUPTED})
ACTIVE = frozenset({QUEUED, RUNNING})

#: Columns of ``stage_metrics`` besides the JSON of the whole metrics dict.
METRIC_COLUMNS = ("top1", "top5", "loss", "n", "dense_flops", "effective_flops", "thop_flops", "params",
                  "nonzero_params", "size_dense_bytes", "size_sparse_bytes", "latency_ms_b1",
                  "latency_ms_batch", "device")
#: Flat columns taken from a run's config (see :func:`accelvit.runs.queries.config_columns`).
RUN_CONFIG_COLUMNS = ("model", "dataset", "img_size", "pretrained", "train_epochs", "finetune_epochs", "device")
#: Pipeline stages in run order; stage rows and stage dicts are sorted by it.
STAGE_ORDER = ("data", "baseline", "before", "prune", "pruned", "finetune", "after", "control", "save")


def stage_sort_key(stage: str) -> int:
    """Position of ``stage`` in :data:`STAGE_ORDER` (unknown stages last)."""
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


#: The tables as first shipped (schema version 1, commit 2d71c86, unchanged until version 2).
#: A new database is made by these statements and then every step of :data:`MIGRATIONS`, so a
#: new store and one migrated from any older version are the same database.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    submit_key TEXT UNIQUE,
    sweep_id TEXT,
    baseline_key TEXT,
    owner TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat REAL,
    stage TEXT,
    progress REAL NOT NULL DEFAULT 0,
    live TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    traceback TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, created_at);
CREATE TABLE IF NOT EXISTS stage_metrics (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    created_at REAL NOT NULL,
    top1 REAL, top5 REAL, loss REAL, n INTEGER,
    dense_flops REAL, effective_flops REAL, thop_flops REAL,
    params INTEGER, nonzero_params INTEGER,
    size_dense_bytes INTEGER, size_sparse_bytes INTEGER,
    latency_ms_b1 REAL, latency_ms_batch REAL, device TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, stage)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    stage TEXT,
    fraction REAL,
    message TEXT,
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, id);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'file',
    path TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""


def _v1_to_v2(con: sqlite3.Connection) -> None:
    """Version 2: liveness by heartbeat. ``runs.heartbeat_s`` is the period at which the run's
    owner promised to beat (NULL: written by an accelvit that beat only on progress events, so
    the long legacy window applies); ``runs_owner`` serves a job manager beating all its runs."""
    con.execute("ALTER TABLE runs ADD COLUMN heartbeat_s REAL")
    con.execute("CREATE INDEX IF NOT EXISTS runs_owner ON runs(owner, status)")


#: ``{from_version: step}``: each step turns a database of that version into the next one.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2}
SCHEMA_VERSION = 1 + len(MIGRATIONS)


class StoreError(AccelvitError):
    """The run store cannot be opened or is inconsistent."""


def _tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def stored_version(con: sqlite3.Connection, db_path: Path) -> int | None:
    """The schema version a database records (None: an empty database). A damaged record is a
    StoreError naming it."""
    tables = _tables(con)
    if "meta" not in tables:
        if "runs" in tables:  # pragma: no cover - every version wrote meta with its tables
            raise StoreError(f"{db_path} has a runs table but no meta table: not a run store accelvit wrote. "
                             "Move it away or pick another --home.")
        return None
    row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        return 1 if "runs" in tables else None
    try:
        version = int(str(row[0]).strip())
    except (TypeError, ValueError):
        version = 0
    if version < 1:
        raise StoreError(f"The run store {db_path} is damaged: its schema_version is {row[0]!r}, expected a "
                         f"whole number from 1 to {SCHEMA_VERSION}. Move it away (or repair meta.schema_version) "
                         "or pick another --home.")
    return version


def apply_schema(con: sqlite3.Connection, db_path: Path) -> None:
    """Bring the database to :data:`SCHEMA_VERSION` inside the caller's transaction: a new one
    gets the version-1 tables and every migration; an older one the migrations from its version
    on, one step at a time. A store written by a newer accelvit, or one whose recorded version is
    damaged, is refused with a StoreError before anything is changed."""
    version = stored_version(con, db_path)
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(f"The run store {db_path} was written by a newer accelvit (schema {version}, this one "
                         f"knows up to {SCHEMA_VERSION}). Upgrade accelvit or use another --home.")
    existing = version is not None
    if version is None:
        for stmt in V1_SCHEMA.split(";"):
            if stmt.strip():
                con.execute(stmt)
        version = 1
    for v in range(version, SCHEMA_VERSION):
        try:
            MIGRATIONS[v](con)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"Could not migrate the run store {db_path} from schema {v} to {v + 1} ({exc}); "
                             "nothing was changed. Move it away or pick another --home.") from exc
        if existing:
            log.info("run store %s migrated from schema %d to %d", db_path, v, v + 1)
    con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
