"""Importance criteria, once for every kind of prunable unit (Torch-Pruning's shape).

A :class:`UnitGroup` is a set of coupled units removed together: the heads of one attention
(rows of the q, k and v blocks of ``qkv``, columns of ``proj``) or the hidden units of one
MLP (rows of ``fc1``, columns of ``fc2``). A criterion is a small callable
``(model, groups, calib, generator) -> {group name: one score per unit}``:

- ``taylor``: ``sum over calibration batches of |dL/d gate_u|`` with a gate of ones on each
  unit where it enters the consuming layer (``proj`` / ``fc2``), in eval mode (Michel et al.
  2019 for heads; Molchanov et al. 2019); loss units, comparable across layers and kinds;
- ``taylor_signed``: the old ``|sum over batches of dL/d gate_u|`` (signs cancel; ablation);
- ``l1``: weight magnitude of the unit's slices (rows, their bias, columns), data-free;
- ``random``: the control, from a seeded generator.

:func:`score` looks a criterion up in :data:`REGISTRY` and runs it; how many units each
layer keeps is :mod:`.allocation`'s business, the surgery is :mod:`.heads` / :mod:`.mlp`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn
from timm.layers import Attention, Mlp
from timm.models.swin_transformer import WindowAttention

from ..errors import ConfigError
from .calibration import Calibration, gate_hook, gated_gradient_scores
from .heads import head_dim
from .mlp import dense_pair, hidden_width
from .units import mlps, window_attentions

Scores = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Slice:
    """Where a unit's weights sit in one tensor: along ``axis`` (0: rows/outputs, 1: columns/inputs)
    laid out as ``blocks x units x width`` (``qkv`` has 3 blocks: q, k, v)."""

    tensor: torch.Tensor
    axis: int
    blocks: int = 1


@dataclass(frozen=True)
class UnitGroup:
    """Coupled units of one module, scored and pruned together.

    Args:
        name: the module's path (the key of scores and allocations).
        kind: ``heads`` or ``mlp``.
        units: number of units (heads, hidden units).
        width: channels per unit where it enters ``gate`` (head dim, 1).
        gate: the layer whose input carries the units (``attn.proj``, ``mlp.fc2``).
        slices: the unit's weights, in the order their magnitudes are summed.
    """

    name: str
    kind: str
    units: int
    width: int
    gate: nn.Module
    slices: tuple[Slice, ...]


def head_group(name: str, attn: WindowAttention | Attention) -> UnitGroup:
    hd = head_dim(attn)
    qkv, proj = attn.qkv, attn.proj
    slices = [Slice(qkv.weight, 0, 3)] + ([Slice(qkv.bias, 0, 3)] if qkv.bias is not None else [])
    return UnitGroup(name, "heads", attn.num_heads, hd, proj, tuple(slices + [Slice(proj.weight, 1)]))


def mlp_group(name: str, mlp: Mlp) -> UnitGroup:
    fc1, fc2 = dense_pair(mlp)
    slices = [Slice(fc1.weight, 0), Slice(fc2.weight, 1)] + ([Slice(fc1.bias, 0)] if fc1.bias is not None else [])
    return UnitGroup(name, "mlp", hidden_width(mlp), 1, fc2, tuple(slices))


def head_groups(model: nn.Module) -> list[UnitGroup]:
    """One group per Swin ``WindowAttention`` of ``model``, in module order."""
    return [head_group(n, a) for n, a in window_attentions(model)]


def mlp_groups(model: nn.Module) -> list[UnitGroup]:
    """One group per timm ``Mlp`` of ``model``, in module order."""
    return [mlp_group(n, m) for n, m in mlps(model)]


# ------------------------------------------------------------------------ criteria
Criterion = Callable[[nn.Module, Sequence[UnitGroup], Calibration, torch.Generator], Scores]

#: How a kind of unit is named in messages, and the config field of its criterion.
_LABEL = {"heads": "head", "mlp": "MLP"}
_FIELD = {"heads": "head_criterion", "mlp": "mlp_criterion"}
#: MLP units draw their random scores from ``seed + 1``, heads from ``seed``.
_SEED_OFFSET = {"heads": 0, "mlp": 1}


def taylor_importance(model: nn.Module, groups: Sequence[UnitGroup], calib: Calibration, gen: torch.Generator) -> Scores:
    gates = {g.name: (g.gate, g.units, g.width) for g in groups}
    return gated_gradient_scores(model, gates, calib, f"taylor {_label(groups)} importance")


def taylor_signed_importance(model: nn.Module, groups: Sequence[UnitGroup], calib: Calibration,
                             gen: torch.Generator) -> Scores:
    """The old Taylor score (signed gradients summed over batches, then |.|): an ablation only."""
    gates = {g.name: (g.gate, g.units, g.width) for g in groups}
    return gated_gradient_scores(model, gates, calib, f"taylor {_label(groups)} importance", signed_sum=True)


def l1_importance(model: nn.Module, groups: Sequence[UnitGroup], calib: Calibration, gen: torch.Generator) -> Scores:
    out = {}
    for g in groups:
        total = None
        for s in g.slices:
            per_unit = _unit_magnitude(s, g.units, g.width)
            total = per_unit if total is None else total + per_unit
        out[g.name] = total.float().cpu()
    return out


def random_importance(model: nn.Module, groups: Sequence[UnitGroup], calib: Calibration, gen: torch.Generator) -> Scores:
    return {g.name: torch.rand(g.units, generator=gen) for g in groups}


REGISTRY: dict[str, Criterion] = {"taylor": taylor_importance, "taylor_signed": taylor_signed_importance,
                                   "l1": l1_importance, "random": random_importance}


def score(model: nn.Module, groups: Sequence[UnitGroup], criterion: str, calib: Calibration,
          seed: int = 0) -> Scores:
    """``{group name: float32 CPU scores}`` of ``criterion`` (a name in :data:`REGISTRY`) over ``groups``
    (all of one kind); higher means more important."""
    kind = groups[0].kind if groups else "heads"
    if criterion not in REGISTRY:
        raise ConfigError(_FIELD[kind], f"unknown criterion {criterion!r}; use one of {list(REGISTRY)}.")
    gen = torch.Generator().manual_seed(seed + _SEED_OFFSET[kind])
    return {k: v.detach().float().cpu() for k, v in REGISTRY[criterion](model, groups, calib, gen).items()}


def _label(groups: Sequence[UnitGroup]) -> str:
    return _LABEL[groups[0].kind] if groups else "unit"


def _unit_magnitude(s: Slice, units: int, width: int) -> torch.Tensor:
    """``sum |w|`` of each unit's part of one tensor."""
    t = s.tensor.detach().abs()
    if s.axis == 0:
        t = t.sum(1) if t.dim() == 2 else t
        return t.view(s.blocks, units, width).sum((0, 2))
    return t.sum(0).view(units, width).sum(1)


@contextlib.contextmanager
def gate_units(groups: Sequence[UnitGroup], gates: dict[str, torch.Tensor]) -> Iterator[None]:
    """Multiply every unit of ``groups`` by ``gates[name][u]`` where it enters its layer, while inside."""
    handles = []
    try:
        for g in groups:
            if g.name in gates:
                weight = next(g.gate.parameters())
                handles.append(g.gate.register_forward_pre_hook(gate_hook(gates[g.name].to(weight.device), g.width)))
        yield
    finally:
        for h in handles:
            h.remove()
