"""Describe and re-apply the structural changes pruning made, as JSON.

::

    {"version": 1,
     "heads":   {"layers.0.blocks.0.attn": {"num_heads_orig": 3, "kept": [0, 2]}},
     "mlp":     {"layers.0.blocks.0.mlp": {"hidden_orig": 192, "hidden": 96}},
     "lowrank": {"layers.0.blocks.0.attn.qkv": {"in_features": 48, "out_features": 96,
                                                "rank": 12, "bias": true}}}

``kept`` lists original head indices. ``apply_structure`` turns the unpruned architecture
into the pruned one (heads, then MLP widths, then low-rank factors) so that the saved state
dict loads strictly. Any inconsistency raises :class:`~accelvit.errors.CheckpointError`.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from timm.layers import Mlp
from timm.models.swin_transformer import WindowAttention

from ..errors import AccelvitError, CheckpointError
from ..layers import LowRankLinear
from .heads import HEAD_INDEX_ATTR, ORIG_HEADS_ATTR, remove_heads
from .mlp import ORIG_HIDDEN_ATTR, prune_mlp
from .units import set_submodule

STRUCTURE_VERSION = 1


def describe_structure(model: nn.Module) -> dict[str, Any]:
    heads: dict[str, Any] = {}
    mlp: dict[str, Any] = {}
    lowrank: dict[str, Any] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, WindowAttention) and hasattr(mod, HEAD_INDEX_ATTR):
            orig = int(getattr(mod, ORIG_HEADS_ATTR))
            kept = [int(i) for i in getattr(mod, HEAD_INDEX_ATTR)]
            if kept != list(range(orig)):
                heads[name] = {"num_heads_orig": orig, "kept": kept}
        elif type(mod) is Mlp and hasattr(mod, ORIG_HIDDEN_ATTR):
            orig = int(getattr(mod, ORIG_HIDDEN_ATTR))
            width = mod.fc1.out_features if hasattr(mod.fc1, "out_features") else None
            if width != orig:
                mlp[name] = {"hidden_orig": orig, "hidden": int(width)}
        elif isinstance(mod, LowRankLinear):
            lowrank[name] = {"in_features": mod.in_features, "out_features": mod.out_features,
                             "rank": mod.rank, "bias": mod.up.bias is not None}
    return {"version": STRUCTURE_VERSION, "heads": heads, "mlp": mlp, "lowrank": lowrank}


def is_pruned(structure: dict[str, Any] | None) -> bool:
    """Whether a saved structure records any pruning (every saved model has one, empty when unpruned)."""
    return bool(structure and (structure.get("heads") or structure.get("mlp") or structure.get("lowrank")))


def _module(model: nn.Module, name: Any, kind: type | tuple[type, ...], what: str) -> nn.Module:
    if not isinstance(name, str):
        raise CheckpointError(f"The structure names a {what} by {name!r}, which is not a module path.")
    try:
        mod = model.get_submodule(name)
    except AttributeError as exc:
        raise CheckpointError(f"The structure names a {what} {name!r} that the model does not have; the spec was "
                              "written for a different architecture.") from exc
    if not isinstance(mod, kind):
        raise CheckpointError(f"The structure's {what} {name!r} is a {type(mod).__name__} in this model.")
    return mod


def _int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise CheckpointError(f"The structure's {where} must be a whole number, got {v!r}.")
    return v


def apply_structure(model: nn.Module, structure: dict[str, Any]) -> None:
    """Re-apply ``describe_structure``'s output to an unpruned model of the same spec."""
    if not structure:
        return
    if not isinstance(structure, dict):
        raise CheckpointError("The structure section must be a JSON object.")
    version = structure.get("version", STRUCTURE_VERSION)
    if not isinstance(version, int) or version > STRUCTURE_VERSION:
        raise CheckpointError(f"The structure was written in version {version!r}; this accelvit reads version "
                              f"{STRUCTURE_VERSION}. Upgrade accelvit.")
    sections = {k: structure.get(k) or {} for k in ("heads", "mlp", "lowrank")}
    for k, v in sections.items():
        if not isinstance(v, dict):
            raise CheckpointError(f"The structure's {k!r} section must be a JSON object.")
    try:
        for name, entry in sections["heads"].items():
            attn = _module(model, name, WindowAttention, "attention")
            if not isinstance(entry, dict) or not isinstance(entry.get("kept"), list):
                raise CheckpointError(f"The structure of {name} must say which heads were kept ('kept').")
            orig = _int(entry.get("num_heads_orig", attn.num_heads), f"num_heads_orig of {name}")
            kept = [_int(i, f"kept heads of {name}") for i in entry["kept"]]
            if orig != attn.num_heads:
                raise CheckpointError(f"{name} has {attn.num_heads} heads in the base model but the structure says "
                                      f"{orig}; the spec and structure disagree.")
            if not kept or len(set(kept)) != len(kept) or min(kept) < 0 or max(kept) >= orig:
                raise CheckpointError(f"The kept heads {kept} of {name} are not distinct indices below {orig}.")
            remove_heads(attn, sorted(kept))
        for name, entry in sections["mlp"].items():
            mlp = _module(model, name, Mlp, "MLP")
            if not isinstance(entry, dict):
                raise CheckpointError(f"The structure of {name} must be an object with 'hidden'.")
            width = _int(entry.get("hidden"), f"hidden width of {name}")
            orig = mlp.fc1.out_features
            if not 1 <= width <= orig:
                raise CheckpointError(f"{name}: hidden width {width} is not between 1 and the base width {orig}.")
            prune_mlp(mlp, range(width))
            setattr(mlp, ORIG_HIDDEN_ATTR, int(entry.get("hidden_orig", orig)))
        for name, entry in sections["lowrank"].items():
            lin = _module(model, name, nn.Linear, "linear layer")
            if not isinstance(entry, dict):
                raise CheckpointError(f"The structure of {name} must be an object with 'rank'.")
            rank = _int(entry.get("rank"), f"rank of {name}")
            n_in = _int(entry.get("in_features", lin.in_features), f"in_features of {name}")
            n_out = _int(entry.get("out_features", lin.out_features), f"out_features of {name}")
            if (n_in, n_out) != (lin.in_features, lin.out_features):
                raise CheckpointError(f"{name} is {lin.in_features}->{lin.out_features} after head/MLP pruning but "
                                      f"the structure says {n_in}->{n_out}.")
            if not 1 <= rank <= min(n_in, n_out):
                raise CheckpointError(f"{name}: rank {rank} is outside 1..{min(n_in, n_out)}.")
            w = lin.weight
            set_submodule(model, name, LowRankLinear(n_in, n_out, rank, bias=lin.bias is not None,
                                                     device=w.device, dtype=w.dtype))
    except CheckpointError:
        raise
    except AccelvitError as exc:
        raise CheckpointError(f"The pruned structure cannot be rebuilt: {exc}") from exc
    model.train(model.training)  # new modules follow the model's mode


def broadcast_pruned(model: nn.Module, src: int = 0) -> nn.Module:
    """Under torchrun: make every rank's ``model`` equal rank ``src``'s pruned one. The structure (heads kept,
    MLP widths, low-rank factors) is sent and re-applied first, so the shapes agree; then every parameter
    and buffer is broadcast. The model itself, unchanged, in one process."""
    from .. import distributed as D

    if not D.active():
        return model
    structure = D.broadcast_object(describe_structure(model) if D.rank() == src else None, src)
    if D.rank() != src:
        apply_structure(model, structure)
    D.broadcast_tensors(model, src)
    return model
