"""The run store's SQLite schema: tables, version, run statuses and the measured columns.

Constants, and :func:`apply_schema` that :class:`~accelvit.runs.store.RunStore` calls when it
first opens a database; the other modules name statuses and columns from here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import AccelvitError

SCHEMA_VERSION = 1

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


SCHEMA = """
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


class StoreError(AccelvitError):
    """The run store cannot be opened or is inconsistent."""


def apply_schema(con: sqlite3.Connection, db_path: Path) -> None:
    """Create the tables that are missing and record or check the schema version (inside the
    caller's transaction). A store written by a newer accelvit is refused with a StoreError."""
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            con.execute(stmt)
    row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        con.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    elif int(row[0]) > SCHEMA_VERSION:
        raise StoreError(f"The run store {db_path} was written by a newer accelvit (schema {row[0]}, this one "
                         f"knows {SCHEMA_VERSION}). Upgrade accelvit or use another --home.")
    elif int(row[0]) < SCHEMA_VERSION:  # pragma: no cover - v1 only: migrations go here
        con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
