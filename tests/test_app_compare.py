"""The Compare page: ``accelvit.ui.compare`` on hand-made frames, and ``pages/4_Compare.py`` through
``AppTest`` on a store of its own with three finished runs written through the store's writer API
(no training): the URL selects the runs, the config diff lists exactly the differing fields, the
metrics table shows each run's numbers with its difference to the reference."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from accelvit.data import DataConfig
from accelvit.experiment import ExperimentConfig
from accelvit.prune import PruneConfig
from accelvit.runs import RunStore, new_owner
from accelvit.train import TrainConfig
from accelvit.ui import compare, tables

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages" / "4_Compare.py")


# ----------------------------------------------------------------------------- URL and selection
def test_runs_param_keeps_known_ids_in_order_and_reports_unknown_ones():
    sel = compare.parse_runs_param(" b, a,,b ,nope", known=["a", "b", "c"])
    assert sel.ids == ["b", "a"] and sel.unknown == ["nope"] and sel.dropped == []
    (note,) = sel.notes()
    assert "nope" in note and "not in this run store" in note
    # a repeated parameter (?runs=a&runs=c) and no parameter at all
    assert compare.parse_runs_param(["a", "c"], known="abc").ids == ["a", "c"]
    empty = compare.parse_runs_param(None, known=["a"])
    assert (empty.ids, empty.unknown, empty.dropped, empty.notes()) == ([], [], [], [])
    assert compare.runs_param(["x1", "x2"]) == "x1,x2"
    assert compare.parse_runs_param(compare.runs_param(["c", "a"]), "abc").ids == ["c", "a"]  # round trip


def test_more_than_four_ids_keep_the_first_four_and_say_so():
    sel = compare.parse_runs_param("r1,r2,zz,r3,r4,r5,r6", known=[f"r{i}" for i in range(1, 7)])
    assert sel.ids == ["r1", "r2", "r3", "r4"] and sel.dropped == ["r5", "r6"] and sel.unknown == ["zz"]
    notes = " ".join(sel.notes())
    assert "at most 4" in notes and "r5, r6" in notes and "zz" in notes


def test_selection_problem_below_two_and_above_four():
    assert "at least 2" in compare.selection_problem([])
    assert "at least 2" in compare.selection_problem(["a"])
    assert compare.selection_problem(["a", "b"]) is None and compare.selection_problem(list("abcd")) is None
    assert "at most 4" in compare.selection_problem(list("abcde")) and "remove 1" in compare.selection_problem(list("abcde"))


def test_labels_are_names_made_unique_with_the_id():
    runs = pd.DataFrame({"id": ["a", "b", "c"], "name": ["same", "same", None], "status": ["finished"] * 3})
    assert compare.run_labels(runs, ["a", "b", "c"]) == {"a": "same (a)", "b": "same (b)", "c": "c"}
    assert compare.default_runs(runs.assign(status=["finished", "failed", "finished"])) == ["a", "c"]


# ----------------------------------------------------------------------------- config diff
def test_config_diff_lists_only_differing_fields_as_dotted_keys():
    a = {"name": "one", "model": "swin_pico", "prune": {"head_ratio": 0.5, "sparsity": 0.0, "svd_layers": ["qkv"]},
         "train": {"epochs": 3, "lr": 1e-3}}
    b = {"name": "two", "model": "swin_pico", "prune": {"head_ratio": 0.25, "sparsity": 0.0, "svd_layers": ["qkv"]},
         "train": {"epochs": 3, "lr": 1e-3}, "control": True}
    c = {"name": "three", "model": "swin_pico", "prune": {"head_ratio": 0.5, "sparsity": 0.0,
                                                          "svd_layers": ["qkv", "fc1"]},
         "train": {"epochs": 3, "lr": 0.001}}
    assert compare.flatten_config(a)["prune.head_ratio"] == 0.5 and compare.flatten_config(a)["prune.svd_layers"] == ["qkv"]
    diff = compare.config_diff({"A": a, "B": b, "C": c})
    assert list(diff.index) == ["prune.head_ratio", "prune.svd_layers", "control"]  # name ignored, lr 1e-3 == 0.001
    assert list(diff.columns) == ["A", "B", "C"]
    assert diff.loc["prune.head_ratio"].tolist() == [0.5, 0.25, 0.5]
    assert diff.at["control", "A"] is None and diff.at["control", "B"] is True  # a field only one run has
    view = compare.config_diff_view(diff, {"A": "run A", "B": "run B", "C": "run C"})
    assert list(view.columns) == ["Field", "run A", "run B", "run C"]
    assert view.iloc[1].tolist() == ["prune.svd_layers", "qkv", "qkv", "qkv, fc1"]
    assert view.iloc[2].tolist() == ["control", "none", "yes", "none"]
    assert compare.config_diff({"A": a, "A2": dict(a, name="other")}).empty  # only the names differ


# ----------------------------------------------------------------------------- metrics
def _metrics_rows(rid, name, before, after, stage_after="after"):
    rows = [{"run_id": rid, "name": name, "stage": "before", **before}]
    if after is not None:
        rows.append({"run_id": rid, "name": name, "stage": stage_after, **after})
    return rows


def test_final_metrics_and_differences_to_the_reference_are_the_right_numbers():
    base = {"top1": 0.96, "top5": 1.0, "dense_flops": 8e6, "size_dense_bytes": 400_000}
    df = pd.DataFrame(
        _metrics_rows("a", "A", base, {"top1": 0.95, "top5": 1.0, "dense_flops": 4e6, "nonzero_params": 1000,
                                       "size_dense_bytes": 200_000, "size_sparse_bytes": 100_000})
        + _metrics_rows("b", "B", base, {"top1": 0.93, "top5": 0.99, "dense_flops": 2e6, "nonzero_params": 1500,
                                         "size_dense_bytes": 150_000})
        + _metrics_rows("c", "C", base, None))  # not finished: a baseline only
    values = compare.final_metrics(df, ["a", "b", "c"])
    assert list(values.columns) == ["a", "b", "c"]
    assert values.at["top1", "b"] == pytest.approx(0.93) and values.at["size_bytes", "a"] == 100_000
    assert values["c"].isna().all()
    d = compare.metric_differences(values)
    assert list(d.columns) == ["b", "c"]
    assert d.at["top1", "b"] == pytest.approx(-0.02)        # points: 0.93 - 0.95
    assert d.at["dense_flops", "b"] == pytest.approx(-0.5)  # relative: 2e6 / 4e6 - 1
    assert d.at["nonzero_params", "b"] == pytest.approx(0.5)
    assert d.at["size_bytes", "b"] == pytest.approx(0.5)    # 150 kB dense vs 100 kB sparse
    assert d["c"].isna().all() and math.isnan(d.at["latency_ms_b1", "b"])
    runs = pd.DataFrame({"id": ["a", "b", "c"], "name": ["A", "B", "C"], "status": ["finished", "finished", "failed"]})
    view = compare.metrics_view(values, {"a": "A", "b": "B", "c": "C"}, runs).set_index("Metric")
    assert list(view.columns) == ["A (reference)", "B", "C"]
    assert view.at["Status", "C"] == "failed"
    assert view.at["Top-1", "A (reference)"] == "95.0%" and view.at["Top-1", "B"] == "93.0% (−2.0 pts)"
    assert view.at["Dense FLOPs", "B"] == "2 M (−50.0%)"
    assert view.at["Top-1", "C"] == tables.MISSING and view.at["Latency b=1", "B"] == tables.MISSING


# ----------------------------------------------------------------------------- curves and layers
def _progress(stage, losses):
    n = len(losses)
    return pd.DataFrame({"time": pd.date_range("2026-01-01", periods=n, freq="s", tz="UTC"), "stage": stage,
                         "epoch": range(1, n + 1), "epochs": n, "step": 10, "steps": 10, "loss": losses,
                         "accuracy": [0.5] * n, "images_per_s": 100.0})


def test_curves_overlay_one_colour_per_run_and_name_runs_without_a_curve():
    prog = {"a": pd.concat([_progress("baseline", [2.0, 1.0]), _progress("finetune", [0.8, 0.6])]),
            "b": _progress("finetune", [0.9, 0.7, 0.5]), "c": None}
    fig = compare.curves_figure(prog, {"a": "A", "b": "B", "c": "C"})
    assert fig.layout.meta["stages"] == ["baseline", "finetune"]
    assert fig.layout.meta["missing"] == {"baseline": ["b", "c"], "finetune": ["c"]}
    colours = {t.name: t.line.color for t in fig.data}
    assert colours == {"A": compare.RUN_COLORS[0], "B": compare.RUN_COLORS[1]}
    assert len(fig.data) == 6 and sorted(t.name for t in fig.data if t.showlegend) == ["A", "B"]
    b_ft = [t for t in fig.data if t.name == "B"][0]
    assert list(b_ft.x) == [1.0, 2.0, 3.0] and list(b_ft.y) == [0.9, 0.7, 0.5]
    assert compare.curves_figure({"a": None, "b": None}, {}).layout.meta["stages"] == []


def layer_csv(heads_kept: int, rank: float, density: float) -> pd.DataFrame:
    return pd.DataFrame([
        {"module": "layers.0.blocks.0.attn", "kind": "attn", "heads_kept": heads_kept, "heads_total": 4,
         "rank": None, "full_rank": None, "density": None},
        {"module": "layers.0.blocks.0.attn.qkv", "kind": "qkv", "heads_kept": None, "heads_total": None,
         "rank": rank, "full_rank": 16, "density": density},
        {"module": "layers.0.blocks.0.mlp.fc1", "kind": "fc1", "heads_kept": None, "heads_total": None,
         "rank": 16, "full_rank": 16, "density": 1.0},
    ])


def test_layers_side_by_side_one_column_per_run():
    long = compare.layers_long({"a": layer_csv(2, 8, 0.5), "b": layer_csv(4, 16, 1.0), "c": None})
    t = compare.layers_table(long, {"a": "A", "b": "B", "c": "C"}, ["a", "b", "c"])
    assert list(t.columns) == ["Layer", "Quantity", "A", "B", "C"]
    rows = {(r.Layer, r.Quantity): (r.A, r.B, r.C) for r in t.itertuples()}
    assert rows[("s0.b0.attn", "heads kept")] == ("2/4", "4/4", tables.MISSING)
    assert rows[("s0.b0.qkv", "rank / full rank")] == ("8/16", "16/16", tables.MISSING)
    assert rows[("s0.b0.qkv", "weight density")] == ("50.0%", "100.0%", tables.MISSING)
    fig = compare.layers_figure(long, {"a": "A", "b": "B", "c": "C"}, ["a", "b", "c"])
    heads = [t for t in fig.data if t.xaxis == "x"]
    assert [(t.name, list(t.y)) for t in heads] == [("A", [0.5]), ("B", [1.0])]


# ----------------------------------------------------------------------------- the page (AppTest)
def cfg(name: str, finetune_epochs: int = 2, **prune_kw) -> dict:
    return ExperimentConfig(name=name, model="swin_pico", data=DataConfig(dataset="digits", img_size=16),
                            train=TrainConfig(epochs=2), finetune=TrainConfig(epochs=finetune_epochs, lr=1e-3),
                            prune=PruneConfig(**prune_kw)).to_dict()


def metrics(top1: float, dense: float, nnz: float, lat: float) -> dict:
    return {"top1": top1, "top5": 1.0, "loss": 0.4, "n": 360, "dense_flops": dense, "effective_flops": dense,
            "params": nnz, "nonzero_params": nnz, "size_dense_bytes": nnz * 4, "size_sparse_bytes": nnz * 5,
            "latency_ms_b1": lat, "latency_ms_batch": lat * 8, "device": "cpu"}


def add_run(store: RunStore, name: str, after: dict | None, layers: pd.DataFrame | None, finetune_epochs: int = 2,
            status: str = "finished", **prune_kw) -> str:
    rid, _ = store.create_run(cfg(name, finetune_epochs, **prune_kw), name=name, status="running",
                              owner=new_owner("test"))
    store.add_metrics(rid, "before", metrics(0.96, 8e6, 90_000, 2.0))
    for ep in (1, 2):
        store.add_event(rid, "progress", stage="finetune", fraction=ep / 2, overall=0.5 + ep / 4,
                        data={"stage": "finetune", "epoch": ep, "epochs": 2, "step": 5, "steps": 5,
                              "loss": 1.0 / ep, "accuracy": 0.8 + ep / 20})
    if after is not None:
        store.add_metrics(rid, "after", after)
    if layers is not None:
        path = store.artifact_dir(rid) / "layers_after.csv"
        layers.to_csv(path, index=False)
        store.add_artifact(rid, "layers_after", path, kind="csv")
    store.set_status(rid, status, error="went wrong on purpose" if status == "failed" else None)
    return rid


@pytest.fixture
def three(app_home):
    """Three finished runs: they differ in prune.head_ratio, prune.sparsity and finetune.epochs only."""
    store = RunStore(app_home)
    return [
        add_run(store, "heads half", metrics(0.95, 4e6, 50_000, 1.5), layer_csv(2, 16, 1.0), head_ratio=0.5),
        add_run(store, "sparse", metrics(0.93, 8e6, 45_000, 1.9), layer_csv(4, 16, 0.5), sparsity=0.5),
        add_run(store, "heads quarter", metrics(0.94, 6e6, 70_000, 1.7), layer_csv(3, 16, 1.0), finetune_epochs=3,
                head_ratio=0.25),
    ]


def run_page(query: str | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    if query is not None:
        at.query_params["runs"] = query
    return at.run()


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_page_with_three_runs_from_the_url(three):
    ids = [three[2], three[0], three[1]]
    at = run_page(",".join(ids))
    ok(at)
    assert at.multiselect[0].value == ids  # the URL's order: "heads quarter" is the reference
    assert at.query_params["runs"] == ",".join(ids)
    assert not at.warning
    diff = frame_with(at, "Field")
    assert list(diff.columns) == ["Field", "heads quarter", "heads half", "sparse"]
    assert diff.set_index("Field").to_dict("index") == {
        "finetune.epochs": {"heads quarter": "3", "heads half": "2", "sparse": "2"},
        "prune.head_ratio": {"heads quarter": "0.25", "heads half": "0.5", "sparse": "0"},
        "prune.sparsity": {"heads quarter": "0", "heads half": "0", "sparse": "0.5"},
    }
    table = frame_with(at, "Metric").set_index("Metric")
    assert list(table.columns) == ["heads quarter (reference)", "heads half", "sparse"]
    assert table.at["Top-1", "heads quarter (reference)"] == "94.0%"
    assert table.at["Top-1", "heads half"] == "95.0% (+1.0 pts)"
    assert table.at["Dense FLOPs", "sparse"] == "8 M (+33.3%)"
    layers = frame_with(at, "Quantity").set_index(["Layer", "Quantity"])
    assert layers.loc[("s0.b0.attn", "heads kept")].tolist() == ["3/4", "2/4", "4/4"]
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) == 2  # curves and per-layer bars
    # changing the selection rewrites the URL (the other half of the round trip)
    at.multiselect[0].set_value([three[1], three[0]]).run()
    ok(at)
    assert at.query_params["runs"] == f"{three[1]},{three[0]}"
    diff = frame_with(at, "Field").set_index("Field")
    assert list(diff.index) == ["prune.head_ratio", "prune.sparsity"]


def test_page_warns_about_unknown_ids_and_too_many(three, app_home):
    store = RunStore(app_home)
    more = [add_run(store, f"extra {i}", metrics(0.9, 5e6, 40_000, 1.0), None, head_ratio=0.1 * i) for i in (1, 2)]
    at = run_page(",".join([three[0], "no-such-run", three[1], three[2], *more]))
    ok(at)
    assert at.multiselect[0].value == [three[0], three[1], three[2], more[0]]
    warnings = " ".join(w.value for w in at.warning)
    assert "no-such-run" in warnings and "at most 4" in warnings and more[1] in warnings
    assert at.query_params["runs"] == ",".join([three[0], three[1], three[2], more[0]])
    # nothing but unknown ids: a warning and the pick-two message, no crash
    at = run_page("nope1,nope2")
    ok(at)
    assert "nope1, nope2" in " ".join(w.value for w in at.warning)
    assert at.multiselect[0].value == [] and "at least 2" in " ".join(i.value for i in at.info)


def test_page_handles_a_failed_run_and_identical_configs(app_home):
    store = RunStore(app_home)
    a = add_run(store, "same a", metrics(0.95, 4e6, 50_000, 1.5), layer_csv(2, 16, 1.0), head_ratio=0.5)
    b = add_run(store, "same b", None, None, status="failed", head_ratio=0.5)
    at = run_page(f"{a},{b}")
    ok(at)
    assert any("same b (failed)" in w.value for w in at.warning)
    assert any("same configuration" in s.value for s in at.success)
    table = frame_with(at, "Metric").set_index("Metric")
    assert table.at["Status", "same b"] == "failed" and table.at["Top-1", "same b"] == tables.MISSING
    assert "No per-layer table: same b" in " ".join(c.value for c in at.caption)
    at.multiselect[0].set_value([a]).run()
    ok(at)
    assert "at least 2" in " ".join(i.value for i in at.info) and at.query_params["runs"] == a


def test_page_without_url_picks_the_newest_finished_runs_and_empty_store(app_home):
    at = run_page()
    ok(at)
    assert "No runs yet" in " ".join(i.value for i in at.info)
    store = RunStore(app_home)
    ids = [add_run(store, f"r{i}", metrics(0.9, 5e6, 40_000, 1.0), None, head_ratio=0.1 * i) for i in range(4)]
    at = run_page()
    ok(at)
    assert at.multiselect[0].value == ids[::-1][:3]
    assert at.query_params["runs"] == ",".join(ids[::-1][:3])


def test_a_run_deleted_while_selected_drops_out_of_the_selection(three, app_home):
    at = run_page(",".join(three))
    ok(at)
    RunStore(app_home).delete_run(three[1])
    at.run()
    ok(at)
    assert at.multiselect[0].value == [three[0], three[2]]
    assert at.query_params["runs"] == f"{three[0]},{three[2]}"
