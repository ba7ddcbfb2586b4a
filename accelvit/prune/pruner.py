"""The pruner: apply fixed ratios to a model, heads -> MLP width -> SVD, with a per-layer report.

It composes the pieces and holds no policy of its own: :mod:`.importance` scores the units
with the configured criterion, :mod:`.allocation` turns the ratios into ``{layer: units
kept}``, :mod:`.heads` / :mod:`.mlp` / :mod:`.lowrank` do the surgery. ``target_flops`` is
not looked at here: :mod:`.flop_target` searches the ratios and calls :func:`apply_ratios`,
and :func:`accelvit.prune.prune` picks one of the two.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..utils import CancelToken, check_cancel
from .allocation import for_heads, for_mlp, keep_top
from .importance import head_groups, mlp_groups, score
from .calibration import Calibration, require_loader
from .config import PruneConfig
from .heads import head_dim, original_head_index, remove_heads
from .lowrank import choose_rank, collect_input_moments, factorize, svd_of
from .mlp import hidden_width, prune_mlp
from .sensitivity import Allocation, rank_row, unit_row
from .units import (count_nonzero, count_params, linear_layers, mlps, model_device, num_stages, set_submodule,
                    stage_of, window_attentions)

log = logging.getLogger(__name__)


@dataclass
class PruneProgress:
    """One progress report of ``prune``."""

    stage: str            # "heads" | "mlp" | "svd" | "target" | "done"
    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / max(1, self.total)


@dataclass
class PruneReport:
    """What ``prune`` changed. ``layers`` has one entry per touched attention / MLP / linear."""

    config: dict[str, Any]
    params_before: int
    params_after: int
    nonzero_before: int
    nonzero_after: int
    heads_before: int
    heads_after: int
    mlp_hidden_before: int
    mlp_hidden_after: int
    lowrank_layers: int
    seconds: float
    layers: list[dict[str, Any]] = field(default_factory=list)
    #: With ``target_flops``: the search (requested/achieved FLOPs, solved ratios, evaluations).
    target: dict[str, Any] | None = None
    #: The per-layer sensitivity the prune measured, in model order within each kind; None when it measured
    #: nothing (no pruning by scores or SVD, ``random`` criteria, or a report written before it existed).
    #: Every row: ``module`` (path), ``kind`` (``heads`` | ``mlp`` | ``rank``), ``stage``, ``measure`` (what
    #: the numbers are, a key of :data:`.sensitivity.MEASURES`), ``units`` (heads / MLP hidden units / full
    #: rank ``min(m, n)`` before this prune) and ``kept`` (heads, hidden units, rank after it).
    #: ``heads`` / ``mlp`` rows (whenever ``taylor``, ``taylor_signed`` or ``l1`` scored the units): the
    #: criterion's ``score_sum`` and ``score_mean`` over the layer's units and ``score_mean_kept`` /
    #: ``score_mean_removed`` (None when no unit was kept / removed); under the FLOP target's
    #: ``sensitivity`` rule also ``flops_per_unit`` (measured) and ``score_per_mflop`` (``score_mean`` per
    #: MFLOP of one unit, what the ranking sorted by; :meth:`.sensitivity.SensitivityRanking.table`).
    #: ``rank`` rows (every linear SVD looked at): ``energy_discarded`` (fraction of the squared singular
    #: values of ``W``, or of ``W L`` when activation-aware, beyond the kept rank; 0 for a layer left
    #: dense), ``in_features``, ``out_features``, ``dense``. Plain JSON types only.
    sensitivity: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["param_reduction"] = 1 - self.params_after / self.params_before if self.params_before else 0.0
        return d


Emit = Callable[..., None]  # (stage, done, total, message="")


def _total_heads(model: nn.Module) -> int:
    return sum(a.num_heads for _, a in window_attentions(model))


def _total_hidden(model: nn.Module) -> int:
    return sum(m.fc1.out_features for _, m in mlps(model))


def apply_ratios(model: nn.Module, config: PruneConfig, calib_loader: Iterable | None = None,
                 progress: Callable[[PruneProgress], None] | None = None, cancel: CancelToken | None = None,
                 head_scores: dict[str, torch.Tensor] | None = None,
                 allocation: Allocation | None = None,
                 mlp_scores: dict[str, torch.Tensor] | None = None) -> tuple[nn.Module, PruneReport]:
    """Prune ``model`` in place by the ratios of ``config``: attention heads, then MLP width, then SVD.

    ``calib_loader`` yields ``(images, labels)``; only the first ``config.calib_batches``
    batches are used, and only by the ``taylor`` criteria and activation-aware SVD.
    ``head_scores`` (``{attention path: scores}`` of this very model) replaces scoring the
    heads, for callers that prune many copies of one model. IHT sparsity is not applied
    here: attach ``make_iht_hook(model, config)`` to the finetune. Returns the same model
    object and a :class:`PruneReport` whose ``config`` is ``config``.

    ``allocation`` (a :class:`.sensitivity.Allocation`, ``{layer: units kept}`` per kind)
    replaces the per-layer counts the rankings would give (the ``sensitivity`` rule of the
    FLOP-target search); the ratios then only say whether a kind is pruned at all.
    ``mlp_scores`` replaces scoring the MLP units, as ``head_scores`` does for heads.
    """
    config.validate()
    require_loader(config.ratios_need_calibration and head_scores is None, calib_loader)
    start = time.perf_counter()
    calib = Calibration(calib_loader, config.calib_batches, model_device(model), cancel)
    report = PruneReport(
        config=config.to_dict(), params_before=count_params(model), params_after=0,
        nonzero_before=count_nonzero(model), nonzero_after=0, heads_before=_total_heads(model), heads_after=0,
        mlp_hidden_before=_total_hidden(model), mlp_hidden_after=0, lowrank_layers=0, seconds=0.0)

    def emit(stage: str, done: int, total: int, message: str = "") -> None:
        if progress is not None:
            progress(PruneProgress(stage, done, total, message))

    if config.prunes_heads:
        _prune_heads(model, config, calib, report, emit, cancel, head_scores,
                     allocation.heads if allocation is not None else None)
    if config.mlp_ratio > 0:
        _prune_mlp_width(model, config, calib, report, emit, cancel, mlp_scores,
                         allocation.mlp if allocation is not None else None)
    if config.svd_enabled:
        _factorize_linears(model, config, calib, report, emit, cancel)
    report.sensitivity = report.sensitivity or None

    report.params_after = count_params(model)
    report.nonzero_after = count_nonzero(model)
    report.heads_after = _total_heads(model)
    report.mlp_hidden_after = _total_hidden(model)
    report.seconds = time.perf_counter() - start
    emit("done", 1, 1, f"{report.params_before} -> {report.params_after} parameters")
    log.info("Pruned: %d -> %d parameters, %d -> %d heads, %d low-rank layers (%.1fs).", report.params_before,
             report.params_after, report.heads_before, report.heads_after, report.lowrank_layers, report.seconds)
    return model, report


def score_heads(model: nn.Module, config: PruneConfig, calib: Calibration) -> dict[str, torch.Tensor]:
    """``config.head_criterion``'s scores of every Swin attention's heads."""
    return score(model, head_groups(model), config.head_criterion, calib, config.seed)


def _prune_heads(model: nn.Module, config: PruneConfig, calib: Calibration, report: PruneReport, emit: Emit,
                 cancel: CancelToken | None, scores: dict[str, torch.Tensor] | None,
                 counts: dict[str, int] | None = None) -> None:
    targets = window_attentions(model)
    if not targets:
        raise ConfigError("head_ratio", "the model has no Swin WindowAttention layer whose heads could be pruned.")
    if config.stage_head_ratios is not None and len(config.stage_head_ratios) != num_stages(model):
        raise ConfigError("stage_head_ratios", f"has {len(config.stage_head_ratios)} entries but the model has "
                                               f"{num_stages(model)} stages; give one ratio per stage.")
    if scores is None:
        check_cancel(cancel, "head importance")
        emit("heads", 0, len(targets), f"scoring heads ({config.head_criterion})")
        scores = score_heads(model, config, calib)
    keep = keep_top(scores, counts if counts is not None else for_heads(config, scores))
    _record_units(report, "heads", scores, keep, config.head_criterion)
    for i, (name, attn) in enumerate(targets, start=1):
        check_cancel(cancel, f"head removal ({name})")
        before_idx = original_head_index(attn)
        n_before = attn.num_heads
        p_before = count_params(attn)
        remove_heads(attn, keep[name])
        if attn.num_heads != n_before:
            report.layers.append({
                "kind": "heads", "module": name, "stage": stage_of(name), "before": n_before,
                "after": attn.num_heads, "head_dim": head_dim(attn),
                "kept": original_head_index(attn),
                "removed": [h for h in before_idx if h not in set(original_head_index(attn))],
                "scores": [round(float(s), 6) for s in scores[name]],
                "params_removed": p_before - count_params(attn)})
        emit("heads", i, len(targets), name)


def _prune_mlp_width(model: nn.Module, config: PruneConfig, calib: Calibration, report: PruneReport, emit: Emit,
                     cancel: CancelToken | None, scores: dict[str, torch.Tensor] | None = None,
                     counts: dict[str, int] | None = None) -> None:
    targets = mlps(model)
    if not targets:
        raise ConfigError("mlp_ratio", "the model has no MLP whose width could be pruned.")
    if scores is None:
        check_cancel(cancel, "MLP importance")
        emit("mlp", 0, len(targets), f"scoring MLP units ({config.mlp_criterion})")
        scores = score(model, mlp_groups(model), config.mlp_criterion, calib, config.seed)
    keep = keep_top(scores, counts if counts is not None else for_mlp(config, scores))
    _record_units(report, "mlp", scores, keep, config.mlp_criterion)
    for i, (name, m) in enumerate(targets, start=1):
        check_cancel(cancel, f"MLP pruning ({name})")
        before = hidden_width(m)
        p_before = count_params(m)
        prune_mlp(m, keep[name])
        if hidden_width(m) != before:
            report.layers.append({"kind": "mlp", "module": name, "stage": stage_of(name), "before": before,
                                  "after": hidden_width(m), "params_removed": p_before - count_params(m)})
        emit("mlp", i, len(targets), name)


def _factorize_linears(model: nn.Module, config: PruneConfig, calib: Calibration, report: PruneReport, emit: Emit,
                       cancel: CancelToken | None) -> None:
    targets = [(n, m) for n, m in linear_layers(model, config.svd_layers, include_lowrank=False)]
    if not targets:
        raise ConfigError("svd_layers", f"no dense linear layer of the kinds {list(config.svd_layers)} was found.")
    moments: dict[str, torch.Tensor] = {}
    if config.activation_aware:
        emit("svd", 0, len(targets), "collecting calibration activations")
        moments = collect_input_moments(model, [n for n, _ in targets], calib)
    for i, (name, lin) in enumerate(targets, start=1):
        check_cancel(cancel, f"SVD ({name})")
        m, n = lin.out_features, lin.in_features
        moment = moments.get(name) if config.activation_aware else None
        if config.activation_aware and moment is None:
            log.warning("%s saw no calibration input; using plain SVD.", name)
        fac = svd_of(lin.weight, moment, config.svd_damping)
        rank = choose_rank(m, n, fac.s, config.rank_ratio, config.energy)
        entry: dict[str, Any] = {"kind": "lowrank", "module": name, "stage": stage_of(name), "in_features": n,
                                 "out_features": m, "activation_aware": moment is not None}
        if rank is None:
            entry.update(kind="dense", reason="a factorisation at the chosen rank would not cut weights or FLOPs "
                                              "(r*(m+n) >= m*n), so the layer stays dense")
        else:
            low = factorize(lin, rank, fac=fac)
            set_submodule(model, name, low)
            s2 = fac.s.double() ** 2
            entry.update(rank=rank, params_before=lin.weight.numel(), params_after=rank * (m + n),
                         energy_kept=round(float(s2[:rank].sum() / s2.sum()) if float(s2.sum()) > 0 else 1.0, 6))
            report.lowrank_layers += 1
        report.layers.append(entry)
        _sensitivity(report).append(rank_row(name, m, n, fac.s, rank, fac.activation_aware))
        emit("svd", i, len(targets), name)


def _sensitivity(report: PruneReport) -> list[dict[str, Any]]:
    if report.sensitivity is None:
        report.sensitivity = []
    return report.sensitivity


def _record_units(report: PruneReport, kind: str, scores: dict[str, torch.Tensor], keep: dict[str, list[int]],
                  criterion: str) -> None:
    """The scores the units were ranked by, per layer (not for ``random``: those measure nothing)."""
    if criterion == "random":
        return
    _sensitivity(report).extend(unit_row(name, kind, s, keep[name], criterion) for name, s in scores.items())
