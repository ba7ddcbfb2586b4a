"""Low-rank factorisation of linear layers by truncated SVD (plain and activation-aware).

:func:`factorize` turns a dense ``nn.Linear`` (``m x n``) into an
:class:`~accelvit.layers.LowRankLinear` ``U (V x) + b`` of rank ``r``: ``r (m + n)`` weights
instead of ``m n``, so a rank with ``r (m + n) >= m n`` keeps the layer dense. The singular values are split evenly (``U = U_r sqrt(S_r)``, ``V = sqrt(S_r) V_r^T``)
so both factors have the same scale for finetuning and IHT.

Activation-aware SVD (as in SVD-LLM): with ``C = E[x x^T]`` over calibration inputs and
``C + damping * mean(diag C) I = L L^T`` (Cholesky), the output error
``E||(W - W') x||^2 = ||(W - W') L||_F^2``; truncating the SVD of ``W L`` and mapping back
with ``L^{-1}`` therefore minimises the output error instead of the weight error.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn as nn

from ..errors import ModelError
from ..layers import LowRankLinear
from .calibration import Calibration

log = logging.getLogger(__name__)


def rank_for_ratio(out_features: int, in_features: int, rank_ratio: float) -> int:
    """Rank keeping ``rank_ratio`` of the layer's ``m n`` weights: ``floor(ratio m n / (m + n))``, >= 1."""
    m, n = out_features, in_features
    return max(1, min(min(m, n), int(math.floor(rank_ratio * m * n / (m + n)))))


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest rank whose squared singular values reach ``energy`` of the total."""
    s2 = singular_values.double() ** 2
    total = float(s2.sum())
    if total <= 0:
        return 1
    frac = torch.cumsum(s2, 0) / total
    r = int(torch.searchsorted(frac, torch.tensor(energy - 1e-12, dtype=frac.dtype)).item()) + 1
    return max(1, min(r, len(s2)))


def whitening(moment: torch.Tensor, damping: float) -> torch.Tensor:
    """Lower Cholesky factor ``L`` of ``moment + damping * mean(diag) * I`` (damping grows if needed)."""
    c = moment.double()
    n = c.shape[0]
    scale = float(torch.diagonal(c).mean()) if n else 1.0
    scale = scale if scale > 0 else 1.0
    eye = torch.eye(n, dtype=c.dtype, device=c.device)
    d = damping
    for _ in range(8):
        L, info = torch.linalg.cholesky_ex(c + max(d, 1e-10) * scale * eye)
        if int(info) == 0:
            return L
        d = max(d * 10, 1e-6)
    raise ModelError("Activation-aware SVD: the calibration second moment is not positive definite even with "
                     "damping; use more calibration batches or a larger svd_damping.")


@dataclass
class Factorization:
    """The SVD of a layer (of ``W`` or of ``W L``) before choosing a rank."""

    u: torch.Tensor              # m x k
    s: torch.Tensor              # k
    vh: torch.Tensor             # k x n (already mapped back through L^{-1} when activation-aware)
    activation_aware: bool


def svd_of(weight: torch.Tensor, moment: torch.Tensor | None = None, damping: float = 0.01) -> Factorization:
    """SVD of ``weight`` (plain) or of ``weight @ L`` (activation-aware, ``moment`` = E[x x^T])."""
    w = weight.detach().double()
    if moment is None:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return Factorization(u, s, vh, False)
    L = whitening(moment.to(w.device), damping)
    u, s, vh = torch.linalg.svd(w @ L, full_matrices=False)
    vh = torch.linalg.solve_triangular(L, vh, upper=False, left=False)  # vh L^{-1}
    return Factorization(u, s, vh, True)


def factorize(linear: nn.Linear, rank: int, moment: torch.Tensor | None = None, damping: float = 0.01,
              fac: Factorization | None = None) -> LowRankLinear:
    """A ``LowRankLinear`` of rank ``rank`` approximating ``linear`` (plain or activation-aware SVD)."""
    if type(linear) is not nn.Linear:
        raise ModelError(f"factorize expects a dense nn.Linear, got {type(linear).__name__}.")
    m, n = linear.out_features, linear.in_features
    if not 1 <= rank <= min(m, n):
        raise ModelError(f"factorize: rank {rank} is out of range for a {m}x{n} layer (1..{min(m, n)}).")
    fac = fac or svd_of(linear.weight, moment, damping)
    root = fac.s[:rank].clamp_min(0).sqrt()
    up_w = fac.u[:, :rank] * root[None, :]
    down_w = root[:, None] * fac.vh[:rank]
    w = linear.weight
    out = LowRankLinear(n, m, rank, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.down.weight.copy_(down_w.to(w))
        out.up.weight.copy_(up_w.to(w))
        if linear.bias is not None:
            out.up.bias.copy_(linear.bias)
    out.train(linear.training)
    return out


def choose_rank(out_features: int, in_features: int, singular_values: torch.Tensor,
                rank_ratio: float | None, energy: float | None) -> int | None:
    """The rank to use, or None when the factorisation would not cut weights/FLOPs.

    ``rank_ratio=1.0`` keeps every weight, so it is a no-op (None) rather than the rank
    ``m n / (m + n)``, which would truncate a layer whose ``min(m, n)`` is larger than that.
    """
    if rank_ratio is not None and rank_ratio >= 1.0:
        return None
    if rank_ratio is not None:
        r = rank_for_ratio(out_features, in_features, rank_ratio)
    elif energy is not None:
        r = rank_for_energy(singular_values, energy)
    else:
        return None
    if r * (out_features + in_features) >= out_features * in_features:
        return None
    return r


@torch.no_grad()
def collect_input_moments(model: nn.Module, names: Iterable[str], calib: Calibration) -> dict[str, torch.Tensor]:
    """``E[x x^T]`` (float64) of the inputs of the named modules over the calibration batches."""
    names = list(names)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {n: 0 for n in names}
    handles = []

    def make_hook(name: str):
        def hook(_m, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            if name not in sums:
                sums[name] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
            sums[name].addmm_(x.T, x)
            counts[name] += x.shape[0]
        return hook

    was_training = model.training
    model.eval()
    try:
        for n in names:
            handles.append(model.get_submodule(n).register_forward_pre_hook(make_hook(n)))
        for x, _y in calib.iter_batches("activation-aware SVD calibration"):
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: sums[n] / max(counts[n], 1) for n in names if n in sums}
