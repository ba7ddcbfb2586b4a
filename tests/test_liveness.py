"""Liveness of runs (issue 13, finding 6): a run whose owner died is seen as ``interrupted`` by
``accelvit runs``, ``runs --cancel`` and an open dashboard (``runs_df``), all through
``RunStore.mark_orphans_interrupted``, with what it recorded kept; owners beat a heartbeat that
readers on other hosts go by."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from accelvit.cli import main
from accelvit.runs import INTERRUPTED, QUEUED, RUNNING, RunStore, new_owner, release_owner
from accelvit.runs.owners import LEGACY_STALE_S, STALE_S, Heartbeat, owner_gone, stale_after

CONFIG = {"model": "swin_pico", "data": {"dataset": "digits", "img_size": 16}}
ROOT = Path(__file__).resolve().parent.parent


def _set(store: RunStore, run_id: str, **cols) -> None:
    con = sqlite3.connect(store.db_path)
    con.execute(f"UPDATE runs SET {', '.join(f'{k}=?' for k in cols)} WHERE id=?", (*cols.values(), run_id))
    con.commit()
    con.close()


def _dead_owner() -> str:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return f"{socket.gethostname()}:{p.pid}::cli-dead"


@pytest.mark.slow
def test_kill_9_of_accelvit_run_shows_interrupted_in_runs_and_cancel(tmp_path, capsys):
    """The reproduction: kill -9 of ``accelvit run``; ``runs`` showed it running forever and
    ``runs --cancel`` answered "stops within one step". Nothing is restarted here."""
    home = tmp_path / "home"
    env = {**os.environ, "ACCELVIT_HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelvit", "run", "--dataset", "digits", "--model", "swin_pico", "--img-size", "16",
           "--subset", "64", "--eval-subset", "32", "--batch-size", "32", "--epochs", "1", "--finetune-epochs", "1000",
           "--head-ratio", "0.5", "--no-latency", "--device", "cpu", "--no-progress", "--name", "doomed"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    store = RunStore(home)
    try:
        deadline = time.monotonic() + 240
        run = None
        while time.monotonic() < deadline and proc.poll() is None:  # running, with its `before` metrics stored
            if store.db_path.exists():
                with sqlite3.connect(store.db_path) as con:  # raw reads: the reader under test does not run yet
                    try:
                        row = con.execute("SELECT r.id, r.status FROM runs r JOIN stage_metrics m ON m.run_id=r.id "
                                          "WHERE m.stage='pruned' AND r.stage='finetune'").fetchone()
                    except sqlite3.OperationalError:
                        row = None
                if row is not None and row[1] == RUNNING:
                    run = row[0]
                    break
            time.sleep(0.2)
        assert run is not None, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "timed out"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stderr.close()
    with sqlite3.connect(store.db_path) as con:  # as the killed process left it
        assert con.execute("SELECT status FROM runs WHERE id=?", (run,)).fetchone()[0] == RUNNING
        artifacts_before = con.execute("SELECT name, path FROM artifacts WHERE run_id=? ORDER BY name",
                                       (run,)).fetchall()

    t0 = time.perf_counter()
    assert main(["--home", str(home), "runs"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if run in ln)
    assert line.split()[:3] == [run, "doomed", "interrupted"], out  # not "running (finetune ..%)"
    got = RunStore(home).get_run(run)
    assert got["status"] == INTERRUPTED and f"pid {proc.pid}" in got["error"] and "finetune" in got["error"]
    assert {"before", "pruned"} <= set(got["stages"]) and got["stages"]["before"]["top1"] is not None
    with sqlite3.connect(store.db_path) as con:
        assert con.execute("SELECT name, path FROM artifacts WHERE run_id=? ORDER BY name",
                           (run,)).fetchall() == artifacts_before

    assert main(["--home", str(home), "runs", "--cancel", run]) == 0
    out = capsys.readouterr().out
    assert f"run {run}: interrupted" in out and "not running any more" in out and "stops within" not in out
    assert main(["--home", str(home), "runs", "--json"]) == 0
    assert '"status": "interrupted"' in capsys.readouterr().out
    print(f"kill -9 test: listing and cancel took {time.perf_counter() - t0:.2f} s")


def test_runs_cancel_is_where_a_dead_run_is_first_seen(tmp_path, capsys):
    store = RunStore(tmp_path)
    rid, _ = store.create_run(CONFIG, status=RUNNING, owner=_dead_owner())
    store.add_metrics(rid, "before", {"top1": 0.9})
    assert main(["--home", str(tmp_path), "runs", "--cancel", rid]) == 0
    out = capsys.readouterr().out
    assert "interrupted (not running any more; nothing to cancel)" in out and "is gone" in out
    run = store.get_run(rid)
    assert run["status"] == INTERRUPTED and not run["cancel_requested"] and run["stages"]["before"]["top1"] == 0.9


def test_an_open_dashboard_sees_a_run_die(tmp_path):
    """The dashboard's manager and store were made before the run's process died: its next read
    (``runs_df``, every refresh) marks the run, without a new manager or a restart."""
    from accelvit.runs import JobManager

    store = RunStore(tmp_path)
    manager = JobManager(store, start=False)
    try:
        victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        owner = f"{socket.gethostname()}:{victim.pid}::cli-x"
        rid, _ = store.create_run(CONFIG, status=RUNNING, owner=owner)
        assert store.runs_df().set_index("id").at[rid, "status"] == RUNNING  # alive: left alone
        victim.kill()
        victim.wait()
        assert store.runs_df().set_index("id").at[rid, "status"] == INTERRUPTED
        assert store.events_df(rid, kinds=["status"])["message"].tolist() == [RUNNING, INTERRUPTED]
        assert manager.store.list_runs(status=RUNNING) == []
    finally:
        manager.shutdown()


def test_another_hosts_run_is_judged_by_its_heartbeat(tmp_path):
    store = RunStore(tmp_path)
    other = "elsewhere.example:4242:99:jobs-abc"
    fresh, _ = store.create_run(CONFIG, status=RUNNING, owner=other)
    stale, _ = store.create_run(CONFIG, status=RUNNING, owner=other)
    legacy, _ = store.create_run(CONFIG, status=RUNNING, owner=other)  # an old accelvit: no declared period
    ancient, _ = store.create_run(CONFIG, status=QUEUED, owner=other)
    assert store.beat(owner=other, interval=10.0) == 4
    now = time.time()
    _set(store, stale, heartbeat=now - STALE_S - 5)
    _set(store, legacy, heartbeat=now - STALE_S - 5, heartbeat_s=None)
    _set(store, ancient, heartbeat=now - LEGACY_STALE_S - 5, heartbeat_s=None)
    assert set(store.mark_orphans_interrupted()) == {stale, ancient}
    assert store.status(fresh) == RUNNING and store.status(legacy) == RUNNING
    err = store.get_run(stale)["error"]
    assert "no heartbeat from host elsewhere.example for 12" in err and "kept" in err
    assert "submit it again" in store.get_run(ancient)["error"]


def test_the_liveness_rule():
    now = 1_000_000.0
    assert stale_after(None) == LEGACY_STALE_S and stale_after(10) == STALE_S and stale_after(60) == 720
    assert owner_gone("h2:1:2:x", now - 5, 10, now) is None
    assert "no heartbeat" in owner_gone("h2:1:2:x", now - 500, 10, now)
    assert "ever recorded" in owner_gone(None, None, None, now)
    assert owner_gone(None, now - 5, None, now) is None  # no owner: the heartbeat decides
    assert owner_gone("garbled", "not a time", "x", now) is not None  # a damaged row is judged, not a crash
    dead = _dead_owner()
    assert "is gone" in owner_gone(dead, now, 10, now)  # this host: the pid decides, however fresh the beat
    live = new_owner("test")
    try:
        assert owner_gone(live, None, None) is None  # this host, alive: however stale the beat
    finally:
        release_owner(live)
    assert "shut down" in owner_gone(live, time.time(), 10)


def test_heartbeat_beats_and_reports_a_lost_run(tmp_path):
    store = RunStore(tmp_path)
    rid, _ = store.create_run(CONFIG, status=RUNNING, owner=new_owner("test"))
    _set(store, rid, heartbeat=0.0)
    lost = threading.Event()
    hb = Heartbeat(lambda: store.beat(run_id=rid, interval=0.05) > 0, interval=0.05, on_lost=lost.set).start()
    try:
        deadline = time.monotonic() + 10
        while store.get_run(rid) and _col(store, rid, "heartbeat") == 0.0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert time.time() - _col(store, rid, "heartbeat") < 5 and _col(store, rid, "heartbeat_s") == 0.05
        store.set_status(rid, INTERRUPTED, only_from=(RUNNING,))  # a reader declared the owner dead
        assert lost.wait(10)
    finally:
        hb.stop()


def _col(store: RunStore, rid: str, col: str):
    with sqlite3.connect(store.db_path) as con:
        return con.execute(f"SELECT {col} FROM runs WHERE id=?", (rid,)).fetchone()[0]


def test_a_run_declared_dead_stops_instead_of_working_for_nobody(tmp_path, monkeypatch):
    """execute() beats for its run; once someone else ended it, the run stops at its next step."""
    from accelvit.experiment import ExperimentConfig
    from accelvit.runs.execute import execute
    from accelvit.utils import check_cancel

    monkeypatch.setenv("ACCELVIT_HEARTBEAT_S", "0.05")
    store = RunStore(tmp_path)
    rid, _ = store.create_run(CONFIG, status=RUNNING, owner=new_owner("test"))
    started = threading.Event()

    def blocking_data(run):
        started.set()
        for _ in range(1000):
            check_cancel(run.cancel, "in the test's data stage")
            time.sleep(0.01)
        return {}

    result = {}
    cfg = ExperimentConfig.from_dict(CONFIG)
    t = threading.Thread(target=lambda: result.setdefault("status", execute(
        store, rid, cfg, experiment_options={"stages": ("data",), "overrides": {"data": blocking_data}})))
    t.start()
    assert started.wait(60)
    assert _col(store, rid, "heartbeat_s") == 0.05  # the period is declared with the first beat
    store.set_status(rid, INTERRUPTED, error="declared dead", only_from=(RUNNING,))
    t.join(30)
    assert not t.is_alive() and result["status"] == INTERRUPTED
    assert store.get_run(rid)["error"] == "declared dead"  # the reader's verdict is kept


def test_a_job_manager_beats_for_its_queued_runs(tmp_path):
    """Queued runs of a busy manager must not look dead to another host: the manager stamps them."""
    from accelvit.runs import JobManager
    from accelvit.experiment import ExperimentConfig

    store = RunStore(tmp_path)
    manager = JobManager(store, start=False)
    try:
        rid = manager.submit(ExperimentConfig.from_dict(CONFIG))
        _set(store, rid, heartbeat=0.0)
        manager._beat()
        assert time.time() - _col(store, rid, "heartbeat") < 5 and _col(store, rid, "heartbeat_s") > 0
    finally:
        manager.shutdown()
