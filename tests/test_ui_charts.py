"""Chart builders of the dashboard: the right points, arrows, frontier and per-layer values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from accelvit.ui import charts, tables


def metrics_frame() -> pd.DataFrame:
    """Three runs: a and b share one baseline, c has another; c has no 'after' (still running)."""
    rows = []

    def row(run, stage, top1, dense, eff, nnz, sd, ss, lat):
        rows.append(dict(run_id=run, name=f"run {run}", status="finished", stage=stage, top1=top1, dense_flops=dense,
                         effective_flops=eff, params=nnz * 1.1, nonzero_params=nnz, size_dense_bytes=sd,
                         size_sparse_bytes=ss, latency_ms_b1=lat, latency_ms_batch=lat * 10))

    row("a", "before", 0.95, 100e6, 100e6, 1.0e6, 4.0e6, 4.5e6, 10.0)
    row("a", "pruned", 0.60, 50e6, 30e6, 0.4e6, 2.0e6, 1.5e6, 6.0)
    row("a", "after", 0.93, 50e6, 30e6, 0.4e6, 2.0e6, 1.5e6, 6.0)
    row("b", "before", 0.95, 100e6, 100e6, 1.0e6, 4.0e6, 4.5e6, 10.0)
    row("b", "after", 0.90, 60e6, 20e6, 0.3e6, 2.4e6, 1.2e6, 8.0)
    row("c", "before", 0.80, 40e6, 40e6, 0.5e6, 2.0e6, 2.2e6, 5.0)
    return pd.DataFrame(rows)


def test_tradeoff_points_take_the_chosen_metric_and_size_is_the_smaller_file():
    m = metrics_frame()
    pts = charts.tradeoff_points(m, "dense_flops")
    assert set(pts["stage"]) == {"before", "after"}  # 'pruned' is not plotted
    assert len(pts) == 5
    a_after = pts[(pts.run_id == "a") & (pts.stage == "after")].iloc[0]
    assert a_after.x == 50e6 and a_after.top1 == 0.93
    size = charts.tradeoff_points(m, "size_bytes").set_index(["run_id", "stage"])["x"]
    assert size[("a", "before")] == 4.0e6 and size[("a", "after")] == 1.5e6  # min(dense, sparse)
    with pytest.raises(ValueError):
        charts.tradeoff_points(m, "nonsense")


def test_pareto_front_keeps_only_undominated_points():
    pts = pd.DataFrame({"x": [1, 2, 3, 4, 2, 5], "top1": [0.5, 0.7, 0.6, 0.9, 0.7, 0.9],
                        "name": list("abcdef"), "run_id": list("abcdef")})
    front = charts.pareto_front(pts)
    assert front["name"].tolist() == ["a", "b", "d"]  # c dominated by b, e ties b, f dominated by d
    assert charts.pareto_front(pts.iloc[0:0]).empty


def test_tradeoff_figure_has_before_after_frontier_and_one_arrow_per_complete_run():
    m = metrics_frame()
    fig = charts.tradeoff_figure(m, "effective_flops")
    traces = {t.name: t for t in fig.data}
    assert set(traces) == {"baseline (before)", "pruned (after)", "Pareto frontier"}
    before, after = traces["baseline (before)"], traces["pruned (after)"]
    assert sorted(zip(before.x, before.y)) == sorted([(100e6, 95.0), (100e6, 95.0), (40e6, 80.0)])
    assert sorted(zip(after.x, after.y)) == sorted([(30e6, 93.0), (20e6, 90.0)])
    front = traces["Pareto frontier"]
    # cheapest first: b after (20M, 90%), a after (30M, 93%), a/b before (100M, 95%); c before (40M, 80%) is dominated
    assert list(front.x) == [20e6, 30e6, 100e6]
    assert [round(y, 6) for y in front.y] == [90.0, 93.0, 95.0]
    arrows = [a for a in fig.layout.annotations if a.showarrow]
    assert len(arrows) == 2  # runs a and b; c has no after point
    by_tip = {(a.x, a.y): (a.ax, a.ay) for a in arrows}
    assert by_tip[(30e6, 93.0)] == (100e6, 95.0)
    assert by_tip[(20e6, 90.0)] == (100e6, 95.0)
    assert fig.layout.xaxis.title.text == charts.TRADEOFF_METRICS["effective_flops"][0]


def test_tradeoff_figure_on_an_empty_frame_says_so():
    fig = charts.tradeoff_figure(pd.DataFrame(columns=["run_id", "name", "stage", "top1", "effective_flops"]))
    assert all(len(t.x) == 0 for t in fig.data)
    assert any("No finished runs" in (a.text or "") for a in fig.layout.annotations)


def test_speedup_points_and_figure():
    m = metrics_frame()
    sp = charts.speedup_points(m).set_index("run_id")
    assert list(sp.index) == ["a", "b"]
    assert sp.at["a", "dense_reduction"] == pytest.approx(2.0)
    assert sp.at["a", "effective_reduction"] == pytest.approx(100 / 30)
    assert sp.at["a", "speedup_b1"] == pytest.approx(10 / 6)
    assert sp.at["b", "speedup_b1"] == pytest.approx(10 / 8)
    fig = charts.speedup_figure(m)
    dense = next(t for t in fig.data if t.name == "vs dense FLOP reduction")
    assert sorted(dense.x) == pytest.approx(sorted([2.0, 100 / 60]))
    assert any(t.name.startswith("ideal") for t in fig.data)


def test_summarize_runs_reductions_and_missing_metrics():
    m = metrics_frame()
    runs = pd.DataFrame({"id": ["c", "b", "a", "d"], "name": ["c", "b", "a", "d"],
                         "status": ["running", "finished", "finished", "failed"], "stage": None, "progress": 0.5,
                         "dataset": "digits", "model": "swin_pico", "head_ratio": 0.5})
    t = tables.summarize_runs(runs, m).set_index("id")
    assert t.at["a", "top1_before"] == 0.95 and t.at["a", "top1_after"] == 0.93
    assert t.at["a", "top1_delta"] == pytest.approx(-0.02)
    assert t.at["a", "dense_flops_reduction"] == pytest.approx(0.5)
    assert t.at["a", "effective_flops_reduction"] == pytest.approx(0.7)
    assert t.at["a", "size_reduction"] == pytest.approx(1 - 1.5 / 4.0)
    assert math.isnan(t.at["c", "top1_after"]) and math.isnan(t.at["d", "top1_before"])
    assert list(t.index) == ["c", "b", "a", "d"]  # the store's order is kept
    empty = tables.summarize_runs(pd.DataFrame(columns=["id"]), pd.DataFrame())
    assert empty.empty and "top1_after" in empty.columns


def layer_frame() -> pd.DataFrame:
    rows = [
        dict(block="layers.0.blocks.0", module="layers.0.blocks.0.attn", kind="attn", heads_kept=1, heads_total=2),
        dict(block="layers.0.blocks.0", module="layers.0.blocks.0.attn.qkv", kind="qkv", rank=8, full_rank=32,
             density=0.5),
        dict(block="layers.0.blocks.1", module="layers.0.blocks.1.attn", kind="attn", heads_kept=2, heads_total=2),
        dict(block="layers.1.blocks.0", module="layers.1.blocks.0.attn", kind="attn", heads_kept=1, heads_total=4),
        dict(block="layers.1.blocks.0", module="layers.1.blocks.0.mlp.fc1", kind="fc1", rank=64, full_rank=64,
             density=1.0),
        dict(block="", module="(other)", kind="other"),
    ]
    return pd.DataFrame(rows)


def test_heads_heatmap_values_and_labels():
    fig = charts.heads_heatmap(layer_frame())
    hm = fig.data[0]
    assert list(hm.y) == ["stage 0", "stage 1"] and list(hm.x) == ["block 0", "block 1"]
    z = np.array(hm.z, dtype=float)
    assert z[0, 0] == 0.5 and z[0, 1] == 1.0 and z[1, 0] == 0.25 and np.isnan(z[1, 1])
    assert hm.text[1][0] == "1/4"


def test_linear_bars_rank_fraction_and_density():
    fig = charts.linear_bars(layer_frame())
    rank, dens = fig.data
    assert list(rank.x) == ["s0.b0.qkv", "s1.b0.fc1"]
    assert list(rank.y) == [0.25, 1.0] and list(dens.y) == [0.5, 1.0]


def test_progress_curves_fractional_epochs_by_stage():
    prog = pd.DataFrame({"stage": ["baseline", "baseline", "finetune", "prune"], "epoch": [1, 2, 1, None],
                         "epochs": [2, 2, 1, None], "step": [5, 10, 10, None], "steps": [10, 10, 10, None],
                         "loss": [2.0, 1.0, 0.5, None], "accuracy": [0.3, 0.6, 0.8, None],
                         "images_per_s": [100, 110, 120, None]})
    cur = charts.progress_curves(prog)
    assert cur["epoch_x"].tolist() == [0.5, 2.0, 1.0]
    fig = charts.progress_figure(prog)
    assert {t.name for t in fig.data} == {"baseline", "finetune"}


def test_formatting_helpers():
    assert tables.fmt_si(92_700_000) == "92.7 M"
    assert tables.fmt_si(None) == "–" and tables.fmt_pct(float("nan")) == "–"
    assert tables.fmt_pct(0.9312) == "93.1%"
    assert charts.short_module("layers.1.downsample.reduction") == "s1.downsample.reduction"
    assert charts.short_module("head.fc") == "head.fc"
