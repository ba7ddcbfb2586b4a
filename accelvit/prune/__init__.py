"""Structural pruning of timm Swin models: heads, MLP width, low-rank SVD, IHT sparsity.

    from accelvit.prune import PruneConfig, prune, make_iht_hook
    model, report = prune(model, PruneConfig(head_ratio=0.5, rank_ratio=0.5), calib_loader)
    hook = make_iht_hook(model, config)            # None when sparsity == 0
    fit(model, train_loader, TrainConfig(...), hooks=[hook] if hook else [])
"""

from .config import CRITERIA, LINEAR_KINDS, PruneConfig
from .core import PruneProgress, PruneReport, prune
from .heads import remove_heads
from .lowrank import LowRankLinear, factorize
from .mlp import prune_mlp
from .sparse import IHTHook, make_iht_hook
from .structure import apply_structure, describe_structure

__all__ = [
    "CRITERIA", "LINEAR_KINDS", "PruneConfig", "PruneProgress", "PruneReport", "prune", "remove_heads",
    "prune_mlp", "LowRankLinear", "factorize", "IHTHook", "make_iht_hook", "describe_structure",
    "apply_structure",
]
