"""Recovery after pruning in the one runner: distillation from the unpruned baseline, and gradual
pruning inside the finetune's budget."""

from __future__ import annotations

import pytest
import torch

from accelvit.data import DataConfig
from accelvit.distill import DistillConfig, DistillLoss
from accelvit.experiment import Experiment, ExperimentConfig, StageFinished
from accelvit.metrics import count_flops
from accelvit.prune import PruneConfig
from accelvit.prune.units import window_attentions
from accelvit.train import TrainConfig


def tiny(distill: DistillConfig | None = None, **prune) -> ExperimentConfig:
    return ExperimentConfig(
        model="swin_pico", data=DataConfig(dataset="digits", img_size=16, batch_size=16, subset=96, eval_subset=32,
                                           augment=False),
        train=TrainConfig(epochs=1), finetune=TrainConfig(epochs=2, lr=5e-4),
        distill=distill or DistillConfig(), prune=PruneConfig(head_criterion="l1", mlp_criterion="l1", **prune),
        device="cpu", measure_latency=False)


def _heads(model) -> int:
    return sum(a.num_heads for _, a in window_attentions(model))


def test_finetune_distils_from_the_unpruned_baseline_and_frees_it(tmp_path):
    seen = {}

    def finetune(exp: Experiment):
        seen["teacher_heads"] = _heads(exp.teacher)
        seen["student_heads"] = _heads(exp.model)
        seen["loss"] = exp.loss_fn(exp.cfg.finetune)
        return Experiment.stage_finetune(exp)

    exp = Experiment(tiny(target_flops=0.6), home=tmp_path, overrides={"finetune": finetune},
                     stages=("data", "baseline", "before", "prune", "finetune", "after"))
    before_heads = None

    def baseline(e: Experiment):
        nonlocal before_heads
        info = Experiment.stage_baseline(e)
        before_heads = _heads(e.baseline_model)
        return info

    exp.overrides["baseline"] = baseline
    res = exp.run()
    assert seen["teacher_heads"] == before_heads > seen["student_heads"]  # the teacher is the unpruned model
    assert isinstance(seen["loss"], DistillLoss) and seen["loss"].config.alpha == 0.7
    assert res.timings["finetune"] > 0 and exp.teacher is None  # freed after the finetune
    # switched off: no teacher is kept at all
    off = Experiment(tiny(DistillConfig(alpha=0.0), target_flops=0.6), home=tmp_path,
                     stages=("data", "baseline", "prune"))
    off.run()
    assert off.teacher is None and off.loss_fn(off.cfg.finetune) is None


def test_distilled_finetune_differs_from_the_plain_one(tmp_path):
    models = []
    for alpha in (0.0, 0.9):
        res = Experiment(tiny(DistillConfig(alpha=alpha), target_flops=0.6), home=tmp_path,
                         stages=("data", "baseline", "prune", "finetune")).run()
        models.append(res.model.state_dict())
    # same baseline (cached), same prune, same batches: only the loss differs
    assert models[0].keys() == models[1].keys()
    assert any(not torch.equal(models[0][k], models[1][k]) for k in models[0])


def test_gradual_pruning_reaches_the_target_within_the_same_budget(tmp_path):
    one = Experiment(tiny(target_flops=0.5), home=tmp_path, stages=("data", "baseline", "prune", "finetune")).run()
    finished = {}
    exp = Experiment(tiny(target_flops=0.5, prune_steps=3), home=tmp_path,
                     stages=("data", "baseline", "prune", "finetune"),
                     on_event=lambda e: finished.update({e.stage: e.info}) if isinstance(e, StageFinished) else None)
    grad = exp.run()
    shape = tuple(exp.data.input_size)
    steps = grad.prune_report["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert [round(s["goal_of_baseline_flops"], 4) for s in steps] == [round(1 - 0.5 * i / 3, 4) for i in (1, 2, 3)]
    for s in steps:
        assert abs(s["achieved_of_baseline_flops"] / s["goal_of_baseline_flops"] - 1) <= 0.011
    # the final model sits at the same target as the one-shot prune
    assert abs(count_flops(grad.model, shape).total / count_flops(one.model, shape).total - 1) <= 0.02
    assert sorted(n for n, _ in grad.model.named_parameters()) == sorted(n for n, _ in one.model.named_parameters())
    # the recoveries between steps come out of the finetune's budget, not on top of it
    recovered = sum(s.get("recovery_steps", 0) for s in steps)
    total = len(exp.data.train) * 2
    assert recovered == 2 * (total // 3) > 0
    assert recovered + finished["finetune"]["steps"] == total
    assert grad.prune_report["params_before"] > grad.prune_report["params_after"]
    assert grad.prune_report["config"]["prune_steps"] == 3


def test_gradual_pruning_needs_a_flop_target():
    with pytest.raises(Exception, match="prune_steps"):
        tiny(head_ratio=0.5, prune_steps=2).validate()


def test_new_switches_are_cli_flags(digits_baseline, tmp_path):
    from accelvit.cli import build_parser
    from accelvit.commands.prune import experiment_config_from_args
    from accelvit.commands.run import config_from_args

    args = build_parser().parse_args(["run", "--dataset", "digits", "--target-flops", "0.5", "--target-rule",
                                      "uniform", "--prune-steps", "2", "--kd-alpha", "0", "--kd-temperature", "3"])
    cfg = config_from_args(args)
    assert (cfg.prune.target_rule, cfg.prune.prune_steps, cfg.distill.alpha, cfg.distill.temperature) == \
        ("uniform", 2, 0.0, 3.0)
    ckpt = digits_baseline[3]
    args = build_parser().parse_args(["prune", "--checkpoint", str(ckpt), "--dataset", "digits", "--target-flops",
                                      "0.5", "--kd-alpha", "0.5", "--out", str(tmp_path / "out")])
    cfg = experiment_config_from_args(args)
    assert (cfg.prune.target_rule, cfg.prune.prune_steps, cfg.distill.alpha) == ("sensitivity", 1, 0.5)
    assert cfg.prune.iht_ramp_frac == PruneConfig().iht_ramp_frac  # one default, not the CLI's own


def test_gradual_pruning_with_svd_factorises_in_the_last_step_only(tmp_path):
    from accelvit.layers import LowRankLinear

    exp = Experiment(tiny(target_flops=0.5, prune_steps=2, head_ratio=0.5, mlp_ratio=0.5, rank_ratio=0.6),
                     home=tmp_path, stages=("data", "baseline", "prune"))
    res = exp.run()
    assert any(isinstance(m, LowRankLinear) for m in res.model.modules())
    steps = res.prune_report["steps"]
    assert abs(steps[-1]["achieved_of_baseline_flops"] / 0.5 - 1) <= 0.011
    assert {layer["step"] for layer in res.prune_report["layers"] if layer["kind"] == "lowrank"} == {2}
