"""The Experiment form without Streamlit: defaults, validation by field, data checks, uploads, estimate."""

from __future__ import annotations

import pytest

from accelvit.data import missing_data_files
from accelvit.errors import InputError
from accelvit.experiment import ExperimentConfig
from accelvit.experiment.estimate import estimate_cost, estimate_from_key
from accelvit.ui import forms


@pytest.fixture(autouse=True)
def tmp_is_a_data_root(tmp_path_factory, monkeypatch):
    """The form reads only folders under the allowed roots (tests/test_privacy.py); pytest's temporary
    folders are one here."""
    monkeypatch.setenv("ACCELVIT_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))


def test_defaults_are_the_documented_digits_recipe():
    res = forms.validate_form({})
    assert res.ok, res.errors
    cfg = res.config
    assert (cfg.data.dataset, cfg.model, cfg.data.img_size, cfg.train.epochs) == ("digits", "swin_micro", 32, 20)
    assert (cfg.prune.head_ratio, cfg.prune.rank_ratio, cfg.prune.sparsity) == (0.5, 0.5, 0.5)
    assert not cfg.data.augment  # random crops cost the 8x8 digits ~8 points at 20 epochs
    assert res.sweep is None


def test_quick_demo_is_small_and_valid():
    cfg = forms.quick_demo_config()
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.data.dataset == "digits" and cfg.data.img_size <= 32 and cfg.train.epochs <= 8
    assert cfg.prune.head_ratio > 0 and cfg.prune.rank_ratio and cfg.prune.sparsity > 0


def test_errors_are_collected_per_field_and_mapped_to_widget_slots():
    res = forms.validate_form({"train.lr": 0.0, "finetune.epochs": -1, "data.dataset": "folder", "data.root": "",
                               "svd_mode": "off", "prune.activation_aware": True})
    assert not res.ok and res.config is None
    assert set(res.errors) >= {"train.lr", "finetune.epochs", "data.root", "prune.activation_aware"}
    assert "positive" in res.errors["train.lr"]
    assert "needs SVD" in res.errors["prune.activation_aware"]
    for f in res.errors:
        assert forms.slot_of(f) == f
    assert forms.slot_of("data.val_fraction") == "general"
    assert forms.slot_of("grid.head_ratio") == "sweep"


def test_missing_data_files_give_a_clear_message(tmp_path):
    msg = missing_data_files("cifar10", str(tmp_path))
    assert "CIFAR-10 not found" in msg and str(tmp_path) in msg and "download" in msg
    assert missing_data_files("cifar10", str(tmp_path), download=True) is None
    assert "Caltech-101 not found" in missing_data_files("caltech101", str(tmp_path))
    assert "does not exist" in missing_data_files("folder", str(tmp_path / "nope"))
    assert "no class sub-folders" in missing_data_files("folder", str(tmp_path))
    (tmp_path / "cat").mkdir()
    assert missing_data_files("folder", str(tmp_path)) is None
    assert missing_data_files("digits", None) is None
    res = forms.validate_form({"data.dataset": "cifar10", "data.root": str(tmp_path / "c10")})
    assert "CIFAR-10 not found" in res.errors["data.root"]


def test_sweep_values_are_parsed_and_checked():
    res = forms.validate_form({"sweep": True, "sweep.head_ratio": "0.25, 0.5", "sweep.rank_ratio": "none 0.3"})
    assert res.ok, res.errors
    assert res.sweep.grid == {"head_ratio": [0.25, 0.5], "rank_ratio": [None, 0.3]}
    assert len(res.sweep.expand()) == 4
    bad = forms.validate_form({"sweep": True, "sweep.sparsity": "0.5, abc"})
    assert "not a number" in bad.errors["sweep.sparsity"]
    out_of_range = forms.validate_form({"sweep": True, "sweep.head_ratio": "0.5, 1.5"})
    assert "1.5" in out_of_range.errors["sweep.head_ratio"]
    empty = forms.validate_form({"sweep": True})
    assert "at least one" in empty.errors["sweep"]


def test_model_sources(tmp_path):
    up = forms.validate_form({"model_source": "timm", "timm_weights": "upload"})
    assert "Upload a weights file" in up.errors["weights_path"]
    ck = forms.validate_form({"model_source": "checkpoint", "baseline_checkpoint": str(tmp_path)})
    assert "baseline_checkpoint" in ck.errors
    rand = forms.validate_form({"model_source": "timm", "timm_weights": "random",
                                "timm_model": "swin_tiny_patch4_window7_224", "data.img_size": 224})
    assert rand.ok and rand.config.model == "swin_tiny_patch4_window7_224" and not rand.config.pretrained


def test_weights_upload_is_stored_by_content(tmp_path):
    p = forms.save_weights_upload("my weights.safetensors", b"abc", tmp_path)
    assert p.read_bytes() == b"abc" and p.parent == tmp_path / "uploads" and " " not in p.name
    assert forms.save_weights_upload("other.safetensors", b"abc", tmp_path).name.split("-")[0] == p.name.split("-")[0]
    with pytest.raises(InputError, match="not a weights file"):
        forms.save_weights_upload("notes.txt", b"abc", tmp_path)
    with pytest.raises(InputError, match="empty"):
        forms.save_weights_upload("w.pth", b"", tmp_path)
    with pytest.raises(InputError, match="at most"):
        forms.save_weights_upload("w.pth", b"x" * 100, tmp_path, max_bytes=10)


def test_estimate_shows_the_pruned_cost_before_launching():
    cfg = forms.validate_form({"model": "swin_pico", "data.img_size": 16, "prune.head_ratio": 0.5,
                               "svd_mode": "off", "prune.sparsity": 0.5}).config
    est = estimate_cost(cfg)
    b, a = est["before"], est["after"]
    assert a["dense_flops"] < b["dense_flops"] and a["params"] < b["params"]
    assert a["effective_flops"] < a["dense_flops"]  # sparsity counts in effective FLOPs only
    assert a["nonzero_params"] < 0.75 * a["params"]
    none = estimate_cost(forms.validate_form({"model": "swin_pico", "data.img_size": 16,
                                                    "prune.head_ratio": 0.0, "svd_mode": "off",
                                                    "prune.sparsity": 0.0}).config)
    assert none["after"]["dense_flops"] == none["before"]["dense_flops"]


def test_flop_target_field_reaches_the_config_sweep_and_estimate():
    res = forms.validate_form({"model": "swin_micro", "data.img_size": 16, "prune.target_flops": 0.5,
                               "prune.head_criterion": "l1", "prune.mlp_criterion": "l1", "prune.mlp_ratio": 0.5,
                               "svd_mode": "off", "prune.sparsity": 0.0})
    assert res.ok, res.errors
    assert res.config.prune.target_flops == 0.5
    est = estimate_cost(res.config)
    assert est["after"]["dense_flops"] == pytest.approx(0.5 * est["before"]["dense_flops"], rel=0.01)
    assert forms.validate_form({}).config.prune.target_flops is None  # 0 = off
    bad = forms.validate_form({"prune.target_flops": 0.5, "svd_mode": "energy"})
    assert "energy" in bad.errors["prune.target_flops"]
    sweep = forms.validate_form({"sweep": True, "sweep.target_flops": "0.7, 0.5"})
    assert sweep.ok and sweep.sweep.grid == {"target_flops": [0.7, 0.5]}


def test_an_emptied_number_field_is_an_error_on_that_field():
    res = forms.validate_form({"data.img_size": None, "train.lr": None, "seed": None, "finetune.epochs": -1})
    assert not res.ok and res.config is None
    assert res.errors["data.img_size"] == "Image size is empty: enter a number."
    assert res.errors["train.lr"] == "Baseline learning rate is empty: enter a number."
    assert "Seed is empty" in res.errors["seed"]
    assert "finetune.epochs" in res.errors  # the other fields are still checked
    for f in ("data.img_size", "train.lr", "seed"):
        assert forms.slot_of(f) == f
    assert forms.validate_form({"data.img_size": 0}).errors  # zero is a value (checked), not empty


def test_a_sweep_reports_every_bad_value_of_every_field_in_order():
    res = forms.validate_form({"sweep": True, "sweep.head_ratio": "1.5, x, 0.5, -0.1",
                               "sweep.rank_ratio": "none, 0, 2", "sweep.target_flops": "0, 0.5, 1"})
    heads = res.errors["sweep.head_ratio"]
    assert heads.startswith("Head ratios: '1.5' is outside [0, 1); 'x' is not a number; '-0.1' is outside [0, 1)")
    assert "'0' is outside (0, 1]" in res.errors["sweep.rank_ratio"] and "'2'" in res.errors["sweep.rank_ratio"]
    assert "none" not in res.errors["sweep.rank_ratio"].split("outside")[0]  # none = no SVD is fine
    flops = res.errors["sweep.target_flops"]
    assert "'1' is outside (0, 1)" in flops and "'0'" not in flops  # 0 = off, as in its number field
    ok = forms.validate_form({"sweep": True, "sweep.target_flops": "0, 0.5", "sweep.head_ratio": "0.25 0.75"})
    assert ok.ok, ok.errors
    assert ok.sweep.grid == {"head_ratio": [0.25, 0.75], "target_flops": [None, 0.5]}


def test_sweep_summary_and_extremes():
    res = forms.validate_form({"sweep": True, "sweep.head_ratio": "0.5, 0.25, 0.75",
                               "sweep.target_flops": "0.5, 0.3", "sweep.rank_ratio": "none, 0.5"})
    assert res.ok, res.errors
    assert forms.sweep_summary(res.sweep) == ("12 runs: head ratio 0.25-0.75 (3 values) x rank ratio none, 0.5 x "
                                              "FLOP target 0.3-0.5")
    ext = forms.sweep_extremes(res.sweep)
    light, light_pt = ext["lightest"]
    heavy, heavy_pt = ext["heaviest"]
    assert light_pt == {"head_ratio": 0.25, "rank_ratio": None, "target_flops": 0.5}
    assert heavy_pt == {"head_ratio": 0.75, "rank_ratio": 0.5, "target_flops": 0.3}
    assert (light.prune.head_ratio, light.prune.rank_ratio, light.prune.target_flops) == (0.25, None, 0.5)
    assert (heavy.prune.head_ratio, heavy.prune.rank_ratio, heavy.prune.target_flops) == (0.75, 0.5, 0.3)
    assert res.sweep.base.prune.head_ratio == 0.5  # the sweep itself is left as it was
    assert forms.describe_point(heavy_pt) == "head ratio 0.75, rank ratio 0.5, FLOP target 0.3"


def test_timm_models_default_to_offline_weights(tmp_path):
    assert list(forms.TIMM_WEIGHTS)[0] == forms.DEFAULTS["timm_weights"] == "random"
    assert "(needs network)" in forms.TIMM_WEIGHTS["pretrained"]
    res = forms.validate_form({"model_source": "timm", "data.img_size": 224})
    assert res.ok and not res.config.pretrained and res.config.weights_path is None
    assert "Give the path" in forms.validate_form({"model_source": "timm", "timm_weights": "path"}).errors[
        "weights_path"]
    missing = forms.validate_form({"model_source": "timm", "timm_weights": "path",
                                   "timm_weights_path": str(tmp_path / "nope.safetensors")})
    assert "is not a file" in missing.errors["weights_path"]
    w = tmp_path / "w.safetensors"
    w.write_bytes(b"x")
    local = forms.validate_form({"model_source": "timm", "timm_weights": "path", "timm_weights_path": f" {w} ",
                                 "data.img_size": 224})
    assert local.ok and local.config.weights_path == str(w) and not local.config.pretrained
    hub = forms.validate_form({"model_source": "timm", "timm_weights": "pretrained", "data.img_size": 224})
    assert hub.ok and hub.config.pretrained  # only when chosen


def test_estimate_key_holds_only_what_changes_the_estimate(tmp_path):
    base = {"model": "swin_pico", "data.img_size": 16}

    def key(**kw):
        res = forms.validate_form({**base, **kw})
        assert res.ok, res.errors
        return forms.estimate_key(res.config)

    k0 = key()
    same = [key(**{"train.epochs": 3}), key(**{"train.lr": 0.01}), key(**{"finetune.epochs": 1}),
            key(**{"finetune.lr": 1e-3}), key(name="other"), key(seed=5), key(device="cpu"),
            key(**{"distill.alpha": 0.0}), key(**{"prune.iht_interval": 4}), key(**{"prune.iht_ramp_frac": 0.2}),
            key(**{"prune.head_criterion": "l1"}), key(**{"data.batch_size": 8}), key(**{"data.subset": 100}),
            key(**{"prune.activation_aware": True}), key(**{"prune.target_rule": "uniform"}),
            key(control=True), key(measure_latency=False), key(**{"data.dataset": "cifar10", "data.download": True})]
    assert all(k == k0 for k in same)  # digits and CIFAR-10 both have 10 classes
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    different = [key(**{"prune.head_ratio": 0.25}), key(**{"data.img_size": 32}), key(model="swin_micro"),
                 key(**{"prune.sparsity": 0.0}), key(svd_mode="off"), key(**{"prune.rank_ratio": 0.25}),
                 key(**{"prune.mlp_ratio": 0.5}), key(**{"prune.head_criterion": "random"}),
                 key(**{"data.dataset": "folder", "data.root": str(tmp_path)})]
    assert all(k != k0 for k in different)
    assert different[-1]["num_classes"] == 2
    assert estimate_cost(forms.validate_form(base).config) == estimate_from_key(k0)  # the key is all it reads
