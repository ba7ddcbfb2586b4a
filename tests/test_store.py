"""The SQLite run store: schema on first use, WAL, readers, idempotent submits, orphans, concurrency."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from accelvit.runs import (CANCELLED, FINISHED, INTERRUPTED, QUEUED, RUNNING, SCHEMA_VERSION, RunStore, new_owner,
                           release_owner)

CONFIG = {"name": "", "model": "swin_pico", "data": {"dataset": "digits", "img_size": 16},
          "train": {"epochs": 1}, "finetune": {"epochs": 1}, "prune": {"head_ratio": 0.5, "rank_ratio": None}}
METRICS = {"top1": 0.9, "top5": 1.0, "loss": 0.3, "n": 10, "dense_flops": 100, "effective_flops": 100.0,
           "thop_flops": 80, "params": 1000, "nonzero_params": 1000, "size_dense_bytes": 4000,
           "size_sparse_bytes": 4100, "latency_ms_b1": 2.0, "latency_ms_batch": 20.0, "device": "cpu",
           "density": 1.0, "per_class": [0.9, 0.8]}


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_schema_created_on_first_use_in_wal_mode(tmp_path):
    store = RunStore(tmp_path / "home")
    assert not (tmp_path / "home").exists()  # nothing happens at construction
    assert store.runs_df().empty
    assert store.db_path.exists()
    assert store.schema_version() == SCHEMA_VERSION
    con = sqlite3.connect(store.db_path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "runs", "stage_metrics", "events", "artifacts"} <= tables
    con.close()
    # a store written by a newer accelvit is refused with a clear message
    con = sqlite3.connect(store.db_path)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(Exception, match="newer accelvit"):
        RunStore(tmp_path / "home").runs_df()


def test_home_is_resolved_when_the_store_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELVIT_HOME", str(tmp_path / "a"))
    assert RunStore().home == (tmp_path / "a").resolve()
    monkeypatch.setenv("ACCELVIT_HOME", str(tmp_path / "b"))
    assert RunStore().home == (tmp_path / "b").resolve()
    monkeypatch.delenv("ACCELVIT_HOME")
    monkeypatch.chdir(tmp_path)
    assert RunStore().home == (tmp_path / "runs").resolve()


def test_readers_return_plot_ready_frames_and_dicts(tmp_path):
    store = RunStore(tmp_path)
    rid, created = store.create_run(CONFIG, name="r1", baseline_key="k")
    assert created
    store.set_status(rid, RUNNING)
    store.add_event(rid, "stage_started", stage="baseline", message="baseline", overall=0.1)
    store.add_event(rid, "progress", stage="baseline", fraction=0.5, overall=0.2, update_live=True,
                    data={"stage": "baseline", "fraction": 0.5, "overall": 0.2, "loss": 1.5, "accuracy": 0.4,
                          "epoch": 1, "epochs": 2, "images_per_s": 100.0, "eta_s": 3.0})
    store.add_event(rid, "stage_finished", stage="baseline", fraction=1.0, data={"seconds": 1.5, "info": {"a": 1}})
    store.add_metrics(rid, "before", METRICS)
    store.add_metrics(rid, "pruned", {**METRICS, "top1": 0.5, "effective_flops": 50.0, "nonzero_params": 600})
    store.add_metrics(rid, "after", {**METRICS, "top1": 0.85, "effective_flops": 40.0, "nonzero_params": 500,
                                     "latency_ms_b1": 1.0, "size_sparse_bytes": 2000})
    path = store.write_artifact_json(rid, "report.json", {"x": float("nan"), "y": [1, 2]})
    store.set_status(rid, FINISHED)

    runs = store.runs_df()
    assert list(runs.columns[:12]) == ["id", "name", "status", "stage", "progress", "created", "started", "finished",
                                       "duration_s", "error", "sweep_id", "baseline_key"]
    row = runs.iloc[0]
    assert (row["status"], row["model"], row["dataset"], row["head_ratio"]) == (FINISHED, "swin_pico", "digits", 0.5)
    assert row["progress"] == 1.0 and row["duration_s"] >= 0
    assert isinstance(row["created"], pd.Timestamp)

    m = store.metrics_df()
    assert list(m["stage"]) == ["before", "pruned", "after"]
    after = m[m["stage"] == "after"].iloc[0]
    assert after["flops_ratio"] == pytest.approx(0.4)
    assert after["params_ratio"] == pytest.approx(0.5)
    assert after["speedup_b1"] == pytest.approx(2.0)
    assert after["size_ratio"] == pytest.approx(0.5)
    assert after["top1_delta"] == pytest.approx(-0.05)
    assert after["density"] == 1.0 and after["head_ratio"] == 0.5  # extra metrics and config columns
    assert "per_class" not in m.columns  # lists stay out of the frame (they are in the dicts)
    assert store.metrics_df(["nope"]).empty and "top1" in store.metrics_df(["nope"]).columns

    prog = store.progress_df(rid)
    assert len(prog) == 1 and prog.iloc[0]["loss"] == 1.5 and prog.iloc[0]["stage"] == "baseline"
    stages = store.stages_df(rid)
    assert list(stages["stage"]) == ["baseline"] and stages.iloc[0]["seconds"] == 1.5
    ev = store.events_df(rid)
    assert {"status", "stage_started", "progress", "stage_finished", "metrics", "artifact"} <= set(ev["kind"])

    run = store.get_run(rid)
    assert run["status"] == FINISHED and run["config"] == CONFIG and run["error"] is None
    assert list(run["stages"]) == ["before", "pruned", "after"]
    assert run["stages"]["after"]["top1"] == 0.85 and run["stages"]["before"]["per_class"] == [0.9, 0.8]
    assert run["artifacts"]["report"] == str(path) and run["live"]["loss"] == 1.5
    assert json.loads(path.read_text())["y"] == [1, 2]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic: no temp file left
    assert store.artifacts_df(rid).iloc[0]["path"] == str(path)


def test_empty_frames_have_their_columns(tmp_path):
    store = RunStore(tmp_path)
    assert {"id", "status", "progress", "model", "dataset"} <= set(store.runs_df().columns)
    assert {"run_id", "stage", "top1", "effective_flops", "flops_ratio"} <= set(store.metrics_df().columns)
    assert list(store.progress_df("x").columns) == list(RunStore.PROGRESS_COLUMNS)
    assert {"kind", "stage", "message"} <= set(store.events_df("x").columns)


def test_submit_key_is_idempotent(tmp_path):
    store = RunStore(tmp_path)
    a, c1 = store.create_run(CONFIG, submit_key="form-1")
    b, c2 = store.create_run(CONFIG, submit_key="form-1")
    assert a == b and c1 and not c2
    assert len(store.runs_df()) == 1


def test_cancel_request_queued_now_running_flagged(tmp_path):
    store = RunStore(tmp_path)
    q, _ = store.create_run(CONFIG)
    r, _ = store.create_run(CONFIG, status=RUNNING)
    assert store.request_cancel(q) == CANCELLED and store.status(q) == CANCELLED
    assert store.request_cancel(r) == RUNNING and store.cancel_requested(r)
    assert store.request_cancel("missing") is None


def test_orphaned_runs_are_marked_interrupted(tmp_path):
    store = RunStore(tmp_path)
    dead = f"{socket.gethostname()}:{dead_pid()}::cli-x"
    reused = f"{socket.gethostname()}:1:12345:jobs-x"  # pid 1 lives, but started at another time
    live = new_owner("test")
    try:
        r_dead, _ = store.create_run(CONFIG, status=RUNNING, owner=dead)
        q_dead, _ = store.create_run(CONFIG, status=QUEUED, owner=dead)
        r_none, _ = store.create_run(CONFIG, status=RUNNING, owner=None)
        r_none_fresh, _ = store.create_run(CONFIG, status=RUNNING, owner=None)  # no owner: the heartbeat decides
        con = sqlite3.connect(store.db_path)
        con.execute("UPDATE runs SET heartbeat=NULL WHERE id=?", (r_none,))
        con.commit()
        con.close()
        r_live, _ = store.create_run(CONFIG, status=RUNNING, owner=live)
        r_reused, _ = store.create_run(CONFIG, status=RUNNING, owner=reused)
        done, _ = store.create_run(CONFIG, status=RUNNING, owner=dead)
        store.set_status(done, FINISHED)
        gone = set(store.mark_orphans_interrupted())
        assert gone == {r_dead, q_dead, r_none, r_reused}
        assert store.status(r_dead) == INTERRUPTED and "stopped" in store.get_run(r_dead)["error"]
        assert store.status(r_live) == RUNNING and store.status(done) == FINISHED
        assert store.status(r_none_fresh) == RUNNING
    finally:
        release_owner(live)
    # once its owner is released (its manager is gone), the live one is orphaned too
    assert store.mark_orphans_interrupted() == [r_live]


def test_delete_run_removes_rows_and_artifacts(tmp_path):
    store = RunStore(tmp_path)
    rid, _ = store.create_run(CONFIG, status=RUNNING)
    store.write_artifact_json(rid, "report.json", {})
    with pytest.raises(Exception, match="cancel it"):
        store.delete_run(rid)
    store.set_status(rid, FINISHED)
    assert store.delete_run(rid)
    assert store.get_run(rid) is None and not store.artifact_dir(rid, create=False).exists()


WRITER = """
import sys
from accelvit.runs import RunStore
s = RunStore(sys.argv[1])
rid, n = sys.argv[2], int(sys.argv[3])
for i in range(n):
    s.add_event(rid, "progress", stage="finetune", fraction=i / n, overall=i / n, update_live=True,
                data={"loss": 1.0 / (i + 1)})
    if i % 10 == 0:
        s.add_metrics(rid, "after", {"top1": i / n})
"""


def test_concurrent_readers_and_writers_never_see_locked(tmp_path):
    """Two writers (a thread and another process) and four reader threads: no 'database is locked'."""
    store = RunStore(tmp_path)
    rid, _ = store.create_run(CONFIG, status=RUNNING)
    errors: list[BaseException] = []
    stop = threading.Event()
    reads = [0]

    def reader() -> None:
        s = RunStore(tmp_path)
        while not stop.is_set():
            try:
                s.runs_df(), s.metrics_df(), s.progress_df(rid), s.events_df(rid), s.list_runs(), s.stages_df(rid)
                reads[0] += 1
                time.sleep(0.01)
            except BaseException as exc:  # noqa: BLE001 - the test collects everything
                errors.append(exc)
                return

    def writer() -> None:
        try:
            for i in range(100):
                store.add_event(rid, "progress", stage="baseline", fraction=i / 100, update_live=True, data={"i": i})
                store.add_metrics(rid, "before", {"top1": i / 100})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), rid, "100"])
    threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    threads[-1].join(120)
    assert proc.wait(120) == 0
    stop.set()
    for t in threads[:-1]:
        t.join(30)
    assert not errors, errors
    assert reads[0] > 0
    assert len(store.progress_df(rid)) == 200


DAMAGE = [  # (table, column, value): rows that once made a reader raise (issue 13, finding 7)
    ("stage_metrics", "data", "[1, 2]"), ("stage_metrics", "data", "5"), ("stage_metrics", "data", "{not json"),
    ("stage_metrics", "top1", "abc"), ("runs", "config", "[1]"), ("runs", "config", '{"data": 5, "prune": [1]}'),
    ("runs", "config", "{not json"), ("runs", "live", "[1]"), ("runs", "progress", "abc"),
    ("runs", "heartbeat", "abc"), ("events", "data", "[1]"), ("events", "data", "{"),
]


@pytest.mark.parametrize("table,column,value", DAMAGE)
def test_damaged_rows_are_read_with_a_warning_never_a_traceback(tmp_path, monkeypatch, capsys, caplog,
                                                                table, column, value):
    from accelvit.cli import main

    monkeypatch.setenv("ACCELVIT_HOME", str(tmp_path))
    store = RunStore(tmp_path)
    owner = new_owner("test")
    try:
        rid, _ = store.create_run(CONFIG, name="damaged", status=RUNNING, owner=owner)  # running: progress is shown
        store.add_event(rid, "stage_started", stage="baseline", message="baseline", update_live=True, data={"a": 1})
        store.add_event(rid, "progress", stage="baseline", fraction=0.5, update_live=True, data={"loss": 1.0})
        store.add_event(rid, "stage_finished", stage="baseline", data={"seconds": 1.0})
        store.add_metrics(rid, "before", METRICS)
        store.add_metrics(rid, "after", {**METRICS, "top1": 0.8})
        con = sqlite3.connect(store.db_path)
        con.execute(f"UPDATE {table} SET {column}=?", (value,))
        con.commit()
        con.close()
        s = RunStore(tmp_path)
        runs, metrics = s.runs_df(), s.metrics_df()
        assert runs.set_index("id").at[rid, "status"] == RUNNING and set(metrics["stage"]) == {"before", "after"}
        s.events_df(rid), s.stages_df(rid), s.progress_df(rid), s.artifacts_df(rid)
        run = s.get_run(rid)
        assert isinstance(run["config"], dict) and all(isinstance(m, dict) for m in run["stages"].values())
        assert main(["--home", str(tmp_path), "runs"]) == 0 and "damaged" in capsys.readouterr().out
        assert main(["--home", str(tmp_path), "runs", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["id"] == rid
        json_damaged = column in ("data", "config", "live") and not value.startswith('{"')
        assert (f"{table}.{column} of run {rid}" in caplog.text) == json_damaged  # a warning names the row
    finally:
        release_owner(owner)


def test_a_damaged_schema_version_is_a_named_error(tmp_path, monkeypatch, capsys):
    from accelvit.cli import main
    from accelvit.runs import StoreError

    monkeypatch.setenv("ACCELVIT_HOME", str(tmp_path))
    RunStore(tmp_path).create_run(CONFIG)
    for bad in ("x", "", "-3", "1.5"):
        con = sqlite3.connect(tmp_path / "runs.db")
        con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (bad,))
        con.commit()
        con.close()
        with pytest.raises(StoreError, match="schema_version is"):
            RunStore(tmp_path).runs_df()
        for argv in (["runs"], ["runs", "--json"]):
            assert main(["--home", str(tmp_path), *argv]) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: The run store") and "damaged" in err and "Traceback" not in err
