"""Finding what pruning works on (attentions, MLPs, linear layers by kind) and the small
module-surgery helpers every pruning module shares."""

from __future__ import annotations

import re
from typing import Iterable

import torch
import torch.nn as nn
from timm.layers import Mlp
from timm.models.swin_transformer import WindowAttention

from ..layers import LowRankLinear

_STAGE = re.compile(r"^layers\.(\d+)\.")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def stage_of(name: str) -> int:
    """Stage index of a module path such as ``layers.2.blocks.1.attn`` (0 if none)."""
    m = _STAGE.match(name)
    return int(m.group(1)) if m else 0


def num_stages(model: nn.Module) -> int:
    layers = getattr(model, "layers", None)
    return len(layers) if layers is not None else 1


def window_attentions(model: nn.Module) -> list[tuple[str, WindowAttention]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, WindowAttention)]


def mlps(model: nn.Module) -> list[tuple[str, Mlp]]:
    return [(n, m) for n, m in model.named_modules() if type(m) is Mlp]


def linear_kind(name: str) -> str | None:
    """The eligibility kind of a linear layer's path (see ``config.LINEAR_KINDS``), or None."""
    if name == "head.fc":
        return "head"
    parts = name.split(".")
    last = parts[-1]
    parent = parts[-2] if len(parts) > 1 else ""
    if last == "qkv" or (last == "proj" and parent == "attn"):
        return last
    if last in ("fc1", "fc2") and parent == "mlp":
        return last
    if last == "reduction" and parent == "downsample":
        return "reduction"
    return None


def linear_layers(model: nn.Module, kinds: Iterable[str], include_lowrank: bool = True) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of every dense ``nn.Linear`` (and ``LowRankLinear``) of the given kinds."""
    wanted = set(kinds)
    out = []
    for name, mod in model.named_modules():
        if not (type(mod) is nn.Linear or (include_lowrank and isinstance(mod, LowRankLinear))):
            continue
        kind = linear_kind(name)
        if kind is not None and kind in wanted:
            out.append((name, mod))
    return out


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def new_linear_like(old: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A fresh ``nn.Linear`` holding ``weight``/``bias`` with ``old``'s device, dtype and grad flags."""
    out_f, in_f = weight.shape
    new = nn.Linear(in_f, out_f, bias=bias is not None, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.weight.requires_grad_(old.weight.requires_grad)
    if bias is not None and old.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    new.train(old.training)
    return new
