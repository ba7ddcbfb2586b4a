"""Shared helpers of the pruning modules: finding layers, replacing modules, calibration."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.swin_transformer import WindowAttention

from ..errors import ConfigError, DataError
from ..utils import CancelToken, check_cancel

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
    from .lowrank import LowRankLinear

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


@dataclass
class Calibration:
    """Where calibration batches come from, and how many to use."""

    loader: Iterable | None
    batches: int
    device: torch.device
    cancel: CancelToken | None = None

    def iter_batches(self, what: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.loader is None:
            raise ConfigError("calib_loader", f"{what} needs calibration data but no calibration loader was given; "
                                              "pass one, or use a data-free criterion (l1, random).")
        n = 0
        for batch in itertools.islice(self.loader, self.batches):
            check_cancel(self.cancel, what)
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise DataError(f"Calibration batches must be (images, labels) pairs; got {type(batch).__name__}.")
            x, y = batch[0], batch[1]
            n += 1
            yield x.to(self.device), y.to(self.device)
        if n == 0:
            raise DataError(f"The calibration loader gave no batches for {what}; it is empty.")


def gated_gradient_scores(model: nn.Module, gates: dict[str, tuple[nn.Module, int, int]],
                          calib: Calibration, what: str) -> dict[str, torch.Tensor]:
    """Taylor importance of units gated at the input of modules.

    ``gates`` maps a key to ``(module, units, repeat)``: the input of ``module`` (last dim
    ``units * repeat``, unit-major) is multiplied by a gate of ones, one value per unit. The
    score of a unit is ``|sum over calibration batches of dL/d gate|`` in eval mode.
    """
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    was_training = model.training
    dev = calib.device
    gate_t = {k: torch.ones(units, device=dev, requires_grad=True) for k, (_, units, _) in gates.items()}
    handles = []

    def make_hook(g: torch.Tensor, rep: int):
        def hook(_mod: nn.Module, args: tuple[Any, ...]):
            x = args[0]
            scale = g.repeat_interleave(rep) if rep > 1 else g
            return (x * scale.to(x.dtype),) + tuple(args[1:])
        return hook

    try:
        for p in params:
            p.requires_grad_(False)
        model.eval()
        for k, (mod, _units, rep) in gates.items():
            handles.append(mod.register_forward_pre_hook(make_hook(gate_t[k], rep)))
        with torch.enable_grad():
            for x, y in calib.iter_batches(what):
                loss = F.cross_entropy(model(x).float(), y)
                loss.backward()
    finally:
        for h in handles:
            h.remove()
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(was_training)
    return {k: (g.grad.detach().abs() if g.grad is not None else torch.zeros_like(g.detach()))
            for k, g in gate_t.items()}


def select_keep(scores: dict[str, torch.Tensor], ratio: float, ranking: str) -> dict[str, list[int]]:
    """Which units to keep per layer when removing ``ratio`` of them (never a layer's last unit).

    ``uniform``: every layer loses ``round(ratio * n)`` of its lowest-scored units.
    ``global``: scores are divided by their layer's L2 norm, then the lowest
    ``round(ratio * total)`` are removed wherever they are.
    """
    keep: dict[str, list[int]] = {}
    if ratio <= 0:
        return {k: list(range(len(s))) for k, s in scores.items()}
    if ranking == "uniform":
        for k, s in scores.items():
            n = len(s)
            n_remove = min(n - 1, int(ratio * n + 0.5))
            order = _stable_argsort(s)
            removed = set(order[:n_remove])
            keep[k] = [i for i in range(n) if i not in removed]
        return keep
    if ranking != "global":
        raise ConfigError("ranking", f"unknown ranking {ranking!r}; use global or uniform.")
    entries = []
    for li, (k, s) in enumerate(scores.items()):
        s = s.detach().double().cpu()
        norm = float(s.norm())
        sn = s / norm if norm > 0 else s
        entries.extend((float(sn[i]), li, i, k) for i in range(len(s)))
    total = len(entries)
    n_remove = int(ratio * total + 0.5)
    left = {k: len(s) for k, s in scores.items()}
    removed: dict[str, set[int]] = {k: set() for k in scores}
    done = 0
    for _score, _li, i, k in sorted(entries):
        if done >= n_remove:
            break
        if left[k] <= 1:
            continue
        removed[k].add(i)
        left[k] -= 1
        done += 1
    return {k: [i for i in range(len(s)) if i not in removed[k]] for k, s in scores.items()}


def _stable_argsort(s: torch.Tensor) -> list[int]:
    vals = s.detach().double().cpu().tolist()
    return sorted(range(len(vals)), key=lambda i: (vals[i], i))
