"""Criteria and allocation as data: one registry for every unit kind; the pruner takes
``{layer: units kept}`` and keeps each layer's best-scored units."""

from __future__ import annotations

import torch

from accelvit.models import build_model
from accelvit.prune import CRITERIA, RANKINGS, PruneConfig, apply_ratios
from accelvit.prune import allocation, importance
from accelvit.prune.calibration import Calibration
from accelvit.prune.units import mlps, window_attentions

SCORES = {"layers.0.blocks.0.attn": torch.tensor([0.1, 0.2]),
          "layers.1.blocks.0.attn": torch.tensor([5.0, 1.0, 4.0, 3.0])}


def test_the_config_names_what_the_registries_hold() -> None:
    assert tuple(importance.REGISTRY) == CRITERIA
    assert set(allocation.RANKINGS) == set(RANKINGS)


def test_allocation_is_a_mapping_of_units_kept() -> None:
    assert allocation.allocate(SCORES, 0.5, "uniform") == {"layers.0.blocks.0.attn": 1, "layers.1.blocks.0.attn": 2}
    assert allocation.allocate(SCORES, 0.0, "global") == {"layers.0.blocks.0.attn": 2, "layers.1.blocks.0.attn": 4}
    assert allocation.allocate(SCORES, 0.5, "uniform", stage_ratios=[0.0, 0.75]) == {
        "layers.0.blocks.0.attn": 2, "layers.1.blocks.0.attn": 1}
    # any mapping works: keep_top keeps the best-scored units of each layer, in index order
    assert allocation.keep_top(SCORES, {"layers.0.blocks.0.attn": 1, "layers.1.blocks.0.attn": 3}) == {
        "layers.0.blocks.0.attn": [1], "layers.1.blocks.0.attn": [0, 2, 3]}


def test_one_criterion_scores_heads_and_mlp_units_alike() -> None:
    torch.manual_seed(0)
    model = build_model("swin_pico", 10).eval()
    calib = Calibration([(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))], 1, torch.device("cpu"))
    for groups, found in ((importance.head_groups(model), window_attentions(model)),
                          (importance.mlp_groups(model), mlps(model))):
        assert [g.name for g in groups] == [n for n, _ in found]
        for criterion in CRITERIA:
            scores = importance.score(model, groups, criterion, calib)
            assert {k: len(v) for k, v in scores.items()} == {g.name: g.units for g in groups}
            assert all(v.dtype == torch.float32 for v in scores.values())


def test_the_pruner_takes_head_scores_as_data() -> None:
    torch.manual_seed(0)
    model = build_model("swin_pico", 10).eval()
    # scores that make head 0 the most important everywhere: uniform 50% keeps exactly it plus the next best
    scores = {n: torch.arange(a.num_heads, 0, -1, dtype=torch.float32) for n, a in window_attentions(model)}
    _, report = apply_ratios(model, PruneConfig(head_ratio=0.5, head_ranking="uniform"), head_scores=scores)
    kept = {e["module"]: e["kept"] for e in report.layers}
    assert all(k == list(range(len(k))) for k in kept.values()) and kept
