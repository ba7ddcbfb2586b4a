"""MLP width pruning: remove hidden units (rows of ``fc1`` and its bias, columns of ``fc2``).

Criteria mirror the head criteria: ``taylor`` (|sum of dL/d gate_j| with a gate of ones on
every hidden unit, i.e. the input of ``fc2``), ``l1`` (|fc1 row| + |fc1 bias| + |fc2 column|)
and ``random``.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn
from timm.layers import Mlp

from ..errors import ConfigError, ModelError
from .common import Calibration, gated_gradient_scores, mlps, new_linear_like

MlpScores = dict[str, torch.Tensor]
MlpCriterion = Callable[[nn.Module, list[tuple[str, Mlp]], Calibration, torch.Generator], MlpScores]

#: Attribute on a pruned Mlp: its hidden width before any pruning.
ORIG_HIDDEN_ATTR = "accelvit_orig_hidden"


def _dense_pair(mlp: Mlp) -> tuple[nn.Linear, nn.Linear]:
    if type(mlp.fc1) is not nn.Linear or type(mlp.fc2) is not nn.Linear:
        raise ModelError("Cannot prune the width of an MLP whose fc1/fc2 are not dense nn.Linear layers: prune "
                         "MLP width before low-rank factorisation (prune applies heads -> MLP -> SVD).")
    if not isinstance(mlp.norm, nn.Identity):
        raise ModelError("MLP width pruning supports MLPs without a hidden norm layer (as in Swin).")
    return mlp.fc1, mlp.fc2


def hidden_width(mlp: Mlp) -> int:
    return _dense_pair(mlp)[0].out_features


def prune_mlp(mlp: Mlp, keep: Sequence[int]) -> None:
    """Keep only hidden units ``keep`` of ``mlp``, in place."""
    fc1, fc2 = _dense_pair(mlp)
    n = fc1.out_features
    keep = sorted(set(int(k) for k in keep))
    if not keep:
        raise ModelError("prune_mlp: at least one hidden unit must be kept.")
    if keep[0] < 0 or keep[-1] >= n:
        raise ModelError(f"prune_mlp: unit indices are out of range for an MLP with {n} hidden units.")
    orig = getattr(mlp, ORIG_HIDDEN_ATTR, n)
    if len(keep) == n:
        return
    idx = torch.tensor(keep, device=fc1.weight.device)
    with torch.no_grad():
        mlp.fc1 = new_linear_like(fc1, fc1.weight[idx], fc1.bias[idx] if fc1.bias is not None else None)
        mlp.fc2 = new_linear_like(fc2, fc2.weight[:, idx], fc2.bias)
    setattr(mlp, ORIG_HIDDEN_ATTR, orig)


@contextlib.contextmanager
def gate_mlp(model: nn.Module, gates: dict[str, torch.Tensor]) -> Iterator[None]:
    """Multiply each hidden unit of ``model.get_submodule(path)`` by ``gates[path]`` while inside."""
    handles = []
    try:
        for name, g in gates.items():
            mlp = model.get_submodule(name)
            handles.append(mlp.fc2.register_forward_pre_hook(
                lambda _m, args, g=g: (args[0] * g.to(args[0]),) + tuple(args[1:])))
        yield
    finally:
        for h in handles:
            h.remove()


def taylor_mlp_scores(model: nn.Module, targets: list[tuple[str, Mlp]], calib: Calibration,
                      gen: torch.Generator) -> MlpScores:
    gates = {name: (m.fc2, hidden_width(m), 1) for name, m in targets}
    return gated_gradient_scores(model, gates, calib, "taylor MLP importance")


def l1_mlp_scores(model: nn.Module, targets: list[tuple[str, Mlp]], calib: Calibration,
                  gen: torch.Generator) -> MlpScores:
    out = {}
    for name, m in targets:
        fc1, fc2 = _dense_pair(m)
        s = fc1.weight.detach().abs().sum(1) + fc2.weight.detach().abs().sum(0)
        if fc1.bias is not None:
            s = s + fc1.bias.detach().abs()
        out[name] = s.float().cpu()
    return out


def random_mlp_scores(model: nn.Module, targets: list[tuple[str, Mlp]], calib: Calibration,
                      gen: torch.Generator) -> MlpScores:
    return {name: torch.rand(hidden_width(m), generator=gen) for name, m in targets}


MLP_CRITERIA: dict[str, MlpCriterion] = {
    "taylor": taylor_mlp_scores,
    "l1": l1_mlp_scores,
    "random": random_mlp_scores,
}


def mlp_scores(model: nn.Module, criterion: str, calib: Calibration, seed: int = 0,
               targets: list[tuple[str, Mlp]] | None = None) -> MlpScores:
    if criterion not in MLP_CRITERIA:
        raise ConfigError("mlp_criterion", f"unknown criterion {criterion!r}; use one of {list(MLP_CRITERIA)}.")
    targets = targets if targets is not None else mlps(model)
    gen = torch.Generator().manual_seed(seed + 1)
    return {k: v.detach().float().cpu() for k, v in MLP_CRITERIA[criterion](model, targets, calib, gen).items()}
