"""``accelvit sweep --backend ray`` (issue 15, part 2) on a local Ray cluster of 2 CPUs.

The workers run with ``ACCELVIT_HOME`` pointing at the driver's store folder and an audit hook
(``_ray_worker_guard.install``) that refuses any SQLite connection and any write under that
folder: trials that finish prove that only the driver wrote the store, the artifacts and the cache.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'accelvit[ray]'); the Ray sweep "
                                        "backend is optional")

from accelvit.runs import RunStore  # noqa: E402
from accelvit.runs.ray_sweep import run_sweep_ray  # noqa: E402

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _sweep(grid: dict) -> dict:
    return {"name": "ray", "grid": grid, "base": {
        "data": {"dataset": "digits", "img_size": 16, "subset": 160, "eval_subset": 80, "augment": False,
                 "batch_size": 32},
        "model": "swin_pico", "train": {"epochs": 1}, "finetune": {"epochs": 1}, "measure_latency": False,
        "device": "cpu", "distill": {"alpha": 0.0}}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster (2 CPUs, small object store) whose workers may not touch the driver's home."""
    home = tmp_path_factory.mktemp("ray-home")
    path = os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024 ** 2, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": path, "ACCELVIT_HOME": str(home), "OMP_NUM_THREADS": "1"},
                          "worker_process_setup_hook": "_ray_worker_guard.install"})
    print(f"ray start-up: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    yield home
    ray.shutdown()


def test_two_trials_share_one_baseline_and_only_the_driver_writes(cluster):
    store = RunStore(cluster)
    ids = run_sweep_ray(_sweep({"head_ratio": [0.25, 0.5]}), store)
    assert len(ids) == 2
    runs = [store.get_run(r) for r in ids]
    for run in runs:
        assert run["status"] == "finished", (run["error"], run["traceback"])
        assert run["sweep_id"] == runs[0]["sweep_id"]
        assert {"before", "pruned", "after"} <= set(run["stages"])
        assert 0.0 <= run["stages"]["after"]["top1"] <= 1.0
        art = store.artifact_dir(run["id"], create=False)
        assert (art / "model" / "model.safetensors").is_file() and (art / "report.json").is_file()
        assert run["artifacts"]["model"] == str(art / "model")
        assert Path(run["artifacts"]["layers_after"]).is_file()
        assert str(cluster) in json.loads((art / "report.json").read_text())["baseline"]["path"]
    # one baseline, trained once (by one task, not by a trial): every trial loaded it from the cache
    entries = [p for p in (cluster / "baselines").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1
    infos = [store.stages_df(r).set_index("stage").at["baseline", "info"] for r in ids]
    for info in infos:
        assert info["source"] == "cache" and info["trained_as"] == "trained"
        assert info["baseline_key"] == runs[0]["baseline_key"] == entries[0].name
        assert info["path"] == str(entries[0])
    assert infos[0]["created"] == infos[1]["created"]  # the same cache entry, written once
    from _ray_worker_guard import probe  # the guard was there: the proof above is not empty

    assert ray.get(ray.remote(probe).options(num_cpus=0).remote()) == ["sqlite", "write"]


def test_a_failing_trial_fails_and_a_cancelled_one_stops(cluster):
    from _ray_worker_guard import prune_fails_or_hangs

    store = RunStore(cluster)
    created: list[str] = []
    out: dict = {}

    def go() -> None:
        out["ids"] = run_sweep_ray(_sweep({"head_ratio": [0.25, 0.5]}), store, on_created=created.extend,
                                   experiment_options={"overrides": {"prune": prune_fails_or_hangs}})

    baseline = next(p for p in (cluster / "baselines").iterdir() if not p.name.startswith("."))
    stamp = (baseline / "baseline.json").stat().st_mtime
    th = threading.Thread(target=go, daemon=True)
    th.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the hanging trial is in its prune stage: cancel it
        run = store.get_run(created[0]) if created else None
        if run and run["status"] == "running" and run["stage"] == "prune":
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the trial never reached its prune stage: {run}")
    assert store.request_cancel(created[0]) == "running"
    th.join(60)
    assert not th.is_alive()
    hung, failed = (store.get_run(r) for r in out["ids"])
    assert hung["status"] == "cancelled" and "prune" in hung["error"]
    assert "before" in hung["stages"]  # what it measured before it was stopped stays
    assert failed["status"] == "failed"
    assert "boom: this trial fails on purpose" in failed["error"] and "prune" in failed["error"]
    assert "ValueError" in (failed["traceback"] or "")
    assert (baseline / "baseline.json").stat().st_mtime == stamp  # the cached baseline was reused
