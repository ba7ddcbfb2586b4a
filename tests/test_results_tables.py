"""Readable run tables (issue 12, item 9): friendly headers, units, a dash for what is missing, the
speedup with its device; the Results page through AppTest on a synthetic store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from accelvit.data import DataConfig
from accelvit.experiment import ExperimentConfig
from accelvit.prune import PruneConfig
from accelvit.runs import RunStore, jobs
from accelvit.train import TrainConfig
from accelvit.ui import tables

ROOT = Path(__file__).resolve().parents[1]
DEVICE_NAME = "cpu (2 threads, 16 cores)"


def shown(styler) -> pd.DataFrame:
    """The text a Styler shows in each cell (what st.dataframe displays)."""
    styler._compute()
    rows = styler._translate(False, False)["body"]
    cols = list(styler.data.columns)
    return pd.DataFrame([[c["display_value"] for c in r if c.get("type") == "td"] for r in rows], columns=cols)


def stage_metrics(top1: float, dense: float, nnz: int, size: int, lat: float, **extra) -> dict:
    return {"top1": top1, "top5": 1.0, "loss": 0.5, "n": 360, "dense_flops": dense, "effective_flops": dense * 0.8,
            "params": int(nnz * 1.2), "nonzero_params": nnz, "size_dense_bytes": size, "size_sparse_bytes": size * 1.1,
            "latency_ms_b1": lat, "latency_ms_batch": lat * 8, "device": "cpu", "device_name": DEVICE_NAME,
            "batch_size": 64, "num_threads": 2, **extra}


def interleaved(base_ms: float, pruned_ms: float, speedup: float) -> dict:
    """What the runner stores for the after stage: the comparison and the pruned model's medians."""
    def stats(bs, med):
        return {"batch_size": bs, "median_ms": med, "p25_ms": med * 0.95, "p75_ms": med * 1.05, "min_ms": med * 0.9,
                "max_ms": med * 1.2, "std_ms": med * 0.05, "reps": 20 if bs == 1 else 5, "warmup": 3,
                "images_per_s": bs / med * 1000}

    points = [{"batch_size": bs, "baseline": stats(bs, base_ms * k), "pruned": stats(bs, pruned_ms * k),
               "speedup": speedup, "paired_speedup": speedup * 1.01} for bs, k in ((1, 1), (64, 8))]
    return {"speedup_method": "interleaved", "speedup_b1": speedup, "speedup_batch": speedup,
            "paired_speedup_b1": speedup * 1.01, "paired_speedup_batch": speedup * 1.01,
            "baseline_latency_ms_b1": base_ms, "baseline_latency_ms_batch": base_ms * 8,
            "latency_compare": {"device": "cpu", "device_name": DEVICE_NAME, "num_threads": 2, "warmup": 3,
                                "points": points}}


def fill(store: RunStore) -> dict[str, str]:
    """A new run (interleaved timing, slower after pruning), an old run (two separate timings), a failed run."""
    def cfg(**prune):
        return ExperimentConfig(model="swin_pico", data=DataConfig(dataset="digits", img_size=16),
                                train=TrainConfig(epochs=1), prune=PruneConfig(**prune)).to_dict()

    ids = {}
    rid, _ = store.create_run(cfg(head_ratio=0.5, rank_ratio=0.5), name="new run", status="running")
    store.add_metrics(rid, "before", stage_metrics(0.95, 4.9e6, 23_105_280, 92_421_120, 86.8))
    # separately the after stage timed 671.6 ms; interleaved with the baseline it is 0.8x (slower, truly)
    store.add_metrics(rid, "after", stage_metrics(0.93, 2.3e6, 12_000_000, 48_000_000, 108.5,
                                                  **interleaved(86.8, 108.5, 0.8)))
    store.set_status(rid, "finished")
    ids["new"] = rid
    rid, _ = store.create_run(cfg(sparsity=0.5), name="old run", status="running")
    store.add_metrics(rid, "before", stage_metrics(0.95, 4.9e6, 90_000, 400_000, 2.0))
    store.add_metrics(rid, "after", {k: v for k, v in stage_metrics(0.90, 3.0e6, 20_000, 150_000, 1.6).items()
                                     if k not in ("device_name", "batch_size")})
    store.set_status(rid, "finished")
    ids["old"] = rid
    rid, _ = store.create_run(cfg(head_ratio=0.9), name="failed run", status="running")
    store.set_status(rid, "failed", error="Stage 'prune' failed on purpose.")
    ids["failed"] = rid
    return ids


def test_metrics_table_view_has_friendly_headers_units_and_no_raw_none(tmp_path):
    store = RunStore(tmp_path)
    ids = fill(store)
    view, config = tables.metrics_table_view(store.metrics_df())
    labels = {k: v["label"] for k, v in config.items()}
    assert labels["name"] == "Run" and config["name"]["pinned"] and config["stage"]["pinned"]
    assert labels["latency_ms_b1"] == "Latency b=1" and labels["speedup_batch"] == "Speedup b=64"
    assert list(config)[:9] == ["name", "stage", "top1", "top1_delta", "speedup_b1", "speedup_batch",
                                "latency_ms_b1", "latency_ms_batch", "timed_on"]  # what matters first
    assert all(len(v["label"]) <= 16 for v in config.values())  # short labels; explanations in help
    assert "interleaved" in config["speedup_b1"]["help"] and "Below 1" in config["speedup_b1"]["help"]
    t = shown(view).assign(run_id=view.data["run_id"].to_numpy(), stage_raw=view.data["stage"].to_numpy())
    text = t.astype(str).to_numpy().ravel().tolist()
    assert not any(v in ("None", "nan", "NaN", "<NA>") for v in text)
    new = t[t.run_id == ids["new"]].set_index("stage_raw")
    assert new.at["before", "nonzero_params"] == "23.1 M" and new.at["before", "size_dense_bytes"] == "92.4 MB"
    assert new.at["after", "top1"] == "93.0%" and new.at["after", "top1_delta"] == "−2.0 pts"
    assert new.at["after", "latency_ms_b1"] == "108 ms" and new.at["after", "timed_on"] == DEVICE_NAME
    assert new.at["after", "speedup_b1"] == "0.80×" and new.at["after", "stage"] == "pruned + finetuned"
    old = t[t.run_id == ids["old"]].set_index("stage_raw")
    assert old.at["after", "speedup_b1"] == "1.25× (separate)"  # 2.0 / 1.6 from two timings, said so
    assert old.at["after", "timed_on"] == "cpu"
    assert "energy" not in view.data.columns and "head_ratio" in view.data.columns  # unused settings left out
    assert view.data["nonzero_params"].dtype.kind in "if"  # numbers stay numbers: sorting works


def test_runs_table_view_formats_percent_progress_and_missing(tmp_path):
    store = RunStore(tmp_path)
    ids = fill(store)
    runs, metrics = store.runs_df(), store.metrics_df()
    view, config = tables.runs_table_view(runs, metrics)
    assert config["progress"]["type_config"]["type"] == "progress" and config["name"]["pinned"]
    assert config["status"]["label"] == "Status" and config["top1_after"]["label"] == "Top-1"
    t = shown(view).assign(id=view.data["id"].to_numpy()).set_index("id")
    assert t.at[ids["new"], "top1_after"] == "93.0%" and t.at[ids["new"], "speedup_b1"] == "0.80×"
    assert t.at[ids["old"], "speedup_b1"] == "1.25× (separate)"
    assert t.at[ids["failed"], "top1_after"] == tables.MISSING and t.at[ids["failed"], "status"] == "failed"
    assert t.at[ids["new"], "head_ratio"] == "50.0%" and t.at[ids["old"], "head_ratio"] == "0.0%"
    text = t.drop(columns=["progress", "created"]).astype(str).to_numpy().ravel().tolist()
    assert not any(v in ("None", "nan", "NaN", "<NA>") for v in text)
    raw = view.data.set_index("id")  # what AppTest's .value reads: the numbers
    assert raw.at[ids["new"], "top1_after"] == pytest.approx(0.93)
    assert tables.summarize_runs(runs, metrics).set_index("id").at[ids["new"], "speedup_b1"] == pytest.approx(0.8)
    empty, _ = tables.runs_table_view(pd.DataFrame(columns=["id"]), pd.DataFrame())
    assert empty.data.empty


def test_results_page_shows_readable_table_and_the_interleaved_speedup_with_its_device(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ACCELVIT_HOME", str(home))
    ids = fill(RunStore(home))
    try:
        at = AppTest.from_file(str(ROOT / "pages/2_Results.py"), default_timeout=60).run()
        assert not at.exception, [e.value for e in at.exception]
        table = at.dataframe[-1]
        config = json.loads(table.proto.columns)
        assert config["latency_ms_b1"]["label"] == "Latency b=1" and config["name"]["pinned"]
        assert config["speedup_b1"]["label"] == "Speedup b=1" and table.proto.placeholder == tables.MISSING
        assert set(table.value["stage"]) == {"before", "after"}  # raw values underneath
        display = table.proto.arrow_data.styler.display_values
        assert display  # the formatted text travels with the table
        # the chart names the device; the new run's point is its stored interleaved speedup
        fig = next(json.loads(el.proto.spec) for el in at.get("plotly_chart") if el.proto.id.endswith("speedup"))
        assert DEVICE_NAME in fig["layout"]["title"]["text"]
        dense = next(t for t in fig["data"] if t.get("name") == "vs dense FLOP reduction")
        assert sorted(dense["y"]) == pytest.approx([0.8, 2.0 / 1.6])
        assert any("below 1" in str(c) for c in dense["customdata"])
        # inside one run: speedup labelled with the device, the interleaved value, and why it is below 1
        at.selectbox(key="res_one").set_value(ids["new"]).run()
        metrics = {x.label: x.value for x in at.metric}
        assert metrics["Speedup, batch 1 (cpu)"] == "0.80×" and metrics["Pruned, batch 1 (cpu)"] == "108 ms"
        captions = "\n".join(c.value for c in at.caption)
        assert f"interleaved (A,B then B,A) in one process on {DEVICE_NAME}" in captions
        warning = "\n".join(w.value for w in at.warning)
        assert "slower" in warning and "SVD" in warning and "IHT" not in warning  # only what this run did
        at.selectbox(key="res_one").set_value(ids["old"]).run()
        metrics = {x.label: x.value for x in at.metric}
        assert metrics["Speedup, batch 1 (cpu)"] == "1.25× (separate)"
        assert "two timings taken minutes apart" in "\n".join(c.value for c in at.caption)
        assert not any(c.value.lower().startswith(("count_nonzero", "torch")) for c in at.caption)
    finally:
        jobs.shutdown_all()
