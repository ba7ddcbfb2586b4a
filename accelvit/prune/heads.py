"""Attention-head pruning for timm Swin ``WindowAttention`` (and timm ViT ``Attention``).

A head ``h`` of a ``WindowAttention`` with ``H`` heads of ``d`` channels owns rows
``[h*d, (h+1)*d)`` of each of the q, k and v blocks of ``qkv`` (weights and bias), the
same columns of ``proj``, and column ``h`` of ``relative_position_bias_table``. Removing a
head slices all of them and lowers ``num_heads``; timm's forward infers the head dim from
``qkv``'s output, builds the bias from the table with ``view(..., -1)`` and the shifted
window mask from ``num_heads``, so nothing else needs patching (tests prove the outputs).

Criteria are small callables ``(model, targets, calib, generator) -> {path: scores[H]}``:
``taylor`` (|sum over calibration batches of dL/d gate_h|, a gate of ones on each head's
output, Michel et al. 2019), ``l1`` (weight magnitude) and ``random`` (the control).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn
from timm.layers import Attention
from timm.models.swin_transformer import WindowAttention

from ..errors import ConfigError, ModelError
from .common import Calibration, gated_gradient_scores, new_linear_like, select_keep, stage_of

log = logging.getLogger(__name__)

HeadScores = dict[str, torch.Tensor]
HeadCriterion = Callable[[nn.Module, list[tuple[str, WindowAttention]], Calibration, torch.Generator], HeadScores]

#: Attribute on a pruned WindowAttention: original indices of the heads it still has.
HEAD_INDEX_ATTR = "accelvit_head_index"
#: Attribute on a pruned WindowAttention: its number of heads before any pruning.
ORIG_HEADS_ATTR = "accelvit_orig_heads"


def head_dim(attn: WindowAttention | Attention) -> int:
    return _dense(attn.qkv, "qkv").out_features // (3 * attn.num_heads)


def _check_vit_attention(attn: nn.Module) -> None:
    """timm ViT ``Attention`` is supported when it has no output norm and no gate (the usual case)."""
    if isinstance(attn, Attention):
        if not isinstance(attn.norm, nn.Identity) or getattr(attn, "gate", None) is not None:
            raise ModelError("remove_heads supports timm ViT Attention without scale_norm and without a gate.")
    elif not isinstance(attn, WindowAttention):
        raise ModelError(f"remove_heads expects a timm WindowAttention or Attention, got {type(attn).__name__}.")


def original_head_index(attn: WindowAttention) -> list[int]:
    """Original indices of the heads ``attn`` still has (``range(num_heads)`` if unpruned)."""
    return list(getattr(attn, HEAD_INDEX_ATTR, range(attn.num_heads)))


def _dense(linear: nn.Module, what: str) -> nn.Linear:
    if type(linear) is not nn.Linear:
        raise ModelError(f"Cannot prune heads of an attention whose {what} is a {type(linear).__name__}: heads "
                         "must be removed before low-rank factorisation (prune applies heads -> MLP -> SVD).")
    return linear


def head_channels(head: int, hdim: int) -> torch.Tensor:
    return torch.arange(head * hdim, (head + 1) * hdim)


def remove_heads(attn: WindowAttention | Attention, keep: Sequence[int]) -> None:
    """Keep only heads ``keep`` (indices into the current heads) of ``attn``, in place.

    Slices the q/k/v row blocks of ``qkv`` (weight and bias), the matching input columns of
    ``proj`` and the columns of ``relative_position_bias_table``; updates ``num_heads``.
    Also works on timm ViT ``Attention`` (no bias table; ``attn_dim`` is updated too).
    """
    _check_vit_attention(attn)
    qkv = _dense(attn.qkv, "qkv")
    proj = _dense(attn.proj, "proj")
    n = attn.num_heads
    keep = sorted(set(int(k) for k in keep))
    if not keep:
        raise ModelError("remove_heads: at least one head must be kept.")
    if keep[0] < 0 or keep[-1] >= n:
        raise ModelError(f"remove_heads: head indices {keep} are out of range for an attention with {n} heads.")
    hd = qkv.out_features // (3 * n)
    if hd * 3 * n != qkv.out_features or proj.in_features != n * hd:
        raise ModelError(f"remove_heads: qkv ({qkv.out_features} outputs) and proj ({proj.in_features} inputs) do "
                         f"not match {n} heads.")
    prev_index = original_head_index(attn)
    orig = getattr(attn, ORIG_HEADS_ATTR, n)
    if keep == list(range(n)):
        return
    ch = torch.cat([head_channels(h, hd) for h in keep]).to(qkv.weight.device)
    rows = torch.cat([ch, ch + n * hd, ch + 2 * n * hd])
    with torch.no_grad():
        attn.qkv = new_linear_like(qkv, qkv.weight[rows], qkv.bias[rows] if qkv.bias is not None else None)
        attn.proj = new_linear_like(proj, proj.weight[:, ch], proj.bias)
        if isinstance(attn, WindowAttention):
            table = attn.relative_position_bias_table
            attn.relative_position_bias_table = nn.Parameter(
                table[:, torch.tensor(keep, device=table.device)].clone(), requires_grad=table.requires_grad)
    attn.num_heads = len(keep)
    if isinstance(attn, Attention):
        attn.attn_dim = len(keep) * hd
    setattr(attn, HEAD_INDEX_ATTR, [prev_index[k] for k in keep])
    setattr(attn, ORIG_HEADS_ATTR, orig)


@contextlib.contextmanager
def gate_heads(model: nn.Module, gates: dict[str, torch.Tensor]) -> Iterator[None]:
    """Multiply each head's output by ``gates[path][h]`` (before ``proj``) while inside the block."""
    handles = []
    try:
        for name, g in gates.items():
            attn = model.get_submodule(name)
            hd = head_dim(attn)

            def hook(_m, args, g=g, hd=hd):
                return (args[0] * g.to(args[0]).repeat_interleave(hd),) + tuple(args[1:])

            handles.append(attn.proj.register_forward_pre_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------------ criteria
def taylor_head_scores(model: nn.Module, targets: list[tuple[str, WindowAttention]], calib: Calibration,
                       gen: torch.Generator) -> HeadScores:
    gates = {name: (attn.proj, attn.num_heads, head_dim(attn)) for name, attn in targets}
    return gated_gradient_scores(model, gates, calib, "taylor head importance")


def l1_head_scores(model: nn.Module, targets: list[tuple[str, WindowAttention]], calib: Calibration,
                   gen: torch.Generator) -> HeadScores:
    out = {}
    for name, attn in targets:
        n, hd = attn.num_heads, head_dim(attn)
        w = attn.qkv.weight.detach().abs()
        rows = w.sum(1).view(3, n, hd).sum((0, 2))
        if attn.qkv.bias is not None:
            rows = rows + attn.qkv.bias.detach().abs().view(3, n, hd).sum((0, 2))
        cols = attn.proj.weight.detach().abs().sum(0).view(n, hd).sum(1)
        out[name] = (rows + cols).float().cpu()
    return out


def random_head_scores(model: nn.Module, targets: list[tuple[str, WindowAttention]], calib: Calibration,
                       gen: torch.Generator) -> HeadScores:
    return {name: torch.rand(attn.num_heads, generator=gen) for name, attn in targets}


HEAD_CRITERIA: dict[str, HeadCriterion] = {
    "taylor": taylor_head_scores,
    "l1": l1_head_scores,
    "random": random_head_scores,
}


def head_scores(model: nn.Module, criterion: str, calib: Calibration, seed: int = 0,
                targets: list[tuple[str, WindowAttention]] | None = None) -> HeadScores:
    if criterion not in HEAD_CRITERIA:
        raise ConfigError("head_criterion", f"unknown criterion {criterion!r}; use one of {list(HEAD_CRITERIA)}.")
    from .common import window_attentions

    targets = targets if targets is not None else window_attentions(model)
    gen = torch.Generator().manual_seed(seed)
    return {k: v.detach().float().cpu() for k, v in HEAD_CRITERIA[criterion](model, targets, calib, gen).items()}


def select_heads(scores: HeadScores, ratio: float, ranking: str,
                 stage_ratios: list[float] | None = None) -> dict[str, list[int]]:
    """Heads to keep per attention (indices into current heads). Per-stage ratios rank within a stage."""
    if stage_ratios is None:
        return select_keep(scores, ratio, ranking)
    stages = sorted({stage_of(k) for k in scores})
    if max(stages, default=-1) >= len(stage_ratios):
        raise ConfigError("stage_head_ratios", f"has {len(stage_ratios)} entries but the model has at least "
                                               f"{max(stages) + 1} stages; give one ratio per stage.")
    keep: dict[str, list[int]] = {}
    for s in stages:
        group = {k: v for k, v in scores.items() if stage_of(k) == s}
        keep.update(select_keep(group, stage_ratios[s], ranking))
    return {k: keep[k] for k in scores}
