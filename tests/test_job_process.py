"""Jobs in their own process (the dashboard's executor): they run, cancel, crash and stop cleanly.

The dashboard's job manager (``get_manager``) runs each job in a child process
(``python -m accelvit.runs.worker``), so rendering in the web server cannot starve it. These
tests drive real child processes on tiny digits runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from accelvit.data import DataConfig
from accelvit.errors import AccelvitError
from accelvit.experiment import ExperimentConfig
from accelvit.prune import PruneConfig
from accelvit.runs import CANCELLED, FAILED, FINISHED, INTERRUPTED, RUNNING, JobManager, RunStore
from accelvit.train import TrainConfig

from _job_support import TIMEOUT, wait_stage, worker_pids  # tests/_job_support.py (pytest puts tests/ on sys.path)



def tiny(train_epochs: int = 1) -> ExperimentConfig:
    return ExperimentConfig(
        model="swin_pico", data=DataConfig(dataset="digits", img_size=16, batch_size=32, subset=64, eval_subset=32),
        train=TrainConfig(epochs=train_epochs), finetune=TrainConfig(epochs=1, lr=5e-4),
        prune=PruneConfig(head_ratio=0.5, head_criterion="l1"), device="cpu", measure_latency=False)


@pytest.fixture
def manager(tmp_path):
    m = JobManager(RunStore(tmp_path / "home"), executor="process")
    yield m
    m.shutdown(timeout=60)


def test_a_job_runs_in_a_child_process_and_finishes(manager):
    rid = manager.submit(tiny())
    wait_stage(manager.store, rid, "baseline")
    pids = worker_pids(manager.store.home)
    assert pids and os.getpid() not in pids  # the training is not in this process
    assert manager.wait(rid, TIMEOUT) == FINISHED
    run = manager.get_run(rid)
    assert {"before", "pruned", "after"} <= set(run["stages"]) and "model" in run["artifacts"]
    assert Path(run["artifacts"]["worker_log"]).is_file()  # the child's own log is kept with the run


def test_cancel_reaches_the_child_process(manager):
    rid = manager.submit(tiny(train_epochs=200))
    wait_stage(manager.store, rid, "baseline")
    assert manager.cancel(rid) == RUNNING
    assert manager.wait(rid, 60) == CANCELLED
    assert "Cancelled by the user during the baseline stage" in manager.get_run(rid)["error"]


def test_a_crashed_child_process_fails_the_run_with_its_exit(manager):
    rid = manager.submit(tiny(train_epochs=200))
    wait_stage(manager.store, rid, "baseline")
    (pid,) = worker_pids(manager.store.home)
    os.kill(pid, signal.SIGKILL)  # what the OOM killer does
    assert manager.wait(rid, 60) == FAILED
    err = manager.get_run(rid)["error"]
    assert "stopped unexpectedly (signal 9)" in err


@pytest.mark.slow
def test_sigterm_mid_job_leaves_the_run_interrupted_at_once(tmp_path):
    """A process holding the dashboard's manager (here a plain script; the server exits the same
    way on SIGTERM) is stopped mid-job: the run is ``interrupted`` at once, the job process is
    gone, and the exit is clean (no traceback, no 'terminate called')."""
    home = tmp_path / "home"
    script = textwrap.dedent(f"""
        import time
        from accelvit.runs import get_manager
        from accelvit.ui.forms import quick_demo_config
        mgr = get_manager({str(home)!r})
        cfg = quick_demo_config()
        cfg.train.epochs = 200
        rid = mgr.submit(cfg)
        while mgr.store.get_run(rid)["stage"] != "baseline":
            time.sleep(0.1)
        print(rid, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        rid = proc.stdout.readline().strip()
        assert rid, proc.stderr.read()
        store = RunStore(home)
        assert store.status(rid) == RUNNING and worker_pids(home)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        while store.status(rid) == RUNNING and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        assert store.status(rid) == INTERRUPTED, "not interrupted within 5 s of SIGTERM"
        assert "server stopped" in store.get_run(rid)["error"]
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = proc.stderr.read()
    assert "Traceback" not in err and "terminate called" not in err, err
    assert proc.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 15
    while worker_pids(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not worker_pids(home), "the job process outlived the server"
    assert store.status(rid) == INTERRUPTED  # the child's own exit did not overwrite it


def test_listeners_need_the_thread_executor(manager):
    with pytest.raises(AccelvitError, match="listeners need executor='thread'"):
        manager.add_listener(lambda rid, ev: None)
    with pytest.raises(AccelvitError, match="unknown executor 'fork'"):
        JobManager(manager.store, executor="fork", start=False)
