"""End to end on digits (swin_micro): baseline, then 50% heads + rank 0.5 + 50% IHT sparsity
with a short finetune, recovers to within 3 points; the CLI writes a loadable model + report.

Runs at 16 px (digits are 8x8 images, so nothing is lost) without augmentation or drop-path
so that the baseline trains in 8 epochs; about 30 s on one CPU thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from accelvit.cli import main as cli_main
from accelvit.prune import LowRankLinear, PruneConfig, count_nonzero, count_params, make_iht_hook, prune
from accelvit.prune.units import window_attentions
from accelvit.serialize import load
from accelvit.train import TrainConfig, evaluate, fit


@pytest.fixture
def baseline(digits_baseline):
    """The trained digits swin_micro shared by the suite (conftest); tests reload it from its checkpoint."""
    return digits_baseline


def test_prune_and_finetune_recovers_within_3_points(baseline) -> None:
    model, data, base_top1, ckpt = baseline
    model, _ = load(ckpt)   # a fresh copy of the baseline
    assert base_top1 > 0.85, f"the baseline did not train ({base_top1:.3f}); the recovery claim would be empty"
    cfg = PruneConfig(head_ratio=0.5, rank_ratio=0.5, activation_aware=True, sparsity=0.5, iht_interval=4,
                      calib_batches=4)
    params0 = count_params(model)
    heads0 = sum(a.num_heads for _, a in window_attentions(model))
    model, report = prune(model, cfg, data.train)
    assert sum(a.num_heads for _, a in window_attentions(model)) == heads0 - heads0 // 2
    assert sum(isinstance(m, LowRankLinear) for m in model.modules()) > 0
    hook = make_iht_hook(model, cfg)
    fit(model, data.train, TrainConfig(epochs=3, lr=1.5e-3, warmup_frac=0.0, device="cpu", seed=1), hooks=[hook])
    after = evaluate(model, data.test, device="cpu").top1
    params = dict(model.named_parameters())
    for name in hook.param_names:
        assert int(torch.count_nonzero(params[name])) == round(0.5 * params[name].numel())
    assert count_params(model) < 0.5 * params0
    assert count_nonzero(model) < 0.3 * params0
    assert after >= base_top1 - 0.03, f"baseline {base_top1:.3f}, after pruning + finetune {after:.3f}"


def test_cli_prune_writes_a_loadable_model_and_report(baseline, tmp_path: Path) -> None:
    _model, _data, base_top1, ckpt = baseline
    out = tmp_path / "pruned"
    rc = cli_main(["prune", "--checkpoint", str(ckpt), "--dataset", "digits", "--no-augment", "--subset", "256",
                   "--head-ratio", "0.3", "--head-criterion", "l1", "--mlp-ratio", "0.25", "--rank-ratio", "0.5",
                   "--sparsity", "0.5", "--iht-interval", "2", "--finetune-epochs", "1", "--device", "cpu",
                   "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    # the same report format as a dashboard run (accelvit.experiment.Experiment.report)
    assert {"run_id", "name", "config", "metrics", "prune_report", "baseline", "split", "class_names",
            "timings"} <= set(report)
    metrics = report["metrics"]
    for key in ("before", "after"):
        assert {"top1", "params", "nonzero_params"} <= set(metrics[key])
    assert metrics["before"]["top1"] == pytest.approx(base_top1)
    assert metrics["after"]["params"] < metrics["before"]["params"]
    assert metrics["after"]["nonzero_params"] < metrics["after"]["params"]
    assert {e["kind"] for e in report["prune_report"]["layers"]} >= {"heads", "mlp", "lowrank"}
    assert report["baseline"]["source"] == "checkpoint" and report["config"]["baseline_checkpoint"] == str(ckpt)
    model, doc = load(out)
    assert count_params(model) == metrics["after"]["params"]
    assert count_nonzero(model) == metrics["after"]["nonzero_params"]
    assert doc["meta"]["config"]["prune"]["head_ratio"] == 0.3
    assert (out / "layers_after.csv").exists()
    # the model card is written from these measured numbers (read back here, not typed in)
    text = (out / "README.md").read_text()
    assert f"| top-1 accuracy (test) | {metrics['before']['top1']:.2%} | {metrics['pruned']['top1']:.2%} | " \
           f"{metrics['after']['top1']:.2%} |" in text
    assert f"| nonzero parameters | {metrics['before']['nonzero_params']:,} | " in text
    assert f"{metrics['after']['nonzero_params']:,} |" in text
    assert cli_main(["prune", "--checkpoint", str(ckpt), "--head-ratio", "1.5", "--out", str(tmp_path / "x")]) == 2
