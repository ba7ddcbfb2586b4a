"""IHT: iterative hard thresholding with dense shadow weights, as a ``fit()`` hook.

Every target weight ``W`` has a mask ``M`` (which entries are kept) and, while the masks may
still change, a dense *shadow* ``S`` that remembers a value for the pruned entries too:

* ``on_before_step`` (after ``backward()``, before clipping): the dense gradient of the
  pruned entries is recorded for the shadow, then zeroed in ``W.grad``, so gradient clipping
  and AdamW see only the kept weights (a pruned entry's moments stay exactly zero).
* ``on_after_step``: ``S[kept] = W[kept]`` (kept weights follow the optimizer) and
  ``S[pruned] -= lr * c * g[pruned]``: pruned weights take plain SGD steps on the task
  gradient at their param group's lr, scaled by the clipping factor ``c`` ``fit`` applied to
  the kept gradients (no weight decay, no moments). ``W = S * M`` is then re-applied.
* every ``iht_interval`` steps during the ramp the masks are recomputed from ``|S|`` at the
  scheduled density. Entries the data have grown past the threshold come back: they take
  their shadow value into ``W`` (``state()["regrown"]`` counts them over the run). Optimizer
  state tensors of the weight's shape (AdamW ``exp_avg``, ``exp_avg_sq``) are zeroed at
  every entry that is pruned now or was pruned before, so a regrown entry starts from zero
  moments. Without the shadow a pruned weight would be one optimizer step from zero at the
  next update and could never beat a kept one: that would be gradual magnitude pruning.

The density ramps from 1 to ``1 - sparsity`` by the cubic schedule of Zhu & Gupta (2017),
``d(t) = d_f + (1 - d_f)(1 - t / T)^3``, over ``T = round(iht_ramp_frac * total_steps)``
steps; at ``T`` the final masks are computed and frozen, and the shadows are dropped (the
remaining steps finetune the final sparse weights; the masked gradients are still zeroed).
``finalize`` (also called by ``on_fit_end``) makes the zeros permanent and drops the masks;
masks and shadows live in the hook, never in the model's state dict. Called without any
``fit`` (zero finetune epochs) it is one-shot magnitude pruning.

Targets are dense ``nn.Linear`` weights and both factors of ``LowRankLinear`` of the kinds in
``iht_layers``. Scope ``layer`` gives every weight matrix exactly the target density.
Scope ``global`` ranks all targets together (exact total density) on magnitudes normalised
by each tensor's RMS (``|S| / rms(S)``): raw magnitudes are not comparable across tensors
(low-rank factors carry the singular values and have another scale), and a single raw
threshold left per-tensor densities from 2% to 30%. On top of that every tensor keeps at
least ``GLOBAL_DENSITY_FLOOR`` times the target density (its largest entries), so no layer
is starved.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..layers import LowRankLinear
from ..train import TrainHook
from .config import PruneConfig
from .units import linear_layers

log = logging.getLogger(__name__)

#: scope ``global``: every tensor keeps at least this fraction of the target density.
GLOBAL_DENSITY_FLOOR = 0.25


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


def nm_mask(w: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Boolean mask keeping the ``n`` largest-magnitude entries of every group of ``m`` consecutive entries
    along the last dimension (a weight's inputs): ``n:m`` semi-structured sparsity. The last dimension must
    be a multiple of ``m``; ties keep the earlier entry (topk is stable on equal magnitudes here)."""
    if w.shape[-1] % m:
        raise ConfigError("iht_pattern", f"{n}:{m} needs the input width to be a multiple of {m}, got {w.shape[-1]}.")
    groups = w.detach().abs().reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, torch.topk(groups, n, dim=1, sorted=False).indices, True)
    return keep.view_as(w)


def global_masks(weights: list[torch.Tensor], density: float,
                 floor: float = GLOBAL_DENSITY_FLOOR) -> list[torch.Tensor]:
    """Masks keeping exactly ``round(density * total)`` entries of all ``weights`` together,
    ranked by ``|w| / rms(w)`` per tensor, every tensor keeping at least
    ``floor(floor * density * numel)`` of its own largest entries."""
    total = sum(w.numel() for w in weights)
    keep = int(round(density * total))
    device = weights[0].device
    scores = []
    for w in weights:
        a = w.detach().abs().reshape(-1).float().to(device)
        rms = a.square().mean().sqrt()
        s = a / rms if rms > 0 else a.clone()
        n_floor = min(a.numel(), int(math.floor(floor * density * a.numel())))
        if 0 < n_floor:
            s[torch.topk(a, n_floor, sorted=False).indices] = math.inf
        scores.append(s)
    mask = topk_mask(torch.cat(scores), keep)
    return [chunk.view_as(w).to(w.device) for w, chunk in zip(weights, torch.split(mask, [w.numel() for w in weights]))]


class IHTHook(TrainHook):
    """IHT with dense shadow weights on a cubic density schedule. See the module doc."""

    def __init__(self, param_names: list[str], sparsity: float, interval: int, ramp_frac: float,
                 scope: str = "layer", pattern: str = "unstructured"):
        if not param_names:
            raise ConfigError("sparsity", "no layer is eligible for IHT.")
        self.param_names = list(param_names)
        self.sparsity = float(sparsity)
        self.interval = int(interval)
        self.ramp_frac = float(ramp_frac)
        self.scope = scope
        self.pattern = pattern
        self.masks: dict[str, torch.Tensor] = {}
        self.shadows: dict[str, torch.Tensor] = {}
        self.ramp_steps = 0
        self.total_steps = 0
        self.frozen = False
        self.current_density = 1.0
        self.updates = 0
        self._regrown: torch.Tensor | int = 0
        self._params: dict[str, nn.Parameter] = {}
        self._optimizer: torch.optim.Optimizer | None = None
        self._groups: dict[str, dict[str, Any]] = {}
        # per step, from on_before_step to on_after_step: pruned part of the gradient, lr, kept-grad norm^2
        self._pruned_grads: dict[str, torch.Tensor] = {}
        self._lrs: dict[str, float] = {}
        self._kept_sq: torch.Tensor | None = None

    @property
    def final_density(self) -> float:
        return 1.0 - self.sparsity

    # --------------------------------------------------------------- TrainHook
    def on_fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self._bind(model)
        self._optimizer = optimizer
        groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        self._groups = {n: groups[id(p)] for n, p in self._params.items() if id(p) in groups}
        self.total_steps = int(total_steps)
        self.ramp_steps = int(round(self.ramp_frac * total_steps))
        self.frozen = False
        if self.ramp_steps <= 0:
            self.update_masks(self.final_density)
            self._freeze()

    @torch.no_grad()
    def on_before_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Record the pruned entries' gradient for the shadows, then zero it in the parameters."""
        if not self.masks:
            return
        self._pruned_grads, self._lrs, kept_sq = {}, {}, []
        for n, mask in self.masks.items():
            g = self._params[n].grad
            if g is None:
                continue
            if self.shadows and n in self._groups:
                self._pruned_grads[n] = g.masked_fill(mask, 0).float()
                self._lrs[n] = float(self._groups[n]["lr"])
            g.mul_(mask)
            if self.shadows:
                kept_sq.append(g.float().square().sum())
        self._kept_sq = torch.stack(kept_sq).sum() if kept_sq else None

    @torch.no_grad()
    def on_after_step(self, model: nn.Module, step: int) -> None:
        if self.shadows:
            self._sync_shadows()
        if not self.frozen and (step % self.interval == 0 or step >= self.ramp_steps):
            self.update_masks(cubic_density(step, self.ramp_steps, self.final_density))
            if step >= self.ramp_steps:
                self._freeze()
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
        self.shadows = {n: s.to(self._params[n].device) for n, s in self.shadows.items()}

    def _clip_factor(self) -> torch.Tensor | float:
        """The factor gradient clipping applied to this step's gradients (1 without clipping),
        from the kept gradients' norm before (``on_before_step``) and after."""
        if self._kept_sq is None:
            return 1.0
        after = [p.grad.float().square().sum() for n, p in self._params.items()
                 if n in self.masks and p.grad is not None]
        if not after:
            return 1.0
        before = self._kept_sq
        ratio = torch.where(before > 0, torch.stack(after).sum() / before.clamp_min(1e-30), torch.ones_like(before))
        return ratio.sqrt().clamp(max=1.0)

    @torch.no_grad()
    def _sync_shadows(self) -> None:
        """Kept shadow entries follow the parameter; pruned ones take an SGD step on their gradient."""
        c = self._clip_factor()
        for n, s in self.shadows.items():
            p, mask = self._params[n], self.masks[n]
            g = self._pruned_grads.get(n)
            if g is not None:
                s.sub_(g * (self._lrs[n] * c))
            s.copy_(torch.where(mask, p.detach().float(), s))
        self._pruned_grads, self._lrs, self._kept_sq = {}, {}, None

    def _freeze(self) -> None:
        """The final masks are set: the shadows are not needed any more."""
        self.frozen = True
        self.shadows = {}
        self._pruned_grads, self._lrs, self._kept_sq = {}, {}, None

    def _source(self, n: str) -> torch.Tensor:
        """What masks are selected from: the dense shadow if there is one, else the weight itself."""
        s = self.shadows.get(n)
        return s if s is not None else self._params[n].detach()

    @torch.no_grad()
    def update_masks(self, density: float) -> None:
        """Recompute every mask from the dense shadows at ``density`` (see the module doc for the
        scopes); regrown entries take their shadow value, optimizer moments of entries that are
        or were pruned are zeroed."""
        self.current_density = float(density)
        self.updates += 1
        if not self.shadows and not self.frozen and self._optimizer is not None:
            # first update of a fit: the shadows start as the dense weights
            self.shadows = {n: p.detach().float().clone() for n, p in self._params.items()}
        names = list(self._params)
        if self.scope == "layer":
            new = [self._layer_mask(n, density) for n in names]
        else:
            new = global_masks([self._source(n) for n in names], density)
        regrown = 0
        for n, mask in zip(names, new):
            p, old = self._params[n], self.masks.get(n)
            stale = ~mask if old is None else ~(old & mask)   # pruned now, or pruned until now
            if old is not None:
                regrown = regrown + (mask & ~old).sum()
            if n in self.shadows:
                p.copy_(torch.where(mask, self.shadows[n].to(p.dtype), torch.zeros((), dtype=p.dtype, device=p.device)))
            self._zero_state(p, stale)
            self.masks[n] = mask
        self._regrown = self._regrown + regrown

    def _layer_mask(self, name: str, density: float) -> torch.Tensor:
        """One weight's mask at ``density``: its largest entries, or 2:4 once the density has reached 0.5."""
        src = self._source(name)
        if self.pattern == "2:4" and density <= 0.5 + 1e-9 and src.shape[-1] % 4 == 0:
            return nm_mask(src, 2, 4)
        return topk_mask(src, int(round(density * self._params[name].numel())))

    def _zero_state(self, p: torch.Tensor, where: torch.Tensor) -> None:
        if self._optimizer is None:
            return
        for v in self._optimizer.state.get(p, {}).values():
            if isinstance(v, torch.Tensor) and v.shape == p.shape:
                v.masked_fill_(where, 0)

    @torch.no_grad()
    def apply_masks(self) -> None:
        for n, mask in self.masks.items():
            self._params[n].mul_(mask)

    def finalize(self, model: nn.Module | None = None) -> None:
        """Make the zeros permanent and drop the masks and shadows (computes the final masks if
        the ramp did not finish, e.g. zero finetune steps: then it is one-shot magnitude pruning)."""
        if model is not None and not self._params:
            self._bind(model)
        if not self._params:
            raise ConfigError("sparsity", "finalize needs the model: call hook.finalize(model).")
        if not self.frozen:
            if self.total_steps:
                log.warning("IHT ramp did not finish (%d steps); applying the final density %.3f now.",
                            self.total_steps, self.final_density)
            self.update_masks(self.final_density)
            self._freeze()
        self.apply_masks()
        self.masks = {}
        self._optimizer = None
        self._groups = {}

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

    @property
    def regrown(self) -> int:
        """Entries that came back (pruned at one mask update, kept at a later one) over the run."""
        return int(self._regrown)

    def state(self) -> dict[str, Any]:
        out = {"sparsity": self.sparsity, "scope": self.scope, "pattern": self.pattern, "interval": self.interval,
               "ramp_steps": self.ramp_steps, "total_steps": self.total_steps, "updates": self.updates,
               "frozen": self.frozen, "targets": len(self.param_names), "regrown": self.regrown}
        if self.scope == "global":
            out["density_floor"] = GLOBAL_DENSITY_FLOOR
        return out


def make_iht_hook(model: nn.Module, config: PruneConfig) -> IHTHook | None:
    """The IHT hook for finetuning ``model`` with ``config``; None when ``sparsity == 0``."""
    config.validate()
    if config.sparsity <= 0:
        return None
    names = iht_targets(model, config.iht_layers)
    if not names:
        raise ConfigError("sparsity", f"sparsity {config.sparsity} was asked for but the model has no linear layer "
                                      f"of the kinds {list(config.iht_layers)}; change iht_layers.")
    hook = IHTHook(names, config.sparsity, config.iht_interval, config.iht_ramp_frac, config.iht_scope,
                   config.iht_pattern)
    hook._bind(model)
    return hook


def is_2_4(w: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive entries of every row of ``w`` has at most 2 nonzeros."""
    if w.shape[-1] % 4:
        return False
    return bool(((w.detach().reshape(-1, 4) != 0).sum(1) <= 2).all())


def to_semi_structured(model: nn.Module, dtype: torch.dtype = torch.float16) -> list[str]:
    """Convert every 2:4-sparse linear weight of ``model`` (on a CUDA device) to
    ``torch.sparse.to_sparse_semi_structured`` in ``dtype``, so its matrix products run on sparse tensor cores.

    Needs an NVIDIA GPU of compute capability 8.0 or newer (Ampere+); the model must be on it in ``dtype``.
    Returns the converted weights' names. Weights that are not 2:4, or whose shapes the kernels do not take,
    stay dense. Inference only: the converted model is not trained further.
    """
    from torch.sparse import to_sparse_semi_structured

    if not torch.cuda.is_available():
        raise ConfigError("device", "2:4 semi-structured kernels need an NVIDIA GPU (compute capability 8.0 or newer); "
                                    "this machine has no CUDA device.")
    major, _minor = torch.cuda.get_device_capability()
    if major < 8:
        raise ConfigError("device", f"2:4 semi-structured kernels need compute capability 8.0 or newer, this GPU has "
                                    f"{major}.x.")
    done = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or not is_2_4(mod.weight):
            continue
        w = mod.weight.detach().to(device="cuda", dtype=dtype)
        try:
            mod.weight = nn.Parameter(to_sparse_semi_structured(w), requires_grad=False)
        except (RuntimeError, ValueError) as exc:  # a shape the kernels do not take: keep it dense
            log.info("%s stays dense for 2:4 kernels: %s", name, exc)
            continue
        done.append(f"{name}.weight")
    return done
