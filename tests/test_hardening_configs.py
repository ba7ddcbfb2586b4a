"""Issue 13 (findings 4, 5, 7, 8): configs, CLI and training that cannot lie. Each test is the issue's
reproduction; the CLI ones train swin_pico at 16 px on 64 digits for 1-2 epochs at most."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from accelvit.cli import main
from accelvit.errors import ConfigError, TrainingError
from accelvit.experiment import ExperimentConfig, SweepConfig
from accelvit.experiment.baselines import load_cached, save_cached
from accelvit.text import md_escape, plotly_escape, terminal_safe

TINY = ["--model", "swin_pico", "--subset", "64", "--eval-subset", "32", "--batch-size", "32", "--device", "cpu"]
RUN = [*TINY, "--epochs", "1", "--finetune-epochs", "0", "--head-criterion", "l1", "--no-latency", "--no-progress"]


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELVIT_HOME", str(tmp_path / "home"))


def tiny_cfg(**prune) -> ExperimentConfig:
    cfg = ExperimentConfig(model="swin_pico", measure_latency=False)
    cfg.data.img_size, cfg.data.subset = 16, 64
    for k, v in prune.items():
        setattr(cfg.prune, k, v)
    return cfg


def err_of(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


# ----------------------------------------------------------------------------- finding 7: named errors
@pytest.mark.parametrize("item, field", [
    ('data.val_fraction="x"', "data.val_fraction"),
    ("data.mean=5", "data.mean"),
    ('data.mean=[1, 2, "a"]', "data.mean"),
    ("train.lr=null", "train.lr"),
    ("finetune.max_steps=1.5", "finetune.max_steps"),
    ("data=5", "data"),
    ("seed=-1", "seed"),
    ("data.img_size=4096", "data.img_size"),
    ("prune.seed=5", "prune.seed"),
    ("train.device=cpu", "train.device"),
    ("=3", "--set"),
])
def test_every_set_value_is_checked_with_a_named_error(item, field, capsys):
    err = err_of(["run", *RUN, "--set", item], capsys)
    assert err.startswith(f"error: {field}:") and "Traceback" not in err, err


def test_sweep_grid_as_a_list_and_variants_as_a_mapping_are_named_errors():
    for d, field in (({"grid": [0.25, 0.5]}, "grid"), ({"variants": {"sparsity": 0.5}}, "variants"),
                     ({"base": 5}, "base"), ({"base": {"data": {"mean": 5}}, "grid": {"head_ratio": [0.5]}},
                                             "base.data.mean")):
        with pytest.raises(ConfigError) as info:
            SweepConfig.from_dict(d).expand()
        assert info.value.field == field, (d, info.value)


def test_img_size_is_bounded_with_a_clear_message_and_real_sizes_still_work(capsys, monkeypatch):
    with pytest.raises(SystemExit) as info:  # an argparse usage error: exit code 2
        main(["run", *RUN, "--img-size", "4096"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--img-size" in err and "4096 px is larger than the limit of 512 px" in err and "ACCELVIT_MAX_IMG_SIZE" in err
    for size in (224, 384):
        cfg = tiny_cfg()
        cfg.data.img_size, cfg.model = size, "swin_tiny_patch4_window7_224"
        assert cfg.validate() is cfg
    monkeypatch.setenv("ACCELVIT_MAX_IMG_SIZE", "8192")
    cfg = tiny_cfg()
    cfg.data.img_size = 4096
    cfg.validate()  # the limit is the environment's to raise


def test_measure_refuses_bad_timing_flags_before_loading(tmp_path, capsys):
    missing = str(tmp_path / "no-model")  # never read: the flags are checked first
    for flag, value in (("--threads", "-3"), ("--threads", "100000"), ("--reps", "0"), ("--batch-size", "0")):
        err = err_of(["measure", "--checkpoint", missing, flag, value], capsys)
        assert err.startswith(f"error: {flag[2:].replace('-', '_')}:"), err


# ----------------------------------------------------------------------------- finding 4: seed is the experiment's
def test_seed_in_a_sweep_and_in_set_is_the_experiment_seed(capsys):
    configs = SweepConfig(base=tiny_cfg(), grid={"seed": [0, 1, 2]}, name="s").expand()
    assert [c.name for c in configs] == ["s seed=0", "s seed=1", "s seed=2"]
    for c, seed in zip(configs, (0, 1, 2)):
        d = c.to_dict()
        assert c.seed == seed and {d[s]["seed"] for s in ("data", "train", "finetune", "prune")} == {seed}
    assert len({c.baseline_key() for c in configs}) == 3  # each seed trains its own baseline on its own split
    base = tiny_cfg()
    base.seed = 4
    assert SweepConfig(base=base, grid={"head_ratio": [0.5]}).expand()[0].to_dict()["prune"]["seed"] == 4

    from accelvit.commands.run import config_from_args
    from accelvit.cli import build_parser

    args = build_parser().parse_args(["run", *RUN, "--set", "seed=5"])
    d = config_from_args(args).to_dict()
    assert d["seed"] == 5 and {d[s]["seed"] for s in ("data", "train", "finetune", "prune")} == {5}


def test_sweeps_are_capped(monkeypatch):
    grid = {"head_ratio": [i / 1000 for i in range(1000)], "sparsity": [i / 1000 for i in range(1000)]}
    with pytest.raises(ConfigError) as info:
        SweepConfig(base=tiny_cfg(), grid=grid).points()  # 10^6 points: refused before any is built
    assert info.value.field == "grid" and "1,000,000 points" in str(info.value) and "300" in str(info.value)
    monkeypatch.setenv("ACCELVIT_MAX_SWEEP_RUNS", "2")
    with pytest.raises(ConfigError, match="3 points"):
        SweepConfig(base=tiny_cfg(), grid={"head_ratio": [0.1, 0.2, 0.3]}).expand()
    assert len(SweepConfig(base=tiny_cfg(), grid={"head_ratio": [0.1, 0.2]}).expand()) == 2


# ----------------------------------------------------------------------------- training that cannot lie
def test_a_diverging_fit_stops_naming_step_epoch_and_lr():
    from accelvit.data import DataConfig, load_data
    from accelvit.models import build_model
    from accelvit.train import TrainConfig, fit

    data = load_data(DataConfig(dataset="digits", img_size=16, batch_size=32, subset=64, augment=False))
    model = build_model("swin_pico", data.num_classes)
    with pytest.raises(TrainingError) as info:
        fit(model, data.train, TrainConfig(epochs=2, lr=1e30, device="cpu"))
    msg = str(info.value)
    assert "loss became nan" in msg and "epoch 1, step 2 of 2" in msg and "peak lr 1e+30" in msg


def test_train_lr_1e30_fails_saves_nothing_and_run_is_failed_not_cached(tmp_path, capsys):
    out = tmp_path / "m"
    err = err_of(["train", *TINY, "--epochs", "2", "--lr", "1e30", "--out", str(out)], capsys)
    assert "Training diverged" in err and "epoch 1" in err
    assert not out.exists()
    home = tmp_path / "store"
    assert main(["--home", str(home), "run", *RUN, "--lr", "1e30", "--epochs", "2", "--json"]) == 1
    run = json.loads(capsys.readouterr().out)
    assert run["status"] == "failed" and "Training diverged" in run["error"]
    assert not list(home.glob("baselines/*/baseline.json"))  # nothing cached as a baseline


def test_a_nan_model_is_never_cached_and_a_cached_one_is_not_used(tmp_path):
    from accelvit.models import build_model

    model = build_model("swin_pico", 10)
    with torch.no_grad():
        next(model.parameters()).fill_(math.nan)
    with pytest.raises(TrainingError, match="not cached"):
        save_cached(model, "k", {}, class_names=None, meta={}, home=tmp_path)
    assert not (tmp_path / "baselines" / "k").exists()
    from accelvit import serialize  # an entry an older accelvit wrote

    serialize.save(model, tmp_path / "baselines" / "k2")
    (tmp_path / "baselines" / "k2" / "baseline.json").write_text("{}")
    warnings = []
    assert load_cached("k2", tmp_path, warn=warnings.append) is None
    assert "not finite" in warnings[0]


# ----------------------------------------------------------------------------- finding 5: nothing overwritten
def test_out_holding_a_model_or_other_files_is_refused_unless_overwrite(tmp_path, capsys):
    model = tmp_path / "m"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(model)]) == 0
    capsys.readouterr()
    before = (model / "model.safetensors").read_bytes()
    err = err_of(["train", *TINY, "--epochs", "1", "--seed", "1", "--out", str(model)], capsys)
    assert "already holds a saved model" in err and "--overwrite" in err
    assert (model / "model.safetensors").read_bytes() == before
    err = err_of(["prune", "--checkpoint", str(model), "--out", str(model), *TINY[2:]], capsys)
    assert "is the checkpoint folder" in err
    err = err_of(["prune", "--checkpoint", str(model), "--out", str(tmp_path), "--overwrite", *TINY[2:]], capsys)
    assert "contains the checkpoint folder" in err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    err = err_of(["train", *TINY, "--epochs", "1", "--overwrite", "--out", str(tmp_path / "mine")], capsys)
    assert "other things than a saved model (notes.txt)" in err
    assert main(["train", *TINY, "--epochs", "1", "--seed", "1", "--overwrite", "--out", str(model)]) == 0
    assert (model / "model.safetensors").read_bytes() != before and (model / "metrics.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind


# ----------------------------------------------------------------------------- finding 8: names shown as text
NASTY = "\x1b[31mred\x1b[0m [click](https://evil.example) ![x](https://t.example/p.png) <a href='x'>a</a> %{x}"


def test_escapes_make_names_inert():
    t = terminal_safe(NASTY)
    assert "\x1b" not in t and "\\x1b[31m" in t
    assert terminal_safe("line\nnext\r\u202eevil") == "line\\x0anext\\x0d\\u202eevil"
    m = md_escape(NASTY)
    assert "\x1b" not in m and re.search(r"(?<!\\)[\[\]()<>!]", m) is None  # every special escaped
    p = plotly_escape(NASTY)
    assert "<a" not in p and "&lt;a" in p and "%{" not in p


def test_runs_run_and_sweep_print_names_escaped_and_runs_limit_is_checked(tmp_path, capsys):
    from accelvit.runs import FINISHED, RunStore

    store = RunStore(tmp_path / "home")
    ids = [store.create_run(tiny_cfg().to_dict(), name=NASTY if i == 0 else f"run {i}", status=FINISHED)[0]
           for i in range(3)]
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31mred" in out and all(i in out for i in ids)
    err = err_of(["runs", "--limit", "-1"], capsys)
    assert err.startswith("error: --limit:")
    assert main(["runs", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert sum(i in out for i in ids) == 2
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"name": NASTY, "base": tiny_cfg().to_dict(), "grid": {"head_ratio": [0.5]}}))
    assert main(["sweep", "--config", str(sweep), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31mred" in out


def test_run_on_a_checkpoint_splits_with_its_seed_and_refuses_another(tmp_path, capsys):
    from accelvit.cli import build_parser
    from accelvit.commands.run import config_from_args

    model = tmp_path / "m"
    assert main(["train", *TINY, "--epochs", "1", "--seed", "3", "--out", str(model)]) == 0
    cfg = config_from_args(build_parser().parse_args(["run", "--baseline", str(model), "--subset", "64"]))
    assert cfg.seed == 3 and cfg.to_dict()["data"]["seed"] == 3  # the test split is the one it never trained on
    with pytest.raises(ConfigError) as info:
        config_from_args(build_parser().parse_args(["run", "--baseline", str(model), "--seed", "1"]))
    assert info.value.field == "seed" and "test split" in str(info.value)
