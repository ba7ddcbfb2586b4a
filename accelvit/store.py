"""The run store: every experiment, its stage metrics, progress and artifacts, in SQLite.

Where: ``$ACCELVIT_HOME/runs.db`` (``--home DIR`` on the CLI sets ``ACCELVIT_HOME``;
default ``./runs``), resolved when a :class:`RunStore` is made, never at import time.
Artifacts live under ``$ACCELVIT_HOME/artifacts/<run id>/``; files are written atomically
(temp file + rename), and their paths are recorded relative to the home so a home folder
can be moved.

The database is created on first use (schema versioned in table ``meta``), runs in WAL
mode with a busy timeout, and opens one short-lived connection per call, so any number of
threads and processes (the job runner, a CLI run, several browser tabs) can read while one
writes without "database is locked" errors.

Reader API (stable; the dashboard builds on it)
-----------------------------------------------
DataFrames (empty frames still have every column listed):

``runs_df(status=None, sweep_id=None)``: one row per run, newest first. Columns:
    ``id, name, status, stage, progress, created, started, finished, duration_s, error,
    sweep_id, baseline_key, model, dataset, img_size, pretrained, train_epochs,
    finetune_epochs, device`` plus one column per pruning field of the config
    (``head_ratio, mlp_ratio, rank_ratio, sparsity, ...``, whatever PruneConfig holds).
    ``created/started/finished`` are tz-aware UTC timestamps; ``progress`` is the
    overall fraction in [0, 1]; ``stage`` the stage running now (or last run).
``metrics_df(run_ids=None)``: one row per run x measured stage (``before``, ``pruned``,
    ``after``, and ``control`` when enabled), ordered by run then stage. Columns:
    ``run_id, name, status, stage, stage_order, top1, top5, loss, n, dense_flops,
    effective_flops, thop_flops, params, nonzero_params, size_dense_bytes,
    size_sparse_bytes, latency_ms_b1, latency_ms_batch, device`` plus every other scalar
    the metrics dict held, the run's config columns (as in ``runs_df``), and ratios to the
    same run's ``before`` row: ``flops_ratio`` (effective FLOPs / before), ``params_ratio``
    (nonzero params / before), ``size_ratio`` (sparse size / before dense size),
    ``speedup_b1`` (before latency / latency), ``top1_delta`` (top1 - before top1).
    Accuracies are fractions in [0, 1]; FLOPs are FLOPs (2 x MACs).
``events_df(run_id, kinds=None)``: ``id, time, kind, stage, fraction, message, data``
    (``data`` a dict); kinds: ``status, stage_started, stage_finished, progress, metrics,
    warning, error, artifact``.
``progress_df(run_id)``: the throttled progress rows: ``time, stage, fraction, overall,
    epoch, epochs, step, steps, loss, accuracy, lr, images_per_s, eta_s``.
``artifacts_df(run_id=None)``: ``run_id, name, kind, path (absolute), created``.

Dicts (``runs --json``):
``get_run(run_id)`` / ``list_runs(...)``: ``{id, name, status, config, error, traceback,
    created_at, started_at, finished_at, stage, progress, live, sweep_id, baseline_key,
    stages: {stage: metrics dict (as from measure, plus top1, top5, loss)},
    artifacts: {name: absolute path}}``. ``live`` is the last progress event (a dict) or None.

Statuses: ``queued, running, finished, failed, cancelled, interrupted``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import shutil
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from .errors import AccelvitError
from .fileio import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DB_FILE = "runs.db"
DEFAULT_HOME = "runs"

QUEUED, RUNNING, FINISHED, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "finished", "failed", "cancelled", "interrupted")
STATUSES = (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED, INTERRUPTED)
TERMINAL = frozenset({FINISHED, FAILED, CANCELLED, INTERRUPTED})
ACTIVE = frozenset({QUEUED, RUNNING})

#: Measured stages, in pipeline order (rows of ``metrics_df``).
METRIC_STAGES = ("before", "pruned", "after", "control")
#: Columns of ``stage_metrics`` besides the JSON of the whole metrics dict.
METRIC_COLUMNS = ("top1", "top5", "loss", "n", "dense_flops", "effective_flops", "thop_flops", "params",
                  "nonzero_params", "size_dense_bytes", "size_sparse_bytes", "latency_ms_b1",
                  "latency_ms_batch", "device")
RUN_CONFIG_COLUMNS = ("model", "dataset", "img_size", "pretrained", "train_epochs", "finetune_epochs", "device")

_SCHEMA = """
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


def home_dir(home: str | os.PathLike | None = None) -> Path:
    """The store folder: ``home``, else ``$ACCELVIT_HOME``, else ``./runs`` (resolved now)."""
    raw = home if home not in (None, "") else (os.environ.get("ACCELVIT_HOME") or DEFAULT_HOME)
    return Path(raw).expanduser().resolve()


def new_run_id() -> str:
    """Sortable, readable and unique: ``20250102-153012-a1b2c3``."""
    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


# ----------------------------------------------------------------------------- owners
# A run being executed has an owner "host:pid:token". A run whose owner is gone (its
# process died, or it belonged to a manager of this process that no longer exists) is
# marked interrupted by the next manager that opens the store.
_HOST = socket.gethostname()
_LIVE_OWNERS: set[str] = set()
_OWNERS_LOCK = threading.Lock()


def _proc_start(pid: int) -> str:
    """The start time of a process (Linux ``/proc``), to tell a reused pid from the original."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return ""


def new_owner(tag: str = "jobs") -> str:
    """A new owner id ``host:pid:start:tag-random`` registered as live in this process."""
    pid = os.getpid()
    owner = f"{_HOST}:{pid}:{_proc_start(pid)}:{tag}-{secrets.token_hex(4)}"
    with _OWNERS_LOCK:
        _LIVE_OWNERS.add(owner)
    return owner


def release_owner(owner: str) -> None:
    with _OWNERS_LOCK:
        _LIVE_OWNERS.discard(owner)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def owner_alive(owner: str | None, heartbeat: float | None = None, stale_s: float = 3600.0) -> bool:
    """Whether the owner of a run may still be working on it.

    Same machine: this process -> the owner is registered (its manager is open); another
    process -> that pid exists and started when the owner was made. Another machine sharing
    the folder: the run's heartbeat is recent.
    """
    if not owner:
        return False
    try:
        host, pid_s, start, _token = owner.rsplit(":", 3)
        pid = int(pid_s)
    except ValueError:
        return False
    if host != _HOST:
        return heartbeat is not None and time.time() - heartbeat < stale_s
    if pid == os.getpid():
        with _OWNERS_LOCK:
            return owner in _LIVE_OWNERS
    if not _pid_alive(pid):
        return False
    return not start or _proc_start(pid) in ("", start)


# ----------------------------------------------------------------------------- helpers
def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, allow_nan=True)


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy / torch scalars
        try:
            return o.item()
        except Exception:
            pass
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _loads(s: str | None, default: Any = None) -> Any:
    if s is None or s == "":
        return default
    try:
        return json.loads(s)
    except (TypeError, ValueError):
        return default


def _scalar(v: Any) -> Any:
    """A value fit for a SQL column: numbers and strings; anything else becomes None."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float, str)) or v is None:
        return v
    if hasattr(v, "item"):
        try:
            return v.item()
        except Exception:
            return None
    return None


def _ts(col: pd.Series) -> pd.Series:
    return pd.to_datetime(pd.to_numeric(col, errors="coerce"), unit="s", utc=True)


def config_columns(config: dict[str, Any] | None) -> dict[str, Any]:
    """Flat, plottable columns of an experiment config dict (model, data set, pruning fields)."""
    cfg = config or {}
    data = cfg.get("data") or {}
    train = cfg.get("train") or {}
    finetune = cfg.get("finetune") or {}
    out: dict[str, Any] = {
        "model": cfg.get("model"),
        "dataset": data.get("dataset"),
        "img_size": data.get("img_size"),
        "pretrained": cfg.get("pretrained"),
        "train_epochs": train.get("epochs"),
        "finetune_epochs": finetune.get("epochs"),
        "device": cfg.get("device"),
    }
    for k, v in (cfg.get("prune") or {}).items():
        if k not in out and (v is None or isinstance(v, (int, float, str, bool))):
            out[k] = v
    return out


class RunStore:
    """SQLite run store under one home folder. Cheap to create; safe to share across threads.

    Args:
        home: the store folder; ``None`` reads ``$ACCELVIT_HOME`` (default ``./runs``) now.
    """

    def __init__(self, home: str | os.PathLike | None = None):
        self.home = home_dir(home)
        self.db_path = self.home / DB_FILE
        self._init_lock = threading.Lock()
        self._initialised = False

    def __repr__(self) -> str:
        return f"RunStore({str(self.home)!r})"

    # ------------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(str(self.db_path), timeout=30.0, isolation_level=None, check_same_thread=False)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout=30000")
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    def _ensure(self) -> None:
        if self._initialised:
            return
        with self._init_lock:
            if self._initialised:
                return
            try:
                self.home.mkdir(parents=True, exist_ok=True)
                con = self._connect()
            except (OSError, sqlite3.Error) as exc:
                raise StoreError(f"Cannot open the run store at {self.db_path}: {exc}. Check that the folder "
                                 "is writable, or pick another with --home / ACCELVIT_HOME.") from exc
            try:
                mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("SQLite WAL mode unavailable at %s (got %s); concurrent readers may wait.",
                                self.db_path, mode)
                con.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            con.execute(stmt)
                    row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                    if row is None:
                        con.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                    elif int(row[0]) > SCHEMA_VERSION:
                        raise StoreError(
                            f"The run store {self.db_path} was written by a newer accelvit (schema {row[0]}, "
                            f"this one knows {SCHEMA_VERSION}). Upgrade accelvit or use another --home.")
                    elif int(row[0]) < SCHEMA_VERSION:
                        self._migrate(con, int(row[0]))
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"{self.db_path} is not a usable run store ({exc}). Move it away or pick "
                                 "another --home.") from exc
            finally:
                con.close()
            self._initialised = True

    def _migrate(self, con: sqlite3.Connection, from_version: int) -> None:  # pragma: no cover - v1 only
        con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection for one call; ``write=True`` wraps it in one IMMEDIATE transaction."""
        self._ensure()
        con = self._connect()
        try:
            if write:
                con.execute("BEGIN IMMEDIATE")
                try:
                    yield con
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
            else:
                yield con
        finally:
            con.close()

    def schema_version(self) -> int:
        with self.connect() as con:
            return int(con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    # ------------------------------------------------------------------ runs: writers
    def create_run(self, config: dict[str, Any], *, name: str = "", status: str = QUEUED,
                   submit_key: str | None = None, sweep_id: str | None = None,
                   baseline_key: str | None = None, owner: str | None = None,
                   run_id: str | None = None) -> tuple[str, bool]:
        """Insert a run. Returns ``(run_id, created)``; with a ``submit_key`` already used,
        returns that run's id and ``created=False`` (idempotent submits)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        now = time.time()
        with self.connect(write=True) as con:
            if submit_key is not None:
                row = con.execute("SELECT id FROM runs WHERE submit_key=?", (submit_key,)).fetchone()
                if row is not None:
                    return row["id"], False
            rid = run_id or new_run_id()
            con.execute(
                "INSERT INTO runs(id, name, config, status, submit_key, sweep_id, baseline_key, owner, created_at,"
                " started_at, heartbeat) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (rid, name or "", _dumps(config), status, submit_key, sweep_id, baseline_key, owner, now,
                 now if status == RUNNING else None, now))
            con.execute("INSERT INTO events(run_id, ts, kind, message) VALUES (?,?,?,?)",
                        (rid, now, "status", status))
        return rid, True

    def set_status(self, run_id: str, status: str, *, error: str | None = None,
                   traceback: str | None = None, only_from: Iterable[str] | None = None) -> bool:
        """Move a run to ``status`` (optionally only from the given statuses). Returns whether it moved."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        now = time.time()
        sets = ["status=?", "heartbeat=?"]
        params: list[Any] = [status, now]
        if status == RUNNING:
            sets.append("started_at=COALESCE(started_at, ?)")
            params.append(now)
        if status in TERMINAL:
            sets.append("finished_at=?")
            params.append(now)
        if status == FINISHED:
            sets.append("progress=1.0")
        if error is not None:
            sets.append("error=?")
            params.append(error)
        if traceback is not None:
            sets.append("traceback=?")
            params.append(traceback)
        sql = f"UPDATE runs SET {', '.join(sets)} WHERE id=?"
        params.append(run_id)
        if only_from is not None:
            allowed = list(only_from)
            sql += f" AND status IN ({','.join('?' * len(allowed))})"
            params.extend(allowed)
        with self.connect(write=True) as con:
            moved = con.execute(sql, params).rowcount > 0
            if moved:
                con.execute("INSERT INTO events(run_id, ts, kind, message, data) VALUES (?,?,?,?,?)",
                            (run_id, now, "status", status, _dumps({"error": error}) if error else None))
        return moved

    def claim_next(self, owner: str) -> str | None:
        """Atomically move the oldest run queued by ``owner`` to ``running``; its id or None."""
        now = time.time()
        with self.connect(write=True) as con:
            row = con.execute("SELECT id FROM runs WHERE status=? AND owner=? ORDER BY created_at, rowid LIMIT 1",
                              (QUEUED, owner)).fetchone()
            if row is None:
                return None
            con.execute("UPDATE runs SET status=?, started_at=?, heartbeat=? WHERE id=?",
                        (RUNNING, now, now, row["id"]))
            con.execute("INSERT INTO events(run_id, ts, kind, message) VALUES (?,?,?,?)",
                        (row["id"], now, "status", RUNNING))
            return row["id"]

    def request_cancel(self, run_id: str) -> str | None:
        """Cancel a run: a queued one becomes ``cancelled`` now; a running one is flagged for its
        owner (which stops within one training step). Returns the status after the call."""
        now = time.time()
        with self.connect(write=True) as con:
            row = con.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                return None
            status = row["status"]
            if status == QUEUED:
                con.execute("UPDATE runs SET status=?, finished_at=?, cancel_requested=1 WHERE id=?",
                            (CANCELLED, now, run_id))
                con.execute("INSERT INTO events(run_id, ts, kind, message) VALUES (?,?,?,?)",
                            (run_id, now, "status", CANCELLED))
                return CANCELLED
            if status == RUNNING:
                con.execute("UPDATE runs SET cancel_requested=1 WHERE id=?", (run_id,))
            return status

    def cancel_requested(self, run_id: str) -> bool:
        with self.connect() as con:
            row = con.execute("SELECT cancel_requested FROM runs WHERE id=?", (run_id,)).fetchone()
        return bool(row and row[0])

    def mark_orphans_interrupted(self) -> list[str]:
        """Mark ``running``/``queued`` runs whose owner is gone as ``interrupted``; their ids."""
        with self.connect() as con:
            rows = con.execute("SELECT id, status, owner, heartbeat FROM runs WHERE status IN (?, ?)",
                               (QUEUED, RUNNING)).fetchall()
        gone = [r for r in rows if not owner_alive(r["owner"], r["heartbeat"])]
        out = []
        for r in gone:
            msg = ("The process running this job stopped before it finished (server restart or crash)."
                   if r["status"] == RUNNING else
                   "The job was still queued when the process holding the queue stopped; submit it again.")
            if self.set_status(r["id"], INTERRUPTED, error=msg, only_from=(r["status"],)):
                out.append(r["id"])
        if out:
            log.info("Marked %d orphaned run(s) interrupted: %s", len(out), ", ".join(out))
        return out

    def delete_run(self, run_id: str) -> bool:
        """Delete a finished/failed/cancelled/interrupted run, its rows and its artifact folder."""
        with self.connect(write=True) as con:
            row = con.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                return False
            if row["status"] in ACTIVE:
                raise StoreError(f"Run {run_id} is {row['status']}; cancel it before deleting it.")
            for table in ("events", "stage_metrics", "artifacts"):
                con.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
            con.execute("DELETE FROM runs WHERE id=?", (run_id,))
        shutil.rmtree(self.home / "artifacts" / run_id, ignore_errors=True)
        return True

    # ------------------------------------------------------------------ events and metrics
    def add_event(self, run_id: str, kind: str, *, stage: str | None = None, fraction: float | None = None,
                  message: str | None = None, data: dict[str, Any] | None = None,
                  update_live: bool = False, overall: float | None = None) -> None:
        """Append one event; ``update_live`` also stores it as the run's live progress."""
        now = time.time()
        with self.connect(write=True) as con:
            con.execute("INSERT INTO events(run_id, ts, kind, stage, fraction, message, data) VALUES (?,?,?,?,?,?,?)",
                        (run_id, now, kind, stage, _scalar(fraction), message,
                         _dumps(data) if data is not None else None))
            sets, params = ["heartbeat=?"], [now]
            if stage is not None and kind in ("stage_started", "progress"):
                sets.append("stage=?")
                params.append(stage)
            if overall is not None and math.isfinite(overall):
                sets.append("progress=MAX(progress, ?)")
                params.append(float(overall))
            if update_live:
                sets.append("live=?")
                params.append(_dumps(data))
            con.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id=?", (*params, run_id))

    def add_metrics(self, run_id: str, stage: str, metrics: dict[str, Any]) -> None:
        """Store (or replace) the metrics of one run x stage."""
        cols = list(METRIC_COLUMNS)
        values = [_scalar(metrics.get(c)) for c in cols]
        now = time.time()
        with self.connect(write=True) as con:
            con.execute(
                f"INSERT OR REPLACE INTO stage_metrics(run_id, stage, created_at, {', '.join(cols)}, data) "
                f"VALUES (?,?,?,{','.join('?' * len(cols))},?)",
                (run_id, stage, now, *values, _dumps(metrics)))
            con.execute("INSERT INTO events(run_id, ts, kind, stage, data) VALUES (?,?,?,?,?)",
                        (run_id, now, "metrics", stage, _dumps(metrics)))

    # ------------------------------------------------------------------ artifacts
    def artifact_dir(self, run_id: str, create: bool = True) -> Path:
        d = self.home / "artifacts" / run_id
        if create:
            d.mkdir(parents=True, exist_ok=True)
        return d

    def _rel(self, path: str | os.PathLike) -> str:
        p = Path(path).resolve()
        try:
            return str(p.relative_to(self.home))
        except ValueError:
            return str(p)

    def _abs(self, stored: str) -> str:
        p = Path(stored)
        return str(p if p.is_absolute() else self.home / p)

    def add_artifact(self, run_id: str, name: str, path: str | os.PathLike, kind: str = "file",
                     stage: str | None = None) -> None:
        now = time.time()
        with self.connect(write=True) as con:
            con.execute("INSERT OR REPLACE INTO artifacts(run_id, name, kind, path, created_at) VALUES (?,?,?,?,?)",
                        (run_id, name, kind, self._rel(path), now))
            con.execute("INSERT INTO events(run_id, ts, kind, stage, message, data) VALUES (?,?,?,?,?,?)",
                        (run_id, now, "artifact", stage, name, _dumps({"path": str(path), "kind": kind})))

    def write_artifact_json(self, run_id: str, filename: str, obj: Any, name: str | None = None) -> Path:
        """Write ``obj`` as JSON into the run's artifact folder atomically and record it."""
        path = self.artifact_dir(run_id) / filename
        atomic_write_json(path, json.loads(_dumps(obj)))
        self.add_artifact(run_id, name or Path(filename).stem, path, kind="json")
        return path

    def write_artifact_bytes(self, run_id: str, filename: str, data: bytes, name: str | None = None,
                             kind: str = "file") -> Path:
        path = self.artifact_dir(run_id) / filename
        atomic_write_bytes(path, data)
        self.add_artifact(run_id, name or Path(filename).stem, path, kind=kind)
        return path

    def artifacts(self, run_id: str) -> dict[str, str]:
        """``{name: absolute path}`` of a run's artifacts."""
        with self.connect() as con:
            rows = con.execute("SELECT name, path FROM artifacts WHERE run_id=? ORDER BY created_at", (run_id,)).fetchall()
        return {r["name"]: self._abs(r["path"]) for r in rows}

    # ------------------------------------------------------------------ dict readers
    def status(self, run_id: str) -> str | None:
        with self.connect() as con:
            row = con.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
        return row["status"] if row else None

    def _run_dict(self, r: sqlite3.Row, stages: dict[str, dict], artifacts: dict[str, str]) -> dict[str, Any]:
        return {
            "id": r["id"], "name": r["name"], "status": r["status"], "config": _loads(r["config"], {}),
            "error": r["error"], "traceback": r["traceback"], "created_at": r["created_at"],
            "started_at": r["started_at"], "finished_at": r["finished_at"], "stage": r["stage"],
            "progress": r["progress"], "live": _loads(r["live"]), "sweep_id": r["sweep_id"],
            "baseline_key": r["baseline_key"], "cancel_requested": bool(r["cancel_requested"]),
            "stages": stages, "artifacts": artifacts,
        }

    def list_runs(self, status: str | Iterable[str] | None = None, run_ids: Iterable[str] | None = None,
                  sweep_id: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Runs as dicts (newest first), each with ``stages`` and ``artifacts``; see the module doc."""
        where, params = [], []
        if status is not None:
            st = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({','.join('?' * len(st))})")
            params.extend(st)
        if run_ids is not None:
            ids = list(run_ids)
            if not ids:
                return []
            where.append(f"id IN ({','.join('?' * len(ids))})")
            params.extend(ids)
        if sweep_id is not None:
            where.append("sweep_id=?")
            params.append(sweep_id)
        sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "") + \
              " ORDER BY created_at DESC, rowid DESC" + (f" LIMIT {int(limit)}" if limit else "")
        with self.connect() as con:
            rows = con.execute(sql, params).fetchall()
            ids = [r["id"] for r in rows]
            stages: dict[str, dict[str, dict]] = {i: {} for i in ids}
            arts: dict[str, dict[str, str]] = {i: {} for i in ids}
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                for m in con.execute(f"SELECT run_id, stage, data FROM stage_metrics WHERE run_id IN ({marks})",
                                     chunk).fetchall():
                    stages[m["run_id"]][m["stage"]] = _loads(m["data"], {})
                for a in con.execute(f"SELECT run_id, name, path FROM artifacts WHERE run_id IN ({marks}) "
                                     "ORDER BY created_at", chunk).fetchall():
                    arts[a["run_id"]][a["name"]] = self._abs(a["path"])
        out = []
        for r in rows:
            st = stages[r["id"]]
            ordered = {k: st[k] for k in sorted(st, key=_stage_sort_key)}
            out.append(self._run_dict(r, ordered, arts[r["id"]]))
        return out

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        runs = self.list_runs(run_ids=[run_id])
        return runs[0] if runs else None

    # ------------------------------------------------------------------ DataFrame readers
    def runs_df(self, status: str | Iterable[str] | None = None, sweep_id: str | None = None) -> pd.DataFrame:
        where, params = [], []
        if status is not None:
            st = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({','.join('?' * len(st))})")
            params.extend(st)
        if sweep_id is not None:
            where.append("sweep_id=?")
            params.append(sweep_id)
        sql = ("SELECT id, name, status, stage, progress, created_at, started_at, finished_at, error, sweep_id, "
               "baseline_key, config FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "") +
               " ORDER BY created_at DESC, rowid DESC")
        with self.connect() as con:
            rows = [dict(r) for r in con.execute(sql, params).fetchall()]
        return _runs_frame(rows)

    def metrics_df(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        ids = list(run_ids) if run_ids is not None else None
        with self.connect() as con:
            if ids is None:
                mrows = con.execute("SELECT * FROM stage_metrics").fetchall()
                rrows = con.execute("SELECT id, name, status, config, sweep_id FROM runs").fetchall()
            else:
                mrows, rrows = [], []
                for chunk in _chunks(ids, 500):
                    marks = ",".join("?" * len(chunk))
                    mrows += con.execute(f"SELECT * FROM stage_metrics WHERE run_id IN ({marks})", chunk).fetchall()
                    rrows += con.execute(f"SELECT id, name, status, config, sweep_id FROM runs WHERE id IN ({marks})",
                                         chunk).fetchall()
        runs = {r["id"]: r for r in rrows}
        records = []
        for m in mrows:
            r = runs.get(m["run_id"])
            if r is None:
                continue
            rec: dict[str, Any] = {"run_id": m["run_id"], "name": r["name"], "status": r["status"],
                                   "sweep_id": r["sweep_id"], "stage": m["stage"],
                                   "stage_order": _stage_sort_key(m["stage"])}
            data = _loads(m["data"], {}) or {}
            for c in METRIC_COLUMNS:
                rec[c] = m[c]
            for k, v in data.items():
                if k not in rec and (v is None or isinstance(v, (int, float, str, bool))):
                    rec[k] = v
            for k, v in config_columns(_loads(r["config"], {})).items():
                rec.setdefault(k, v)
            records.append(rec)
        base_cols = ["run_id", "name", "status", "sweep_id", "stage", "stage_order", *METRIC_COLUMNS]
        df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=base_cols)
        for c in base_cols + list(RUN_CONFIG_COLUMNS):
            if c not in df.columns:
                df[c] = pd.Series(dtype="object")
        for c in METRIC_COLUMNS:
            if c != "device":
                df[c] = pd.to_numeric(df[c], errors="coerce")
        df = df.sort_values(["run_id", "stage_order"], kind="stable").reset_index(drop=True)
        before = df[df["stage"] == "before"].set_index("run_id")

        def ratio(num: str, den: str) -> pd.Series:
            ref = df["run_id"].map(before[den]) if len(before) else pd.Series(float("nan"), index=df.index)
            return pd.to_numeric(df[num], errors="coerce") / pd.to_numeric(ref, errors="coerce")

        df["flops_ratio"] = ratio("effective_flops", "effective_flops")
        df["params_ratio"] = ratio("nonzero_params", "nonzero_params")
        df["size_ratio"] = ratio("size_sparse_bytes", "size_dense_bytes")
        df["speedup_b1"] = 1.0 / ratio("latency_ms_b1", "latency_ms_b1")
        ref_top1 = df["run_id"].map(before["top1"]) if len(before) else pd.Series(float("nan"), index=df.index)
        df["top1_delta"] = df["top1"] - pd.to_numeric(ref_top1, errors="coerce")
        return df

    def events_df(self, run_id: str, kinds: Iterable[str] | None = None, since_id: int = 0) -> pd.DataFrame:
        sql, params = "SELECT id, ts, kind, stage, fraction, message, data FROM events WHERE run_id=? AND id>?", [run_id, since_id]
        if kinds is not None:
            ks = list(kinds)
            sql += f" AND kind IN ({','.join('?' * len(ks))})"
            params.extend(ks)
        with self.connect() as con:
            rows = [dict(r) for r in con.execute(sql + " ORDER BY id", params).fetchall()]
        df = pd.DataFrame.from_records(rows, columns=["id", "ts", "kind", "stage", "fraction", "message", "data"])
        df["data"] = [_loads(d) for d in df["data"]]
        df.insert(1, "time", _ts(df["ts"]))
        return df.drop(columns=["ts"])

    STAGE_COLUMNS = ("stage", "state", "started", "finished", "seconds", "info")

    def stages_df(self, run_id: str) -> pd.DataFrame:
        """One row per stage the run started, in order: ``stage, state`` (``running``/``done``/
        ``stopped`` when the run ended inside it), ``started, finished, seconds, info`` (dict)."""
        with self.connect() as con:
            rows = con.execute("SELECT ts, kind, stage, data FROM events WHERE run_id=? AND kind IN "
                               "('stage_started', 'stage_finished') ORDER BY id", (run_id,)).fetchall()
            st = con.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
        active = st is not None and st["status"] in ACTIVE
        recs: dict[str, dict[str, Any]] = {}
        for r in rows:
            if r["kind"] == "stage_started":
                recs[r["stage"]] = {"stage": r["stage"], "state": "running" if active else "stopped",
                                    "started": r["ts"], "finished": None, "seconds": None, "info": {}}
            elif r["stage"] in recs:
                d = _loads(r["data"], {}) or {}
                recs[r["stage"]].update(state="done", finished=r["ts"], seconds=d.get("seconds"),
                                        info=d.get("info") or {})
        df = pd.DataFrame.from_records(list(recs.values()), columns=list(self.STAGE_COLUMNS))
        df["started"] = _ts(df["started"])
        df["finished"] = _ts(df["finished"])
        df["seconds"] = pd.to_numeric(df["seconds"], errors="coerce")
        return df

    PROGRESS_COLUMNS = ("time", "stage", "fraction", "overall", "epoch", "epochs", "step", "steps", "loss",
                        "accuracy", "lr", "images_per_s", "eta_s")

    def progress_df(self, run_id: str) -> pd.DataFrame:
        with self.connect() as con:
            rows = con.execute("SELECT ts, stage, fraction, data FROM events WHERE run_id=? AND kind='progress' "
                               "ORDER BY id", (run_id,)).fetchall()
        records = []
        for r in rows:
            d = _loads(r["data"], {}) or {}
            rec = {c: d.get(c) for c in self.PROGRESS_COLUMNS}
            rec.update(time=r["ts"], stage=r["stage"], fraction=r["fraction"])
            records.append(rec)
        df = pd.DataFrame.from_records(records, columns=list(self.PROGRESS_COLUMNS))
        df["time"] = _ts(df["time"])
        for c in self.PROGRESS_COLUMNS[2:]:
            df[c] = pd.to_numeric(df[c], errors="coerce")
        return df

    def artifacts_df(self, run_id: str | None = None) -> pd.DataFrame:
        sql, params = "SELECT run_id, name, kind, path, created_at FROM artifacts", []
        if run_id is not None:
            sql += " WHERE run_id=?"
            params.append(run_id)
        with self.connect() as con:
            rows = [dict(r) for r in con.execute(sql + " ORDER BY created_at", params).fetchall()]
        df = pd.DataFrame.from_records(rows, columns=["run_id", "name", "kind", "path", "created_at"])
        df["path"] = [self._abs(p) for p in df["path"]]
        df["created"] = _ts(df["created_at"])
        return df.drop(columns=["created_at"])


def _chunks(seq: list, n: int) -> Iterator[list]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _stage_sort_key(stage: str) -> int:
    order = ("data", "baseline", "before", "prune", "pruned", "finetune", "after", "control", "save")
    return order.index(stage) if stage in order else len(order)


def _runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    records = []
    for r in rows:
        cfg = _loads(r.pop("config"), {})
        rec = dict(r)
        for k, v in config_columns(cfg).items():
            rec.setdefault(k, v)
        records.append(rec)
    cols = ["id", "name", "status", "stage", "progress", "created_at", "started_at", "finished_at", "error",
            "sweep_id", "baseline_key", *RUN_CONFIG_COLUMNS]
    df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=cols)
    for c in cols:
        if c not in df.columns:
            df[c] = pd.Series(dtype="object")
    end = pd.to_numeric(df["finished_at"], errors="coerce")
    start = pd.to_numeric(df["started_at"], errors="coerce")
    running = df["status"] == RUNNING
    end = end.where(~running, time.time())
    df["duration_s"] = end - start
    df["created"] = _ts(df["created_at"])
    df["started"] = _ts(df["started_at"])
    df["finished"] = _ts(df["finished_at"])
    df = df.drop(columns=["created_at", "started_at", "finished_at"])
    front = ["id", "name", "status", "stage", "progress", "created", "started", "finished", "duration_s", "error",
             "sweep_id", "baseline_key"]
    return df[front + [c for c in df.columns if c not in front]]
