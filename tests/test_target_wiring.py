"""``target_flops`` as a user setting: PruneConfig -> prune() -> report, CLI flags, save/load."""

from __future__ import annotations

import pytest
import torch

from accelvit import serialize
from accelvit.cli import build_parser
from accelvit.commands.prune import prune_config_from_args
from accelvit.commands.run import config_from_args
from accelvit.errors import ConfigError
from accelvit.metrics import count_flops
from accelvit.models import build_model
from accelvit.prune import PruneConfig, prune


def test_prune_with_target_flops_hits_the_target_and_reports_the_search(tmp_path):
    torch.manual_seed(0)
    model = build_model("swin_micro", 10).eval()
    before = count_flops(model).total
    # the given ratios set the direction of the search (heads and MLP width alike here)
    cfg = PruneConfig(target_flops=0.5, head_ratio=0.5, mlp_ratio=0.5, head_criterion="l1", mlp_criterion="l1")
    model, report = prune(model, cfg)
    after = count_flops(model).total
    assert abs(after / before - 0.5) <= 0.01 * 0.5
    assert report.target["within_tolerance"] and report.target["final_flops"] == after
    assert report.config["target_flops"] == 0.5
    assert report.config["head_ratio"] > 0 and report.config["mlp_ratio"] > 0
    assert report.heads_after < report.heads_before
    out = serialize.save(model, tmp_path / "m")
    loaded, _ = serialize.load(out)
    assert count_flops(loaded).total == after


@pytest.mark.parametrize("kwargs,field", [({"target_flops": 1.5}, "target_flops"),
                                          ({"target_flops": 0.0}, "target_flops"),
                                          ({"target_flops": 0.5, "energy": 0.9}, "target_flops"),
                                          ({"target_rule": "greedy"}, "target_rule")])
def test_bad_target_settings_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        PruneConfig(**kwargs).validate()
    assert e.value.field == field


def test_target_needs_calibration_for_taylor():
    assert PruneConfig(target_flops=0.5).needs_calibration  # taylor is the default criterion
    assert not PruneConfig(target_flops=0.5, head_criterion="l1", mlp_criterion="l1").needs_calibration
    assert not PruneConfig(target_flops=0.5).is_noop()
    with pytest.raises(ConfigError, match="calib"):
        prune(build_model("swin_pico", 10), PruneConfig(target_flops=0.5))


def test_cli_flags_reach_the_config():
    parser = build_parser()
    args = parser.parse_args(["prune", "--checkpoint", "c", "--out", "o", "--target-flops", "0.4"])
    assert prune_config_from_args(args).target_flops == 0.4
    args = parser.parse_args(["run", "--dataset", "digits", "--target-flops", "0.6"])
    assert config_from_args(args).prune.target_flops == 0.6
