"""``prune()``: the one entry point. Fixed ratios go to the pruner, a FLOP target to the search."""

from __future__ import annotations

from typing import Callable, Iterable

import torch.nn as nn

from ..utils import CancelToken
from .calibration import require_loader
from .config import PruneConfig
from .flop_target import prune_to_target
from .pruner import PruneProgress, PruneReport, apply_ratios


def prune(model: nn.Module, config: PruneConfig, calib_loader: Iterable | None = None,
          progress: Callable[[PruneProgress], None] | None = None,
          cancel: CancelToken | None = None) -> tuple[nn.Module, PruneReport]:
    """Prune ``model`` in place: attention heads, then MLP width, then low-rank SVD.

    With ``config.target_flops`` the head / MLP / rank ratios are first searched so that the
    dense FLOPs reach that fraction of the model's (:mod:`.flop_target`; the report's
    ``config`` holds the solved ratios and ``target`` the search); otherwise the ratios are
    applied as given (:func:`.pruner.apply_ratios`).

    ``calib_loader`` yields ``(images, labels)``; only the first ``config.calib_batches``
    batches are used, and only by the ``taylor`` criteria and activation-aware SVD. IHT
    sparsity is not applied here: attach ``make_iht_hook(model, config)`` to the finetune.
    Returns the same model object and a :class:`~.pruner.PruneReport`.
    """
    config.validate()
    require_loader(config.needs_calibration, calib_loader)
    if config.target_flops is None:
        return apply_ratios(model, config, calib_loader, progress=progress, cancel=cancel)
    model, report, _solved, _info = prune_to_target(model, config, config.target_flops, calib_loader=calib_loader,
                                                    rule=config.target_rule, progress=progress, cancel=cancel)
    return model, report
