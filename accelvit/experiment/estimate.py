"""The cost preview of the Experiment form: FLOPs and parameters before and after pruning, in seconds.

It prunes an untrained copy of the model with the run's structure settings and measures both
(:func:`accelvit.metrics.measure`: no latency, no thop, no files), so the form can say what
a run will remove before anything is trained.

:func:`estimate_key` reduces a config to what the preview reads (the architecture, the input
size, the number of classes and the data-free prune settings); :func:`estimate_from_key` computes
the preview from that key alone, so a cache keyed on it is recomputed only when the preview can
change, never for an edit of the epochs, learning rates, seed or name.
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
from ..prune.config import DATA_CRITERIA, PruneConfig
from .config import ExperimentConfig

ESTIMATE_NOTE = ("Estimated on an untrained copy: the data-free l1 criterion stands in for taylor and plain SVD "
                 "for activation-aware SVD, and the IHT sparsity is applied by magnitude in one shot. Structural "
                 "counts (heads, widths, ranks) match what the run will remove when heads are ranked uniformly; "
                 "with global ranking, an energy threshold or a FLOP target allocated by sensitivity (estimated "
                 "here with the uniform rule: the FLOPs match, the per-layer split and parameters do not) the "
                 "split depends on the trained weights.")

ESTIMATE_KEYS = ("dense_flops", "effective_flops", "params", "nonzero_params")

#: Prune settings that only shape the finetune (IHT schedule, gradual steps, calibration, damping of
#: activation-aware SVD): the preview applies the final state in one shot, so they do not change it.
SCHEDULE_ONLY = ("iht_interval", "iht_ramp_frac", "prune_steps", "calib_batches", "svd_damping")


def data_free(pc: PruneConfig) -> PruneConfig:
    """The prune settings the preview runs: l1 for the data criteria, plain SVD, the uniform FLOP rule."""
    return dataclasses.replace(
        pc, head_criterion="l1" if pc.head_criterion in DATA_CRITERIA else pc.head_criterion,
        mlp_criterion="l1" if pc.mlp_criterion in DATA_CRITERIA else pc.mlp_criterion, activation_aware=False,
        target_rule="uniform")  # the sensitivity rule needs the trained model's loss scores


def estimate_key(config: ExperimentConfig) -> dict[str, Any]:
    """Everything :func:`estimate_from_key` reads, as plain JSON-able data.

    The architecture (a scratch / timm name, or a saved model folder with the time its files were
    written), the input size, the number of classes (not the data set: CIFAR-10 and digits share a
    classifier) and the data-free prune settings (:func:`data_free`, without :data:`SCHEDULE_ONLY`).
    Weights are not part of it: the preview is computed on an untrained copy.
    """
    checkpoint = stamp = None
    if config.baseline_checkpoint:
        folder = Path(config.baseline_checkpoint).expanduser()
        checkpoint = str(folder)
        stamp = [p.stat().st_mtime_ns if p.exists() else None
                 for p in (folder / serialize.WEIGHTS_FILE, folder / serialize.SPEC_FILE)]
    prune_d = data_free(config.prune).to_dict()
    for k in SCHEDULE_ONLY:
        prune_d.pop(k, None)
    return {
        "model": None if checkpoint else config.model,
        "checkpoint": checkpoint,
        "checkpoint_stamp": stamp,
        "img_size": int(config.data.img_size),
        "num_classes": None if checkpoint else num_classes_of(config.data.dataset, config.data.root),
        "prune": prune_d,
    }


def estimate_from_key(key: dict[str, Any]) -> dict[str, Any]:
    """The preview of :func:`estimate_cost` from an :func:`estimate_key` (nothing else is read)."""
    pc = PruneConfig(**{**key["prune"], "svd_layers": tuple(key["prune"]["svd_layers"]),
                        "iht_layers": tuple(key["prune"]["iht_layers"])})
    img = int(key["img_size"])
    if key.get("checkpoint"):
        model, _ = serialize.load(Path(key["checkpoint"]))
    else:
        model = build_model(key["model"], int(key["num_classes"]), img_size=img)
    model.eval()
    size = (3, img, img)
    before = measure(model, size, latency=False, thop=False, size=False).to_dict()
    pruned, _report = prune(copy.deepcopy(model), pc, None)
    hook = make_iht_hook(pruned, pc)
    if hook is not None:
        hook.finalize(pruned)  # what IHT reaches at the end of the finetune, by magnitude
    after = measure(pruned, size, latency=False, thop=False, size=False).to_dict()
    return {"before": {k: before[k] for k in ESTIMATE_KEYS}, "after": {k: after[k] for k in ESTIMATE_KEYS},
            "note": ESTIMATE_NOTE}


def estimate_cost(config: ExperimentConfig) -> dict[str, Any]:
    """Dense/effective FLOPs and (nonzero) params before and after pruning, from a pruned copy.

    ``config`` is a validated ExperimentConfig. Returns ``{"before": {...}, "after": {...},
    "note": str}``, each side holding ``ESTIMATE_KEYS``.
    """
    return estimate_from_key(estimate_key(config))
