"""The Experiment form without Streamlit: defaults, validation by field, data checks, uploads, estimate."""

from __future__ import annotations

import pytest

from accelvit.data import missing_data_files
from accelvit.errors import InputError
from accelvit.experiment import ExperimentConfig
from accelvit.experiment.estimate import estimate_cost
from accelvit.ui import forms


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
