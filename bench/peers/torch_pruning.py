"""Torch-Pruning, run on timm Swin the way a user of that library would: the peer of bench.pareto.

Torch-Pruning adapter notes (what a correct forward of a TP-pruned timm Swin needs):
TP traces the ``relative_position_bias_table`` (one column per head) as an "unwrapped
parameter" coupled to the qkv channels, and then rejects every qkv group (nothing in attention
gets pruned); the tables are therefore passed in ``ignored_layers``. timm's ``WindowAttention``
infers the head dim from ``qkv`` (``reshape(..., num_heads, -1)``) and ``num_heads`` is
unchanged, but TP leaves ``attn.scale`` at 1/sqrt(original head dim ``d0``) while the fused path
(``attn.fused_attn``, ``F.scaled_dot_product_attention`` with its default scale) divides by
sqrt(``q.size(-1)``), the *pruned* head dim ``d``: the two paths disagreed after TP. The adapter
therefore folds ``sqrt(d / d0)`` into the q rows of ``qkv`` (weight and bias) and sets
``attn.scale = d ** -0.5`` (``_fold_attention_scale``): both paths then compute
``q_kept . k_kept / sqrt(d0)``, the kept dims' logits of the unpruned model, as the non-fused
path did before. The adapter checks that TP kept the same dims in q and k of every head.

The ratio search uses accelvit's own safeguarded 1-D solver (``accelvit.prune``), the same
one accelvit's FLOP-target search runs, so both sides are held to the same tolerance.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from accelvit.metrics import count_flops
from accelvit.prune.flop_target import false_position
from accelvit.models import spec_of

# ============================================================================ 1-D FLOP search
class _OutOfBudget(Exception):
    pass


def solve_1d(f: Callable[[float], float], lo: float, hi: float, f_lo: float, f_hi: float, target: float, tol: float,
             budget: list[int]) -> None:
    """Shrink [lo, hi] (f decreasing, f(lo) > target >= f(hi)) with accelvit's own safeguarded false
    position (``accelvit.prune.flop_target.false_position``), at most ``budget[0]`` evaluations."""
    def counted(x: float) -> float:
        if budget[0] <= 0:
            raise _OutOfBudget
        budget[0] -= 1
        return f(x)

    try:
        false_position(counted, lo, hi, f_lo, f_hi, target, tol, lambda r: r / target - 1, 1e-3)
    except _OutOfBudget:
        pass


# ============================================================================ Torch-Pruning adapter
TP_MODES = {"tp_magnitude": ("head_dim", "magnitude", False), "tp_taylor": ("head_dim", "taylor", False),
            "tp_taylor_global": ("head_dim", "taylor", True), "tp_head_count": ("head_count", "magnitude", False),
            "tp_embed_channels": ("embed", "magnitude", False)}
#: Largest ratio searched: at 0.95 a 16-dim head would keep 0 dims, so TP skips those groups
#: and prunes no attention at all (FLOPs jump back up); 0.9 keeps at least one dim per head.
TP_MAX_RATIO = 0.9
#: What we found makes each failing mode fail on timm Swin (appended to the recorded error).
TP_WHY = {
    "head_count": (" -- TP removes whole heads from qkv/proj but not their columns of the "
                   "relative_position_bias_table (one per original head), so the bias no longer matches the heads "
                   "(it fails to add, or broadcasts the kept heads back to the original count and proj receives "
                   "the wrong width)"),
    "embed": (" -- TP prunes the residual channels C by index but does not follow PatchMerging's 2x2 concatenation "
              "(4C channels), so the merge's LayerNorm/reduction are cut to the wrong width"),
}


class TPFailure(RuntimeError):
    """Torch-Pruning ran but left a model that is wrong or unusable."""


def tp_gradients(model: nn.Module, calib: list) -> dict[str, torch.Tensor]:
    """Summed gradients of the cross-entropy over the calibration batches (for TaylorImportance)."""
    work = copy.deepcopy(model).eval()
    work.zero_grad(set_to_none=True)
    for x, y in calib:
        F.cross_entropy(work(x), y).backward()
    return {n: p.grad.detach().clone() for n, p in work.named_parameters() if p.grad is not None}


def tp_prune(base: nn.Module, mode: str, importance: str, ratio: float, mlp_ratio: float | None,
             grads: dict[str, torch.Tensor] | None, global_pruning: bool, input_size: tuple[int, int, int]) -> nn.Module:
    """A copy of ``base`` pruned by Torch-Pruning. Raises on any failure, including a wrong model."""
    import torch_pruning as tp
    from timm.models.swin_transformer import WindowAttention

    model = copy.deepcopy(base).eval()
    if grads is not None:
        for n, p in model.named_parameters():
            if n in grads:
                p.grad = grads[n].clone()
    attns = [m for m in model.modules() if isinstance(m, WindowAttention)]
    old_qkv = {id(a): a.qkv.weight.detach().clone() for a in attns}
    heads_before = [a.num_heads for a in attns]
    num_heads = {a.qkv: a.num_heads for a in attns}
    ignored: list[Any] = [model.head.fc]
    kw: dict[str, Any] = {}
    if mode in ("head_dim", "head_count"):
        # the residual stream stays whole: ignore every layer writing it, and the bias tables
        # (TP couples them to the qkv channels and then refuses to prune any qkv group)
        ignored += [model.patch_embed.proj] + [a.relative_position_bias_table for a in attns]
        ignored += [m for n, m in model.named_modules()
                    if isinstance(m, nn.Linear) and n.endswith(("attn.proj", "mlp.fc2", "downsample.reduction"))]
    fc1s = [m for n, m in model.named_modules() if n.endswith("mlp.fc1")]
    if mode == "head_dim":
        kw.update(pruning_ratio=ratio, prune_head_dims=True, prune_num_heads=False)
        if mlp_ratio is not None:
            kw["pruning_ratio_dict"] = {m: mlp_ratio for m in fc1s}
    elif mode == "head_count":
        kw.update(pruning_ratio=ratio if mlp_ratio is None else mlp_ratio, prune_head_dims=False,
                  prune_num_heads=True, head_pruning_ratio=ratio)
    else:  # embed: TP's timm recipe as documented (classifier ignored, heads declared)
        kw.update(pruning_ratio=ratio, prune_head_dims=True, prune_num_heads=False)
    imp = tp.importance.TaylorImportance() if importance == "taylor" else tp.importance.MagnitudeImportance(p=2)
    example = torch.randn(1, *input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unwrapped parameters detected" for the bias tables
        pruner = tp.pruner.MetaPruner(model, example, importance=imp, global_pruning=global_pruning,
                                      num_heads=num_heads, ignored_layers=ignored, in_channel_groups={},
                                      out_channel_groups={}, **kw)  # fresh dicts: TP's defaults are shared
        pruner.step()
    model.zero_grad(set_to_none=True)
    if mode == "head_count":
        for a in attns:  # as TP's own timm example does after head pruning
            a.num_heads = num_heads[a.qkv]
    why = TP_WHY.get(mode, "")
    if mode == "head_count":
        if any(a.num_heads < 1 for a in attns):
            why = (" -- TP removed every head of an attention (it removes ceil(ratio x heads) per layer), leaving "
                   "num_heads=0")
        elif all(a.relative_position_bias_table.shape[1] == a.num_heads for a in attns):
            why = ""
    try:
        with torch.no_grad():
            out = model(torch.randn(2, *input_size))
    except Exception as exc:
        raise TPFailure(f"the pruned model's forward fails: {type(exc).__name__}: {exc}{why}") from exc
    n_cls = spec_of(base).num_classes
    if tuple(out.shape) != (2, n_cls) or not torch.isfinite(out).all():
        raise TPFailure(f"the pruned model returns {tuple(out.shape)} (finite: {bool(torch.isfinite(out).all())})")
    if mode == "head_count" and ratio > 0 and [a.num_heads for a in attns] == heads_before:
        raise TPFailure("no head was removed")
    if mode == "head_dim":
        for a in attns:
            if not _qk_aligned(old_qkv[id(a)], a.qkv.weight.detach(), a.num_heads):
                raise TPFailure("Torch-Pruning kept different dims in q and k of one head")
    _fold_attention_scale(attns)
    return model


def _fold_attention_scale(attns: list) -> None:
    """Make ``attn.scale`` the pruned head dim's ``d ** -0.5`` (what the fused SDPA path uses) and
    keep every logit as it was: the q rows of ``qkv`` absorb ``old_scale * sqrt(d)`` (= sqrt(d / d0))."""
    for a in attns:
        d = a.qkv.out_features // (3 * a.num_heads)
        factor = float(a.scale) * d ** 0.5
        if abs(factor - 1.0) > 1e-12:
            n = a.num_heads * d  # q occupies the first num_heads * d rows: (3, heads, d) order
            with torch.no_grad():
                a.qkv.weight[:n].mul_(factor)
                if a.qkv.bias is not None:
                    a.qkv.bias[:n].mul_(factor)
        a.scale = d ** -0.5


def _qk_aligned(old: torch.Tensor, new: torch.Tensor, heads: int) -> bool:
    """Whether every head of a pruned qkv kept the same dims in its q and its k rows."""
    d0, d = old.shape[0] // (3 * heads), new.shape[0] // (3 * heads)
    src = []
    for row in new:
        hit = (old == row).all(1).nonzero().flatten()
        if len(hit) == 0:
            return False
        src.append(int(hit[0]))
    for h in range(heads):
        q = [i - h * d0 for i in src[h * d:(h + 1) * d]]
        k = [i - heads * d0 - h * d0 for i in src[heads * d + h * d: heads * d + (h + 1) * d]]
        if q != k:
            return False
    return True


def tp_search(base: nn.Module, method: str, target: float, calib: list, grads: dict | None, tol: float,
              budget_evals: int, input_size: tuple[int, int, int]) -> tuple[nn.Module, dict[str, Any]]:
    """Torch-Pruning at ``target`` of the dense FLOPs: bisect its ratio, then the MLP ratio alone."""
    mode, importance, global_pruning = TP_MODES[method]
    base_flops = count_flops(base, input_size).total
    g = grads if importance == "taylor" else None
    evals: list[dict[str, Any]] = []
    best: dict[str, Any] = {}

    seen: dict[tuple[float, float], float] = {}

    def f(r: float, r_mlp: float | None = None) -> float:
        key = (round(r, 6), round(r if r_mlp is None else r_mlp, 6))
        if key in seen:
            return seen[key]
        m = tp_prune(base, mode, importance, r, r_mlp, g, global_pruning, input_size)
        ratio = count_flops(m, input_size).total / base_flops
        evals.append({"ratio_attn": round(r, 6), "ratio_mlp": None if r_mlp is None else round(r_mlp, 6),
                      "flops_ratio": ratio})
        if not best or abs(ratio / target - 1) < abs(best["flops_ratio"] / target - 1):
            best.update(model=m, flops_ratio=ratio, ratio_attn=r, ratio_mlp=r if r_mlp is None else r_mlp)
        seen[key] = ratio
        return ratio

    start = time.perf_counter()
    # a first guess near the answer (fails fast for the modes that fail)
    guess = 1 - math.sqrt(target) if mode == "embed" else 1 - target
    f_guess = f(guess)
    f_hi = f(TP_MAX_RATIO)
    if f_hi > target * (1 + tol):
        raise TPFailure(f"even ratio {TP_MAX_RATIO} leaves {f_hi:.3f} of the dense FLOPs")
    lo, hi, f_lo = (0.0, guess, 1.0) if f_guess <= target else (guess, TP_MAX_RATIO, f_guess)
    if f_guess <= target:
        f_hi = f_guess
    budget = [budget_evals]
    if abs(f_guess / target - 1) > tol / 2:
        solve_1d(lambda r: f(r), lo, hi, f_lo, f_hi, target, tol, budget)
        if abs(best["flops_ratio"] / target - 1) > tol / 2 and mode != "embed":
            # head dims move in steps: freeze the attention ratio, fine-tune the MLP ratio
            r_attn = max((e["ratio_attn"] for e in evals if e["ratio_mlp"] is None and e["flops_ratio"] > target),
                         default=0.0)
            a, b = r_attn, TP_MAX_RATIO
            fa, fb = f(r_attn, a), f(r_attn, b)
            if fb <= target < fa:
                solve_1d(lambda v: f(r_attn, v), a, b, fa, fb, target, tol, budget)
    err = best["flops_ratio"] / target - 1
    if abs(err) > tol:
        raise TPFailure(f"the ratio search got no closer than {err:+.1%} to the FLOP target")
    info = {"mode": mode, "importance": importance, "global_pruning": global_pruning,
            "ratio_attn": best["ratio_attn"], "ratio_mlp": best["ratio_mlp"], "flops_ratio": best["flops_ratio"],
            "evaluations": evals, "n_evaluations": len(evals), "seconds": time.perf_counter() - start}
    return best["model"], info
