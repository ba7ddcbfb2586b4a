"""The cost preview of the Experiment form: FLOPs and parameters before and after pruning, in seconds.

It prunes an untrained copy of the model with the run's structure settings and measures both
(:func:`accelvit.metrics.measure`: no latency, no thop, no files), so the form can say what
a run will remove before anything is trained.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from .. import serialize
from ..data import num_classes_of
from ..metrics import measure
from ..models import build_model
from ..prune import make_iht_hook, prune
from ..prune.config import DATA_CRITERIA
from .config import ExperimentConfig

ESTIMATE_NOTE = ("Estimated on an untrained copy: the data-free l1 criterion stands in for taylor and plain SVD "
                 "for activation-aware SVD, and the IHT sparsity is applied by magnitude in one shot. Structural "
                 "counts (heads, widths, ranks) match what the run will remove when heads are ranked uniformly; "
                 "with global ranking, an energy threshold or a FLOP target allocated by sensitivity (estimated "
                 "here with the uniform rule: the FLOPs match, the per-layer split and parameters do not) the "
                 "split depends on the trained weights.")

ESTIMATE_KEYS = ("dense_flops", "effective_flops", "params", "nonzero_params")


def estimate_cost(config: ExperimentConfig) -> dict[str, Any]:
    """Dense/effective FLOPs and (nonzero) params before and after pruning, from a pruned copy.

    ``config`` is a validated ExperimentConfig. Returns ``{"before": {...}, "after": {...},
    "note": str}``, each side holding ``ESTIMATE_KEYS``.
    """
    pc = config.prune
    if config.baseline_checkpoint:
        model, _ = serialize.load(Path(config.baseline_checkpoint).expanduser())
    else:
        model = build_model(config.model, num_classes_of(config.data.dataset, config.data.root),
                            img_size=config.data.img_size)
    model.eval()
    size = (3, config.data.img_size, config.data.img_size)
    before = measure(model, size, latency=False, thop=False, size=False).to_dict()
    data_free = dataclasses.replace(
        pc, head_criterion="l1" if pc.head_criterion in DATA_CRITERIA else pc.head_criterion,
        mlp_criterion="l1" if pc.mlp_criterion in DATA_CRITERIA else pc.mlp_criterion, activation_aware=False,
        target_rule="uniform")  # the sensitivity rule needs the trained model's loss scores
    pruned, _report = prune(copy.deepcopy(model), data_free, None)
    hook = make_iht_hook(pruned, pc)
    if hook is not None:
        hook.finalize(pruned)  # what IHT reaches at the end of the finetune, by magnitude
    after = measure(pruned, size, latency=False, thop=False, size=False).to_dict()
    return {"before": {k: before[k] for k in ESTIMATE_KEYS}, "after": {k: after[k] for k in ESTIMATE_KEYS},
            "note": ESTIMATE_NOTE}
