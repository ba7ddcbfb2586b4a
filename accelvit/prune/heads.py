"""Attention-head pruning for timm Swin ``WindowAttention`` (and timm ViT ``Attention``).

A head ``h`` of a ``WindowAttention`` with ``H`` heads of ``d`` channels owns rows
``[h*d, (h+1)*d)`` of each of the q, k and v blocks of ``qkv`` (weights and bias), the
same columns of ``proj``, and column ``h`` of ``relative_position_bias_table``. Removing a
head slices all of them and lowers ``num_heads``; timm's forward infers the head dim from
``qkv``'s output, builds the bias from the table with ``view(..., -1)`` and the shifted
window mask from ``num_heads``, so nothing else needs patching (tests prove the outputs).

Which heads to keep is decided elsewhere: :mod:`.importance` scores them, :mod:`.allocation`
says how many each attention keeps.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn as nn
from timm.layers import Attention
from timm.models.swin_transformer import WindowAttention

from ..errors import ModelError
from .units import new_linear_like

log = logging.getLogger(__name__)

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
