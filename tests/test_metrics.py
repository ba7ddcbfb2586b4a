"""accelvit.metrics: FLOPs against an analytical count, pruning deltas, nonzeros, sizes, the table.

No timing is asserted here (timing targets are checked by ``python -m bench.latency``).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import prune as torch_prune

from accelvit.layers import LowRankLinear
from accelvit.metrics import (LAYER_COLUMNS, Measurement, compare, count_flops, layer_table, measure,
                              param_counts, resolve_input_size)
from accelvit.models import SCRATCH_CONFIGS, build_model
from accelvit.prune import PruneConfig, factorize, make_iht_hook, remove_heads
from accelvit.sparse_io import load_sparse, save_sparse

NUM_CLASSES = 10


def swin_macs(cfg: dict, img: int, num_classes: int) -> dict[str, int]:
    """Multiply-adds of a timm Swin forward pass at batch 1, written from the architecture.

    patch embed conv; per block qkv, q@k^T and attn@v per window and head, proj, fc1, fc2;
    patch merging (4C -> 2C linear); classifier. Elementwise ops (norms, softmax, GELU,
    adds) are not matrix products and are not counted.
    """
    p, ws, c0 = cfg["patch_size"], cfg["window_size"], cfg["embed_dim"]
    res = img // p
    out = {"patch_embed": res * res * c0 * 3 * p * p, "linear": 0, "attn": 0, "reduction": 0}
    dim = c0
    for i, (depth, heads) in enumerate(zip(cfg["depths"], cfg["num_heads"])):
        if i > 0:
            res //= 2
            out["reduction"] += res * res * (4 * dim) * (2 * dim)
            dim *= 2
        tokens = res * res
        w = min(ws, res)  # timm shrinks the window to the stage resolution
        n = w * w
        windows = tokens // n
        hd = dim // heads
        hidden = int(dim * cfg["mlp_ratio"])
        for _ in range(depth):
            out["linear"] += tokens * dim * 3 * dim + tokens * dim * dim + 2 * tokens * dim * hidden
            out["attn"] += 2 * windows * heads * n * n * hd  # q@k^T and attn@v
    out["head"] = dim * num_classes
    out["total"] = sum(out.values())
    return out


def _set_fused(model: nn.Module, fused: bool) -> None:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused


@pytest.fixture(scope="module")
def micro() -> nn.Module:
    torch.manual_seed(0)
    return build_model("swin_micro", NUM_CLASSES).eval()


def fresh_micro() -> nn.Module:
    torch.manual_seed(0)
    return build_model("swin_micro", NUM_CLASSES).eval()


@pytest.mark.parametrize("fused", [False, True])
def test_dense_flops_equal_analytical_count_swin_micro(micro, fused):
    """Exact: FlopCounterMode (with our CPU-SDPA formula) == the architecture's multiply-adds x 2,
    through timm's unfused (q@k^T, attn@v) and fused (scaled_dot_product_attention) paths."""
    _set_fused(micro, fused)
    try:
        fc = count_flops(micro)
        with torch.inference_mode():  # SDPA reaches the counter as a different op here
            assert count_flops(micro).total == fc.total
    finally:
        _set_fused(micro, False)
    macs = swin_macs(SCRATCH_CONFIGS["swin_micro"], 32, NUM_CLASSES)
    assert fc.total == 2 * macs["total"] == 92_704_512
    attn_flops = sum(v for k, v in fc.by_module.items() if k.endswith(".attn")) - sum(
        v for k, v in fc.by_module.items() if k.endswith(".attn.qkv") or k.endswith(".attn.proj"))
    assert attn_flops == 2 * macs["attn"] == 2_752_512
    assert fc.of("patch_embed") == 2 * macs["patch_embed"]
    assert fc.of("head") == 2 * macs["head"]


def test_thop_cross_check_shows_the_missed_attention(micro):
    """thop counts every Linear/Conv exactly like we do but misses the attention matmuls; its
    extra figures are norms/activations, which FlopCounterMode does not count."""
    m = measure(micro, latency=False, size=False)
    macs = swin_macs(SCRATCH_CONFIGS["swin_micro"], 32, NUM_CLASSES)
    by_type = m.thop_flops_by_type
    assert by_type is not None and m.thop_flops is not None
    assert by_type["Linear"] + by_type["Conv2d"] == m.dense_flops - m.attention_flops
    assert m.attention_flops == 2 * macs["attn"]
    assert m.thop_flops == sum(by_type.values())
    assert m.thop_missed_flops == m.dense_flops - m.thop_flops
    assert set(by_type) - {"Linear", "Conv2d"} <= {"LayerNorm", "Softmax", "GELU", "AdaptiveAvgPool2d", "Dropout"}
    assert m.flops_counter["dense_flops"] == "torch.utils.flop_counter.FlopCounterMode"
    assert m.flops_counter["thop_flops"] == "thop.profile"
    assert "total_ops" not in dict(micro.named_buffers()), "thop ran on a copy"


def test_removing_heads_lowers_flops_by_the_analytical_amount():
    model = fresh_micro()
    before = count_flops(model).total
    name, k = "layers.1.blocks.0.attn", 2
    attn = model.get_submodule(name)
    remove_heads(attn, keep=[0, 2, 5, 3])  # 6 -> 4 heads
    after = count_flops(model).total
    # stage 1 of swin_micro at 32 px: 8x8 tokens, dim 96, head dim 16, 4x4 windows (4 of them)
    tokens, dim, hd, n, windows = 64, 96, 16, 16, 4
    removed_macs = tokens * dim * 3 * k * hd + tokens * k * hd * dim + 2 * windows * k * n * n * hd
    assert before - after == 2 * removed_macs
    table = layer_table(model, count_flops(model)).set_index("module")
    assert (table.loc[name, "heads_kept"], table.loc[name, "heads_total"]) == (4, 6)
    assert table.loc[name, "dense_flops"] == 2 * 2 * windows * 4 * n * n * hd
    assert (table.loc[f"{name}.qkv", "out_features"], table.loc[f"{name}.qkv", "heads_kept"]) == (3 * 4 * hd, 4)


@pytest.mark.parametrize("where,rank", [("layers.0.blocks.0.mlp.fc1", 8), ("layers.2.blocks.1.attn.qkv", 40)])
def test_lowrank_factorisation_lowers_flops_by_mn_minus_r_m_plus_n(where, rank):
    model = fresh_micro()
    before = count_flops(model).total
    lin = model.get_submodule(where)
    m, n = lin.in_features, lin.out_features
    parent, _, attr = where.rpartition(".")
    low = factorize(lin, rank)
    assert isinstance(low, LowRankLinear)
    setattr(model.get_submodule(parent), attr, low)
    after = count_flops(model).total
    tokens = {"layers.0": 256, "layers.2": 16}[where[:8]]
    assert before - after == 2 * tokens * (m * n - rank * (m + n))
    row = layer_table(model, count_flops(model)).set_index("module").loc[where]
    assert (row["rank"], row["full_rank"], row["in_features"], row["out_features"]) == (rank, min(m, n), m, n)
    assert row["dense_flops"] == 2 * tokens * rank * (m + n)
    assert row["params"] == rank * (m + n) + n  # factors + the original bias


def test_nonzeros_drop_exactly_with_iht_and_effective_flops_scale_with_density():
    model = fresh_micro()
    dense = measure(model, latency=False, size=False, thop=False)
    assert dense.nonzero_params == sum(int(torch.count_nonzero(p)) for p in model.parameters())
    assert dense.params == sum(p.numel() for p in model.parameters()) == 1_268_356
    assert dense.effective_flops == dense.dense_flops  # trained-free weights: no zeros
    hook = make_iht_hook(model, PruneConfig(sparsity=0.5))
    hook.finalize(model)
    targets = {n: p for n, p in model.named_parameters() if n in hook.param_names}
    zeroed = sum(p.numel() - round(0.5 * p.numel()) for p in targets.values())
    sparse = measure(model, latency=False, size=False, thop=False)
    assert sparse.nonzero_params == sum(int(torch.count_nonzero(p)) for p in model.parameters())
    assert sparse.nonzero_params == dense.nonzero_params - zeroed
    assert sparse.params == dense.params and sparse.dense_flops == dense.dense_flops
    table = sparse.layers.set_index("module")
    iht_rows = table[table["kind"].isin(["qkv", "proj", "fc1", "fc2"])]
    assert (iht_rows["density"] == 0.5).all()
    assert (iht_rows["effective_flops"] == 0.5 * iht_rows["dense_flops"]).all()
    assert sparse.effective_flops == pytest.approx(dense.dense_flops - 0.5 * iht_rows["dense_flops"].sum(), abs=1e-6)
    # attention matmuls, patch embedding, patch merging and head are unchanged
    untouched = table[table["kind"].isin(["attn", "patch_embed", "reduction", "head"])]
    assert (untouched["effective_flops"] == untouched["dense_flops"]).all()


def test_masked_linear_from_torch_prune_counts_the_mask():
    """A ``torch.nn.utils.prune`` layer keeps a dense ``weight_orig``; we count its masked weight."""
    model = fresh_micro()
    name = "layers.0.blocks.1.mlp.fc2"
    lin = model.get_submodule(name)
    torch_prune.l1_unstructured(lin, "weight", amount=0.5)
    m = measure(model, latency=False, size=False, thop=False)
    row = m.layers.set_index("module").loc[name]
    assert row["density"] == 0.5 and row["effective_flops"] == 0.5 * row["dense_flops"]
    assert row["nonzero_params"] == int(torch.count_nonzero(lin.weight)) + int(torch.count_nonzero(lin.bias))
    assert param_counts(lin) == (lin.weight.numel() + lin.bias.numel(), row["nonzero_params"])


def test_sparse_size_on_disk_is_below_dense_at_half_sparsity_and_round_trip_is_exact(tmp_path):
    model = fresh_micro()
    make_iht_hook(model, PruneConfig(sparsity=0.5, iht_layers=("qkv", "proj", "fc1", "fc2", "reduction"))
                  ).finalize(model)
    m = measure(model, latency=False, thop=False)
    dense_floats = sum(t.numel() for t in model.state_dict().values())
    assert m.size_dense_bytes >= 4 * dense_floats  # fp32, every tensor
    assert m.size_sparse_bytes < 0.6 * m.size_dense_bytes
    path = tmp_path / "w.safetensors"
    assert save_sparse(model.state_dict(), path) == path.stat().st_size
    back, _ = load_sparse(path)
    for k, v in model.state_dict().items():
        assert torch.equal(back[k].view(torch.int32), v.contiguous().view(torch.int32)), k  # bit-exact
    clone = fresh_micro()
    clone.load_state_dict(back)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))


def test_layer_table_sums_to_totals_and_result_serialises(micro):
    m = measure(micro, latency=False, size=False)
    t = m.layers
    assert list(t.columns) == LAYER_COLUMNS
    assert int(t["dense_flops"].sum()) == m.dense_flops
    assert float(t["effective_flops"].sum()) == pytest.approx(m.effective_flops)
    assert int(t["params"].sum()) == m.params and int(t["nonzero_params"].sum()) == m.nonzero_params
    assert t.set_index("module").loc["(other)", "dense_flops"] == 0  # every counted FLOP has a row
    kinds = t["kind"].value_counts()
    assert kinds["attn"] == kinds["qkv"] == kinds["fc1"] == 6 and kinds["reduction"] == 2 and kinds["head"] == 1
    fc1 = t[t["kind"] == "fc1"]
    assert (fc1["mlp_width"] == fc1["mlp_width_total"]).all() and set(fc1["mlp_width"]) == {192, 384, 768}
    d = m.to_dict()
    text = json.dumps(d, allow_nan=False)
    for key in ("dense_flops", "effective_flops", "thop_flops", "params", "nonzero_params", "size_dense_bytes",
                "size_sparse_bytes", "latency_ms_b1", "latency_ms_batch", "device", "flops_counter", "num_threads",
                "layers"):
        assert key in d
    back = Measurement.from_dict(json.loads(text))
    assert back.to_dict() == d
    assert m.model == "swin_micro" and m.input_size == (3, 32, 32)


def test_latency_and_compare_run_without_touching_the_model():
    """Shape of the timing results only; no timing is asserted."""
    torch.manual_seed(0)
    base = build_model("swin_pico", 4)
    base.train()
    sd_before = {k: v.clone() for k, v in base.state_dict().items()}
    m = measure(base, batch_size=4, warmup=1, reps=3, num_threads=1, size=False)
    assert m.num_threads == 1
    for s in (m.latency_b1, m.latency_batch):
        assert s is not None and s.reps == 3 and s.warmup == 1
        assert 0 < s.min_ms <= s.p25_ms <= s.median_ms <= s.p75_ms <= s.max_ms
        assert s.images_per_s == pytest.approx(s.batch_size * 1000 / s.median_ms)
    assert m.latency_ms_b1 == m.latency_b1.median_ms and m.latency_batch.batch_size == 4
    assert base.training, "training flag restored"
    assert all(torch.equal(v, sd_before[k]) for k, v in base.state_dict().items())
    off = measure(base, latency=False, size=False, thop=False)
    assert off.latency_ms_b1 is None and off.latency_ms_batch is None and off.latency_b1 is None

    pruned = build_model("swin_pico", 4)
    pruned.load_state_dict(base.state_dict())
    remove_heads(pruned.layers[1].blocks[0].attn, keep=[0, 1])
    c = compare(base, pruned, batch_sizes=(1, 4), warmup=1, reps=2)
    assert [p.batch_size for p in c.points] == [1, 4]
    assert c.flop_reduction == pytest.approx(c.baseline_flops / c.pruned_flops) and c.flop_reduction > 1
    assert all(p.speedup > 0 and p.paired_speedup > 0 and p.baseline.reps == 2 for p in c.points)
    json.dumps(c.to_dict(), allow_nan=False)


def test_input_size_defaults_and_errors(micro):
    from accelvit.errors import ConfigError

    assert resolve_input_size(micro) == (3, 32, 32)
    assert resolve_input_size(micro, 48) == (3, 48, 48) and resolve_input_size(micro, (40, 48)) == (3, 40, 48)
    with pytest.raises(ConfigError):
        resolve_input_size(nn.Linear(2, 2))
    with pytest.raises(ConfigError):
        measure(micro, latency=True, reps=0)
    assert not math.isnan(measure(micro, latency=False, size=False, thop=False).density)
