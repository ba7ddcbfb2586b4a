"""MLP width pruning: remove hidden units (rows of ``fc1`` and its bias, columns of ``fc2``).

Which units to keep is decided elsewhere: :mod:`.importance` scores them, :mod:`.allocation`
says how many each MLP keeps.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from timm.layers import Mlp

from ..errors import ModelError
from .units import new_linear_like

#: Attribute on a pruned Mlp: its hidden width before any pruning.
ORIG_HIDDEN_ATTR = "accelvit_orig_hidden"


def dense_pair(mlp: Mlp) -> tuple[nn.Linear, nn.Linear]:
    """``(fc1, fc2)`` of an MLP whose width can be pruned (dense layers, no hidden norm)."""
    if type(mlp.fc1) is not nn.Linear or type(mlp.fc2) is not nn.Linear:
        raise ModelError("Cannot prune the width of an MLP whose fc1/fc2 are not dense nn.Linear layers: prune "
                         "MLP width before low-rank factorisation (prune applies heads -> MLP -> SVD).")
    if not isinstance(mlp.norm, nn.Identity):
        raise ModelError("MLP width pruning supports MLPs without a hidden norm layer (as in Swin).")
    return mlp.fc1, mlp.fc2


def hidden_width(mlp: Mlp) -> int:
    return dense_pair(mlp)[0].out_features


def prune_mlp(mlp: Mlp, keep: Sequence[int]) -> None:
    """Keep only hidden units ``keep`` of ``mlp``, in place."""
    fc1, fc2 = dense_pair(mlp)
    n = fc1.out_features
    keep = sorted(set(int(k) for k in keep))
    if not keep:
        raise ModelError("prune_mlp: at least one hidden unit must be kept.")
    if keep[0] < 0 or keep[-1] >= n:
        raise ModelError(f"prune_mlp: unit indices are out of range for an MLP with {n} hidden units.")
    orig = getattr(mlp, ORIG_HIDDEN_ATTR, n)
    if len(keep) == n:
        return
    idx = torch.tensor(keep, device=fc1.weight.device)
    with torch.no_grad():
        mlp.fc1 = new_linear_like(fc1, fc1.weight[idx], fc1.bias[idx] if fc1.bias is not None else None)
        mlp.fc2 = new_linear_like(fc2, fc2.weight[:, idx], fc2.bias)
    setattr(mlp, ORIG_HIDDEN_ATTR, orig)
