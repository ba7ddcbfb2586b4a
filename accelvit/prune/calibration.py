"""Calibration data for the data-dependent steps (``taylor`` importance, activation-aware SVD):
where the batches come from, a fixed copy of them, and gradient scores of gated units."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..utils import CancelToken, check_cancel

Batches = list[tuple[torch.Tensor, torch.Tensor]]


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


def fixed_calibration(loader: Iterable | None, batches: int) -> Batches | None:
    """The first ``batches`` ``(images, labels)`` batches of ``loader`` as a list (CPU tensors).

    A list can be iterated again and again with the same content, unlike a shuffling
    DataLoader; the search and the final prune must see the same calibration data.
    """
    if loader is None:
        return None
    if isinstance(loader, list) and len(loader) <= batches:
        return loader
    out: Batches = []
    for batch in itertools.islice(loader, batches):
        out.append((batch[0].detach().cpu(), batch[1].detach().cpu()))
    return out


def gated_gradient_scores(model: nn.Module, gates: dict[str, tuple[nn.Module, int, int]],
                          calib: Calibration, what: str, signed_sum: bool = False) -> dict[str, torch.Tensor]:
    """Taylor importance of units gated at the input of modules.

    ``gates`` maps a key to ``(module, units, repeat)``: the input of ``module`` (last dim
    ``units * repeat``, unit-major) is multiplied by a gate of ones, one value per unit. The
    score of a unit is ``sum over calibration batches of |dL/d gate|`` in eval mode, the gate
    gradients zeroed between batches: the first-order estimate of the loss change when the unit
    is removed, in the same units (loss) for heads and MLP units, so scores compare across
    layers and kinds.

    ``signed_sum=True`` is the old score, ``|sum over batches of dL/d gate|``, kept only as the
    ablation ``taylor_signed``: near a trained minimum the signed gradients of different batches
    cancel, so more calibration data makes that score worse.
    """
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    was_training = model.training
    dev = calib.device
    gate_t = {k: torch.ones(units, device=dev, requires_grad=True) for k, (_, units, _) in gates.items()}
    total = {k: torch.zeros(units, device=dev, dtype=torch.float64) for k, (_, units, _) in gates.items()}
    handles = []
    try:
        for p in params:
            p.requires_grad_(False)
        model.eval()
        for k, (mod, _units, rep) in gates.items():
            handles.append(mod.register_forward_pre_hook(gate_hook(gate_t[k], rep)))
        with torch.enable_grad():
            for x, y in calib.iter_batches(what):
                loss = F.cross_entropy(model(x).float(), y)
                loss.backward()
                for k, g in gate_t.items():
                    if g.grad is not None:
                        grad = g.grad.detach().double()
                        total[k] += grad if signed_sum else grad.abs()
                        g.grad = None
    finally:
        for h in handles:
            h.remove()
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(was_training)
    return {k: (t.abs() if signed_sum else t).float() for k, t in total.items()}


def gate_hook(gate: torch.Tensor, repeat: int):
    """A forward pre-hook multiplying the input's last dim (``units * repeat``, unit-major) by ``gate``."""
    def hook(_mod: nn.Module, args: tuple[Any, ...]):
        x = args[0]
        scale = gate.repeat_interleave(repeat) if repeat > 1 else gate
        return (x * scale.to(x.dtype),) + tuple(args[1:])
    return hook


def require_loader(needed: bool, loader: Iterable | None) -> None:
    """The error for pruning that needs calibration data (taylor, activation-aware SVD) without a loader."""
    if needed and loader is None:
        raise ConfigError("calib_loader", "the chosen criteria (taylor or activation-aware SVD) need calibration "
                                          "data; pass a loader or use l1/random criteria.")
