"""Per-layer allocation as plain data: how many units each layer keeps.

The pruner never branches on rankings: it asks :func:`for_heads` / :func:`for_mlp` for an
:data:`Allocation` (``{layer path: units kept}``), keeps each layer's best-scored units
(:func:`keep_top`) and cuts. A new rule (e.g. sensitivity-based ratios) is a new entry of
:data:`RANKINGS` or a new mapping handed over here, not a change to the pruner.

Rules (``ratio`` = fraction of units removed; no layer ever loses its last unit):

- ``uniform``: every layer loses ``round(ratio * n)`` of its ``n`` units (scores unused);
- ``global``: scores are divided by their layer's L2 norm and the lowest
  ``round(ratio * total)`` across the layers are removed wherever they are.

With per-stage ratios (heads), each stage is allocated on its own with its stage's ratio.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import ConfigError
from .config import PruneConfig
from .units import stage_of

Scores = dict[str, torch.Tensor]
#: ``{layer path: units kept}``.
Allocation = dict[str, int]
Rule = Callable[[Scores, float], Allocation]


def uniform(scores: Scores, ratio: float) -> Allocation:
    """Every layer keeps ``n - round(ratio * n)`` units (at least one)."""
    out = {}
    for k, s in scores.items():
        n = len(s)
        out[k] = n - min(n - 1, int(ratio * n + 0.5))
    return out


def global_(scores: Scores, ratio: float) -> Allocation:
    """The lowest ``round(ratio * total)`` per-layer-normalised scores are removed across all layers."""
    entries = []
    for li, (k, s) in enumerate(scores.items()):
        s = s.detach().double().cpu()
        norm = float(s.norm())
        sn = s / norm if norm > 0 else s
        entries.extend((float(sn[i]), li, i, k) for i in range(len(s)))
    n_remove = int(ratio * len(entries) + 0.5)
    left = {k: len(s) for k, s in scores.items()}
    done = 0
    for _score, _li, _i, k in sorted(entries):
        if done >= n_remove:
            break
        if left[k] <= 1:
            continue
        left[k] -= 1
        done += 1
    return left


RANKINGS: dict[str, Rule] = {"uniform": uniform, "global": global_}


def allocate(scores: Scores, ratio: float, ranking: str, stage_ratios: list[float] | None = None) -> Allocation:
    """Units each layer of ``scores`` keeps under ``ranking`` (see the module doc)."""
    if ranking not in RANKINGS:
        raise ConfigError("ranking", f"unknown ranking {ranking!r}; use global or uniform.")
    rule = RANKINGS[ranking]
    if stage_ratios is None:
        return _rule_or_all(rule, scores, ratio)
    stages = sorted({stage_of(k) for k in scores})
    if max(stages, default=-1) >= len(stage_ratios):
        raise ConfigError("stage_head_ratios", f"has {len(stage_ratios)} entries but the model has at least "
                                               f"{max(stages) + 1} stages; give one ratio per stage.")
    out: Allocation = {}
    for st in stages:
        out.update(_rule_or_all(rule, {k: v for k, v in scores.items() if stage_of(k) == st}, stage_ratios[st]))
    return {k: out[k] for k in scores}


def _rule_or_all(rule: Rule, scores: Scores, ratio: float) -> Allocation:
    return rule(scores, ratio) if ratio > 0 else {k: len(s) for k, s in scores.items()}


def for_heads(config: PruneConfig, scores: Scores) -> Allocation:
    """Heads each attention keeps under ``config`` (``head_ratio`` or ``stage_head_ratios``, ``head_ranking``)."""
    return allocate(scores, config.head_ratio, config.head_ranking, config.stage_head_ratios)


def for_mlp(config: PruneConfig, scores: Scores) -> Allocation:
    """Hidden units each MLP keeps under ``config`` (``mlp_ratio``, ``mlp_ranking``)."""
    return allocate(scores, config.mlp_ratio, config.mlp_ranking)


def keep_top(scores: Scores, allocation: Allocation) -> dict[str, list[int]]:
    """Indices (ascending) of each layer's ``allocation[layer]`` best-scored units; ties keep the later index."""
    keep = {}
    for k, s in scores.items():
        vals = s.detach().double().cpu().tolist()
        order = sorted(range(len(vals)), key=lambda i: (vals[i], i))  # lowest first
        removed = set(order[: len(vals) - allocation[k]])
        keep[k] = [i for i in range(len(vals)) if i not in removed]
    return keep


def select(scores: Scores, ratio: float, ranking: str, stage_ratios: list[float] | None = None) -> dict[str, list[int]]:
    """Which units to keep: :func:`keep_top` of :func:`allocate`."""
    return keep_top(scores, allocate(scores, ratio, ranking, stage_ratios))
