"""Honest speedups: a run's speedup comes from the baseline and the pruned model timed interleaved
(``accelvit.metrics.compare``), and every table reads that stored number, never a ratio of two
timings taken minutes apart (issue 12, item 4)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from accelvit import metrics as metrics_mod
from accelvit.data import DataConfig
from accelvit.experiment import Experiment, ExperimentConfig
from accelvit.experiment import runner as runner_mod
from accelvit.experiment.runner import LatencyPlan
from accelvit.prune import PruneConfig
from accelvit.runs import RunStore
from accelvit.train import TrainConfig

QUICK = LatencyPlan(warmup=1, reps_b1=3, reps_batch=2, batch_size=8, budget_s=None)


def tiny() -> ExperimentConfig:
    return ExperimentConfig(
        model="swin_pico", data=DataConfig(dataset="digits", img_size=16, batch_size=32, subset=200, eval_subset=32),
        train=TrainConfig(epochs=1), finetune=TrainConfig(epochs=1, lr=5e-4),
        prune=PruneConfig(head_ratio=0.5, head_criterion="l1", mlp_criterion="l1", rank_ratio=0.5), device="cpu",
        measure_latency=True)


def test_compare_takes_reps_per_batch_size_and_a_time_budget():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 8), torch.nn.Linear(4, 2)
    c = metrics_mod.compare(a, b, input_size=(1, 2, 4), batch_sizes=(1, 2), warmup=1, reps={1: 4, 2: 2})
    assert [p.baseline.reps for p in c.points] == [4, 2] and c.warmup == 1
    many = metrics_mod.compare(a, b, input_size=(1, 2, 4), batch_sizes=(1,), warmup=1, reps=3, budget_s=0.05,
                               max_reps=7)
    assert many.points[0].pruned.reps == 7 and many.budget_s == 0.05  # tiny layers: the budget buys the max


def test_a_runs_speedup_is_the_interleaved_comparison(tmp_path, monkeypatch):
    calls = []
    real = runner_mod.compare

    def spy(baseline, pruned, *args, **kwargs):
        c = real(baseline, pruned, *args, **kwargs)
        calls.append({"baseline_params": sum(p.numel() for p in baseline.parameters()),
                      "pruned_params": sum(p.numel() for p in pruned.parameters()), "pruned": pruned,
                      "kwargs": kwargs, "result": c})
        return c

    monkeypatch.setattr(runner_mod, "compare", spy)
    run = Experiment(tiny(), home=tmp_path, stages=("data", "baseline", "before", "prune", "pruned", "finetune",
                                                    "after"))
    run.latency_plan = QUICK
    result = run.run()
    assert len(calls) == 2  # the pruned and the after stage; the baseline ("before") is timed alone
    before, after = result.metrics["before"], result.metrics["after"]
    for call in calls:
        assert call["baseline_params"] == before["params"]  # the unpruned baseline ...
        assert call["pruned_params"] == after["params"] < before["params"]  # ... against the pruned model
        assert call["kwargs"]["num_threads"] == run.latency_threads >= 1  # threads pinned, recorded
        assert call["kwargs"]["batch_sizes"] == (1, 8)
    assert calls[-1]["pruned"] is result.model
    c = calls[-1]["result"]
    assert after["speedup_method"] == "interleaved"
    assert after["speedup_b1"] == c.point(1).speedup and after["speedup_batch"] == c.point(8).speedup
    assert after["paired_speedup_b1"] == c.point(1).paired_speedup
    assert after["latency_ms_b1"] == c.point(1).pruned.median_ms  # the pruned model's interleaved median
    assert after["latency_ms_batch"] == c.point(8).pruned.median_ms
    assert after["baseline_latency_ms_b1"] == c.point(1).baseline.median_ms
    stored = after["latency_compare"]
    assert stored["device"] == "cpu" and stored["device_name"].startswith("cpu") and stored["warmup"] == 1
    assert stored["num_threads"] == run.latency_threads
    p1 = stored["points"][0]
    assert p1["batch_size"] == 1 and p1["baseline"]["reps"] == 3 and p1["pruned"]["reps"] == 3
    assert {"median_ms", "p25_ms", "p75_ms"} <= set(p1["pruned"]) and stored["points"][1]["pruned"]["reps"] == 2
    # the baseline was pruned in place: the after stage reloaded it from the baseline cache
    assert after["baseline_for_timing"] == "reloaded"
    assert result.metrics["pruned"]["speedup_method"] == "interleaved"
    assert "speedup_b1" not in before  # the baseline has no speedup of its own


def test_without_a_baseline_to_reload_the_speedup_is_marked_separate(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_mod, "compare", lambda *a, **k: pytest.fail("nothing to compare against"))
    cfg = tiny()
    cfg.finetune.epochs = 0  # no distillation teacher kept around either
    run = Experiment(cfg, home=tmp_path, stages=("data", "baseline", "before", "prune", "after"))
    run.latency_plan = QUICK
    seen = []
    run.on_event = seen.append
    real_baseline = Experiment.stage_baseline

    def unsaved(exp):
        info = real_baseline(exp)
        exp.baseline_info = {**exp.baseline_info, "path": str(tmp_path / "gone")}
        return info

    run.overrides["baseline"] = unsaved
    result = run.run()
    after = result.metrics["after"]
    assert after["speedup_method"] == "separate" and "could not be reloaded" in after["speedup_note"]
    assert after["latency_ms_b1"] > 0 and "speedup_b1" not in after
    assert any("timed alone" in (getattr(e, "message", None) or "") for e in seen)


def _metrics(lat_b1: float, **extra) -> dict:
    return {"top1": 0.9, "dense_flops": 1e6, "effective_flops": 1e6, "params": 1000, "nonzero_params": 1000,
            "latency_ms_b1": lat_b1, "latency_ms_batch": lat_b1 * 8, "device": "cpu", **extra}


def test_metrics_df_uses_the_stored_interleaved_speedup_and_marks_old_runs(tmp_path):
    store = RunStore(tmp_path)
    new, _ = store.create_run({}, name="new", status="finished")
    # before timed alone at 86.8 ms on a quiet machine; after timed while busy: 671.6 ms. The
    # interleaved comparison of the same models says 1.25x faster.
    store.add_metrics(new, "before", _metrics(86.8))
    store.add_metrics(new, "after", _metrics(671.6, speedup_b1=1.25, speedup_batch=1.5, speedup_method="interleaved",
                                             latency_compare={"device": "cpu", "points": []}))
    old, _ = store.create_run({}, name="old", status="finished")
    store.add_metrics(old, "before", _metrics(10.0))
    store.add_metrics(old, "after", _metrics(5.0))
    m = store.metrics_df().set_index(["name", "stage"])
    assert m.at[("new", "after"), "speedup_b1"] == pytest.approx(1.25)  # not 86.8 / 671.6
    assert m.at[("new", "after"), "speedup_batch"] == pytest.approx(1.5)
    assert m.at[("new", "after"), "speedup_method"] == "interleaved"
    assert m.at[("old", "after"), "speedup_b1"] == pytest.approx(2.0)  # older runs: the old derivation ...
    assert m.at[("old", "after"), "speedup_method"] == "separate"  # ... marked as such
    assert m.at[("old", "before"), "speedup_method"] == "baseline"
    from accelvit.ui import charts

    sp = charts.speedup_points(store.metrics_df()).set_index("name")
    assert sp.at["new", "speedup_b1"] == pytest.approx(1.25) and sp.at["new", "speedup_method"] == "interleaved"
    assert sp.at["old", "speedup_method"] == "separate"
    again = store.metrics_df()
    from accelvit.runs.queries import add_ratios

    pd.testing.assert_frame_equal(add_ratios(again.copy()), again)  # idempotent
