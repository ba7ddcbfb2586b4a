"""The job runner: end to end, cancel, failure, interrupted runs, one-at-a-time, sweeps, concurrent readers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from accelvit import serialize
from accelvit.data import DataConfig, load_data
from accelvit.errors import ConfigError
from accelvit.runs import JobManager, get_manager, shutdown_all
from accelvit.experiment import STAGES, Experiment, ExperimentConfig, SweepConfig
from accelvit.prune import PruneConfig
from accelvit.runs import CANCELLED, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING, RunStore
from accelvit.train import TrainConfig, evaluate

TIMEOUT = 240


@pytest.fixture
def manager(tmp_path):
    m = JobManager(RunStore(tmp_path / "home"))
    yield m
    m.shutdown(timeout=60)


def _cheap(model, dev):
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return {"params": params, "nonzero_params": nonzero, "effective_flops": float(nonzero), "device": str(dev)}


@pytest.fixture
def cheap_measure(manager):
    """Skip FLOP counting / sizes / latency where a test is about the runner, not the numbers
    (through the runner's ``measure_cost`` seam, handed to every run by the manager)."""
    manager.experiment_options["measure_cost"] = _cheap


def tiny(ft_epochs: int = 1, **prune) -> ExperimentConfig:
    return ExperimentConfig(
        model="swin_pico", data=DataConfig(dataset="digits", img_size=16, batch_size=32, subset=64, eval_subset=32),
        train=TrainConfig(epochs=1), finetune=TrainConfig(epochs=ft_epochs, lr=5e-4),
        prune=PruneConfig(head_criterion="l1", mlp_criterion="l1", **prune), device="cpu", measure_latency=False)


def stage_order(store: RunStore, run_id: str) -> list[str]:
    return list(store.events_df(run_id, kinds=["stage_started"])["stage"])


def test_end_to_end_digits_through_the_job_runner(manager):
    cfg = tiny(head_ratio=0.5, rank_ratio=0.75, sparsity=0.5)
    cfg.measure_latency = True
    run_id = manager.submit(cfg)
    assert manager.wait(run_id, TIMEOUT) == FINISHED, manager.get_run(run_id)["error"]
    store = manager.store
    assert stage_order(store, run_id) == [s for s in STAGES if s != "control"]
    m = store.metrics_df([run_id])
    assert list(m["stage"]) == ["before", "pruned", "after"]
    assert m[["top1", "dense_flops", "effective_flops", "params", "nonzero_params", "size_dense_bytes",
              "size_sparse_bytes", "latency_ms_b1", "latency_ms_batch"]].notna().all().all()
    after = m.set_index("stage").loc["after"]
    assert after["flops_ratio"] < 1 and after["params_ratio"] < 1
    run = manager.get_run(run_id)
    assert run["status"] == FINISHED and run["progress"] == 1.0 and run["error"] is None
    assert run["config"]["prune"]["head_ratio"] == 0.5
    assert len(store.progress_df(run_id)) > 0
    # the saved artifacts reload to the same accuracy
    arts = store.artifacts(run_id)
    assert {"model", "report", "baseline", "layers_before", "layers_after"} <= set(arts)
    model, doc = serialize.load(arts["model"])
    data = load_data(ExperimentConfig.from_dict(run["config"]).effective().data)
    again = evaluate(model, data.test, device="cpu")
    assert again.top1 == pytest.approx(after["top1"], abs=1e-9)
    assert doc["meta"]["run_id"] == run_id
    report = json.loads(open(arts["report"]).read())
    assert set(report["metrics"]) == {"before", "pruned", "after"} and report["prune_report"]["heads_after"] < \
        report["prune_report"]["heads_before"]


def test_cancel_mid_finetune_keeps_finished_stages(manager):
    seen: list = []
    cancelled_at: list[int] = []

    def listener(run_id, event):
        seen.append(event)
        if event.kind == "progress" and event.stage == "finetune" and not cancelled_at:
            cancelled_at.append(event.global_step)
            manager.cancel(run_id)

    manager.add_listener(listener)
    run_id = manager.submit(tiny(ft_epochs=3, head_ratio=0.5))
    assert manager.wait(run_id, TIMEOUT) == CANCELLED
    steps_after = [e.global_step for e in seen if e.kind == "progress" and e.stage == "finetune"]
    assert steps_after == cancelled_at  # no further training step ran after the cancel
    run = manager.get_run(run_id)
    assert set(run["stages"]) == {"before", "pruned"} and run["stages"]["before"]["top1"] is not None
    assert "cancelled" in run["error"].lower()
    assert stage_order(manager.store, run_id)[-1] == "finetune"


def test_failure_is_stored_and_the_runner_takes_the_next_job(manager, cheap_measure):
    def prune_or_fail(run):
        if run.cfg.prune.head_ratio == 0.5:
            raise RuntimeError("injected failure in pruning")
        return Experiment.stage_prune(run)  # the default stage, called through

    manager.experiment_options["overrides"] = {"prune": prune_or_fail}
    bad = manager.submit(tiny(head_ratio=0.5))
    good = manager.submit(tiny(head_ratio=0.25))
    assert manager.wait(bad, TIMEOUT) == FAILED
    assert manager.wait(good, TIMEOUT) == FINISHED
    run = manager.get_run(bad)
    assert "injected failure in pruning" in run["error"] and "prune" in run["error"]
    assert "RuntimeError" in run["traceback"] and "prune_or_fail" in run["traceback"]
    assert set(run["stages"]) == {"before"}  # what finished before the failure is kept
    errors = manager.store.events_df(bad, kinds=["error"])
    assert len(errors) == 1 and errors.iloc[0]["stage"] == "prune"


def test_runs_left_running_by_a_dead_process_are_interrupted(tmp_path):
    store = RunStore(tmp_path)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = f"{socket.gethostname()}:{p.pid}::jobs-dead"
    running, _ = store.create_run(tiny().to_dict(), status=RUNNING, owner=dead)
    queued, _ = store.create_run(tiny().to_dict(), status=QUEUED, owner=dead)
    m = JobManager(store)
    try:
        assert store.status(running) == INTERRUPTED and store.status(queued) == INTERRUPTED
        assert store.get_run(running)["error"]
        assert m.queued() == [] and m.current is None  # the new manager does not pick them up
    finally:
        m.shutdown()


def test_concurrent_submits_run_one_after_the_other_while_readers_poll(manager, cheap_measure):
    ids: list[str] = []
    barrier = threading.Barrier(2)

    def submit(hr: float) -> None:
        barrier.wait()
        ids.append(manager.submit(tiny(head_ratio=hr)))

    threads = [threading.Thread(target=submit, args=(hr,)) for hr in (0.25, 0.5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # a UI polling the store from other threads while the jobs write
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        s = RunStore(manager.store.home)
        while not stop.is_set():
            try:
                s.runs_df(), s.metrics_df(), s.list_runs()
                for rid in ids:
                    s.progress_df(rid), s.events_df(rid), s.stages_df(rid)
                time.sleep(0.02)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for r in readers:
        r.start()
    try:
        assert [manager.wait(i, TIMEOUT) for i in ids] == [FINISHED, FINISHED]
    finally:
        stop.set()
        for r in readers:
            r.join(30)
    assert not errors, errors
    runs = {r["id"]: r for r in manager.store.list_runs()}
    (a_start, a_end), (b_start, b_end) = sorted((runs[i]["started_at"], runs[i]["finished_at"]) for i in ids)
    assert a_end <= b_start  # one at a time
    assert len([t for t in threading.enumerate() if t.name.startswith("accelvit-jobs")]) >= 1


def test_sweep_of_three_trains_the_baseline_once(manager, cheap_measure):
    sweep = SweepConfig(base=tiny(), name="heads", grid={"head_ratio": [0.0, 0.25, 0.5]})
    ids = manager.submit_sweep(sweep, submit_key="sweep-form-1")
    assert manager.submit_sweep(sweep, submit_key="sweep-form-1") == ids  # a rerun submits nothing new
    assert [manager.wait(i, TIMEOUT) for i in ids] == [FINISHED] * 3
    sources = []
    for rid in ids:
        fin = manager.store.events_df(rid, kinds=["stage_finished"])
        sources.append(fin[fin["stage"] == "baseline"].iloc[0]["data"]["info"]["source"])
    assert sources == ["trained", "cache", "cache"]
    runs = manager.store.runs_df(sweep_id=manager.get_run(ids[0])["sweep_id"])
    assert len(runs) == 3 and runs["baseline_key"].nunique() == 1
    assert sorted(runs["head_ratio"]) == [0.0, 0.25, 0.5]


def test_submit_is_idempotent_validated_and_queued_runs_cancel_at_once(tmp_path):
    home = tmp_path / "h"
    m = get_manager(home)
    m.experiment_options["measure_cost"] = _cheap
    try:
        assert get_manager(home) is m
        with pytest.raises(ConfigError) as info:
            m.submit(tiny(head_ratio=1.5))
        assert info.value.field == "prune.head_ratio"
        assert m.store.runs_df().empty  # nothing stored for a rejected config
        first = m.submit(tiny(), submit_key="k")
        assert m.submit(tiny(), submit_key="k") == first
        second = m.submit(tiny(head_ratio=0.25))
        assert m.cancel(second) in (CANCELLED, RUNNING)
        assert m.wait(first, TIMEOUT) == FINISHED and m.wait(second, TIMEOUT) == CANCELLED
        assert len(m.store.runs_df()) == 2
    finally:
        shutdown_all()
    assert get_manager(home) is not m  # a shut-down manager is replaced
    shutdown_all()
