"""accelvit.runs.queries: the one before/after computation and which run a live view follows."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest

from accelvit.runs import QUEUED, RunStore, queries, ratio_to_before, run_to_watch, stage_ratios, watched_runs


def test_ratio_to_before_divides_by_the_same_runs_before_row():
    m = pd.DataFrame({"run_id": ["a", "a", "a", "b", "c"], "name": ["a", "a", "a", "b", "c"],
                      "stage": ["before", "pruned", "after", "after", "before"],
                      "flops": [100.0, 40.0, 50.0, 10.0, 8.0], "dense": [200.0, 1, 1, 1, 1]})
    r = ratio_to_before(m, "flops")
    assert r.tolist()[:3] == [1.0, 0.4, 0.5] and math.isnan(r[3]) and r[4] == 1.0  # b has no before row
    assert ratio_to_before(m, "flops", "dense")[2] == pytest.approx(0.25)
    assert ratio_to_before(m, "missing").isna().all()
    after = stage_ratios(m, ["flops"])
    assert list(after.index) == ["a"] and after.at["a", "flops"] == 0.5 and after.at["a", "name"] == "a"
    assert stage_ratios(pd.DataFrame(), ["flops"]).empty


def test_run_metrics_of_a_run_dict_feed_the_same_computation():
    run = {"id": "r", "name": "n", "stages": {"before": {"dense_flops": 10.0, "per_class": [1]},
                                             "after": {"dense_flops": 4.0}}}
    m = queries.run_metrics(run)
    assert "per_class" not in m.columns
    assert stage_ratios(m, ["dense_flops"]).at["r", "dense_flops"] == pytest.approx(0.4)


def runs(*rows: tuple[str, str]) -> pd.DataFrame:
    """A runs_df-like frame, newest first."""
    return pd.DataFrame({"id": [r[0] for r in rows], "status": [r[1] for r in rows]})


def test_run_to_watch_follows_mine_first_then_whatever_is_active():
    r = runs(("q2", "queued"), ("q1", "queued"), ("run", "running"), ("old", "finished"))
    assert watched_runs(r) == ["run", "q1", "q2"]  # nothing of mine: every active run, oldest first
    assert run_to_watch(r) == "run"
    assert run_to_watch(r, ["old"]) == "old"  # my finished run stays on screen
    assert run_to_watch(r, ["q2", "q1"]) == "q1"  # mine queued: the next one to start
    assert run_to_watch(r, ["gone"]) == "run"  # mine no longer in the store: as without
    assert run_to_watch(runs(("old", "finished"))) is None
    assert run_to_watch(runs(), [None]) is None


def test_queued_ids_are_the_owners_queue_oldest_first(tmp_path):
    store = RunStore(tmp_path)
    a, _ = store.create_run({}, status=QUEUED, owner="me")
    store.create_run({}, status=QUEUED, owner="someone else")
    b, _ = store.create_run({}, status=QUEUED, owner="me")
    assert store.queued_ids("me") == [a, b]
    assert store.claim_next("me") == a and store.queued_ids("me") == [b]


def test_the_run_store_imports_without_torch():
    code = "import sys, accelvit.runs; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
