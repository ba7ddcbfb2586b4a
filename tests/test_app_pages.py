"""Every dashboard page through ``streamlit.testing.v1.AppTest``, each test with its own run store.

Stores are filled through the store's writer API (synthetic runs) except in the launch test,
which trains a tiny digits run through the Experiment page and the real job manager, and the
restart test, which kills a real job process mid-run.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import element_tree

# AppTest drives st.file_uploader only in recent Streamlit (streamlit/streamlit#14341, 2026); with an
# older one the upload part is skipped (tests/test_ui_inference.py covers the upload checks directly).
APPTEST_UPLOADS = hasattr(getattr(element_tree, "FileUploader", None), "set_value")

from accelvit import serialize
from accelvit.data import DataConfig
from accelvit.metrics import measure
from accelvit.models import build_model
from accelvit.experiment import ExperimentConfig
from accelvit.prune import PruneConfig, prune
from accelvit.runs import RunStore, jobs, new_owner, release_owner
from accelvit.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"home": "app.py", "experiment": "pages/1_Experiment.py", "results": "pages/2_Results.py",
         "inference": "pages/3_Inference.py", "compare": "pages/4_Compare.py"}
TINY = {"exp:model": "swin_pico", "exp:data.img_size": 16, "exp:data.subset": 200, "exp:train.epochs": 1,
        "exp:finetune.epochs": 1}


@pytest.fixture(autouse=True)
def home(app_home):
    return app_home


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / PAGES[name]), default_timeout=90).run()


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def charts_of(at: AppTest) -> dict[str, dict]:
    """Plotly charts on the page by their key: the figure JSON Streamlit sends to the browser."""
    out = {}
    for el in at.get("plotly_chart"):
        key = el.proto.id.split("-", 2)[2]  # "$$ID-<hash>-<user key>"
        out[key] = json.loads(el.proto.spec)
    return out


def trace(fig: dict, name: str) -> dict:
    return next(t for t in fig["data"] if t.get("name") == name)


# ----------------------------------------------------------------------------- synthetic store
def cfg(**prune_kw) -> dict:
    return ExperimentConfig(model="swin_pico", data=DataConfig(dataset="digits", img_size=16),
                            train=TrainConfig(epochs=1), prune=PruneConfig(**prune_kw)).to_dict()


def m(top1, dense, eff, nnz, size, lat) -> dict:
    return {"top1": top1, "top5": 1.0, "loss": 0.5, "n": 360, "dense_flops": dense, "effective_flops": eff,
            "params": nnz * 1.2, "nonzero_params": nnz, "size_dense_bytes": size, "size_sparse_bytes": size * 1.1,
            "latency_ms_b1": lat, "latency_ms_batch": lat * 8, "device": "cpu"}


def add_finished(store: RunStore, name: str, before: dict, after: dict, **prune_kw) -> str:
    rid, _ = store.create_run(cfg(**prune_kw), name=name, status="running", owner=new_owner("test"))
    store.add_metrics(rid, "before", before)
    store.add_metrics(rid, "pruned", {**after, "top1": after["top1"] - 0.2})
    store.add_metrics(rid, "after", after)
    store.set_status(rid, "finished")
    return rid


def fill(store: RunStore) -> dict[str, str]:
    base = m(0.95, 4.9e6, 4.9e6, 90_000, 400_000, 2.0)
    ids = {
        "a": add_finished(store, "run a", base, m(0.93, 2.3e6, 1.4e6, 24_000, 200_000, 1.5), head_ratio=0.5,
                          rank_ratio=0.5, sparsity=0.5),
        "b": add_finished(store, "run b", base, m(0.90, 3.0e6, 1.0e6, 20_000, 150_000, 1.8), sparsity=0.8),
    }
    rid, _ = store.create_run(cfg(head_ratio=0.9), name="run failed", status="running", owner=new_owner("test"))
    store.set_status(rid, "failed", error="Stage 'prune' failed: something went wrong on purpose.")
    ids["failed"] = rid
    owner = new_owner("test-live")
    rid, _ = store.create_run(cfg(head_ratio=0.25), name="run live", status="running", owner=owner)
    store.add_event(rid, "stage_started", stage="baseline", overall=0.1, update_live=True,
                    data={"stage": "baseline"})
    for step in range(1, 4):
        store.add_event(rid, "progress", stage="baseline", fraction=step / 10, overall=0.1 + step / 50,
                        update_live=True,
                        data={"stage": "baseline", "fraction": step / 10, "overall": 0.1 + step / 50, "epoch": 1,
                              "epochs": 3, "step": step * 3, "steps": 30, "loss": 2.0 / step,
                              "accuracy": 0.2 * step, "images_per_s": 123.0, "eta_s": 42.0})
    ids["live"], ids["live_owner"] = rid, owner
    return ids


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A swin_pico baseline and a pruned copy saved as the pipeline saves them, plus its layer table."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("models")
    names = [str(i) for i in range(10)]
    meta = {"data": {"dataset": "digits", "img_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3}}
    base = build_model("swin_pico", 10, img_size=16)
    serialize.save(base, d / "baseline", class_names=names, meta=meta)
    pruned, _ = prune(base, PruneConfig(head_ratio=0.5, head_criterion="l1", rank_ratio=0.5), None)
    serialize.save(pruned, d / "model", class_names=names, meta=meta)
    layers = measure(pruned, latency=False, thop=False, size=False).layers
    layers.to_csv(d / "layers_after.csv", index=False)
    return d, layers


def attach_models(store: RunStore, rid: str, d: Path) -> None:
    store.add_artifact(rid, "baseline", d / "baseline", kind="model")
    store.add_artifact(rid, "model", d / "model", kind="model")
    store.add_artifact(rid, "layers_after", d / "layers_after.csv", kind="csv")
    store.write_artifact_json(rid, "report.json", {"run_id": rid})


# ----------------------------------------------------------------------------- tests
def test_every_page_renders_with_an_empty_store(home):
    at = page("home")
    no_exception(at)
    assert "No runs yet" in texts(at.info)
    assert "Device:" in texts(at.markdown) and "cpu" in texts(at.markdown).lower() + str(torch.cuda.is_available())
    assert at.button(key="quick_demo").label == "Run the quick demo"
    exp = page("experiment")
    no_exception(exp)
    assert not exp.error and not exp.button(key="launch").disabled
    assert [x.label for x in exp.metric][:2] == ["Dense FLOPs / image", "Effective FLOPs"]
    assert "Nothing is running" in texts(exp.info)
    res = page("results")
    no_exception(res)
    assert "No measured runs yet" in texts(res.info)
    inf = page("inference")
    no_exception(inf)
    assert "No finished run" in texts(inf.info)
    cmp_ = page("compare")
    no_exception(cmp_)
    assert "No runs yet" in texts(cmp_.info)


def test_home_shows_finished_failed_and_running_runs(home):
    store = RunStore(home)
    ids = fill(store)
    try:
        at = page("home")
        no_exception(at)
        table = at.dataframe[0].value.set_index("id")
        assert table.at[ids["a"], "status"] == "finished" and table.at[ids["failed"], "status"] == "failed"
        assert table.at[ids["live"], "status"] == "running"
        assert table.at[ids["a"], "top1_after"] == pytest.approx(0.93)
        assert table.at[ids["a"], "dense_flops_reduction"] == pytest.approx(1 - 2.3 / 4.9)
        assert "on purpose" in table.at[ids["failed"], "error"]
        # a run is live: the plot waits behind a switch (a browser redraws every chart on each refresh)
        assert "home-tradeoff" not in charts_of(at) and "hidden while a run is live" in texts(at.caption)
        at.toggle(key="home-tradeoff-live").set_value(True).run()
        fig = charts_of(at)["home-tradeoff"]  # finished runs only
        assert sorted(trace(fig, "pruned (after)")["x"]) == [1.0e6, 1.4e6]
        # the live view follows the running run: its stage, epoch and loss from the store
        live = texts(at.markdown)
        assert "run live" in live and "Running: baseline" in live
        assert {x.label: x.value for x in at.metric}["Epoch"] == "1/3"
        assert at.button(key=f"cancel-home-{ids['live']}").label == "Cancel this run"
        at.button(key=f"cancel-home-{ids['live']}").click().run()
        assert store.cancel_requested(ids["live"])
        # the cancel shows at once, in the same rerun: the card says so and its button is disabled
        assert "Cancelling" in texts(at.markdown)
        assert at.button(key=f"cancel-home-{ids['live']}").disabled
    finally:
        release_owner(ids["live_owner"])


def test_reload_and_second_tab_show_the_same_live_progress(home):
    store = RunStore(home)
    ids = fill(store)
    try:
        views = [page("home"), page("home"), page("experiment")]  # two tabs of Home, one of Experiment
        for at in views:
            no_exception(at)
            bars = [p.value for p in at.get("progress")]
            assert bars and bars[0] == round(100 * store.get_run(ids["live"])["progress"])  # percent
            assert {x.label: x.value for x in at.metric}["Loss"] == f"{2.0 / 3:.3f}"
        log = next(df.value for df in views[-1].dataframe if "message" in df.value.columns)
        assert "baseline started" in log["message"].tolist()  # the Experiment page's live log
    finally:
        release_owner(ids["live_owner"])


@pytest.mark.slow
def test_server_restart_mid_job_leaves_the_run_interrupted(home, tmp_path):
    """A server process is killed (SIGKILL) mid-run: its job process stops and marks the run interrupted
    (SIGTERM from the kernel when its parent dies), and the next server shows it so."""
    script = textwrap.dedent(f"""
        import sys, time, torch
        torch.set_num_threads(1)
        from accelvit.runs import get_manager
        from accelvit.ui.forms import quick_demo_config
        mgr = get_manager({str(home)!r})
        cfg = quick_demo_config()
        cfg.train.epochs = 50
        rid = mgr.submit(cfg)
        while mgr.store.get_run(rid)["stage"] not in ("baseline",):
            time.sleep(0.1)
        print(rid, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        rid = proc.stdout.readline().strip()
        assert rid, "the job process did not start its run"
        assert RunStore(home).status(rid) == "running"
    finally:
        proc.kill()
        proc.wait(30)
    at = page("home")
    no_exception(at)
    table = at.dataframe[0].value.set_index("id")
    assert table.at[rid, "status"] == "interrupted"
    err = RunStore(home).get_run(rid)["error"]  # the job process's own word, or the next manager's
    assert "server stopped" in err or "server restart" in err


def _column_with(at: AppTest, key: str):
    """The innermost block (column or container) that directly holds the widget ``key``: the page
    puts each field's error message in that block, right under the widget."""
    def walk(block):
        kids = list(getattr(block, "children", {}).values())
        if any(getattr(k, "key", None) == key for k in kids):
            return block
        for k in kids:
            found = walk(k)
            if found is not None:
                return found
        return None

    found = walk(at._tree)
    if found is None:
        raise AssertionError(f"no block holds {key}")
    return found


def test_experiment_invalid_inputs_show_errors_next_to_the_field(home, tmp_path):
    at = page("experiment")
    at.number_input(key="exp:train.lr").set_value(0.0).run()
    no_exception(at)
    assert "must be a positive number" in texts(_column_with(at, "exp:train.lr").error)
    assert at.button(key="launch").disabled
    at.number_input(key="exp:train.lr").set_value(0.002)
    at.selectbox(key="exp:data.dataset").set_value("cifar10").run()
    at.text_input(key="exp:data.root").set_value(str(tmp_path / "no-cifar")).run()
    no_exception(at)
    msg = texts(_column_with(at, "exp:data.root").error)
    assert "CIFAR-10 not found" in msg and "no-cifar" in msg
    assert at.checkbox(key="exp:data.augment").value  # photos get augmentation, digits do not
    at.selectbox(key="exp:data.dataset").set_value("digits")
    at.toggle(key="exp:sweep").set_value(True).run()
    at.text_input(key="exp:sweep.head_ratio").set_value("0.25, lots").run()
    assert "not a number" in texts(_column_with(at, "exp:sweep.head_ratio").error)
    at.text_input(key="exp:sweep.head_ratio").set_value("0.25, 0.5").run()
    no_exception(at)
    assert not at.error and at.button(key="launch").label == "Launch sweep (2 runs)"
    assert not RunStore(home).list_runs()  # nothing was launched by editing


def test_experiment_saved_model_source_checks_the_folder_and_estimates_on_request(home, tmp_path, saved_models):
    d, _ = saved_models
    at = page("experiment")
    at.radio(key="exp:model_source").set_value("checkpoint").run()
    at.text_input(key="exp:baseline_checkpoint").set_value(str(tmp_path)).run()
    no_exception(at)
    assert "not an accelvit model" in texts(_column_with(at, "exp:baseline_checkpoint").error)
    at.text_input(key="exp:baseline_checkpoint").set_value(str(d / "baseline"))
    at.number_input(key="exp:data.img_size").set_value(16).run()
    no_exception(at)
    assert not at.error and not at.metric  # big models are estimated on request only
    at.button(key="estimate").click().run()
    no_exception(at)
    got = {x.label: x.value for x in at.metric}
    assert got["Dense FLOPs / image"].endswith("M") and "vs" in at.metric[0].delta


@pytest.mark.slow
def test_experiment_launches_a_digits_run_that_reaches_finished(home):
    at = page("experiment")
    for key, value in TINY.items():
        (at.selectbox if key == "exp:model" else at.number_input)(key=key).set_value(value)
    at.run()
    no_exception(at)
    assert not at.error
    at.button(key="launch").click().run()
    no_exception(at)
    (rid,) = at.session_state["exp_watch"]
    at.button(key="launch").click().run()  # a second click on the same settings queues nothing new
    assert len(RunStore(home).list_runs()) == 1
    assert jobs.get_manager(str(home)).wait(rid, timeout=150) == "finished"
    at.run()
    no_exception(at)
    assert "Finished in" in texts(at.success) and "top-1" in texts(at.success)
    run = RunStore(home).get_run(rid)
    assert run["config"]["model"] == "swin_pico" and run["config"]["data"]["subset"] == 200
    assert {"before", "pruned", "after"} <= set(run["stages"]) and "model" in run["artifacts"]


@pytest.mark.slow
def test_experiment_launches_a_sweep_and_cancels_it(home):
    at = page("experiment")
    for key, value in {**TINY, "exp:train.epochs": 60}.items():
        (at.selectbox if key == "exp:model" else at.number_input)(key=key).set_value(value)
    at.toggle(key="exp:sweep").set_value(True).run()
    at.text_input(key="exp:sweep.head_ratio").set_value("0.25, 0.5").run()
    at.button(key="launch").click().run()
    no_exception(at)
    ids = at.session_state["exp_watch"]
    runs = RunStore(home).list_runs()
    assert len(ids) == 2 and {r["id"] for r in runs} == set(ids)
    assert len({r["sweep_id"] for r in runs}) == 1 and runs[0]["sweep_id"]
    assert sorted(r["config"]["prune"]["head_ratio"] for r in runs) == [0.25, 0.5]
    at.button(key="cancel_all").click().run()
    no_exception(at)
    mgr = jobs.get_manager(str(home))
    assert [mgr.wait(r, timeout=60) for r in ids] == ["cancelled", "cancelled"]


def test_results_charts_get_the_right_points(home, saved_models):
    d, layers = saved_models
    store = RunStore(home)
    ids = fill(store)
    attach_models(store, ids["a"], d)
    try:
        at = page("results")
        no_exception(at)
        figs = charts_of(at)
        assert {"tradeoff-dense_flops", "tradeoff-effective_flops", "tradeoff-nonzero_params",
                "tradeoff-size_bytes", "speedup"} <= set(figs)
        after = trace(figs["tradeoff-dense_flops"], "pruned (after)")
        assert sorted(zip(after["x"], after["y"])) == [(2.3e6, pytest.approx(93.0)), (3.0e6, pytest.approx(90.0))]
        before = trace(figs["tradeoff-nonzero_params"], "baseline (before)")
        assert set(before["x"]) == {90_000}
        size_after = trace(figs["tradeoff-size_bytes"], "pruned (after)")
        assert sorted(size_after["x"]) == [150_000, 200_000]  # dense file smaller than the sparse one here
        front = trace(figs["tradeoff-effective_flops"], "Pareto frontier")
        assert front["x"] == [1.0e6, 1.4e6, 4.9e6]
        arrows = [a for a in figs["tradeoff-effective_flops"]["layout"]["annotations"] if a.get("showarrow")]
        assert len(arrows) == 2
        sp = trace(figs["speedup"], "vs dense FLOP reduction")
        assert sorted(sp["y"]) == pytest.approx(sorted([2.0 / 1.5, 2.0 / 1.8]))
        # per-layer pictures of the first selected run (run b has no layer table; pick a)
        at.selectbox(key="res_one").set_value(ids["a"]).run()
        assert {"heads", "linears"} <= set(charts_of(at))
        heat = charts_of(at)["heads"]["data"][0]
        attn = layers[layers["kind"] == "attn"]
        assert sum(int(t.split("/")[0]) for row in heat["text"] for t in row if t) == int(attn["heads_kept"].sum())
        assert sum(int(t.split("/")[1]) for row in heat["text"] for t in row if t) == int(attn["heads_total"].sum())
        labels = [b.label for b in at.get("download_button")]
        assert {"Metrics as CSV", "Pruned model (zip)", "report.json"} <= set(labels)
        table = at.dataframe[-1].value
        assert set(table["stage"]) == {"before", "pruned", "after"} and set(table["run_id"]) == {ids["a"], ids["b"]}
    finally:
        release_owner(ids["live_owner"])


def test_results_exports_onnx_on_request_and_offers_it(home, saved_models, tmp_path):
    """The Export ONNX button writes a verified model.onnx into the run's model folder; the page then offers
    it for download, and the model zip holds it beside the model card."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import shutil
    import zipfile

    from accelvit.ui.downloads import zip_folder

    d, _ = saved_models
    own = tmp_path / "copy"
    shutil.copytree(d, own)  # the module's saved models stay untouched for the other tests
    store = RunStore(home)
    ids = fill(store)
    attach_models(store, ids["a"], own)
    try:
        at = page("results")
        at.selectbox(key="res_one").set_value(ids["a"]).run()
        no_exception(at)
        assert "model.onnx" not in [b.label.split(" ")[0] for b in at.get("download_button")]
        at.button(key="onnx_export").click().run(timeout=180)
        no_exception(at)
        assert not at.error, [e.value for e in at.error]
        assert (own / "model" / "model.onnx").is_file() and (own / "model" / "onnx.json").is_file()
        labels = [b.label for b in at.get("download_button")]
        assert any(label.startswith("model.onnx (") for label in labels)
        assert any("Verified: onnxruntime equals PyTorch within" in str(c.value) for c in at.caption)
        zipped = [b for b in at.get("download_button") if b.label == "Pruned model (zip)"][0]
        assert "README.md (the model card) + model.onnx" in zipped.help
        names = zipfile.ZipFile(io.BytesIO(zip_folder(own / "model"))).namelist()
        assert {"model/model.onnx", "model/onnx.json", "model/README.md", "model/accelvit.json"} <= set(names)
        assert "With onnxruntime (`model.onnx`, opset 18, verified" in (own / "model" / "README.md").read_text()
    finally:
        release_owner(ids["live_owner"])


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (255, 255, 255)).save(buf, format="PNG")
    return buf.getvalue()


def test_inference_predicts_for_a_png_and_refuses_a_text_file(home, saved_models):
    d, _ = saved_models
    store = RunStore(home)
    ids = fill(store)
    attach_models(store, ids["a"], d)
    try:
        at = page("inference")
        no_exception(at)
        assert {x.label for x in at.metric} == {"baseline latency (batch 1, CPU)", "pruned latency (batch 1, CPU)",
                                                "speedup (paired)"}
        at.radio(key="inf_source").set_value("test").run()  # test images of the run's data set
        no_exception(at)
        assert len(at.dataframe) == 2 * 4
        assert all("true class" in i.captions[0] for i in at.image) and len(at.image) == 4
        at.radio(key="inf_source").set_value("upload").run()
        if not APPTEST_UPLOADS:
            pytest.skip("this Streamlit's AppTest cannot upload files (needs streamlit/streamlit#14341)")
        at.file_uploader(key="inf_files").set_value(("seven.png", _png(), "image/png")).run()
        no_exception(at)
        assert not at.error
        tables = [df.value for df in at.dataframe]
        assert len(tables) == 2  # baseline and pruned side by side
        for t in tables:
            assert len(t) == 5 and t["probability"].between(0, 1).all()
        assert [i.captions for i in at.image] == [["seven.png"]]
        at.file_uploader(key="inf_files").set_value(
            [("notes.txt", b"not an image at all", "text/plain"), ("ok.png", _png(), "image/png")]).run()
        no_exception(at)
        assert "notes.txt" in texts(at.error) and "not an image" in texts(at.error)
        assert len(at.dataframe) == 2  # the PNG next to it still gets its predictions
    finally:
        release_owner(ids["live_owner"])
