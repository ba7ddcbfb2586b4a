"""Run store schema migrations (issue 13, finding 8): a real version-1 database, made here with the
CREATE statements version 1 shipped, is opened by today's store, migrated step by step and read and
written as before; a newer database is refused and left as it was; a failing step changes nothing."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time

import pytest

from accelvit.runs import FINISHED, INTERRUPTED, RUNNING, SCHEMA_VERSION, RunStore, StoreError
from accelvit.runs import schema

# The tables of schema version 1, copied from accelvit/store.py at commit 2d71c86 ("store: SQLite run
# store (WAL, versioned schema, ...)", 2026-11-24; `git show 2d71c86:accelvit/store.py`, _SCHEMA). They
# did not change until version 2 (`git log -p accelvit/store.py accelvit/runs/schema.py`). Kept as a
# copy on purpose: the test must not build its "old" database with the code under test.
V1_DDL = """
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

CONFIG = '{"model": "swin_pico", "data": {"dataset": "digits", "img_size": 16}, "prune": {"head_ratio": 0.5}}'
T0 = 1_790_000_000.0


def make_v1(home):
    """A version-1 store as version 1 wrote it: a finished run with metrics, events and an artifact,
    and a run left `running` by a process on another host (beating only on its events, as v1 did)."""
    home.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(home / "runs.db")
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(V1_DDL)
    con.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '1')")
    con.execute("INSERT INTO runs(id, name, config, status, owner, created_at, started_at, finished_at, heartbeat, "
                "stage, progress, live) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                ("20261120-100000-aaaaaa", "old finished", CONFIG, FINISHED, "oldhost:10:1:jobs-1", T0, T0 + 1,
                 T0 + 60, T0 + 60, "save", 1.0, '{"loss": 0.2}'))
    for stage, top1, flops in (("before", 0.95, 4.9e6), ("after", 0.93, 3.8e6)):
        con.execute("INSERT INTO stage_metrics(run_id, stage, created_at, top1, effective_flops, nonzero_params, "
                    "latency_ms_b1, device, data) VALUES (?,?,?,?,?,?,?,?,?)",
                    ("20261120-100000-aaaaaa", stage, T0 + 30, top1, flops, flops / 50, 2.0, "cpu",
                     f'{{"top1": {top1}, "effective_flops": {flops}, "per_class": [1, 0.9]}}'))
    con.execute("INSERT INTO events(run_id, ts, kind, stage, fraction, data) VALUES (?,?,?,?,?,?)",
                ("20261120-100000-aaaaaa", T0 + 10, "progress", "baseline", 0.5, '{"loss": 1.5, "epoch": 1}'))
    con.execute("INSERT INTO artifacts(run_id, name, kind, path, created_at) VALUES (?,?,?,?,?)",
                ("20261120-100000-aaaaaa", "report", "json", "artifacts/20261120-100000-aaaaaa/report.json", T0 + 59))
    con.execute("INSERT INTO runs(id, name, config, status, owner, created_at, started_at, heartbeat, stage) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                ("20261120-110000-bbbbbb", "old running elsewhere", CONFIG, RUNNING, "otherhost:20:2:cli-2",
                 time.time() - 600, time.time() - 600, time.time() - 600, "finetune"))
    con.commit()
    con.close()


def _shape(db) -> dict:
    con = sqlite3.connect(db)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE "
                                        "'sqlite_%' ORDER BY name")]
    shape = {t: [tuple(c) for c in con.execute(f"PRAGMA table_info({t})")] for t in tables}
    shape["indexes"] = sorted(r for r in con.execute("SELECT name, tbl_name FROM sqlite_master WHERE type='index' "
                                                     "AND name NOT LIKE 'sqlite_%'"))
    shape["version"] = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    con.close()
    return shape


def test_a_version_1_store_is_migrated_and_its_runs_read_and_written(tmp_path):
    make_v1(tmp_path / "old")
    store = RunStore(tmp_path / "old")
    assert store.schema_version() == SCHEMA_VERSION == 2
    # the same database as a new store: fresh and migrated stores never drift apart
    RunStore(tmp_path / "new").runs_df()
    assert _shape(tmp_path / "old" / "runs.db") == _shape(tmp_path / "new" / "runs.db")
    cols = [c[1] for c in _shape(tmp_path / "old" / "runs.db")["runs"]]
    assert cols[-1] == "heartbeat_s" and ("runs_owner", "runs") in _shape(tmp_path / "old" / "runs.db")["indexes"]

    runs = store.runs_df().set_index("id")
    assert runs.at["20261120-100000-aaaaaa", "status"] == FINISHED
    assert runs.at["20261120-100000-aaaaaa", "head_ratio"] == 0.5 and runs.at["20261120-100000-aaaaaa", "model"] == "swin_pico"
    # v1 declared no heartbeat period: its other-host run gets the long legacy window, not 2 minutes
    assert runs.at["20261120-110000-bbbbbb", "status"] == RUNNING
    m = store.metrics_df().set_index("stage")
    assert m.at["after", "flops_ratio"] == pytest.approx(3.8 / 4.9) and m.at["after", "top1_delta"] == pytest.approx(-0.02)
    old = store.get_run("20261120-100000-aaaaaa")
    assert old["stages"]["before"]["per_class"] == [1, 0.9] and old["live"] == {"loss": 0.2}
    assert old["artifacts"]["report"] == str(store.home / "artifacts/20261120-100000-aaaaaa/report.json")
    assert store.progress_df("20261120-100000-aaaaaa").iloc[0]["loss"] == 1.5

    # and usable: new runs, beats, metrics, status changes, deletes
    rid, _ = store.create_run({"model": "swin_pico"}, status=RUNNING, owner="otherhost:30:3:cli-3")
    assert store.beat(run_id=rid, interval=10.0) == 1
    store.add_metrics(rid, "before", {"top1": 0.5})
    assert store.set_status(rid, FINISHED) and store.get_run(rid)["stages"]["before"]["top1"] == 0.5
    assert store.delete_run("20261120-100000-aaaaaa") and store.get_run("20261120-100000-aaaaaa") is None
    con = sqlite3.connect(store.db_path)  # the old running run beats from now on, with a period
    con.execute("UPDATE runs SET heartbeat=?, heartbeat_s=10 WHERE id='20261120-110000-bbbbbb'", (time.time() - 600,))
    con.commit()
    con.close()
    assert store.mark_orphans_interrupted() == ["20261120-110000-bbbbbb"]
    assert store.status("20261120-110000-bbbbbb") == INTERRUPTED


def test_two_processes_opening_a_version_1_store_at_once_migrate_it_once(tmp_path):
    make_v1(tmp_path)
    errors, versions = [], []

    def open_it():
        try:
            s = RunStore(tmp_path)
            versions.append(s.schema_version())
            s.runs_df()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and versions == [SCHEMA_VERSION] * 4
    assert [c[1] for c in _shape(tmp_path / "runs.db")["runs"]].count("heartbeat_s") == 1


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_newer_store_is_refused_and_left_as_it_was(tmp_path):
    make_v1(tmp_path)
    con = sqlite3.connect(tmp_path / "runs.db")
    con.execute("UPDATE meta SET value='7' WHERE key='schema_version'")
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    before = _shape(tmp_path / "runs.db"), _digest(tmp_path / "runs.db")
    with pytest.raises(StoreError, match=r"newer accelvit \(schema 7, this one knows up to 2\)"):
        RunStore(tmp_path).runs_df()
    con = sqlite3.connect(tmp_path / "runs.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    assert (_shape(tmp_path / "runs.db"), _digest(tmp_path / "runs.db")) == before


def test_a_failing_migration_step_changes_nothing(tmp_path, monkeypatch):
    make_v1(tmp_path)

    def broken(con):
        schema._v1_to_v2(con)  # the real step's changes, then a failure: all of it must roll back
        con.execute("ALTER TABLE no_such_table ADD COLUMN x")

    monkeypatch.setitem(schema.MIGRATIONS, 1, broken)
    with pytest.raises(StoreError, match="from schema 1 to 2.*nothing was changed"):
        RunStore(tmp_path).runs_df()
    shape = _shape(tmp_path / "runs.db")
    assert shape["version"] == "1" and "heartbeat_s" not in [c[1] for c in shape["runs"]]
    monkeypatch.undo()
    assert RunStore(tmp_path).schema_version() == 2  # the real step then succeeds
