"""Structural pruning of timm Swin models: heads, MLP width, low-rank SVD, IHT sparsity.

    from accelvit.prune import PruneConfig, prune, make_iht_hook
    model, report = prune(model, PruneConfig(head_ratio=0.5, rank_ratio=0.5), calib_loader)
    hook = make_iht_hook(model, config)            # None when sparsity == 0
    fit(model, train_loader, TrainConfig(...), hooks=[hook] if hook else [])

Layout: ``config`` (PruneConfig) -> ``entry.prune`` picks ``pruner.apply_ratios`` (fixed
ratios) or ``flop_target`` (searches the ratios, then applies them). The pruner composes
``importance`` (criteria), ``allocation`` (units kept per layer), the surgery of ``heads``,
``mlp`` and ``lowrank``, and ``calibration`` (the data the criteria read); ``units`` finds
the layers; ``structure`` saves/replays what was cut; ``sparse`` is IHT during finetuning.
"""

from ..layers import LowRankLinear
from .calibration import fixed_calibration
from .config import CRITERIA, IHT_SCOPES, LINEAR_KINDS, RANKINGS, PruneConfig
from .entry import prune
from .flop_target import prune_to_target, solve_target_flops
from .heads import remove_heads
from .lowrank import factorize
from .mlp import prune_mlp
from .pruner import PruneProgress, PruneReport, apply_ratios
from .sparse import IHTHook, make_iht_hook
from .structure import apply_structure, describe_structure
from .units import count_nonzero, count_params

__all__ = [
    "CRITERIA", "IHT_SCOPES", "LINEAR_KINDS", "RANKINGS", "PruneConfig", "PruneProgress", "PruneReport", "prune",
    "apply_ratios", "solve_target_flops", "prune_to_target", "fixed_calibration", "remove_heads", "prune_mlp",
    "LowRankLinear", "factorize", "IHTHook", "make_iht_hook", "describe_structure", "apply_structure",
    "count_params", "count_nonzero",
]
