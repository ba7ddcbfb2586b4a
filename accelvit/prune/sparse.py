"""IHT: iterative hard thresholding during finetuning, as a ``fit()`` hook.

After every optimizer step the current masks are re-applied (projection onto the sparse
set); every ``iht_interval`` steps the masks are recomputed by keeping the largest-magnitude
weights at the scheduled density. The density ramps from 1 to ``1 - sparsity`` by the cubic
schedule of Zhu & Gupta (2017), ``d(t) = d_f + (1 - d_f)(1 - t / T)^3``, over
``T = round(iht_ramp_frac * total_steps)`` steps; at ``T`` the final masks are computed and
frozen. ``finalize`` (also called by ``on_fit_end``) makes the zeros permanent and drops the
masks; masks live in the hook, never in the model's state dict.

Targets are dense ``nn.Linear`` weights and both factors of ``LowRankLinear`` of the kinds in
``iht_layers``. Scope ``layer`` gives every weight matrix exactly the target density;
``global`` uses one magnitude threshold across all of them (exact total density).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..layers import LowRankLinear
from ..train import TrainHook
from .config import PruneConfig
from .units import linear_layers

log = logging.getLogger(__name__)


def cubic_density(step: int, ramp_steps: int, final_density: float) -> float:
    """Scheduled density at 1-based ``step`` (1.0 before the ramp, ``final_density`` from its end)."""
    if ramp_steps <= 0 or step >= ramp_steps:
        return final_density
    t = max(0.0, min(1.0, step / ramp_steps))
    return final_density + (1.0 - final_density) * (1.0 - t) ** 3


def iht_targets(model: nn.Module, kinds: tuple[str, ...]) -> list[str]:
    """Parameter names (``...weight``) IHT sparsifies."""
    names = []
    for path, mod in linear_layers(model, kinds):
        if isinstance(mod, LowRankLinear):
            names += [f"{path}.down.weight", f"{path}.up.weight"]
        else:
            names.append(f"{path}.weight")
    return names


def topk_mask(w: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask of exactly ``keep`` largest-magnitude entries of ``w``."""
    flat = w.detach().abs().reshape(-1)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep >= flat.numel():
        mask.fill_(True)
    elif keep > 0:
        mask[torch.topk(flat, keep, sorted=False).indices] = True
    return mask.view_as(w)


class IHTHook(TrainHook):
    """Masks recomputed on a cubic schedule, re-applied after every step. See the module doc."""

    def __init__(self, param_names: list[str], sparsity: float, interval: int, ramp_frac: float,
                 scope: str = "layer"):
        if not param_names:
            raise ConfigError("sparsity", "no layer is eligible for IHT.")
        self.param_names = list(param_names)
        self.sparsity = float(sparsity)
        self.interval = int(interval)
        self.ramp_frac = float(ramp_frac)
        self.scope = scope
        self.masks: dict[str, torch.Tensor] = {}
        self.ramp_steps = 0
        self.total_steps = 0
        self.frozen = False
        self.current_density = 1.0
        self.updates = 0
        self._params: dict[str, nn.Parameter] = {}

    @property
    def final_density(self) -> float:
        return 1.0 - self.sparsity

    # --------------------------------------------------------------- TrainHook
    def on_fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self._bind(model)
        self.total_steps = int(total_steps)
        self.ramp_steps = int(round(self.ramp_frac * total_steps))
        self.frozen = False
        if self.ramp_steps <= 0:
            self.update_masks(self.final_density)
            self.frozen = True
            self.apply_masks()

    def on_after_step(self, model: nn.Module, step: int) -> None:
        if not self.frozen and (step % self.interval == 0 or step >= self.ramp_steps):
            self.update_masks(cubic_density(step, self.ramp_steps, self.final_density))
            if step >= self.ramp_steps:
                self.frozen = True
        self.apply_masks()

    def on_fit_end(self, model: nn.Module) -> None:
        self.finalize(model)

    # --------------------------------------------------------------- mechanics
    def _bind(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        missing = [n for n in self.param_names if n not in params]
        if missing:
            raise ConfigError("sparsity", f"IHT targets {missing[:3]} are not parameters of this model; build the "
                                          "hook with make_iht_hook on the model being finetuned.")
        self._params = {n: params[n] for n in self.param_names}
        self.masks = {n: m.to(self._params[n].device) for n, m in self.masks.items()}

    @torch.no_grad()
    def update_masks(self, density: float) -> None:
        """Recompute every mask to keep the largest-magnitude ``density`` of the weights."""
        self.current_density = float(density)
        self.updates += 1
        if self.scope == "layer":
            for n, p in self._params.items():
                self.masks[n] = topk_mask(p, int(round(density * p.numel())))
            return
        sizes = [p.numel() for p in self._params.values()]
        flat = torch.cat([p.detach().abs().reshape(-1).float().to(self._device()) for p in self._params.values()])
        mask = topk_mask(flat, int(round(density * flat.numel())))
        for (n, p), chunk in zip(self._params.items(), torch.split(mask, sizes)):
            self.masks[n] = chunk.view_as(p).to(p.device)

    def _device(self) -> torch.device:
        return next(iter(self._params.values())).device

    @torch.no_grad()
    def apply_masks(self) -> None:
        for n, mask in self.masks.items():
            self._params[n].mul_(mask)

    def finalize(self, model: nn.Module | None = None) -> None:
        """Make the zeros permanent and drop the masks (computes the final masks if the ramp
        did not finish, e.g. zero finetune steps: then it is one-shot magnitude pruning)."""
        if model is not None and not self._params:
            self._bind(model)
        if not self._params:
            raise ConfigError("sparsity", "finalize needs the model: call hook.finalize(model).")
        if not self.frozen:
            if self.total_steps:
                log.warning("IHT ramp did not finish (%d steps); applying the final density %.3f now.",
                            self.total_steps, self.final_density)
            self.update_masks(self.final_density)
            self.frozen = True
        self.apply_masks()
        self.masks = {}

    def densities(self) -> dict[str, float]:
        """Fraction of nonzero weights of every target, and ``__total__``."""
        out, nz, tot = {}, 0, 0
        for n, p in self._params.items():
            c = int(torch.count_nonzero(p.detach()))
            out[n] = c / p.numel()
            nz += c
            tot += p.numel()
        out["__total__"] = nz / max(tot, 1)
        return out

    def state(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity, "scope": self.scope, "interval": self.interval,
                "ramp_steps": self.ramp_steps, "total_steps": self.total_steps, "updates": self.updates,
                "frozen": self.frozen, "targets": len(self.param_names)}


def make_iht_hook(model: nn.Module, config: PruneConfig) -> IHTHook | None:
    """The IHT hook for finetuning ``model`` with ``config``; None when ``sparsity == 0``."""
    config.validate()
    if config.sparsity <= 0:
        return None
    names = iht_targets(model, config.iht_layers)
    if not names:
        raise ConfigError("sparsity", f"sparsity {config.sparsity} was asked for but the model has no linear layer "
                                      f"of the kinds {list(config.iht_layers)}; change iht_layers.")
    hook = IHTHook(names, config.sparsity, config.iht_interval, config.iht_ramp_frac, config.iht_scope)
    hook._bind(model)
    return hook
