"""The run store: every experiment, its stage metrics, progress and artifacts, in SQLite.

``$ACCELVIT_HOME/runs.db`` (:mod:`accelvit.paths`), resolved when a :class:`RunStore` is made.
Artifacts live under ``artifacts/<run id>/``, written atomically, their paths recorded relative
to the home so a home folder can be moved. The database is created on first use (schema in
:mod:`accelvit.runs.schema`), runs in WAL mode with a busy timeout and opens one short-lived
connection per call, so any number of threads and processes (the job runner, a CLI run,
browser tabs) read while one writes without "database is locked" errors.

This module holds the SQL; :mod:`accelvit.runs.queries` builds the DataFrames. The reader API
is documented in :mod:`accelvit.runs`.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from ..fileio import atomic_write_bytes, atomic_write_json, dumps
from ..paths import artifacts_dir, db_path, home_dir
from .queries import (PROGRESS_COLUMNS, STAGE_COLUMNS, artifacts_frame, events_frame, metrics_frame, progress_frame,
                      runs_frame, stages_frame)
from .owners import heartbeat_interval, orphan_message, owner_gone
from .rows import loads, num, scalar
from .schema import (ACTIVE, CANCELLED, FINISHED, INTERRUPTED, METRIC_COLUMNS, QUEUED, RUNNING, STATUSES, TERMINAL,
                     StoreError, apply_schema, stage_sort_key)

log = logging.getLogger(__name__)

_QUEUED_BY_OWNER = "SELECT id FROM runs WHERE status=? AND owner=? ORDER BY created_at, rowid"


def new_run_id() -> str:
    """Sortable, readable and unique: ``20250102-153012-a1b2c3``."""
    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _in(column: str, values: list) -> str:
    return f"{column} IN ({','.join('?' * len(values))})"


def _run_filter(status: str | Iterable[str] | None, sweep_id: str | None,
                run_ids: list[str] | None = None) -> tuple[str, list[Any]]:
    """``(" WHERE ...", params)`` selecting runs by status(es), sweep and ids ("" when no filter)."""
    where, params = [], []
    if status is not None:
        st = [status] if isinstance(status, str) else list(status)
        where.append(_in("status", st))
        params.extend(st)
    if run_ids is not None:
        where.append(_in("id", run_ids))
        params.extend(run_ids)
    if sweep_id is not None:
        where.append("sweep_id=?")
        params.append(sweep_id)
    return (f" WHERE {' AND '.join(where)}" if where else ""), params


def _chunks(seq: list, n: int) -> Iterator[list]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


class RunStore:
    """SQLite run store under one home folder. Cheap to create; safe to share across threads.

    Args:
        home: the store folder; ``None`` reads ``$ACCELVIT_HOME`` (default ``./runs``) now.
    """

    def __init__(self, home: str | os.PathLike | None = None):
        self.home = home_dir(home)
        self.db_path = db_path(self.home)
        self._init_lock = threading.Lock()
        self._initialised = False
        self._warned: set[str] = set()

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
                    apply_schema(con, self.db_path)
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
                (rid, name or "", dumps(config), status, submit_key, sweep_id, baseline_key, owner, now,
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
            sql += f" AND {_in('status', allowed)}"
            params.extend(allowed)
        with self.connect(write=True) as con:
            moved = con.execute(sql, params).rowcount > 0
            if moved:
                con.execute("INSERT INTO events(run_id, ts, kind, message, data) VALUES (?,?,?,?,?)",
                            (run_id, now, "status", status, dumps({"error": error}) if error else None))
        return moved

    def claim_next(self, owner: str) -> str | None:
        """Atomically move the oldest run queued by ``owner`` to ``running``; its id or None."""
        now = time.time()
        with self.connect(write=True) as con:
            row = con.execute(_QUEUED_BY_OWNER + " LIMIT 1", (QUEUED, owner)).fetchone()
            if row is None:
                return None
            con.execute("UPDATE runs SET status=?, started_at=?, heartbeat=? WHERE id=?",
                        (RUNNING, now, now, row["id"]))
            con.execute("INSERT INTO events(run_id, ts, kind, message) VALUES (?,?,?,?)",
                        (row["id"], now, "status", RUNNING))
            return row["id"]

    def request_cancel(self, run_id: str) -> str | None:
        """Cancel a run: a queued one becomes ``cancelled`` now; a running one is flagged for its
        owner (which stops within one training step). A run whose owner is gone is marked
        ``interrupted`` first (nothing is left to stop). Returns the status after the call."""
        self._reap([run_id])
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

    def beat(self, run_id: str | None = None, owner: str | None = None, interval: float | None = None) -> int:
        """Heartbeat: stamp the time (and the beat period ``interval``) on the queued or running
        run ``run_id``, or on every queued or running run of ``owner``; how many rows it stamped
        (0: nothing of it is active any more)."""
        if (run_id is None) == (owner is None):
            raise ValueError("beat() takes a run_id or an owner")
        key, value = ("id", run_id) if run_id is not None else ("owner", owner)
        with self.connect(write=True) as con:
            return con.execute(f"UPDATE runs SET heartbeat=?, heartbeat_s=? WHERE {key}=? AND status IN (?, ?)",
                               (time.time(), float(interval or heartbeat_interval()), value, QUEUED, RUNNING)).rowcount

    def mark_orphans_interrupted(self, run_ids: Iterable[str] | None = None) -> list[str]:
        """Mark ``running``/``queued`` runs whose owner is gone (:func:`~accelvit.runs.owners.owner_gone`)
        ``interrupted``, saying why; their ids. Stage metrics, events and artifacts stay.

        The one liveness check: the job manager runs it when it opens a store and every few
        seconds; ``runs_df`` and ``list_runs`` (the dashboard, ``accelvit runs``) and
        ``request_cancel`` (``runs --cancel``) run it before they read, so all of them agree."""
        sql, params = "SELECT id, status, owner, heartbeat, heartbeat_s, stage FROM runs WHERE status IN (?, ?)", \
            [QUEUED, RUNNING]
        if run_ids is not None:
            ids = list(run_ids)
            if not ids:
                return []
            sql += f" AND {_in('id', ids)}"
            params += ids
        with self.connect() as con:
            rows = con.execute(sql, params).fetchall()
        if not any(owner_gone(r["owner"], num(r["heartbeat"]), num(r["heartbeat_s"])) for r in rows):
            return []
        out = []
        now = time.time()
        with self.connect(write=True) as con:  # look again inside the write: a beat may just have come
            for r in con.execute(sql, params).fetchall():
                why = owner_gone(r["owner"], num(r["heartbeat"]), num(r["heartbeat_s"]), now)
                if why is None:
                    continue
                msg = orphan_message(r["status"], why, r["stage"])
                con.execute("UPDATE runs SET status=?, finished_at=?, error=? WHERE id=? AND status=?",
                            (INTERRUPTED, now, msg, r["id"], r["status"]))
                con.execute("INSERT INTO events(run_id, ts, kind, message, data) VALUES (?,?,?,?,?)",
                            (r["id"], now, "status", INTERRUPTED, dumps({"error": msg})))
                out.append(r["id"])
        if out:
            log.info("Marked %d orphaned run(s) interrupted: %s", len(out), ", ".join(out))
        return out

    def _reap(self, run_ids: Iterable[str] | None = None) -> None:
        """:meth:`mark_orphans_interrupted` for a reader: a store it cannot write (read-only
        folder, a long lock) is still read, with a warning."""
        try:
            self.mark_orphans_interrupted(run_ids)
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not check %s for runs whose process is gone: %s", self.db_path, exc)

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
        shutil.rmtree(self.artifact_dir(run_id, create=False), ignore_errors=True)
        return True

    # ------------------------------------------------------------------ events and metrics
    def add_event(self, run_id: str, kind: str, *, stage: str | None = None, fraction: float | None = None,
                  message: str | None = None, data: dict[str, Any] | None = None,
                  update_live: bool = False, overall: float | None = None) -> None:
        """Append one event; ``update_live`` also stores it as the run's live progress."""
        now = time.time()
        with self.connect(write=True) as con:
            con.execute("INSERT INTO events(run_id, ts, kind, stage, fraction, message, data) VALUES (?,?,?,?,?,?,?)",
                        (run_id, now, kind, stage, scalar(fraction), message,
                         dumps(data) if data is not None else None))
            sets, params = ["heartbeat=?"], [now]
            if stage is not None and kind in ("stage_started", "progress"):
                sets.append("stage=?")
                params.append(stage)
            if overall is not None and math.isfinite(overall):
                sets.append("progress=MAX(progress, ?)")
                params.append(float(overall))
            if update_live:
                sets.append("live=?")
                params.append(dumps(data))
            con.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id=?", (*params, run_id))

    def add_metrics(self, run_id: str, stage: str, metrics: dict[str, Any]) -> None:
        """Store (or replace) the metrics of one run x stage."""
        cols = list(METRIC_COLUMNS)
        values = [scalar(metrics.get(c)) for c in cols]
        now = time.time()
        with self.connect(write=True) as con:
            con.execute(
                f"INSERT OR REPLACE INTO stage_metrics(run_id, stage, created_at, {', '.join(cols)}, data) "
                f"VALUES (?,?,?,{','.join('?' * len(cols))},?)",
                (run_id, stage, now, *values, dumps(metrics)))
            con.execute("INSERT INTO events(run_id, ts, kind, stage, data) VALUES (?,?,?,?,?)",
                        (run_id, now, "metrics", stage, dumps(metrics)))

    # ------------------------------------------------------------------ artifacts
    def artifact_dir(self, run_id: str, create: bool = True) -> Path:
        d = artifacts_dir(self.home) / run_id
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
                        (run_id, now, "artifact", stage, name, dumps({"path": str(path), "kind": kind})))

    def write_artifact_json(self, run_id: str, filename: str, obj: Any, name: str | None = None) -> Path:
        """Write ``obj`` as JSON into the run's artifact folder atomically and record it."""
        path = self.artifact_dir(run_id) / filename
        atomic_write_json(path, obj)
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

    def queued_ids(self, owner: str) -> list[str]:
        """Ids of the runs queued by ``owner``, oldest first (the order :meth:`claim_next` takes them)."""
        with self.connect() as con:
            rows = con.execute(_QUEUED_BY_OWNER, (QUEUED, owner)).fetchall()
        return [r[0] for r in rows]

    def _json(self, value: Any, default: Any, column: str, run_id: Any, row: Any = None) -> Any:
        """A JSON column decoded; a damaged one (:func:`_loads`) is ``default``, warned once."""
        where = f"{column} of run {run_id}" + (f" ({row})" if row is not None else "")
        return loads(value, default, where, self._warned)

    def _run_dict(self, r: sqlite3.Row, stages: dict[str, dict], artifacts: dict[str, str]) -> dict[str, Any]:
        return {
            "id": r["id"], "name": r["name"], "status": r["status"], "config": self._json(r["config"], {}, "runs.config", r["id"]),
            "error": r["error"], "traceback": r["traceback"], "created_at": r["created_at"],
            "started_at": r["started_at"], "finished_at": r["finished_at"], "stage": r["stage"],
            "progress": r["progress"], "live": self._json(r["live"], {}, "runs.live", r["id"]) or None, "sweep_id": r["sweep_id"],
            "baseline_key": r["baseline_key"], "cancel_requested": bool(r["cancel_requested"]),
            "stages": stages, "artifacts": artifacts,
        }

    def list_runs(self, status: str | Iterable[str] | None = None, run_ids: Iterable[str] | None = None,
                  sweep_id: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Runs as dicts (newest first), each with ``stages`` and ``artifacts``; see the module doc."""
        if run_ids is not None:
            run_ids = list(run_ids)
            if not run_ids:
                return []
        self._reap(run_ids)
        where, params = _run_filter(status, sweep_id, run_ids)
        sql = f"SELECT * FROM runs{where} ORDER BY created_at DESC, rowid DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self.connect() as con:
            rows = con.execute(sql, params).fetchall()
            ids = [r["id"] for r in rows]
            stages: dict[str, dict[str, dict]] = {i: {} for i in ids}
            arts: dict[str, dict[str, str]] = {i: {} for i in ids}
            for chunk in _chunks(ids, 500):
                for m in con.execute(f"SELECT run_id, stage, data FROM stage_metrics WHERE {_in('run_id', chunk)}",
                                     chunk).fetchall():
                    stages[m["run_id"]][m["stage"]] = self._json(m["data"], {}, "stage_metrics.data", m["run_id"],
                                                                            m["stage"])
                for a in con.execute(f"SELECT run_id, name, path FROM artifacts WHERE {_in('run_id', chunk)} "
                                     "ORDER BY created_at", chunk).fetchall():
                    arts[a["run_id"]][a["name"]] = self._abs(a["path"])
        out = []
        for r in rows:
            st = stages[r["id"]]
            ordered = {k: st[k] for k in sorted(st, key=stage_sort_key)}
            out.append(self._run_dict(r, ordered, arts[r["id"]]))
        return out

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        runs = self.list_runs(run_ids=[run_id])
        return runs[0] if runs else None

    # ------------------------------------------------------------------ DataFrame readers
    STAGE_COLUMNS = STAGE_COLUMNS
    PROGRESS_COLUMNS = PROGRESS_COLUMNS

    def runs_df(self, status: str | Iterable[str] | None = None, sweep_id: str | None = None) -> pd.DataFrame:
        self._reap()
        where, params = _run_filter(status, sweep_id)
        sql = ("SELECT id, name, status, stage, progress, created_at, started_at, finished_at, error, sweep_id, "
               f"baseline_key, config FROM runs{where} ORDER BY created_at DESC, rowid DESC")
        with self.connect() as con:
            rows = [dict(r) for r in con.execute(sql, params).fetchall()]
        for r in rows:
            r["config"] = self._json(r["config"], {}, "runs.config", r["id"])
        return runs_frame(rows)

    def metrics_df(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        ids = list(run_ids) if run_ids is not None else None
        run_sql = "SELECT id, name, status, config, sweep_id FROM runs"
        with self.connect() as con:
            if ids is None:
                mrows = con.execute("SELECT * FROM stage_metrics").fetchall()
                rrows = con.execute(run_sql).fetchall()
            else:
                mrows, rrows = [], []
                for chunk in _chunks(ids, 500):
                    mrows += con.execute(f"SELECT * FROM stage_metrics WHERE {_in('run_id', chunk)}", chunk).fetchall()
                    rrows += con.execute(f"{run_sql} WHERE {_in('id', chunk)}", chunk).fetchall()
        runs = {r["id"]: {**dict(r), "config": self._json(r["config"], {}, "runs.config", r["id"])} for r in rrows}
        metric_rows = [{**dict(m), "data": self._json(m["data"], {}, "stage_metrics.data", m["run_id"], m["stage"])}
                       for m in mrows]
        return metrics_frame(metric_rows, runs)

    def events_df(self, run_id: str, kinds: Iterable[str] | None = None, since_id: int = 0) -> pd.DataFrame:
        sql, params = "SELECT id, ts, kind, stage, fraction, message, data FROM events WHERE run_id=? AND id>?", [run_id, since_id]
        if kinds is not None:
            ks = list(kinds)
            sql += f" AND {_in('kind', ks)}"
            params.extend(ks)
        with self.connect() as con:
            rows = [dict(r) for r in con.execute(sql + " ORDER BY id", params).fetchall()]
        for r in rows:
            r["data"] = self._json(r["data"], {}, "events.data", run_id, r["id"]) or None
        return events_frame(rows)

    def stages_df(self, run_id: str) -> pd.DataFrame:
        """One row per stage the run started, in order: ``stage, state`` (``running``/``done``/
        ``stopped`` when the run ended inside it), ``started, finished, seconds, info`` (dict)."""
        with self.connect() as con:
            rows = con.execute("SELECT ts, kind, stage, data FROM events WHERE run_id=? AND kind IN "
                               "('stage_started', 'stage_finished') ORDER BY id", (run_id,)).fetchall()
            st = con.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
        active = st is not None and st["status"] in ACTIVE
        return stages_frame([{**dict(r), "data": self._json(r["data"], {}, "events.data", run_id, r["ts"])}
                             for r in rows], active)

    def progress_df(self, run_id: str) -> pd.DataFrame:
        with self.connect() as con:
            rows = con.execute("SELECT ts, stage, fraction, data FROM events WHERE run_id=? AND kind='progress' "
                               "ORDER BY id", (run_id,)).fetchall()
        return progress_frame([{**dict(r), "data": self._json(r["data"], {}, "events.data", run_id, r["ts"])}
                               for r in rows])

    def artifacts_df(self, run_id: str | None = None) -> pd.DataFrame:
        sql, params = "SELECT run_id, name, kind, path, created_at FROM artifacts", []
        if run_id is not None:
            sql += " WHERE run_id=?"
            params.append(run_id)
        with self.connect() as con:
            rows = [dict(r) for r in con.execute(sql + " ORDER BY created_at", params).fetchall()]
        return artifacts_frame(rows, self._abs)
