"""FLOP-targeted pruning: find the head / MLP-width / rank ratios that reach a dense-FLOP target.

::

    from accelvit.prune import PruneConfig, solve_target_flops
    from accelvit.prune.flop_target import prune_to_target

    # only find the ratios (the model is not modified):
    solved, info = solve_target_flops(model, PruneConfig(head_criterion="l1", mlp_criterion="l1"), 0.5)
    # or find them and prune the model in place with exactly the searched structure:
    model, report, solved, info = prune_to_target(model, PruneConfig(...), 0.5, calib_loader=loader)

``target`` is a fraction of the *given* model's dense FLOPs (``accelvit.metrics.count_flops``:
``FlopCounterMode`` at batch 1, attention included). The solved config, handed to
:func:`~.pruner.apply_ratios` with the same calibration batches, gives dense FLOPs within
``tol`` (default 1%) of ``target * baseline``. Every candidate is a pruned deep copy whose
FLOPs are counted, never a formula; to stay cheap, candidates reuse one set of head scores,
score MLP units by ``l1`` when the MLP ranking is uniform (the unit counts, hence the FLOPs,
do not depend on the scores) and get SVD's low-rank structure without computing any SVD. The
winner is then checked with the real prune; should the two ever disagree, the search is
redone with the real prune for every candidate (``_candidate_flops``).

Allocation rule ``uniform`` (the only one so far, ``RULES``)
------------------------------------------------------------
One knob ``t >= 0`` moves the three pruning knobs together along a fixed *direction*
``(d_heads, d_mlp, d_svd)`` taken from the base config::

    head_ratio = min(t * d_heads, 0.95)        (or each of stage_head_ratios, scaled alike)
    mlp_ratio  = min(t * d_mlp,   0.95)
    rank_ratio = 1 - min(t * d_svd, 0.95)      (d_svd = 0: SVD stays as the base config has it)

with ``d_heads = head_ratio``, ``d_mlp = mlp_ratio`` and ``d_svd = 1 - rank_ratio`` of the
base config (``rank_ratio=None``: no SVD), divided by their largest value; a base config that
prunes nothing gets ``(1, 1, 0)`` (heads and MLP width alike, no SVD). Criteria, rankings,
layer kinds, activation-aware SVD, IHT settings and the seed are kept from the base config.

Dense FLOPs fall (weakly) monotonically as ``t`` grows, so ``t`` is found by a safeguarded
false-position bisection on measured FLOPs. Head counts (and SVD ranks) are discrete, so one
``t`` can jump over the target (one more head gone in a stage-0 attention costs several
percent of the FLOPs). The search therefore ends with a *fine adjustment*: the other knobs
are frozen at one end of the final bracket and only the most finely grained knob present is
bisected -- MLP width (one hidden unit at a time), else the SVD rank ratio, else (heads only)
none, in which case the nearest reachable point is returned and, if it is further than
``tol`` from the target, :class:`~accelvit.errors.ConfigError` says so (``strict=True``).

Data-dependent criteria (``taylor``, activation-aware SVD) make the chosen heads and hence
the FLOPs depend on the calibration batches; the search materialises them once
(:func:`~.calibration.fixed_calibration`) so every candidate sees the same ones. Prune with
those same batches (``prune_to_target`` does) to get exactly the searched structure.

Every candidate, and the final prune, goes through :func:`.pruner.apply_ratios`, which
ignores ``target_flops``: the solved config keeps the base config's ``target_flops`` as the
record of what was asked for.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import replace
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..layers import LowRankLinear
from ..metrics import count_flops
from ..utils import CancelToken, check_cancel
from .calibration import Batches, Calibration, fixed_calibration
from .config import PruneConfig
from .lowrank import choose_rank
from .importance import head_groups, mlp_groups, score
from .pruner import PruneProgress, PruneReport, apply_ratios, score_heads
from .sensitivity import Allocation, SensitivityRanking, unit_costs, with_ranking
from .units import linear_layers, model_device, set_submodule

log = logging.getLogger(__name__)

RULES = ("sensitivity", "uniform")
#: Largest value the search gives each knob (head/MLP fraction removed, SVD compression).
KNOB_CAP = 0.95
FLOP_COUNTER = "accelvit.metrics.count_flops (torch.utils.flop_counter.FlopCounterMode, batch 1)"

def _flops(model: nn.Module, input_size: Any) -> int:
    return int(count_flops(model, input_size).total)


def _direction(config: PruneConfig) -> dict[str, float]:
    heads = max(config.stage_head_ratios) if config.stage_head_ratios else config.head_ratio
    svd = (1.0 - config.rank_ratio) if config.rank_ratio is not None else 0.0
    d = {"heads": float(heads), "mlp": float(config.mlp_ratio), "svd": float(svd)}
    top = max(d.values())
    if top <= 0:
        return {"heads": 1.0, "mlp": 1.0, "svd": 0.0}
    return {k: v / top for k, v in d.items()}


def _with_knobs(config: PruneConfig, heads: float, mlp: float, svd: float | None) -> PruneConfig:
    """``config`` with the heads / MLP / SVD knobs set (``svd`` = compression, None keeps the base's)."""
    kw: dict[str, Any] = {"mlp_ratio": round(min(max(mlp, 0.0), KNOB_CAP), 6)}
    heads = min(max(heads, 0.0), KNOB_CAP)
    if config.stage_head_ratios:
        top = max(config.stage_head_ratios)
        kw["stage_head_ratios"] = [round(min(KNOB_CAP, heads * r / top), 6) for r in config.stage_head_ratios]
        kw["head_ratio"] = 0.0
    else:
        kw["head_ratio"] = round(heads, 6)
    if svd is not None:
        kw["rank_ratio"] = round(1.0 - min(max(svd, 0.0), KNOB_CAP), 6)
    return replace(config, **kw)


def _knobs_at(direction: dict[str, float], t: float) -> dict[str, float]:
    return {k: min(KNOB_CAP, t * v) for k, v in direction.items()}


def solve_target_flops(model: nn.Module, config: PruneConfig, target: float, input_size: Any = None,
                       calib_loader: Iterable | None = None, rule: str | None = None, tol: float = 0.01,
                       max_evals: int = 64, strict: bool = True,
                       progress: Callable[[PruneProgress], None] | None = None,
                       cancel: CancelToken | None = None, _shortcut: bool = True,
                       _keep_ranking: bool = False) -> tuple[PruneConfig, dict[str, Any]]:
    """Find the ratios that bring ``model``'s dense FLOPs to ``target`` of what they are now.

    Args:
        model: the (unpruned or already pruned) Swin; it is not modified.
        config: base config: criteria, rankings, SVD kinds, IHT settings, and the direction of
            the ``uniform`` rule (see the module docstring). ``energy``-based SVD cannot be
            targeted (its rank does not follow a ratio); use ``rank_ratio``.
        target: wanted dense FLOPs as a fraction of the model's current dense FLOPs, in (0, 1].
        input_size: ``(C, H, W)``; default from ``model.accelvit_spec``.
        calib_loader: ``(images, labels)`` batches for ``taylor`` / activation-aware SVD; the
            first ``config.calib_batches`` are materialised once and reused for every candidate.
        rule: allocation rule (default: ``config.target_rule``); ``RULES`` lists them.
        tol: accepted relative error of the FLOPs (0.01: within 1% of ``target * baseline``).
        max_evals: at most this many candidate prunes.
        strict: raise :class:`ConfigError` when no candidate is within ``tol``.

    Returns:
        ``(solved_config, info)``: the base config with ``head_ratio`` (or
        ``stage_head_ratios``), ``mlp_ratio`` and ``rank_ratio`` filled in, and a JSON-ready
        description of the search (``baseline_flops``, ``achieved_flops``, ``achieved_ratio``,
        ``rel_error``, ``direction``, ``t``, ``fine_knob``, every ``evaluations`` entry, ...).
    """
    config.validate()
    rule = config.target_rule if rule is None else rule
    if rule not in RULES:
        raise ConfigError("target_rule", f"unknown allocation rule {rule!r}; use one of {list(RULES)}.")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target) \
            or not 0 < target <= 1:
        raise ConfigError("target_flops", f"must be a fraction of the baseline's dense FLOPs in (0, 1], got {target!r}.")
    if not 0 < tol < 0.5:
        raise ConfigError("tol", f"must be a small positive fraction such as 0.01, got {tol!r}.")
    if config.energy is not None:
        raise ConfigError("energy", "a FLOP target sets the SVD rank through rank_ratio; energy-based ranks cannot be "
                                    "targeted. Use rank_ratio (any value sets the SVD share of the direction) or none.")
    start = time.perf_counter()
    calib = fixed_calibration(calib_loader, config.calib_batches) if config.criteria_need_calibration else None
    counted = count_flops(model, input_size)
    base = int(counted.total)
    goal = float(target) * base
    direction = _direction(config)
    use_svd = direction["svd"] > 0
    evaluations: list[dict[str, Any]] = []
    cache: dict[tuple, float] = {}

    def emit(msg: str) -> None:
        if progress is not None:
            progress(PruneProgress("target", len(evaluations), max_evals, msg))

    shortcut_ok = _shortcut
    shortcut = _Shortcut(model, config, calib, cancel) if _shortcut else None
    sens: SensitivityRanking | None = None
    allocations: dict[tuple, Allocation] = {}
    base_direction = dict(direction)
    if rule == "sensitivity":
        sens = _sensitivity_ranking(model, config, calib, direction, input_size, cancel, counted.by_module)
        # one knob for the heads + MLP units (the fraction of their FLOPs removed), one for SVD
        direction = {"struct": 1.0 if max(direction["heads"], direction["mlp"]) > 0 else 0.0,
                     "svd": direction["svd"]}

    def key_of(cfg: PruneConfig) -> tuple:
        return (cfg.head_ratio, tuple(cfg.stage_head_ratios or ()), cfg.mlp_ratio, cfg.rank_ratio)

    def evaluate(cfg: PruneConfig, phase: str) -> float:
        key = key_of(cfg)
        if key in cache:
            return cache[key]
        if len(evaluations) >= max_evals:
            raise _Budget()
        check_cancel(cancel, "FLOP-target search")
        flops = _candidate_flops(model, cfg, calib, input_size, cancel, shortcut, allocations.get(key), sens)
        cache[key] = flops / base
        evaluations.append({"phase": phase, "head_ratio": cfg.head_ratio, "stage_head_ratios": cfg.stage_head_ratios,
                            "mlp_ratio": cfg.mlp_ratio, "rank_ratio": cfg.rank_ratio, "dense_flops": flops,
                            "ratio": flops / base})
        emit(f"{phase}: {flops / base:.4f} of the baseline FLOPs (target {target:.4f})")
        return flops / base

    def sens_cfg(frac: float, svd: float | None) -> PruneConfig:
        assert sens is not None
        alloc = sens.allocation(frac)
        kw: dict[str, Any] = {"head_ratio": alloc.head_ratio, "stage_head_ratios": None,
                              "mlp_ratio": alloc.mlp_ratio}
        if svd is not None:
            kw["rank_ratio"] = round(1.0 - min(max(svd, 0.0), KNOB_CAP), 6)
        cfg = replace(config, **kw)
        allocations[key_of(cfg)] = alloc
        return cfg

    def cfg_at(t: float) -> PruneConfig:
        k = _knobs_at(direction, t)
        if sens is not None:
            return sens_cfg(k["struct"], k["svd"] if use_svd else None)
        return _with_knobs(config, k["heads"], k["mlp"], k["svd"] if use_svd else None)

    def err(ratio: float) -> float:
        return ratio / target - 1.0

    best: tuple[float, PruneConfig, float] | None = None  # (|err|, config, ratio)

    def consider(cfg: PruneConfig, ratio: float) -> None:
        nonlocal best
        e = abs(err(ratio))
        if best is None or e < best[0] - 1e-12:
            best = (e, cfg, ratio)

    if sens is not None:
        fine_knob = "struct" if direction["struct"] > 0 and use_svd else None
    else:
        fine_knob = "mlp" if direction["mlp"] > 0 else ("svd" if use_svd else None)
    fine_used = False
    try:
        if target >= 1.0:
            cfg0 = cfg_at(0.0)
            consider(cfg0, evaluate(cfg0, "t"))
        else:
            t_max = max(KNOB_CAP / v for v in direction.values() if v > 0)
            r_hi = evaluate(cfg_at(t_max), "t")
            consider(cfg_at(t_max), r_hi)
            if r_hi > target * (1 + tol):
                raise ConfigError("target_flops", (
                    f"{target:.3f} of the dense FLOPs cannot be reached along this direction: pruning as far as "
                    f"it goes ({KNOB_CAP:.0%} of heads/MLP units/SVD weights, never a layer's last head) leaves "
                    f"{r_hi:.3f}. Give a larger target, or add MLP width / SVD to the base config's direction."))
            def at_t(t: float) -> float:
                cfg = cfg_at(t)
                r = evaluate(cfg, "t")
                consider(cfg, r)
                return r

            lo, hi = false_position(at_t, 0.0, t_max, 1.0, r_hi, target, tol, err, 1e-3 * t_max)
            if best is not None and best[0] > tol / 2 and fine_knob is not None:
                fine_used = True
                _fine_adjust(config, direction, use_svd, fine_knob, lo, hi, target, tol, evaluate, consider, err,
                             sens_cfg if sens is not None else None)
    except _Budget:
        log.warning("FLOP-target search stopped after %d candidates.", max_evals)
    assert best is not None
    e, solved, ratio = best
    # the search took shortcuts (see _candidate_flops); check the winner with the real prune()
    alloc = allocations.get(key_of(solved))
    verified = _candidate_flops(model, solved, calib, input_size, cancel, None, alloc, sens)
    if verified != int(round(ratio * base)):
        if shortcut_ok:
            log.warning("FLOP-target search: the shortcut predicted %d dense FLOPs but prune() gives %d; searching "
                        "again with the real prune() for every candidate.", int(round(ratio * base)), verified)
            return solve_target_flops(model, config, target, input_size, calib, rule, tol, max_evals, strict,
                                      progress, cancel, _shortcut=False, _keep_ranking=_keep_ranking)
        raise RuntimeError(f"FLOP-target search: prune() of {solved} gave {verified} dense FLOPs where the search "
                           f"measured {int(round(ratio * base))}; is a criterion non-deterministic?")
    info = {
        "rule": rule, "target": float(target), "tolerance": tol, "baseline_flops": base,
        "target_flops": goal, "achieved_flops": int(round(ratio * base)), "achieved_ratio": ratio,
        "rel_error": ratio / target - 1.0, "within_tolerance": e <= tol, "direction": base_direction,
        "fine_knob": fine_knob, "fine_adjusted": fine_used, "evaluations": evaluations, "n_evaluations": len(evaluations),
        "calibration_batches": len(calib) if calib is not None else 0, "counter": FLOP_COUNTER,
        "verified_with_prune": True, "shortcut": shortcut_ok,
        "seconds": time.perf_counter() - start,
        "solved": {"head_ratio": solved.head_ratio, "stage_head_ratios": solved.stage_head_ratios,
                   "mlp_ratio": solved.mlp_ratio, "rank_ratio": solved.rank_ratio},
    }
    if sens is not None:
        info["allocation"] = {"heads": dict(alloc.heads), "mlp": dict(alloc.mlp)} if alloc is not None else None
        info["sensitivity"] = sens.table(alloc)
        if _keep_ranking:  # for prune_to_target: the same scores and allocation for the final prune
            info["_ranking"], info["_allocation"] = sens, alloc
    if e > tol and strict:
        raise ConfigError("target_flops", (
            f"the closest reachable point is {ratio:.4f} of the dense FLOPs, {abs(ratio / target - 1):.1%} away from "
            f"the target {target:.4f} (tolerance {tol:.0%}). Heads are removed whole, so a heads-only direction "
            "moves in steps; add mlp_ratio (or rank_ratio) to the base config so the search can fine-tune."))
    log.info("FLOP target %.3f: %s -> %.4f of %d FLOPs (%+.2f%%, %d candidates, %.1fs).", target, info["solved"],
             ratio, base, 100 * info["rel_error"], len(evaluations), info["seconds"])
    return solved, info


class _Shortcut:
    """What the search computes once instead of once per candidate: the head scores."""

    def __init__(self, model: nn.Module, config: PruneConfig, calib: Batches | None, cancel: CancelToken | None):
        self.model, self.config, self.calib, self.cancel = model, config, calib, cancel
        self._scores: dict[str, torch.Tensor] | None = None

    def head_scores(self) -> dict[str, torch.Tensor]:
        if self._scores is None:
            calib = Calibration(self.calib, self.config.calib_batches, model_device(self.model), self.cancel)
            self._scores = score_heads(self.model, self.config, calib)
        return self._scores


def _candidate_flops(model: nn.Module, cfg: PruneConfig, calib: Batches | None, input_size: Any,
                     cancel: CancelToken | None, shortcut: _Shortcut | None, alloc: Allocation | None = None,
                     sens: SensitivityRanking | None = None) -> int:
    """Dense FLOPs of ``model`` pruned by ``cfg`` (on a deep copy).

    Without ``shortcut`` this is the real prune (``apply_ratios``). With it, three things that
    cannot change the FLOPs are skipped (``solve_target_flops`` checks its answer with the real
    prune and searches again without shortcuts if they ever disagree):

    - head scores are computed once on the unpruned model (the prune scores heads there too,
      whatever the ratio) and handed to ``apply_ratios`` for each candidate;
    - with ``mlp_ranking="uniform"`` every block loses ``round(ratio * width)`` units whatever
      their scores, so the candidates score MLP units by ``l1`` (no calibration passes);
    - SVD is replaced by its structure: every eligible dense linear becomes a ``LowRankLinear``
      of the rank ``prune()`` would choose (``choose_rank`` depends only on the layer's shape and
      ``rank_ratio``); FLOPs do not depend on the factors' values, and an SVD of every layer
      costs seconds on a small CPU.
    """
    work = copy.deepcopy(model)
    if not cfg.prunes_structure:
        return _flops(work, input_size)
    scores = _scores_of(sens)
    if shortcut is None:
        apply_ratios(work, cfg, calib, cancel=cancel, allocation=alloc, **scores)
        return _flops(work, input_size)
    fast = replace(cfg, rank_ratio=None, energy=None, activation_aware=False,
                   mlp_criterion="l1" if cfg.mlp_ranking == "uniform" else cfg.mlp_criterion)
    if fast.prunes_structure:
        if sens is not None:
            apply_ratios(work, fast, calib, cancel=cancel, allocation=alloc, **scores)
        else:
            apply_ratios(work, fast, calib, cancel=cancel,
                         head_scores=shortcut.head_scores() if fast.prunes_heads else None)
    if cfg.rank_ratio is None:
        return _flops(work, input_size)
    for name, lin in linear_layers(work, cfg.svd_layers, include_lowrank=False):
        m, n = lin.out_features, lin.in_features
        rank = choose_rank(m, n, torch.empty(0), cfg.rank_ratio, None)
        if rank is not None:
            set_submodule(work, name, LowRankLinear(n, m, rank, bias=lin.bias is not None,
                                                    device=lin.weight.device, dtype=lin.weight.dtype))
    return _flops(work, input_size)


def _scores_of(sens: SensitivityRanking | None) -> dict[str, Any]:
    """The ranking's scores as ``apply_ratios`` keyword arguments (its units were scored jointly,
    on the unpruned model; the prune keeps each layer's best units by the same scores)."""
    if sens is None:
        return {}
    kinds = {g.name: g.kind for g in sens.groups}
    heads = {k: v for k, v in sens.scores.items() if kinds[k] == "heads"}
    mlp = {k: v for k, v in sens.scores.items() if kinds[k] == "mlp"}
    return {"head_scores": heads or None, "mlp_scores": mlp or None}


def _sensitivity_ranking(model: nn.Module, config: PruneConfig, calib: Batches | None, direction: dict[str, float],
                         input_size: Any, cancel: CancelToken | None,
                         by_module: dict[str, int]) -> SensitivityRanking:
    """Score the heads and/or MLP units the direction prunes (once, on ``model``) and rank them per FLOP."""
    cal = Calibration(calib, config.calib_batches, model_device(model), cancel)
    if "l1" in (config.head_criterion, config.mlp_criterion):
        log.warning("target_rule='sensitivity' ranks units across layers by score per FLOP; l1 magnitudes do not "
                    "compare across layers (on CIFAR-10 it kept 37.6% top-1 before finetuning where uniform random "
                    "kept 42.4%). Use the taylor criterion, or target_rule='uniform' with l1.")
    groups, scores = [], {}
    if direction["heads"] > 0:
        hg = head_groups(model)
        groups += hg
        scores.update(score(model, hg, config.head_criterion, cal, config.seed))
    if direction["mlp"] > 0:
        mg = mlp_groups(model)
        groups += mg
        scores.update(score(model, mg, config.mlp_criterion, cal, config.seed))
    if not groups:
        raise ConfigError("target_rule", "the sensitivity rule ranks heads and MLP units, but the model has none "
                                         "the config lets it prune.")
    return SensitivityRanking(groups, scores, unit_costs(model, groups, input_size, by_module))


class _Budget(Exception):
    """Internal: the candidate budget is spent."""


def false_position(measure: Callable[[float], float], lo: float, hi: float, r_lo: float, r_hi: float,
                    target: float, tol: float, err: Callable[[float], float], min_width: float) -> tuple[float, float]:
    """Safeguarded false position on a knob whose measured FLOP ratio falls as it grows.

    Alternates false position (fast where FLOPs are smooth in the knob) and plain bisection
    (guaranteed halving where a head count jumps); stops inside ``tol / 2`` or when the
    bracket ``[lo, hi]`` is narrower than ``min_width``. Returns the final bracket.
    """
    step = 0
    while hi - lo > min_width:
        w = (r_lo - target) / max(r_lo - r_hi, 1e-12) if step % 2 == 0 else 0.5
        x = lo + min(0.9, max(0.1, w)) * (hi - lo)
        step += 1
        r = measure(x)
        if abs(err(r)) <= tol / 2:
            break
        if r > target:
            lo, r_lo = x, r
        else:
            hi, r_hi = x, r
    return lo, hi


def _fine_adjust(config, direction, use_svd, knob, t_lo, t_hi, target, tol, evaluate, consider, err,
                 sens_cfg=None) -> None:
    """Freeze the other knobs at one end of the bracket (the low end first) and bisect ``knob`` alone."""
    for t_fixed in (t_lo, t_hi):
        k = _knobs_at(direction, t_fixed)

        def cfg_with(v: float, k=k) -> PruneConfig:
            kk = dict(k)
            kk[knob] = v
            if sens_cfg is not None:
                return sens_cfg(kk["struct"], kk["svd"] if use_svd else None)
            return _with_knobs(config, kk["heads"], kk["mlp"], kk["svd"] if (use_svd or knob == "svd") else None)

        a, b = 0.0, KNOB_CAP  # FLOPs fall as the knob grows
        ra, rb = evaluate(cfg_with(a), "fine"), evaluate(cfg_with(b), "fine")
        consider(cfg_with(a), ra)
        consider(cfg_with(b), rb)
        if not (rb <= target <= ra):
            continue

        def at_v(v: float, cfg_with=cfg_with) -> float:
            cfg = cfg_with(v)
            r = evaluate(cfg, "fine")
            consider(cfg, r)
            return r

        false_position(at_v, a, b, ra, rb, target, tol, err, 1e-5)
        return


def prune_to_target(model: nn.Module, config: PruneConfig, target: float, input_size: Any = None,
                    calib_loader: Iterable | None = None, rule: str | None = None, tol: float = 0.01,
                    progress: Callable[[PruneProgress], None] | None = None,
                    cancel: CancelToken | None = None) -> tuple[nn.Module, PruneReport, PruneConfig, dict[str, Any]]:
    """:func:`solve_target_flops`, then :func:`.pruner.apply_ratios` in place with the same calibration batches.

    Returns ``(model, report, solved_config, info)``; ``info["final_flops"]`` is the pruned
    model's measured dense FLOPs (equal to ``info["achieved_flops"]``: the prune is deterministic).
    ``report.config`` is the solved config, ``report.target`` the search (``info`` without
    the list of evaluations).
    """
    calib = fixed_calibration(calib_loader, config.calib_batches)
    solved, info = solve_target_flops(model, config, target, input_size, calib, rule, tol,
                                      progress=progress, cancel=cancel, _keep_ranking=True)
    ranking, alloc = info.pop("_ranking", None), info.pop("_allocation", None)
    model, report = apply_ratios(model, solved, calib, progress=progress, cancel=cancel, allocation=alloc,
                                 **_scores_of(ranking))
    info["final_flops"] = _flops(model, input_size)
    if info["final_flops"] != info["achieved_flops"]:
        log.warning("The final prune gave %d dense FLOPs, the search %d (non-deterministic criteria?).",
                    info["final_flops"], info["achieved_flops"])
    report.target = {k: v for k, v in info.items() if k not in ("evaluations", "sensitivity")}
    report.sensitivity = with_ranking(report.sensitivity, info.get("sensitivity"),
                                      {"heads": solved.head_criterion, "mlp": solved.mlp_criterion})
    return model, report, solved, info


__all__ = ["RULES", "KNOB_CAP", "fixed_calibration", "solve_target_flops", "prune_to_target"]
