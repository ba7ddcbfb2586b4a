"""Building blocks that pruning puts into a model (the ground floor: imports nothing of accelvit
but its errors, so that metrics, serialisation and the pruner can all ask ``isinstance``).

``LowRankLinear`` replaces ``y = W x + b`` (``W`` is ``m x n``) by ``y = U (V x) + b`` with
``V`` ``r x n`` (``down``, no bias) and ``U`` ``m x r`` (``up``, the original bias). It costs
``r (m + n)`` weights instead of ``m n``. :func:`accelvit.prune.factorize` builds one from a
dense layer by truncated SVD.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .errors import ModelError


class LowRankLinear(nn.Module):
    """``up(down(x))``: ``down`` is ``in_features -> rank`` without bias, ``up`` is
    ``rank -> out_features`` carrying the original bias.

    Args:
        in_features: input width ``n``.
        out_features: output width ``m``.
        rank: inner width ``r`` (>= 1).
        bias: whether ``up`` has a bias.
        device, dtype: of both factors.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        if not 1 <= rank:
            raise ModelError(f"LowRankLinear: rank must be >= 1, got {rank}.")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.rank = int(rank)
        self.down = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def dense_weight(self) -> torch.Tensor:
        """The ``out x in`` product ``up.weight @ down.weight``."""
        return self.up.weight @ self.down.weight

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"bias={self.up.bias is not None}")


__all__ = ["LowRankLinear"]
