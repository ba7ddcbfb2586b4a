"""``PruneReport.sensitivity``: what a real prune of a tiny Swin records per layer, and that it matches the
pruned model (issue 14, part 4: the Results page's sensitivity heatmap reads these rows)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from accelvit.layers import LowRankLinear
from accelvit.models import build_model
from accelvit.prune import PruneConfig, fixed_calibration, prune
from accelvit.prune.importance import head_groups, score
from accelvit.prune.calibration import Calibration
from accelvit.prune.sensitivity import MEASURES, rank_row, unit_row
from accelvit.prune.units import linear_layers, mlps, window_attentions


@pytest.fixture(scope="module")
def pico():
    torch.manual_seed(0)
    model = build_model("swin_pico", num_classes=2).eval()
    ds = TensorDataset(torch.randn(32, 3, 16, 16), torch.randint(0, 2, (32,)))
    return model, fixed_calibration(DataLoader(ds, batch_size=8), 2)


def _rows(report, kind):
    return [r for r in report.sensitivity if r["kind"] == kind]


def test_a_real_prune_records_heads_mlp_and_rank_rows_matching_the_pruned_model(pico):
    base, calib = pico
    model = copy.deepcopy(base)
    cfg = PruneConfig(head_ratio=0.5, mlp_ratio=0.5, rank_ratio=0.5, activation_aware=True, calib_batches=2)
    # the scores the prune ranks by, computed the same way on the same batches
    cal = Calibration(calib, 2, torch.device("cpu"))
    head_scores = score(base, head_groups(base), "taylor", cal)
    pruned, report = prune(model, cfg, calib)
    assert json.loads(json.dumps(report.to_dict()))["sensitivity"] == report.sensitivity  # plain JSON
    attns, mlp_mods = dict(window_attentions(pruned)), dict(mlps(pruned))

    heads = _rows(report, "heads")
    assert [r["module"] for r in heads] == [n for n, _ in window_attentions(base)]
    for r in heads:
        assert r["measure"] == "taylor" and r["kept"] == attns[r["module"]].num_heads
        assert r["units"] == dict(window_attentions(base))[r["module"]].num_heads
        s = head_scores[r["module"]].double()
        assert r["score_sum"] == pytest.approx(float(s.sum()), rel=1e-5)
        top = s.sort(descending=True).values
        assert r["score_mean_kept"] == pytest.approx(float(top[: r["kept"]].mean()), rel=1e-5)
        assert r["score_mean_removed"] == pytest.approx(float(top[r["kept"]:].mean()), rel=1e-5)
        assert r["score_mean_kept"] >= r["score_mean_removed"]  # the prune kept the higher-scored heads

    mlp = _rows(report, "mlp")
    assert [r["module"] for r in mlp] == [n for n, _ in mlps(base)]
    for r in mlp:
        assert r["kept"] == mlp_mods[r["module"]].fc1.out_features == r["units"] // 2
        assert r["score_mean_kept"] >= r["score_mean_removed"]

    ranks = _rows(report, "rank")
    lows = {n: m for n, m in linear_layers(pruned, cfg.svd_layers)}
    assert [r["module"] for r in ranks] == list(lows)
    for r in ranks:
        low = lows[r["module"]]
        assert isinstance(low, LowRankLinear) and r["kept"] == low.rank and not r["dense"]
        # SVD runs after the heads/MLP surgery: the full rank is that of the narrowed layer
        assert r["units"] == min(r["in_features"], r["out_features"]) == min(low.in_features, low.out_features)
        assert r["measure"] == "activation_energy" and 0 < r["energy_discarded"] < 1
    lowrank_layers = {e["module"]: e for e in report.layers if e["kind"] == "lowrank"}
    for r in ranks:  # the same spectrum as the per-layer table's energy kept
        assert r["energy_discarded"] == pytest.approx(1 - lowrank_layers[r["module"]]["energy_kept"], abs=2e-6)
    assert {r["measure"] for r in report.sensitivity} <= set(MEASURES)


def test_flop_target_sensitivity_rule_adds_its_ranking_to_the_rows(pico):
    base, calib = pico
    cfg = PruneConfig(target_flops=0.6, head_ratio=0.5, mlp_ratio=0.5, rank_ratio=0.7, calib_batches=2)
    pruned, report = prune(copy.deepcopy(base), cfg, calib)
    assert report.target is not None and report.target["rule"] == "sensitivity"
    units = _rows(report, "heads") + _rows(report, "mlp")
    assert len(units) == len(window_attentions(base)) + len(mlps(base))  # one row per layer, not two
    for r in units:
        assert r["flops_per_unit"] > 0 and r["score_per_mflop"] == pytest.approx(
            r["score_mean"] / (r["flops_per_unit"] / 1e6))
    attns = dict(window_attentions(pruned))
    assert all(r["kept"] == attns[r["module"]].num_heads for r in _rows(report, "heads"))
    assert len(_rows(report, "rank")) == len(linear_layers(pruned, cfg.svd_layers)) and \
        all(r["measure"] == "svd_energy" for r in _rows(report, "rank"))


def test_nothing_measured_records_nothing(pico):
    base, _ = pico
    _, report = prune(copy.deepcopy(base), PruneConfig(head_ratio=0.5, head_criterion="random"), None)
    assert report.sensitivity is None  # random scores are not a measurement
    _, report = prune(copy.deepcopy(base), PruneConfig(head_ratio=0.5, head_criterion="l1", mlp_ratio=0.25,
                                                       mlp_criterion="random"), None)
    assert {r["kind"] for r in report.sensitivity} == {"heads"} and report.sensitivity[0]["measure"] == "l1"


def test_row_builders_by_hand():
    r = unit_row("layers.1.blocks.0.attn", "heads", torch.tensor([0.5, 2.0, 1.0, 0.5]), [1, 2], "taylor")
    assert r == {"module": "layers.1.blocks.0.attn", "kind": "heads", "stage": 1, "measure": "taylor", "units": 4,
                 "kept": 2, "score_sum": 4.0, "score_mean": 1.0, "score_mean_kept": 1.5, "score_mean_removed": 0.5}
    assert unit_row("a", "mlp", torch.tensor([1.0, 3.0]), [0, 1], "l1")["score_mean_removed"] is None
    r = rank_row("layers.0.blocks.0.mlp.fc1", 8, 4, torch.tensor([3.0, 2.0, 1.0, 1.0]), 2, False)
    assert r["units"] == 4 and r["kept"] == 2 and r["energy_discarded"] == pytest.approx(2 / 15)
    assert r["measure"] == "svd_energy" and not r["dense"]
    dense = rank_row("x.qkv", 8, 4, torch.tensor([3.0, 2.0, 1.0, 1.0]), None, True)
    assert dense["kept"] == 4 and dense["energy_discarded"] == 0.0 and dense["dense"]
    assert dense["measure"] == "activation_energy"
