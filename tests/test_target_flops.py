"""FLOP-targeted pruning: the solved config really prunes to the target (within 1%)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from accelvit.errors import ConfigError
from accelvit.metrics import count_flops
from accelvit.models import build_model
from accelvit.prune import PruneConfig, fixed_calibration, prune, prune_to_target, solve_target_flops


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return build_model("swin_micro", num_classes=10).eval()


@pytest.mark.parametrize("target", [0.7, 0.5, 0.3])
def test_solved_config_prunes_to_target_within_1pct(micro, target):
    base = PruneConfig(head_ratio=0.5, mlp_ratio=0.9, rank_ratio=0.5,
                       head_criterion="l1", mlp_criterion="l1", target_rule="uniform")
    before = count_flops(micro).total
    solved, info = solve_target_flops(micro, base, target)
    assert count_flops(micro).total == before  # the search works on copies
    # the real prune() of the solved config hits the target
    pruned, _ = prune(copy.deepcopy(micro), solved)
    flops = count_flops(pruned).total
    assert abs(flops / (target * before) - 1) <= 0.01
    assert flops == info["achieved_flops"] and info["within_tolerance"]
    # uniform rule: all three knobs are used, heads:svd keep the base direction's 1:1 ratio
    assert solved.head_ratio > 0 and solved.mlp_ratio > 0 and solved.rank_ratio < 1
    if not info["fine_adjusted"]:
        assert solved.head_ratio == pytest.approx(1 - solved.rank_ratio, abs=1e-5)
    assert solved.head_criterion == "l1" and solved.sparsity == base.sparsity
    assert info["baseline_flops"] == before and info["n_evaluations"] == len(info["evaluations"])


@pytest.mark.parametrize("svd", [False, True])
def test_prune_to_target_with_taylor_and_shuffling_loader(svd):
    torch.manual_seed(0)
    model = build_model("swin_pico", num_classes=2).eval()
    ds = TensorDataset(torch.randn(48, 3, 16, 16), torch.randint(0, 2, (48,)))
    loader = DataLoader(ds, batch_size=8, shuffle=True)  # a different order every pass
    # prunes nothing: the direction defaults to heads + MLP alike; or heads + MLP + activation-aware SVD
    base = (PruneConfig(head_ratio=0.3, mlp_ratio=0.6, rank_ratio=0.7, activation_aware=True, calib_batches=2)
            if svd else PruneConfig(calib_batches=2))
    before = count_flops(model).total
    model, report, solved, info = prune_to_target(model, base, 0.6, calib_loader=loader)
    want = {"heads": 0.5, "mlp": 1.0, "svd": 0.5} if svd else {"heads": 1.0, "mlp": 1.0, "svd": 0.0}
    assert info["direction"] == pytest.approx(want)
    assert (solved.rank_ratio is not None) == svd and solved.head_criterion == "taylor"
    assert info["verified_with_prune"] and info["shortcut"]  # the shortcut search agreed with prune()
    assert info["calibration_batches"] == 2
    # the same fixed batches in the search and the final prune: exactly the searched structure
    assert info["final_flops"] == info["achieved_flops"] == count_flops(model).total
    assert abs(info["final_flops"] / (0.6 * before) - 1) <= 0.01
    assert report.params_after < report.params_before


def test_fixed_calibration_keeps_batches():
    batches = [(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))] * 5
    assert len(fixed_calibration(iter(batches), 3)) == 3
    assert fixed_calibration(None, 3) is None


def test_unreachable_and_invalid_targets_are_explained(micro):
    heads_only = PruneConfig(head_ratio=0.5, head_criterion="l1")
    with pytest.raises(ConfigError, match="cannot be reached"):
        solve_target_flops(micro, heads_only, 0.3)
    for bad in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="target_flops"):
            solve_target_flops(micro, heads_only, bad)
    with pytest.raises(ConfigError, match="energy"):
        solve_target_flops(micro, PruneConfig(energy=0.9, head_criterion="l1"), 0.5)
    with pytest.raises(ConfigError, match="rule"):
        solve_target_flops(micro, heads_only, 0.8, rule="greedy")
