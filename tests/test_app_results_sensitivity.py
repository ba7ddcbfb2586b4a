"""Results page, "Inside one run": the sensitivity heatmap for a run whose prune measured it, an
explanation instead for one whose prune did not (AppTest, a run store of its own)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch.utils.data import DataLoader, TensorDataset

from accelvit.data import DataConfig
from accelvit.experiment import ExperimentConfig
from accelvit.metrics import measure
from accelvit.models import build_model
from accelvit.prune import PruneConfig, fixed_calibration, prune
from accelvit.prune.units import window_attentions
from accelvit.runs import RunStore, new_owner
from accelvit.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pruned_reports():
    """Prune reports of two real swin_pico prunes: taylor + SVD (has sensitivity) and random (has none)."""
    torch.manual_seed(0)
    base = build_model("swin_pico", 10, img_size=16).eval()
    ds = TensorDataset(torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,)))
    calib = fixed_calibration(DataLoader(ds, batch_size=8), 2)
    measured_cfg = PruneConfig(head_ratio=0.5, mlp_ratio=0.25, rank_ratio=0.5, calib_batches=2)
    model, rep = prune(copy.deepcopy(base), measured_cfg, calib)
    _, rnd = prune(copy.deepcopy(base), PruneConfig(head_ratio=0.5, head_criterion="random"), None)
    layers = measure(model, latency=False, thop=False, size=False).layers
    return json.loads(json.dumps(rep.to_dict())), json.loads(json.dumps(rnd.to_dict())), layers, model


def _add_run(store: RunStore, name: str, prune_report: dict, layers=None, saved: bool = True) -> str:
    cfg = ExperimentConfig(model="swin_pico", data=DataConfig(dataset="digits", img_size=16),
                           train=TrainConfig(epochs=1), prune=PruneConfig(**{k: v for k, v in prune_report["config"].items()
                                                                              if k in ("head_ratio", "head_criterion")}))
    rid, _ = store.create_run(cfg.to_dict(), name=name, status="running", owner=new_owner("test"))
    m = {"top1": 0.9, "top5": 1.0, "loss": 0.5, "dense_flops": 4e6, "effective_flops": 4e6, "params": 1e5,
         "nonzero_params": 1e5, "size_dense_bytes": 4e5, "size_sparse_bytes": 4.4e5, "latency_ms_b1": 1.0,
         "device": "cpu"}
    store.add_metrics(rid, "before", m)
    store.add_metrics(rid, "after", {**m, "top1": 0.85, "dense_flops": 2e6})
    if layers is not None:
        path = store.artifact_dir(rid) / "layers_after.csv"
        layers.to_csv(path, index=False)
        store.add_artifact(rid, "layers_after", path, kind="csv")
    if saved:
        store.write_artifact_json(rid, "report.json", {"run_id": rid, "prune_report": prune_report})
    else:  # not saved yet (or save skipped): the prune stage's record holds the report
        store.add_event(rid, "stage_started", stage="prune", message="prune", data={"stage": "prune"})
        store.add_event(rid, "stage_finished", stage="prune", message="prune",
                        data={"seconds": 1.0, "info": prune_report})
    store.set_status(rid, "finished")
    return rid


def test_results_shows_the_sensitivity_heatmap_or_says_why_there_is_none(app_home, pruned_reports):
    measured, rnd, layers, model = pruned_reports
    store = RunStore(app_home)
    with_data = _add_run(store, "measured", measured, layers)
    without = _add_run(store, "random", rnd)
    unsaved = _add_run(store, "unsaved", measured, saved=False)
    at = AppTest.from_file(str(ROOT / "pages/2_Results.py"), default_timeout=90).run()
    assert not at.exception, [e.value for e in at.exception]

    at.selectbox(key="res_one").set_value(with_data).run()
    assert not at.exception, [e.value for e in at.exception]
    charts = {el.proto.id.split("-", 2)[2]: json.loads(el.proto.spec) for el in at.get("plotly_chart")}
    assert {"sensitivity", "heads", "linears"} <= set(charts)  # beside what was kept
    hm = charts["sensitivity"]["data"][0]
    assert hm["y"] == ["s0.b0", "s0.b1", "s1.b0", "s1.b1"]
    assert hm["x"][:2] == ["heads", "MLP"] and hm["x"][2:] == ["rank qkv", "rank proj", "rank fc1", "rank fc2"]
    heads_kept = [a.num_heads for _, a in window_attentions(model)]
    assert [row[0] for row in hm["text"]] == [f"{k}/{n}" for k, n in zip(heads_kept, (2, 2, 4, 4))]  # pico: 2, 4 heads
    assert all(v is not None and 0 <= v <= 1 for row in hm["z"] for v in row)
    assert any("Sensitivity: what the pruning measured per layer" in c.value for c in at.caption)
    assert not any("No sensitivity" in i.value for i in at.info)

    at.selectbox(key="res_one").set_value(without).run()
    assert not at.exception, [e.value for e in at.exception]
    keys = {el.proto.id.split("-", 2)[2] for el in at.get("plotly_chart")}
    assert "sensitivity" not in keys
    info = [i.value for i in at.info if "No sensitivity" in i.value]
    assert len(info) == 1 and "heads: the random criterion measures nothing" in info[0]
    assert "rank: no SVD in this run" in info[0]

    at.selectbox(key="res_one").set_value(unsaved).run()
    assert not at.exception, [e.value for e in at.exception]
    charts = {el.proto.id.split("-", 2)[2]: json.loads(el.proto.spec) for el in at.get("plotly_chart")}
    assert charts["sensitivity"]["data"][0]["text"] == hm["text"]  # the same report, read from the prune stage
