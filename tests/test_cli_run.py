"""``accelvit run`` / ``sweep`` / ``runs``: the same pipeline and store as the dashboard."""

from __future__ import annotations

import json

import pytest

from accelvit.cli import main
from accelvit.experiment import Experiment
from accelvit.runs import RunStore

TINY = ["--model", "swin_pico", "--subset", "64", "--eval-subset", "32", "--batch-size", "32", "--epochs", "1",
        "--finetune-epochs", "1", "--head-criterion", "l1", "--device", "cpu", "--no-latency", "--no-progress"]


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELVIT_HOME", str(tmp_path / "env-home"))  # restored after (--home sets it)


def test_run_then_runs_json_and_table(tmp_path, capsys):
    home = str(tmp_path / "home")
    assert main(["--home", home, "run", *TINY, "--head-ratio", "0.5", "--sparsity", "0.5"]) == 0
    out = capsys.readouterr()
    run_id = out.err.split()[1]
    assert f"run {run_id}" in out.out and "before" in out.out and "after" in out.out

    assert main(["--home", home, "runs", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)  # strict JSON (no NaN)
    assert len(runs) == 1
    run = runs[0]
    assert run["id"] == run_id and run["status"] == "finished" and run["error"] is None
    assert run["config"]["model"] == "swin_pico" and run["config"]["data"]["img_size"] == 16  # the model's size
    assert run["config"]["prune"]["head_ratio"] == 0.5 and run["config"]["prune"]["sparsity"] == 0.5
    assert list(run["stages"]) == ["before", "pruned", "after"]
    for m in run["stages"].values():
        assert {"top1", "top5", "loss", "dense_flops", "effective_flops", "params", "nonzero_params",
                "size_dense_bytes", "size_sparse_bytes", "latency_ms_b1"} <= set(m)
    assert run["stages"]["after"]["nonzero_params"] < run["stages"]["pruned"]["nonzero_params"]
    assert "model" in run["artifacts"]

    assert main(["--home", home, "runs"]) == 0
    table = capsys.readouterr().out
    assert run_id in table and "finished" in table
    # the same run is what the dashboard reads
    assert RunStore(home).runs_df()["id"].tolist() == [run_id]


@pytest.mark.parametrize("args, field", [
    (["--dataset", "mnist"], None),  # argparse rejects it (exit 2)
    (["--model", "resnet50"], "model"),
    (["--head-ratio", "1.5"], "prune.head_ratio"),
    (["--epochs", "-1"], "train.epochs"),
    (["--set", "prune.bogus=1"], "prune.bogus"),
])
def test_bad_run_configs_fail_before_anything_runs(tmp_path, capsys, args, field):
    home = tmp_path / "home"
    try:
        rc = main(["--home", str(home), "run", *TINY, *args])
    except SystemExit as exc:  # argparse choices
        rc = exc.code
    assert rc == 2
    if field:
        assert f"error: {field}:" in capsys.readouterr().err
    assert RunStore(home).runs_df().empty


def test_sweep_from_json_shares_one_baseline(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Experiment, "measure_cost", lambda self, model, dev: {
        "params": sum(p.numel() for p in model.parameters()), "effective_flops": 1.0})
    base = {"model": "swin_pico", "device": "cpu", "measure_latency": False,
            "data": {"dataset": "digits", "img_size": 16, "batch_size": 32, "subset": 64, "eval_subset": 32},
            "train": {"epochs": 1}, "finetune": {"epochs": 1}, "prune": {"head_criterion": "l1"}}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"name": "heads", "base": base, "grid": {"head_ratio": [0.25, 0.5]}}))
    home = str(tmp_path / "home")
    assert main(["--home", home, "sweep", "--config", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("heads head_ratio=") == 2
    assert RunStore(home).runs_df().empty
    assert main(["--home", home, "sweep", "--config", str(path), "--no-progress"]) == 0
    assert "heads head_ratio=0.5" in capsys.readouterr().out
    store = RunStore(home)
    runs = store.runs_df()
    assert list(runs["status"]) == ["finished", "finished"] and runs["sweep_id"].nunique() == 1
    sources = [store.stages_df(r).set_index("stage").at["baseline", "info"]["source"] for r in runs["id"]]
    assert sorted(sources) == ["cache", "trained"]


def test_runs_uses_accelvit_home_and_cancel(tmp_path, capsys):
    store = RunStore(tmp_path / "env-home")  # the fixture's ACCELVIT_HOME
    rid, _ = store.create_run({"model": "swin_pico"}, name="queued one")
    assert main(["runs"]) == 0
    assert rid in capsys.readouterr().out
    assert main(["runs", "--cancel", rid]) == 0
    assert "cancelled" in capsys.readouterr().out and store.status(rid) == "cancelled"
    assert main(["runs", "--status", "cancelled", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [rid]
