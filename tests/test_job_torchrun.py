"""A dashboard job with ``processes`` > 1: the job manager launches torchrun and follows it through the store.

``JobManager(executor="process")`` (the dashboard's) starts ``torchrun --standalone --nproc_per_node 2 -m
accelvit.runs.worker --run-id ID`` for such a run: two gloo ranks on the CPU, rank 0 recording in the store.
Tiny digits runs (swin_pico at 16 px, 64 training images).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from accelvit.data import DataConfig
from accelvit.errors import ConfigError
from accelvit.experiment import ExperimentConfig
from accelvit.prune import PruneConfig
from accelvit.runs import CANCELLED, FAILED, FINISHED, RUNNING, JobManager, RunStore
from accelvit.runs import jobs as jobs_mod
from accelvit.train import TrainConfig

from _job_support import TIMEOUT, wait_stage, worker_pids  # tests/_job_support.py (pytest puts tests/ on sys.path)

DIGEST = re.compile(r"rank (\d) of 2: final weights sha256 ([0-9a-f]{64})")

pytestmark = pytest.mark.skipif(jobs_mod.torchrun_command() is None, reason="torchrun is not installed")


def tiny(finetune_epochs: int = 1) -> ExperimentConfig:
    return ExperimentConfig(
        model="swin_pico", data=DataConfig(dataset="digits", img_size=16, batch_size=32, subset=64, eval_subset=32),
        train=TrainConfig(epochs=1), finetune=TrainConfig(epochs=finetune_epochs, lr=5e-4),
        prune=PruneConfig(head_ratio=0.5, head_criterion="l1", sparsity=0.5), device="cpu",
        measure_latency=False, processes=2)


def _wait_idle(manager: JobManager, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while manager.current is not None:
        assert time.monotonic() < deadline, "the torchrun group did not exit"
        time.sleep(0.1)


def _log(store: RunStore, rid: str) -> str:
    return Path(store.get_run(rid)["artifacts"]["worker_log"]).read_text(errors="replace")


@pytest.fixture
def manager(tmp_path):
    m = JobManager(RunStore(tmp_path / "home"), executor="process")
    yield m
    m.shutdown(timeout=60)


def test_a_two_process_job_runs_through_torchrun_to_one_record(manager):
    rid = manager.submit(tiny())
    assert manager.wait(rid, TIMEOUT) == FINISHED, manager.get_run(rid)["error"]
    store = manager.store
    runs = store.runs_df()
    assert list(runs["id"]) == [rid]  # one store record: rank 0's
    run = store.get_run(rid)
    assert {"before", "pruned", "after"} <= set(run["stages"]) and Path(run["artifacts"]["model"]).is_dir()
    assert sorted(p.name for p in (store.home / "artifacts").iterdir()) == [rid]  # rank 1 saved nothing
    text = _log(store, rid)
    assert "rank 0 of 2 (gloo on cpu)" in text and "rank 1 of 2 (gloo on cpu)" in text
    digests = dict(DIGEST.findall(text))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], text[-3000:]


def test_cancel_during_the_finetune_stops_both_ranks_at_the_same_step(manager):
    rid = manager.submit(tiny(finetune_epochs=500))
    wait_stage(manager.store, rid, "finetune")
    time.sleep(0.5)  # a few steps into it
    assert manager.cancel(rid) == RUNNING
    assert manager.wait(rid, 60) == CANCELLED
    assert "Cancelled by the user during the finetune stage" in manager.get_run(rid)["error"]
    _wait_idle(manager)  # the torchrun process exits: the scheduler is free again
    text = _log(manager.store, rid)
    # where each rank stopped: a training step ("training epoch 3, step 2") or the epoch's validation pass
    r0 = re.search(r"run \S+ cancelled \(The job was cancelled during ([^\n]+?)\.\)", text)
    r1 = re.search(r"rank 1 of 2: cancelled \(The job was cancelled during ([^\n]+?)\.\)", text)
    assert r0 and r1, text[-3000:]
    assert r0.group(1) == r1.group(1), (r0.group(1), r1.group(1))  # the same point on both ranks
    assert "rank 0 of 2: run" in text and "ended cancelled" in text
    assert not worker_pids(manager.store.home, rank=0) and not worker_pids(manager.store.home, rank=1)


def test_a_rank_that_dies_fails_the_run_with_the_group_log(manager):
    rid = manager.submit(tiny(finetune_epochs=500))
    wait_stage(manager.store, rid, "finetune")
    (pid,) = worker_pids(manager.store.home, rank=1)
    os.kill(pid, signal.SIGKILL)  # what the OOM killer does to one rank
    assert manager.wait(rid, 90) == FAILED  # rank 0 saw the broken connection
    _wait_idle(manager)  # then the manager read torchrun's summary: which rank failed first
    assert manager.get_run(rid)["status"] == FAILED
    run = manager.get_run(rid)
    assert "Rank 1 of this run's torchrun group (2 processes) stopped unexpectedly (signal 9)" in run["error"]
    assert run["traceback"]  # the log tail


def test_the_thread_executor_refuses_a_process_group(tmp_path):
    m = JobManager(RunStore(tmp_path / "home"), executor="thread", start=False)
    try:
        with pytest.raises(ConfigError, match="a thread cannot host a process group") as err:
            m.submit(tiny())
        assert err.value.field == "processes"
        assert m.store.runs_df().empty  # nothing queued
    finally:
        m.shutdown()


def test_torchrun_missing_fails_the_run_with_a_clear_message(manager, monkeypatch):
    monkeypatch.setattr(jobs_mod, "torchrun_command", lambda: None)
    rid = manager.submit(tiny())
    assert manager.wait(rid, 30) == FAILED
    assert "torchrun was not found next to this Python" in manager.get_run(rid)["error"]
