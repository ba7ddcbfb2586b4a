"""Allocation by sensitivity per FLOP: which heads and MLP units to remove, across all layers.

The rule of the FLOP-target search ``target_rule="sensitivity"`` (Molchanov et al. 2019,
HALP): every unit (a head, an MLP hidden unit) gets

    value = score / cost

where ``score`` is its importance under the configured criterion (``taylor``: the summed
|first-order loss change| when the unit is removed, in loss units for heads and MLP units
alike, never normalised per layer) and ``cost`` the dense FLOPs the unit costs, *measured*:
the FLOPs :func:`accelvit.metrics.count_flops` attributes to its attention (MLP) module
divided by the module's heads (hidden units). Every FLOP of a Swin ``WindowAttention`` (q/k/v
rows, the two attention matmuls, ``proj`` columns) and of an ``Mlp`` (``fc1`` rows, ``fc2``
columns) scales with its unit count, so the per-unit cost is exact for dense layers.

Units are removed in ascending ``value`` order until the removed cost reaches a given
fraction of all the units' cost (:meth:`SensitivityRanking.allocation`); no layer loses its
last unit. The FLOP-target search scales that fraction (and the SVD share, if any) until the
measured FLOPs meet the target, so the allocation per layer follows from the scores: cheap,
unimportant units go first, wherever they are.

:meth:`SensitivityRanking.table` is the per-layer sensitivity as data (for the report and
the dashboard's heatmap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..metrics import count_flops
from .importance import UnitGroup
from .units import stage_of

Scores = dict[str, torch.Tensor]


def unit_costs(model: nn.Module, groups: Sequence[UnitGroup], input_size: Any = None,
               by_module: dict[str, int] | None = None) -> dict[str, float]:
    """Dense FLOPs per unit of every group: the group's module FLOPs (measured) / its units.

    ``by_module`` is ``count_flops(model, input_size).by_module`` when the caller has counted already.
    """
    if by_module is None:
        by_module = count_flops(model, input_size).by_module
    out = {}
    for g in groups:
        flops = by_module.get(g.name, 0)
        out[g.name] = float(flops) / g.units if g.units else 0.0
    return out


@dataclass
class Allocation:
    """Units kept per layer, by kind, and what was removed."""

    heads: dict[str, int]
    mlp: dict[str, int]
    removed_cost: float
    head_ratio: float      # fraction of all heads removed
    mlp_ratio: float       # fraction of all MLP hidden units removed


class SensitivityRanking:
    """All units of ``groups`` ordered by score per FLOP (see the module docstring).

    Args:
        groups: head and/or MLP unit groups of one model.
        scores: ``{group name: per-unit scores}`` (higher: more important).
        costs: ``{group name: FLOPs per unit}`` (:func:`unit_costs`).
    """

    def __init__(self, groups: Sequence[UnitGroup], scores: Scores, costs: dict[str, float]):
        self.groups = list(groups)
        self.scores = {k: v.detach().double().cpu() for k, v in scores.items()}
        self.costs = dict(costs)
        entries = []
        for g in self.groups:
            c = max(self.costs[g.name], 1e-12)
            s = self.scores[g.name]
            entries.extend((float(s[i]) / c, g.name, i) for i in range(g.units))
        # lowest score per FLOP first; ties: later layers, later units first (deterministic)
        pos = {g.name: i for i, g in enumerate(self.groups)}
        self.order = sorted(entries, key=lambda e: (e[0], -pos[e[1]], -e[2]))
        self.total_cost = sum(self.costs[g.name] * g.units for g in self.groups)

    def allocation(self, fraction: float) -> Allocation:
        """Remove units in order while their cost fits in ``fraction`` of all units' cost.

        A unit that would overshoot the budget is skipped and the next (cheaper ones may fit):
        a stage-0 head costs as much as hundreds of MLP units, so stopping at the first that
        does not fit would leave the FLOPs a step function of ``fraction``.
        """
        budget = max(0.0, float(fraction)) * self.total_cost
        left = {g.name: g.units for g in self.groups}
        removed = 0.0
        slack = 1e-9 * max(self.total_cost, 1.0)
        for _v, name, _i in self.order:
            if left[name] <= 1 or removed + self.costs[name] > budget + slack:
                continue
            left[name] -= 1
            removed += self.costs[name]
        kinds = {g.name: g.kind for g in self.groups}
        heads = {k: n for k, n in left.items() if kinds[k] == "heads"}
        mlp = {k: n for k, n in left.items() if kinds[k] == "mlp"}
        return Allocation(heads=heads, mlp=mlp, removed_cost=removed,
                          head_ratio=_removed_fraction(self.groups, heads),
                          mlp_ratio=_removed_fraction(self.groups, mlp))

    def table(self, allocation: Allocation | None = None) -> list[dict[str, Any]]:
        """One row per layer: kind, stage, units, FLOPs per unit, summed / mean score, mean score
        per MFLOP (the sensitivity the ranking uses) and, with ``allocation``, units kept."""
        kept = {**allocation.heads, **allocation.mlp} if allocation is not None else {}
        rows = []
        for g in self.groups:
            s = self.scores[g.name]
            c = self.costs[g.name]
            row = {"module": g.name, "kind": g.kind, "stage": stage_of(g.name), "units": g.units,
                   "flops_per_unit": c, "score_sum": float(s.sum()), "score_mean": float(s.mean()),
                   "score_per_mflop": float(s.mean()) / (c / 1e6) if c > 0 else None}
            if g.name in kept:
                row["kept"] = kept[g.name]
            rows.append(row)
        return rows


def _removed_fraction(groups: Sequence[UnitGroup], kept: dict[str, int]) -> float:
    total = sum(g.units for g in groups if g.name in kept)
    if total == 0:
        return 0.0
    return round(1 - sum(kept.values()) / total, 6)


# ------------------------------------------------------------------------ the report's per-layer rows
#: What a ``PruneReport.sensitivity`` row's numbers are, by its ``measure``.
MEASURES: dict[str, str] = {
    "taylor": "summed |dL/d gate| over the calibration batches: the first-order loss change of removing the unit",
    "taylor_signed": "|sum of dL/d gate| over the calibration batches (the old, cancelling Taylor score)",
    "l1": "weight magnitude (sum |w|) of the unit's rows and columns; data-free, not a loss change",
    "random": "random numbers (the control criterion): nothing was measured",
    "svd_energy": "fraction of the weight's squared singular values beyond the kept rank: ||W - W_r||_F^2 / ||W||_F^2",
    "activation_energy": "fraction of the squared singular values of W L beyond the kept rank (L L^T = the calibration "
                         "inputs' second moment): the relative output error E||(W - W_r) x||^2 / E||W x||^2",
}


def unit_row(name: str, kind: str, scores: torch.Tensor, keep: Sequence[int], criterion: str) -> dict[str, Any]:
    """A ``heads`` / ``mlp`` row of ``PruneReport.sensitivity`` from the scores the prune ranked the units by."""
    s = scores.detach().double().cpu()
    mask = torch.zeros(len(s), dtype=torch.bool)
    mask[torch.as_tensor(list(keep), dtype=torch.long)] = True
    kept, gone = s[mask], s[~mask]
    return {"module": name, "kind": kind, "stage": stage_of(name), "measure": criterion, "units": len(s),
            "kept": len(kept), "score_sum": float(s.sum()), "score_mean": float(s.mean()) if len(s) else None,
            "score_mean_kept": float(kept.mean()) if len(kept) else None,
            "score_mean_removed": float(gone.mean()) if len(gone) else None}


def rank_row(name: str, out_features: int, in_features: int, singular_values: torch.Tensor, rank: int | None,
             activation_aware: bool) -> dict[str, Any]:
    """A ``rank`` row of ``PruneReport.sensitivity``: the rank kept (``units`` = full rank ``min(m, n)``; a
    layer left dense keeps it all) and the fraction of (activation-weighted) spectral energy discarded."""
    full = min(out_features, in_features)
    kept = full if rank is None else int(rank)
    s2 = singular_values.detach().double().cpu() ** 2
    total = float(s2.sum())
    return {"module": name, "kind": "rank", "stage": stage_of(name),
            "measure": "activation_energy" if activation_aware else "svd_energy", "units": full, "kept": kept,
            "in_features": in_features, "out_features": out_features, "dense": rank is None,
            "energy_discarded": float(s2[kept:].sum()) / total if total > 0 else 0.0}


def with_ranking(rows: list[dict[str, Any]] | None, table: list[dict[str, Any]] | None,
                 criteria: dict[str, str]) -> list[dict[str, Any]] | None:
    """``rows`` (the prune's) with the ranking's FLOPs per unit and score per MFLOP added to the matching
    ``heads`` / ``mlp`` rows; a ranking row the prune did not record (a ``random`` criterion) is appended."""
    if not table:
        return rows
    out = [dict(r) for r in rows or []]
    at = {(r["module"], r["kind"]): r for r in out}
    for t in table:
        r = at.get((t["module"], t["kind"]))
        if r is None:
            out.append({**t, "measure": criteria.get(t["kind"])})
        else:
            r.update(flops_per_unit=t["flops_per_unit"], score_per_mflop=t["score_per_mflop"])
    return out
