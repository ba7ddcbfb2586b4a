"""Head pruning: structural removal equals gating the removed heads to zero; criteria; selection."""

from __future__ import annotations

import pytest
import torch

from accelvit.errors import ConfigError, ModelError
from accelvit.models import build_model
from accelvit.prune import PruneConfig, count_params, prune, remove_heads
from accelvit.prune.allocation import select
from accelvit.prune.calibration import Calibration
from accelvit.prune.heads import head_dim, original_head_index
from accelvit.prune.importance import gate_units, head_group, head_groups, score
from accelvit.prune.units import window_attentions


def _model(seed: int = 0):
    torch.manual_seed(seed)
    m = build_model("swin_pico", 10).eval()
    # non-trivial relative position bias tables (timm initialises them near zero)
    with torch.no_grad():
        for _, a in window_attentions(m):
            a.relative_position_bias_table.normal_(0, 0.5)
    return m


def _x(n: int = 4, seed: int = 1):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


# Remove at least one head in every attention; stage 0 blocks are shifted (exercises the mask).
KEEP = {"layers.0.blocks.0.attn": [1], "layers.0.blocks.1.attn": [0],
        "layers.1.blocks.0.attn": [0, 3], "layers.1.blocks.1.attn": [1, 2, 3]}


@pytest.mark.parametrize("fused", [False, True])
def test_remove_heads_equals_gating_removed_heads(fused: bool) -> None:
    model = _model()
    for _, a in window_attentions(model):
        a.fused_attn = fused
    x = _x()
    gates = {name: torch.zeros(a.num_heads).index_fill_(0, torch.tensor(KEEP[name]), 1.0)
             for name, a in window_attentions(model)}
    with torch.no_grad(), gate_units(head_groups(model), gates):
        ref = model(x)
    before = count_params(model)
    expected_removed = 0
    for name, a in window_attentions(model):
        hd = head_dim(a)
        dim = a.qkv.in_features
        removed = a.num_heads - len(KEEP[name])
        table_rows = a.relative_position_bias_table.shape[0]
        # q/k/v rows (+ their bias) + proj input columns + one bias-table column per head
        expected_removed += removed * (3 * hd * (dim + 1) + hd * a.proj.out_features + table_rows)
        remove_heads(a, KEEP[name])
        assert a.num_heads == len(KEEP[name])
        assert a.relative_position_bias_table.shape == (table_rows, len(KEEP[name]))
    with torch.no_grad():
        out = model(x)
    assert (out - ref).abs().max().item() < 1e-5
    assert before - count_params(model) == expected_removed


def test_remove_heads_composes_original_indices_and_rejects_bad_input() -> None:
    a = _model().layers[1].blocks[0].attn
    remove_heads(a, [0, 2, 3])
    remove_heads(a, [1, 2])
    assert original_head_index(a) == [2, 3] and a.num_heads == 2
    with pytest.raises(ModelError):
        remove_heads(a, [])
    with pytest.raises(ModelError):
        remove_heads(a, [5])


def test_l1_criterion_finds_a_weak_head_and_taylor_finds_a_dead_head() -> None:
    model = _model()
    name, a = window_attentions(model)[2]
    hd = head_dim(a)
    n = a.num_heads
    with torch.no_grad():  # head 1: tiny weights; head 2: dead (zero value rows and proj columns)
        for blk in range(3):
            a.qkv.weight[blk * n * hd + hd: blk * n * hd + 2 * hd] *= 1e-3
        a.proj.weight[:, hd:2 * hd] *= 1e-3
        a.qkv.weight[2 * n * hd + 2 * hd: 2 * n * hd + 3 * hd] = 0
        a.qkv.bias[2 * n * hd + 2 * hd: 2 * n * hd + 3 * hd] = 0
    calib = Calibration([(_x(8), torch.randint(0, 10, (8,)))], 1, torch.device("cpu"))
    groups = head_groups(model)
    l1 = score(model, groups, "l1", calib)[name]
    assert int(l1.argmin()) == 1
    taylor = score(model, groups, "taylor", calib)[name]
    assert taylor[2].item() == 0.0 and (taylor[[0, 1, 3]] > 0).all()
    r1, r2 = score(model, groups, "random", calib, seed=3), score(model, groups, "random", calib, seed=3)
    assert all(torch.equal(r1[k], r2[k]) for k in r1)
    # taylor leaves the model's parameters and mode untouched
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_selection_global_uniform_and_per_stage() -> None:
    scores = {"layers.0.blocks.0.attn": torch.tensor([0.1, 0.2]),
              "layers.1.blocks.0.attn": torch.tensor([5.0, 1.0, 4.0, 3.0])}
    uni = select(scores, 0.5, "uniform")
    assert uni == {"layers.0.blocks.0.attn": [1], "layers.1.blocks.0.attn": [0, 2]}
    # global, normalised per layer: 0.1/|.|=0.447 is not the smallest; 1/7.14=0.14 is
    glob = select(scores, 0.5, "global")
    assert sum(len(v) for v in glob.values()) == 3
    assert all(len(v) >= 1 for v in glob.values())
    # never the last head of a layer, even when it holds the lowest scores
    tiny = {"a": torch.tensor([1e-9]), "b": torch.tensor([1.0, 2.0, 3.0])}
    assert select(tiny, 0.75, "global") == {"a": [0], "b": [2]}
    stage = select(scores, 0.0, "global", stage_ratios=[0.0, 0.75])
    assert stage == {"layers.0.blocks.0.attn": [0, 1], "layers.1.blocks.0.attn": [0]}


@pytest.mark.parametrize("criterion,ranking", [("l1", "uniform"), ("random", "global"), ("taylor", "global")])
def test_prune_removes_the_configured_fraction_of_heads(criterion: str, ranking: str) -> None:
    model = _model()
    loader = [(_x(8, s), torch.randint(0, 10, (8,))) for s in range(2)]
    total = sum(a.num_heads for _, a in window_attentions(model))
    _, report = prune(model, PruneConfig(head_ratio=0.5, head_criterion=criterion, head_ranking=ranking,
                                         calib_batches=2), loader)
    assert report.heads_before == total and report.heads_after == total - round(0.5 * total)
    assert all(a.num_heads >= 1 for _, a in window_attentions(model))
    assert report.params_after < report.params_before
    assert {e["kind"] for e in report.layers} == {"heads"}
    assert model(_x()).shape == (4, 10)


def test_stage_head_ratios_must_match_the_stages() -> None:
    with pytest.raises(ConfigError) as exc:
        prune(_model(), PruneConfig(stage_head_ratios=[0.5, 0.5, 0.5], head_criterion="l1"))
    assert exc.value.field == "stage_head_ratios"
    model, rep = prune(_model(), PruneConfig(stage_head_ratios=[0.0, 0.5], head_criterion="l1"))
    assert [a.num_heads for _, a in window_attentions(model)][:2] == [2, 2]
    assert rep.heads_after == rep.heads_before - 4


def test_remove_heads_on_a_vit_attention() -> None:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=10).eval()
    x = _x()
    keep = {f"blocks.{i}.attn": k for i, k in enumerate([[0, 2], [3]])}
    groups = [head_group(n, vit.get_submodule(n)) for n in keep]
    with torch.no_grad(), gate_units(groups, {n: torch.zeros(4).index_fill_(0, torch.tensor(k), 1.0)
                                              for n, k in keep.items()}):
        ref = vit(x)
    before = count_params(vit)
    for name, k in keep.items():
        remove_heads(vit.get_submodule(name), k)
    with torch.no_grad():
        assert (vit(x) - ref).abs().max().item() < 1e-5
    assert before - count_params(vit) == 5 * (3 * 8 * 33 + 8 * 32)   # 5 heads of dim 8: qkv rows + proj cols
