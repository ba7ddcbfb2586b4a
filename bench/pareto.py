"""Accuracy vs FLOPs on real data: accelvit against Torch-Pruning, same baseline, same finetune budget.

    python -m bench.pareto --train-dir /tmp/cifar10/train --model swin_micro --profile quick
    python -m bench.pareto --train-dir DIR --test-dir DIR2 --profile full --device auto
    python -m bench.pareto --dataset caltech101 --data-root /tmp/caltech --img-size 64 --profile quick
    python -m bench.pareto ... --subset 5000 --epochs 3 --finetune-epochs 1 --methods accelvit,tp_taylor

One process trains a baseline (or reuses it from ``bench/_work/baselines/<key>``, the key a hash
of data, model and training config), then for every dense-FLOP target (0.7, 0.5, 0.3 of the
baseline) prunes a copy of that same baseline with every method, finetunes each for the same
epochs with the same learning-rate schedule (``accelvit.train.fit``), and measures it on the
held-out test split (``--test-dir``, or a seeded stratified split of the train folder).

Methods (``--methods``, comma separated; ``METHODS`` below):

- ``accelvit``: heads + MLP width + activation-aware SVD, Taylor criteria, ratios found by
  ``accelvit.prune.target.solve_target_flops`` (uniform rule along ``--direction``);
- ``accelvit_iht``: the same pruned model, finetuned with IHT to 50% sparsity of the remaining
  linear weights (``make_iht_hook``, every linear kind: qkv, proj, fc1, fc2, patch-merging
  reduction, classifier; both factors of low-rank layers);
- ``tp_magnitude`` / ``tp_taylor`` (``tp_taylor_global``): Torch-Pruning's ``MetaPruner`` in the
  mode that works on timm Swin: head-dim + MLP-width pruning (``num_heads`` per ``qkv``,
  ``prune_head_dims=True``, ``prune_num_heads=False``), residual stream untouched, its
  ``MagnitudeImportance(p=2)`` / ``TaylorImportance`` (gradients of the same calibration batches),
  local (uniform) ratios or ``global_pruning``; the ratio is bisected on dense FLOPs measured by
  ``accelvit.metrics``, then the MLP ratio alone (``pruning_ratio_dict``) fine-tunes the hit;
- ``tp_head_count`` / ``tp_embed_channels``: Torch-Pruning's head-count mode
  (``prune_num_heads=True``) and its default channel mode (embedding channels + head dims, the
  recipe of its timm examples). They are really run; what happens is recorded in ``status``;
- ``random``: the ``accelvit`` config with random head / MLP-unit selection (control);
- ``accelvit_nosvd`` (ablation, not run by default): ``accelvit`` without the SVD share;
- ``baseline`` (reference, no extra training) and ``baseline_ft`` (control: the unpruned
  baseline finetuned for the same epochs).

Torch-Pruning adapter notes (what a correct forward of a TP-pruned timm Swin needs):
TP traces the ``relative_position_bias_table`` (one column per head) as an "unwrapped
parameter" coupled to the qkv channels, and then rejects every qkv group (nothing in attention
gets pruned); the tables are therefore passed in ``ignored_layers``. After head-dim pruning
nothing else needs patching: timm's ``WindowAttention`` infers the head dim from ``qkv``
(``reshape(..., num_heads, -1)``), ``num_heads`` is unchanged, and ``scale`` stays
1/sqrt(original head dim), which keeps the kept dims' logits as they were (timm's default,
non-fused path). The adapter checks that TP kept the same dims in q and k of every head.

Outputs: ``bench/results/<name>.csv`` (one row per method and target; ``top1`` is a fraction),
``<name>.md`` (the table), ``<name>.json`` (rows + searches + machine), ``<name>.html`` (Plotly)
and ``<name>.png`` (Plotly through kaleido, when installed), and a run summary appended to the
``## Pareto benchmark (issue 7)`` section of ``bench/RESULTS.md`` (``--no-write`` skips it).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import platform
import re
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from accelvit import serialize
from accelvit.data import DataConfig, load_data
from accelvit.metrics import compare, count_flops, disk_sizes, measure, param_counts
from accelvit.models import build_model, model_spec, spec_of
from accelvit.prune import LINEAR_KINDS, PruneConfig, make_iht_hook, prune
from accelvit.prune.target import fixed_calibration, solve_target_flops
from accelvit.train import TrainConfig, evaluate, fit
from accelvit.utils import device_description, resolve_device, seed_everything

log = logging.getLogger("bench.pareto")

ROOT = Path(__file__).resolve().parent
RESULTS_MD = ROOT / "RESULTS.md"
SECTION = "## Pareto benchmark (issue 7)"
CACHE_VERSION = 1

METHODS: dict[str, str] = {
    "baseline": "trained baseline, no extra finetune (reference)",
    "baseline_ft": "control: unpruned baseline finetuned for the same epochs",
    "accelvit": "accelvit heads + MLP width + activation-aware SVD, Taylor criteria, FLOP-targeted",
    "accelvit_iht": "accelvit structural + IHT to 50% sparsity of the remaining linear weights",
    "tp_magnitude": "Torch-Pruning head-dim + MLP width, MagnitudeImportance(p=2), local ratios",
    "tp_taylor": "Torch-Pruning head-dim + MLP width, TaylorImportance, local ratios",
    "tp_taylor_global": "Torch-Pruning head-dim + MLP width, TaylorImportance, global_pruning=True",
    "tp_head_count": "Torch-Pruning head-count mode (prune_num_heads=True)",
    "tp_embed_channels": "Torch-Pruning default channel mode (embedding channels + head dims)",
    "random": "control: the accelvit config with random head / MLP-unit selection",
    "accelvit_nosvd": "ablation: accelvit without SVD (heads + MLP width only, same criteria)",
}
DEFAULT_METHODS = [m for m in METHODS if m not in ("tp_taylor_global", "accelvit_nosvd")]
PRUNED_METHODS = [m for m in METHODS if m not in ("baseline", "baseline_ft")]

COLUMNS = ["method", "target_flops", "status", "top1", "top5", "top1_pruned", "dense_flops", "flops_ratio",
           "effective_flops", "params", "nonzero_params", "size_bytes", "size_format", "size_dense_bytes",
           "size_sparse_bytes", "speedup_b64", "paired_speedup_b64", "latency_ms_b64", "baseline_latency_ms_b64",
           "prune_settings", "search_evals", "search_seconds", "finetune_seconds", "note"]


@dataclass
class Profile:
    subset: int | None          # training images kept (stratified); None: all
    eval_subset: int | None     # at most this many test (and val) images
    epochs: int                 # baseline training epochs
    finetune_epochs: int        # every method, and the baseline_ft control
    batch_size: int
    lr: float = 2e-3            # baseline peak lr (AdamW, warmup + cosine)
    finetune_lr: float = 1e-3   # finetune peak lr, same schedule for every method
    calib_batches: int = 4      # calibration batches (Taylor scores / gradients, activation-aware SVD)
    speed_warmup: int = 3
    speed_reps: int = 10
    speed_threads: int | None = None  # torch threads while timing (None: as training)
    num_workers: int = 0
    targets: tuple[float, ...] = (0.7, 0.5, 0.3)
    search_evals: int = 40


PROFILES: dict[str, Profile] = {
    # the unit test: a handful of images, one epoch, one target
    "smoke": Profile(subset=None, eval_subset=None, epochs=1, finetune_epochs=1, batch_size=8, calib_batches=1,
                     speed_warmup=1, speed_reps=2, targets=(0.5,), search_evals=24),
    # ~30 min on 2 CPU cores (swin_micro, CIFAR-10)
    "quick": Profile(subset=10_000, eval_subset=5_000, epochs=10, finetune_epochs=2, batch_size=128),
    # all images, baseline near its plateau: for a GPU (or a long CPU night)
    "full": Profile(subset=None, eval_subset=None, epochs=60, finetune_epochs=10, batch_size=128, calib_batches=8,
                    speed_reps=15, num_workers=min(8, os.cpu_count() or 1)),
}


# ============================================================================ data and baseline
def data_config(args: argparse.Namespace, prof: Profile, work: Path, mean, std, img_size: int) -> DataConfig:
    common = dict(img_size=img_size, batch_size=prof.batch_size, subset=prof.subset, eval_subset=prof.eval_subset,
                  num_workers=prof.num_workers, seed=args.seed, mean=tuple(mean), std=tuple(std))
    if args.dataset == "folder":
        train = Path(args.train_dir).expanduser().resolve()
        if args.test_dir:
            # accelvit's folder loader reads ROOT/train + ROOT/test: make such a ROOT of links
            test = Path(args.test_dir).expanduser().resolve()
            key = hashlib.sha256(f"{train}\n{test}".encode()).hexdigest()[:12]
            root = work / "data" / key
            root.mkdir(parents=True, exist_ok=True)
            for name, target in (("train", train), ("test", test)):
                link = root / name
                if link.is_symlink() and Path(os.readlink(link)) != target:
                    link.unlink()
                if not link.exists():
                    link.symlink_to(target, target_is_directory=True)
            return DataConfig(dataset="folder", root=str(root), **common)
        return DataConfig(dataset="folder", root=str(train), **common)
    return DataConfig(dataset=args.dataset, root=str(Path(args.data_root).expanduser().resolve()), **common)


def baseline_key(dcfg: DataConfig, model: str, tcfg: TrainConfig, device: torch.device, extra: dict) -> str:
    d = dcfg.to_dict()
    d.pop("num_workers", None)
    if dcfg.dataset == "folder" and dcfg.root:
        root = Path(dcfg.root)
        d["root"] = {n: str(p.resolve()) for n, p in (("train", root / "train"), ("test", root / "test"))
                     if p.exists()} or str(root)
    t = tcfg.to_dict()
    t.pop("device", None)
    blob = json.dumps({"v": CACHE_VERSION, "data": d, "model": model, "train": t, "device": device.type, **extra},
                      sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def get_baseline(args, prof: Profile, bundle, dcfg: DataConfig, work: Path, device: torch.device,
                 img_size: int) -> tuple[nn.Module, dict[str, Any]]:
    tcfg = TrainConfig(epochs=prof.epochs, lr=prof.lr, device=str(device), seed=args.seed)
    key = baseline_key(dcfg, args.model, tcfg, device, {"img_size": img_size, "classes": bundle.class_names})
    cache = work / "baselines" / key
    if not args.retrain and (cache / "baseline.json").exists():
        try:
            model, _ = serialize.load(cache, device="cpu")
            info = json.loads((cache / "baseline.json").read_text())
            log.info("Reusing the cached baseline %s (top1 %.4f).", cache, info["top1"])
            return model.eval(), {**info, "cache": str(cache), "reused": True}
        except Exception as exc:  # a broken cache entry is retrained, not fatal
            log.warning("Cached baseline %s unusable (%s); retraining.", cache, exc)
    seed_everything(args.seed)
    model = build_model(args.model, num_classes=len(bundle.class_names), img_size=img_size)
    log.info("Training the baseline: %s, %d epochs on %d images (%s).", args.model, prof.epochs,
             bundle.split.get("train", 0), device)
    res = fit(model, bundle.train, tcfg, progress=_fit_logger("baseline"))
    ev = evaluate(model, bundle.test, device=device)
    model = model.cpu().eval()
    info = {"key": key, "top1": ev.top1, "top5": ev.top5, "epochs": prof.epochs, "train_seconds": res.train_seconds,
            "train_images_per_s": res.images_per_s, "train_config": tcfg.to_dict(), "data": dcfg.to_dict(),
            "split": bundle.split}
    serialize.save(model, cache, class_names=bundle.class_names, meta={"bench": "pareto", "baseline_key": key})
    (cache / "baseline.json").write_text(json.dumps(info, indent=2, default=str))
    return model, {**info, "cache": str(cache), "reused": False}


def _fit_logger(what: str) -> Callable[[Any], None]:
    def cb(p) -> None:
        if p.epoch_end:
            log.info("  %s epoch %d/%d: loss %.3f, train acc %.3f, %.0f img/s", what, p.epoch, p.epochs, p.loss,
                     p.accuracy, p.images_per_s)
    return cb


# ============================================================================ 1-D FLOP search
def solve_1d(f: Callable[[float], float], lo: float, hi: float, f_lo: float, f_hi: float, target: float, tol: float,
             budget: list[int], record: Callable[[float, float], None]) -> None:
    """Shrink [lo, hi] (f decreasing, f(lo) > target >= f(hi)) by alternating false position and bisection."""
    step = 0
    while hi - lo > 1e-3 and budget[0] > 0:
        w = (f_lo - target) / max(f_lo - f_hi, 1e-12) if step % 2 == 0 else 0.5
        x = lo + min(0.9, max(0.1, w)) * (hi - lo)
        step += 1
        budget[0] -= 1
        fx = f(x)
        record(x, fx)
        if abs(fx / target - 1) <= tol / 2:
            return
        if fx > target:
            lo, f_lo = x, fx
        else:
            hi, f_hi = x, fx


# ============================================================================ Torch-Pruning adapter
TP_MODES = {"tp_magnitude": ("head_dim", "magnitude", False), "tp_taylor": ("head_dim", "taylor", False),
            "tp_taylor_global": ("head_dim", "taylor", True), "tp_head_count": ("head_count", "magnitude", False),
            "tp_embed_channels": ("embed", "magnitude", False)}
#: Largest ratio searched: at 0.95 a 16-dim head would keep 0 dims, so TP skips those groups
#: and prunes no attention at all (FLOPs jump back up); 0.9 keeps at least one dim per head.
TP_MAX_RATIO = 0.9
#: What we found makes each failing mode fail on timm Swin (appended to the recorded error).
TP_WHY = {
    "head_count": (" -- TP removes whole heads from qkv/proj but not their columns of the "
                   "relative_position_bias_table (one per original head), so the bias no longer matches the heads "
                   "(it fails to add, or broadcasts the kept heads back to the original count and proj receives "
                   "the wrong width)"),
    "embed": (" -- TP prunes the residual channels C by index but does not follow PatchMerging's 2x2 concatenation "
              "(4C channels), so the merge's LayerNorm/reduction are cut to the wrong width"),
}


class TPFailure(RuntimeError):
    """Torch-Pruning ran but left a model that is wrong or unusable."""


def tp_gradients(model: nn.Module, calib: list) -> dict[str, torch.Tensor]:
    """Summed gradients of the cross-entropy over the calibration batches (for TaylorImportance)."""
    work = copy.deepcopy(model).eval()
    work.zero_grad(set_to_none=True)
    for x, y in calib:
        F.cross_entropy(work(x), y).backward()
    return {n: p.grad.detach().clone() for n, p in work.named_parameters() if p.grad is not None}


def tp_prune(base: nn.Module, mode: str, importance: str, ratio: float, mlp_ratio: float | None,
             grads: dict[str, torch.Tensor] | None, global_pruning: bool, input_size: tuple[int, int, int]) -> nn.Module:
    """A copy of ``base`` pruned by Torch-Pruning. Raises on any failure, including a wrong model."""
    import torch_pruning as tp
    from timm.models.swin_transformer import WindowAttention

    model = copy.deepcopy(base).eval()
    if grads is not None:
        for n, p in model.named_parameters():
            if n in grads:
                p.grad = grads[n].clone()
    attns = [m for m in model.modules() if isinstance(m, WindowAttention)]
    old_qkv = {id(a): a.qkv.weight.detach().clone() for a in attns}
    heads_before = [a.num_heads for a in attns]
    num_heads = {a.qkv: a.num_heads for a in attns}
    ignored: list[Any] = [model.head.fc]
    kw: dict[str, Any] = {}
    if mode in ("head_dim", "head_count"):
        # the residual stream stays whole: ignore every layer writing it, and the bias tables
        # (TP couples them to the qkv channels and then refuses to prune any qkv group)
        ignored += [model.patch_embed.proj] + [a.relative_position_bias_table for a in attns]
        ignored += [m for n, m in model.named_modules()
                    if isinstance(m, nn.Linear) and n.endswith(("attn.proj", "mlp.fc2", "downsample.reduction"))]
    fc1s = [m for n, m in model.named_modules() if n.endswith("mlp.fc1")]
    if mode == "head_dim":
        kw.update(pruning_ratio=ratio, prune_head_dims=True, prune_num_heads=False)
        if mlp_ratio is not None:
            kw["pruning_ratio_dict"] = {m: mlp_ratio for m in fc1s}
    elif mode == "head_count":
        kw.update(pruning_ratio=ratio if mlp_ratio is None else mlp_ratio, prune_head_dims=False,
                  prune_num_heads=True, head_pruning_ratio=ratio)
    else:  # embed: TP's timm recipe as documented (classifier ignored, heads declared)
        kw.update(pruning_ratio=ratio, prune_head_dims=True, prune_num_heads=False)
    imp = tp.importance.TaylorImportance() if importance == "taylor" else tp.importance.MagnitudeImportance(p=2)
    example = torch.randn(1, *input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unwrapped parameters detected" for the bias tables
        pruner = tp.pruner.MetaPruner(model, example, importance=imp, global_pruning=global_pruning,
                                      num_heads=num_heads, ignored_layers=ignored, in_channel_groups={},
                                      out_channel_groups={}, **kw)  # fresh dicts: TP's defaults are shared
        pruner.step()
    model.zero_grad(set_to_none=True)
    if mode == "head_count":
        for a in attns:  # as TP's own timm example does after head pruning
            a.num_heads = num_heads[a.qkv]
    why = TP_WHY.get(mode, "")
    if mode == "head_count":
        if any(a.num_heads < 1 for a in attns):
            why = (" -- TP removed every head of an attention (it removes ceil(ratio x heads) per layer), leaving "
                   "num_heads=0")
        elif all(a.relative_position_bias_table.shape[1] == a.num_heads for a in attns):
            why = ""
    try:
        with torch.no_grad():
            out = model(torch.randn(2, *input_size))
    except Exception as exc:
        raise TPFailure(f"the pruned model's forward fails: {type(exc).__name__}: {exc}{why}") from exc
    n_cls = spec_of(base).num_classes
    if tuple(out.shape) != (2, n_cls) or not torch.isfinite(out).all():
        raise TPFailure(f"the pruned model returns {tuple(out.shape)} (finite: {bool(torch.isfinite(out).all())})")
    if mode == "head_count" and ratio > 0 and [a.num_heads for a in attns] == heads_before:
        raise TPFailure("no head was removed")
    if mode == "head_dim":
        for a in attns:
            if not _qk_aligned(old_qkv[id(a)], a.qkv.weight.detach(), a.num_heads):
                raise TPFailure("Torch-Pruning kept different dims in q and k of one head")
    return model


def _qk_aligned(old: torch.Tensor, new: torch.Tensor, heads: int) -> bool:
    """Whether every head of a pruned qkv kept the same dims in its q and its k rows."""
    d0, d = old.shape[0] // (3 * heads), new.shape[0] // (3 * heads)
    src = []
    for row in new:
        hit = (old == row).all(1).nonzero().flatten()
        if len(hit) == 0:
            return False
        src.append(int(hit[0]))
    for h in range(heads):
        q = [i - h * d0 for i in src[h * d:(h + 1) * d]]
        k = [i - heads * d0 - h * d0 for i in src[heads * d + h * d: heads * d + (h + 1) * d]]
        if q != k:
            return False
    return True


def tp_search(base: nn.Module, method: str, target: float, calib: list, grads: dict | None, tol: float,
              budget_evals: int, input_size: tuple[int, int, int]) -> tuple[nn.Module, dict[str, Any]]:
    """Torch-Pruning at ``target`` of the dense FLOPs: bisect its ratio, then the MLP ratio alone."""
    mode, importance, global_pruning = TP_MODES[method]
    base_flops = count_flops(base, input_size).total
    g = grads if importance == "taylor" else None
    evals: list[dict[str, Any]] = []
    best: dict[str, Any] = {}

    seen: dict[tuple[float, float], float] = {}

    def f(r: float, r_mlp: float | None = None) -> float:
        key = (round(r, 6), round(r if r_mlp is None else r_mlp, 6))
        if key in seen:
            return seen[key]
        m = tp_prune(base, mode, importance, r, r_mlp, g, global_pruning, input_size)
        ratio = count_flops(m, input_size).total / base_flops
        evals.append({"ratio_attn": round(r, 6), "ratio_mlp": None if r_mlp is None else round(r_mlp, 6),
                      "flops_ratio": ratio})
        if not best or abs(ratio / target - 1) < abs(best["flops_ratio"] / target - 1):
            best.update(model=m, flops_ratio=ratio, ratio_attn=r, ratio_mlp=r if r_mlp is None else r_mlp)
        seen[key] = ratio
        return ratio

    start = time.perf_counter()
    # a first guess near the answer (fails fast for the modes that fail)
    guess = 1 - math.sqrt(target) if mode == "embed" else 1 - target
    f_guess = f(guess)
    f_hi = f(TP_MAX_RATIO)
    if f_hi > target * (1 + tol):
        raise TPFailure(f"even ratio {TP_MAX_RATIO} leaves {f_hi:.3f} of the dense FLOPs")
    lo, hi, f_lo = (0.0, guess, 1.0) if f_guess <= target else (guess, TP_MAX_RATIO, f_guess)
    if f_guess <= target:
        f_hi = f_guess
    budget = [budget_evals]
    if abs(f_guess / target - 1) > tol / 2:
        solve_1d(lambda r: f(r), lo, hi, f_lo, f_hi, target, tol, budget, lambda x, fx: None)
        if abs(best["flops_ratio"] / target - 1) > tol / 2 and mode != "embed":
            # head dims move in steps: freeze the attention ratio, fine-tune the MLP ratio
            r_attn = max((e["ratio_attn"] for e in evals if e["ratio_mlp"] is None and e["flops_ratio"] > target),
                         default=0.0)
            a, b = r_attn, TP_MAX_RATIO
            fa, fb = f(r_attn, a), f(r_attn, b)
            if fb <= target < fa:
                solve_1d(lambda v: f(r_attn, v), a, b, fa, fb, target, tol, budget, lambda x, fx: None)
    err = best["flops_ratio"] / target - 1
    if abs(err) > tol:
        raise TPFailure(f"the ratio search got no closer than {err:+.1%} to the FLOP target")
    info = {"mode": mode, "importance": importance, "global_pruning": global_pruning,
            "ratio_attn": best["ratio_attn"], "ratio_mlp": best["ratio_mlp"], "flops_ratio": best["flops_ratio"],
            "evaluations": evals, "n_evaluations": len(evals), "seconds": time.perf_counter() - start}
    return best["model"], info


# ============================================================================ measuring
def cost_row(model: nn.Module, base: nn.Module, input_size, base_flops: int, prof: Profile,
             speed: bool = True) -> dict[str, Any]:
    """Dense / effective FLOPs, params, nonzeros, size on disk and CPU speedup at batch 64 vs ``base``."""
    model = model.cpu().eval()
    try:
        m = measure(model, input_size, device="cpu", latency=False, thop=False, size=True)
        row = {"dense_flops": m.dense_flops, "effective_flops": m.effective_flops, "params": m.params,
               "nonzero_params": m.nonzero_params, "size_dense_bytes": m.size_dense_bytes,
               "size_sparse_bytes": m.size_sparse_bytes}
    except Exception as exc:  # measure's per-layer table expects accelvit's structures; count directly
        log.info("measure() failed (%s); counting FLOPs, params and sizes directly.", exc)
        params, nonzero = param_counts(model)
        dense, sparse = disk_sizes(model)
        flops = count_flops(model, input_size).total
        row = {"dense_flops": flops, "effective_flops": float(flops) * 1.0, "params": params,
               "nonzero_params": nonzero, "size_dense_bytes": dense, "size_sparse_bytes": sparse}
    row["flops_ratio"] = row["dense_flops"] / base_flops
    sparse_smaller = row["size_sparse_bytes"] < row["size_dense_bytes"]
    row["size_bytes"] = min(row["size_dense_bytes"], row["size_sparse_bytes"])
    row["size_format"] = "sparse bitmask+values (sparse_io)" if sparse_smaller else "dense fp32 safetensors"
    if speed:
        c = compare(base, model, input_size, device="cpu", batch_sizes=(64,), warmup=prof.speed_warmup,
                    reps=prof.speed_reps, num_threads=prof.speed_threads)
        p = c.point(64)
        row.update(speedup_b64=p.speedup, paired_speedup_b64=p.paired_speedup, latency_ms_b64=p.pruned.median_ms,
                   baseline_latency_ms_b64=p.baseline.median_ms)
    return row


# ============================================================================ the run
def parse_direction(text: str) -> dict[str, float]:
    out = {"heads": 0.0, "mlp": 0.0, "svd": 0.0}
    for part in text.split(","):
        k, _, v = part.partition("=")
        if k.strip() not in out:
            raise SystemExit(f"--direction: unknown knob {k!r}; use heads=, mlp=, svd=.")
        out[k.strip()] = float(v)
    if max(out.values()) <= 0 or min(out.values()) < 0 or max(out.values()) >= 1 + 1e-9:
        raise SystemExit("--direction: give values in [0, 1) with at least one positive, e.g. heads=0.5,mlp=0.9,svd=0.45.")
    return out


def accelvit_config(direction: dict[str, float], criterion: str, calib_batches: int, seed: int) -> PruneConfig:
    svd = direction["svd"] > 0
    return PruneConfig(head_ratio=direction["heads"], mlp_ratio=direction["mlp"],
                       rank_ratio=(1 - direction["svd"]) if svd else None, activation_aware=svd,
                       head_criterion=criterion, mlp_criterion=criterion, calib_batches=calib_batches, seed=seed)


def _status(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return f"failed: {type(exc).__name__}: {msg[:500]}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    started = dt.datetime.now()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    prof = dataclasses.replace(PROFILES[args.profile])
    for k in ("subset", "eval_subset", "epochs", "finetune_epochs", "batch_size", "lr", "finetune_lr",
              "calib_batches", "speed_reps", "speed_threads", "num_workers"):
        v = getattr(args, k)
        if v is not None:
            setattr(prof, k, v)
    if args.targets:
        prof.targets = tuple(args.targets)
    if prof.subset == 0:
        prof.subset = None
    methods = [m.strip() for m in (args.methods.split(",") if args.methods else DEFAULT_METHODS) if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}.")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset_label = args.dataset if args.dataset != "folder" else (args.dataset_label or "folder")
    name = args.name or f"{dataset_label}_{args.model}_{args.profile}"

    mspec = model_spec(args.model, num_classes=2, img_size=args.img_size)
    img_size = mspec.img_size
    dcfg = data_config(args, prof, work, mspec.mean, mspec.std, img_size)
    bundle = load_data(dcfg)
    input_size = (3, img_size, img_size)
    log.info("Data: %s", bundle.split)
    baseline, binfo = get_baseline(args, prof, bundle, dcfg, work, device, img_size)
    base_flops = count_flops(baseline, input_size).total
    # calibration: the first batches of 64 held-out validation images (not augmented, not test)
    calib_src = bundle.val.dataset if len(bundle.val.dataset) else bundle.train.dataset
    calib = fixed_calibration(torch.utils.data.DataLoader(calib_src, batch_size=min(64, prof.batch_size), shuffle=False),
                              prof.calib_batches)
    ft_cfg = TrainConfig(epochs=prof.finetune_epochs, lr=prof.finetune_lr, warmup_frac=0.05, device=str(device),
                         seed=args.seed + 1)
    direction = parse_direction(args.direction)

    rows: list[dict[str, Any]] = []
    searches: dict[str, Any] = {}
    grads = tp_gradients(baseline, calib) if any(TP_MODES.get(m, ("", "", False))[1] == "taylor"
                                                  for m in methods) else None

    def finetune_and_measure(method: str, target: float, model: nn.Module, hooks=(), extra: dict | None = None,
                             pruned_top1: float | None = None) -> dict[str, Any]:
        row = {"method": method, "target_flops": target, "status": "ok", "top1_pruned": pruned_top1, **(extra or {})}
        t0 = time.perf_counter()
        fit(model, bundle.train, ft_cfg, hooks=list(hooks), progress=_fit_logger(f"{method}@{target}"))
        row["finetune_seconds"] = time.perf_counter() - t0
        ev = evaluate(model, bundle.test, device=device)
        row.update(top1=ev.top1, top5=ev.top5)
        row.update(cost_row(model, baseline, input_size, base_flops, prof))
        log.info("%s @ %.2f: top1 %.4f, %.3f of the FLOPs, speedup %.2fx", method, target, ev.top1,
                 row["flops_ratio"], row["speedup_b64"])
        return row

    def top1_of(model: nn.Module) -> float:
        return evaluate(model, bundle.test, device=device).top1

    # ---------------------------------------------------------------- references
    if "baseline" in methods:
        rows.append({"method": "baseline", "target_flops": 1.0, "status": "ok", "top1": binfo["top1"],
                     "top5": binfo.get("top5"), "note": f"{prof.epochs} epochs, no finetune",
                     **cost_row(copy.deepcopy(baseline), baseline, input_size, base_flops, prof)})
    if "baseline_ft" in methods:
        try:
            rows.append(finetune_and_measure("baseline_ft", 1.0, copy.deepcopy(baseline),
                                             extra={"note": f"+{prof.finetune_epochs} finetune epochs"}))
        except Exception as exc:
            log.exception("baseline_ft failed")
            rows.append({"method": "baseline_ft", "target_flops": 1.0, "status": _status(exc)})

    # ---------------------------------------------------------------- pruned, per target
    for target in prof.targets:
        pruned_accelvit: tuple[nn.Module, PruneConfig, dict, float] | None = None
        for method in [m for m in PRUNED_METHODS if m in methods]:
            log.info("== %s at %.2f of the dense FLOPs", method, target)
            t0 = time.perf_counter()
            try:
                if method in ("accelvit", "accelvit_iht", "random", "accelvit_nosvd"):
                    if method == "accelvit_iht" and pruned_accelvit is not None:
                        model0, solved, info, p_top1 = pruned_accelvit
                        model = copy.deepcopy(model0)
                    else:
                        crit = "random" if method == "random" else "taylor"
                        dirn = {**direction, "svd": 0.0} if method == "accelvit_nosvd" else direction
                        base_cfg = accelvit_config(dirn, crit, prof.calib_batches, args.seed)
                        solved, info = solve_target_flops(baseline, base_cfg, target, input_size, calib,
                                                          max_evals=prof.search_evals)
                        model = copy.deepcopy(baseline)
                        prune(model, solved, calib)
                        p_top1 = top1_of(model)
                        if method == "accelvit":
                            pruned_accelvit = (copy.deepcopy(model), solved, info, p_top1)
                    searches[f"{method}@{target}"] = {k: v for k, v in info.items()}
                    settings = {k: info["solved"][k] for k in ("head_ratio", "mlp_ratio", "rank_ratio")}
                    settings.update(criterion=solved.head_criterion, activation_aware=solved.activation_aware)
                    hooks = []
                    if method == "accelvit_iht":
                        # "50% of the remaining linear weights": every linear kind, patch merging and classifier too
                        iht_cfg = replace(solved, sparsity=args.iht_sparsity, iht_layers=LINEAR_KINDS)
                        hooks = [make_iht_hook(model, iht_cfg)]
                        settings["sparsity"] = args.iht_sparsity
                    extra = {"prune_settings": json.dumps(settings), "search_evals": info["n_evaluations"],
                             "search_seconds": info["seconds"]}
                    rows.append(finetune_and_measure(method, target, model, hooks, extra, p_top1))
                else:
                    model, info = tp_search(baseline, method, target, calib, grads, args.tol, prof.search_evals,
                                            input_size)
                    searches[f"{method}@{target}"] = info
                    settings = {k: info[k] for k in ("mode", "importance", "global_pruning", "ratio_attn", "ratio_mlp")}
                    extra = {"prune_settings": json.dumps(settings), "search_evals": info["n_evaluations"],
                             "search_seconds": info["seconds"]}
                    rows.append(finetune_and_measure(method, target, model, (), extra, top1_of(model)))
            except Exception as exc:
                log.warning("%s at %.2f failed: %s", method, target, exc)
                rows.append({"method": method, "target_flops": target, "status": _status(exc),
                             "search_seconds": time.perf_counter() - t0})

    wall = time.perf_counter() - t_start
    machine = machine_info(device, load_start)
    result = {"name": name, "command": "python -m bench.pareto " + " ".join(shlex.quote(a) for a in args.argv),
              "profile": args.profile, "settings": dataclasses.asdict(prof), "methods": methods,
              "direction": direction, "model": args.model, "input_size": list(input_size),
              "baseline": {k: v for k, v in binfo.items() if k not in ("data",)}, "baseline_flops": base_flops,
              "finetune": ft_cfg.to_dict(), "split": bundle.split, "machine": machine, "started": started.isoformat(
                  timespec="seconds"), "wall_seconds": wall, "rows": [_complete(r) for r in rows],
              "searches": searches, "torch_pruning": _tp_version()}
    write_outputs(result, out_dir, name)
    if not args.no_write:
        append_results_md(result, Path(args.results_md), out_dir, name)
    return result


def _complete(row: dict[str, Any]) -> dict[str, Any]:
    return {c: row.get(c) for c in COLUMNS}


def _tp_version() -> str:
    try:
        from importlib.metadata import version

        return version("torch-pruning")
    except Exception:
        return "?"


def machine_info(device: torch.device, load_start) -> dict[str, Any]:
    from .latency import cpu_name

    cpu = cpu_name()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "train_device": device_description(device), "torch": torch.__version__, "python": platform.python_version(),
            "load_start": [round(x, 2) for x in load_start] if load_start else None,
            "load_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


# ============================================================================ outputs
def write_outputs(result: dict[str, Any], out_dir: Path, name: str) -> None:
    import pandas as pd

    df = pd.DataFrame(result["rows"], columns=COLUMNS)
    df.to_csv(out_dir / f"{name}.csv", index=False)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1, default=_json_default))
    (out_dir / f"{name}.md").write_text(markdown_table(result) + "\n")
    figure(result, out_dir, name)
    log.info("Wrote %s/%s.{csv,json,md,html,png}", out_dir, name)


def _json_default(o: Any) -> Any:
    if isinstance(o, (set, tuple)):
        return list(o)
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _fmt(v: Any, spec: str, scale: float = 1.0, dash: str = "-") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return dash
    return format(v * scale if scale != 1.0 else v, spec)


def markdown_table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    ctrl = next((r for r in rows if r["method"] == "baseline_ft" and r["status"] == "ok"), None)
    head = ("| method | target | top-1 % | vs baseline_ft | top-1 before finetune | dense MFLOPs (ratio) | "
            "effective MFLOPs | params | nonzeros | size on disk (KB) | CPU speedup b64 | status |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    order = {m: i for i, m in enumerate(METHODS)}
    for r in sorted(rows, key=lambda r: (-r["target_flops"], order.get(r["method"], 99))):
        ok = r["status"] == "ok"
        delta = (f"{100 * (r['top1'] - ctrl['top1']):+.2f}" if ok and ctrl and r["top1"] is not None else "-")
        flops = (f"{r['dense_flops'] / 1e6:.1f} ({r['flops_ratio']:.3f})" if ok and r["dense_flops"] else "-")
        size = _fmt(r["size_bytes"], ".0f", 1 / 1024)
        if ok and (r.get("size_format") or "").startswith("sparse"):
            size += " (sparse)"
        status = r["status"] if not ok else "ok"
        lines.append(" | ".join([
            f"| {r['method']}", f"{r['target_flops']:.2f}", _fmt(r["top1"], ".2f", 100), delta,
            _fmt(r["top1_pruned"], ".2f", 100), flops, _fmt(r["effective_flops"], ".1f", 1e-6),
            _fmt(r["params"], ",d"), _fmt(r["nonzero_params"], ",d"), size,
            _fmt(r["speedup_b64"], ".2f") + ("x" if r["speedup_b64"] else ""), status.replace("|", "/") + " |"]))
    return "\n".join(lines)


def figure(result: dict[str, Any], out_dir: Path, name: str) -> None:
    try:
        import plotly.graph_objects as go
    except ImportError:  # pragma: no cover - plotly is a dependency
        log.warning("plotly is not installed; no figure.")
        return
    fig = go.Figure()
    ok = [r for r in result["rows"] if r["status"] == "ok" and r["top1"] is not None]
    for method in METHODS:
        pts = sorted((r for r in ok if r["method"] == method), key=lambda r: r["dense_flops"])
        if not pts:
            continue
        if method in ("baseline", "baseline_ft"):
            fig.add_hline(y=100 * pts[0]["top1"], line_dash="dash" if method == "baseline_ft" else "dot",
                          annotation_text=method, annotation_position="bottom left")
        fig.add_trace(go.Scatter(x=[r["dense_flops"] / 1e6 for r in pts], y=[100 * r["top1"] for r in pts],
                                 mode="lines+markers", name=method,
                                 text=[f"target {r['target_flops']:.2f}, speedup {r['speedup_b64'] or 0:.2f}x"
                                       for r in pts]))
    failed = sorted({r["method"] for r in result["rows"] if r["status"] != "ok"})
    title = f"{result['name']}: top-1 vs dense FLOPs ({result['model']}, {result['profile']} profile)"
    if failed:
        title += f"<br><sub>failed: {', '.join(failed)} (see the table)</sub>"
    fig.update_layout(title=title, xaxis_title="dense MFLOPs per image (FlopCounterMode, attention included)",
                      yaxis_title="test top-1 (%)", template="plotly_white", width=900, height=560)
    fig.write_html(out_dir / f"{name}.html", include_plotlyjs="cdn")
    try:
        fig.write_image(out_dir / f"{name}.png", scale=1)
    except Exception as exc:  # kaleido missing, or no Chrome for it
        log.warning("No PNG figure (%s: %s); the HTML figure was written.", type(exc).__name__, exc)


# ============================================================================ RESULTS.md
def target_checks(result: dict[str, Any]) -> list[str]:
    """The issue's targets at 0.5 of the dense FLOPs, measured; misses say by how much."""
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    at = [r for r in rows if abs(r["target_flops"] - 0.5) < 1e-9]
    get = {r["method"]: r for r in at}
    ctrl = next((r for r in rows if r["method"] == "baseline_ft"), None)
    n_test = result["split"].get("test", 0) or 1
    out = []

    def noise(p: float) -> float:  # one standard error of a difference of two accuracies on n_test images
        return 100 * math.sqrt(2 * p * (1 - p) / n_test)

    av = get.get("accelvit")
    tps = [r for m, r in get.items() if m.startswith("tp_")]
    if av and tps:
        best = max(tps, key=lambda r: r["top1"])
        gap = 100 * (av["top1"] - best["top1"])
        out.append(f"accelvit vs Torch-Pruning's best ({best['method']}) at 0.5: {gap:+.2f} points (target >= +1.0): "
                   + ("met" if gap >= 1.0 else f"missed by {1.0 - gap:.2f} points")
                   + f"; one standard error of such a difference on {n_test} test images is {noise(av['top1']):.2f}.")
    if av and ctrl:
        gap = 100 * (ctrl["top1"] - av["top1"])
        out.append(f"accelvit vs the unpruned baseline finetuned equally: {-gap:+.2f} points (target within 1.5): "
                   + ("met" if gap <= 1.5 else f"missed by {gap - 1.5:.2f} points") + ".")
    if av and av.get("speedup_b64"):
        s = av["speedup_b64"]
        out.append(f"CPU speedup at batch 64, 0.5 of the dense FLOPs: {s:.2f}x (paired {av['paired_speedup_b64']:.2f}x; "
                   f"target >= 1.6x): " + ("met" if s >= 1.6 else f"missed by {1.6 - s:.2f}x") + ".")
    iht = get.get("accelvit_iht")
    if av and iht:
        red = av["nonzero_params"] / max(iht["nonzero_params"], 1)
        drop = 100 * (av["top1"] - iht["top1"])
        ok = red >= 2 and drop <= 1.0
        out.append(f"IHT: nonzeros {av['nonzero_params']:,} -> {iht['nonzero_params']:,} ({red:.2f}x fewer; target >= 2x) "
                   f"for {drop:+.2f} points of top-1 (target <= 1.0): " + ("met" if ok else "missed") + ".")
    return out


def append_results_md(result: dict[str, Any], path: Path, out_dir: Path, name: str) -> None:
    m = result["machine"]
    s = result["settings"]
    b = result["baseline"]
    rel = os.path.relpath(out_dir, path.parent)
    fails = [f"`{r['method']}` at {r['target_flops']}: {r['status']}" for r in result["rows"] if r["status"] != "ok"]
    lines = [
        f"### {name} ({result['started'].replace('T', ' ')[:16]}, profile `{result['profile']}`)", "",
        f"Command: `{result['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, training on {m['train_device']}, "
        f"torch {m['torch']}, torch-pruning {result['torch_pruning']}; load average {m['load_start']} at the start, "
        f"{m['load_end']} at the end.  ",
        f"Wall time: {result['wall_seconds'] / 60:.1f} min.  ",
        f"Data: {result['split'].get('method')}, {result['split'].get('train')} train / {result['split'].get('test')} "
        f"test images, {result['model']} at {result['input_size'][1]} px.  ",
        f"Baseline: {s['epochs']} epochs (lr {s['lr']}), test top-1 {100 * b['top1']:.2f}%"
        f"{' (reused from cache)' if b.get('reused') else ''}; every method and `baseline_ft` then get "
        f"{s['finetune_epochs']} finetune epochs (AdamW, lr {s['finetune_lr']}, warmup 5% + cosine). accelvit "
        f"direction {result['direction']}; {s['calib_batches']} calibration batches; speedup = "
        f"`accelvit.metrics.compare` at batch 64 on the CPU, {s['speed_reps']} interleaved pairs"
        f"{'' if not s.get('speed_threads') else ', ' + str(s['speed_threads']) + ' thread(s)'}.", "",
        markdown_table(result), "",
        f"Figure: `{rel}/{name}.png` (interactive: `{rel}/{name}.html`); rows: `{rel}/{name}.csv`.", "",
    ]
    checks = target_checks(result)
    if checks:
        lines += ["Targets at 0.5 of the dense FLOPs (measured):", ""] + [f"- {c}" for c in checks] + [""]
    if fails:
        lines += ["Recorded failures:", ""] + [f"- {f}" for f in fails] + [""]
    block = "\n".join(lines)
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    match = pattern.search(text)
    if match:
        section = match.group(0).rstrip("\n") + "\n\n" + block + "\n"
        text = text[:match.start()] + section + ("\n" if match.end() < len(text) else "") + text[match.end():]
    else:
        intro = ("Accuracy vs dense FLOPs on real data, accelvit against Torch-Pruning on one baseline with one "
                 "finetune budget: `python -m bench.pareto` (see its docstring). One block per run, newest last.")
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{intro}\n\n{block}\n"
    path.write_text(text)
    log.info("Appended the run to %s.", path)


# ============================================================================ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.pareto", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("data")
    src.add_argument("--train-dir", help="ImageFolder tree of training images (e.g. the unpacked CIFAR-10 train/)")
    src.add_argument("--test-dir", help="ImageFolder test set; default: a seeded stratified split of --train-dir")
    src.add_argument("--dataset", default=None, choices=["folder", "cifar10", "caltech101"],
                     help="folder (with --train-dir), or a torchvision data set under --data-root")
    src.add_argument("--data-root", help="cifar10: folder with cifar-10-batches-py; caltech101: folder with caltech101/")
    src.add_argument("--dataset-label", default=None, help="name used in the output file names for a folder "
                                                           "(default: cifar10 if the path says so, else folder)")
    p.add_argument("--model", default="swin_micro")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the model's, 32 for swin_micro)")
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--device", default="auto", help="training device: auto, cpu, cuda (latency is always CPU)")
    p.add_argument("--methods", default=None, help=f"comma-separated subset of: {', '.join(METHODS)} "
                                                   f"(default: all but tp_taylor_global and accelvit_nosvd)")
    p.add_argument("--targets", type=float, nargs="+", default=None, help="dense-FLOP targets (default 0.7 0.5 0.3)")
    o = p.add_argument_group("profile overrides")
    o.add_argument("--subset", type=int, default=None, help="training images kept (0: all)")
    o.add_argument("--eval-subset", type=int, default=None, help="test images kept")
    o.add_argument("--epochs", type=int, default=None, help="baseline epochs")
    o.add_argument("--finetune-epochs", type=int, default=None, help="finetune epochs of every method")
    o.add_argument("--batch-size", type=int, default=None)
    o.add_argument("--lr", type=float, default=None, help="baseline peak lr")
    o.add_argument("--finetune-lr", type=float, default=None, help="finetune peak lr (all methods)")
    o.add_argument("--calib-batches", type=int, default=None)
    o.add_argument("--speed-reps", type=int, default=None, help="interleaved timing pairs at batch 64")
    o.add_argument("--speed-threads", type=int, default=None,
                   help="torch threads while timing the speedup (default: as training; 1 is steadier on a busy machine)")
    o.add_argument("--num-workers", type=int, default=None, help="DataLoader workers")
    p.add_argument("--direction", default="heads=0.5,mlp=0.9,svd=0.3",
                   help="accelvit's uniform-rule direction (relative head / MLP / SVD-compression shares)")
    p.add_argument("--iht-sparsity", type=float, default=0.5)
    p.add_argument("--tol", type=float, default=0.01, help="relative FLOP tolerance of every method's target")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retrain", action="store_true", help="ignore a cached baseline")
    p.add_argument("--name", default=None, help="output name (default DATASET_MODEL_PROFILE)")
    p.add_argument("--out-dir", default=str(ROOT / "results"))
    p.add_argument("--work-dir", default=str(ROOT / "_work"), help="baseline cache and data links (gitignored)")
    p.add_argument("--results-md", default=str(RESULTS_MD))
    p.add_argument("--no-write", action="store_true", help="do not append to bench/RESULTS.md")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.dataset is None:
        args.dataset = "folder" if args.train_dir else None
    if args.dataset is None:
        raise SystemExit("Give --train-dir DIR (an ImageFolder), or --dataset caltech101|cifar10 --data-root DIR.")
    if args.dataset == "folder" and not args.train_dir:
        raise SystemExit("--dataset folder needs --train-dir.")
    if args.dataset != "folder" and not args.data_root:
        raise SystemExit(f"--dataset {args.dataset} needs --data-root.")
    if args.dataset == "folder" and args.dataset_label is None:
        args.dataset_label = "cifar10" if "cifar" in str(args.train_dir).lower() else "folder"
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
    for noisy in ("kaleido", "choreographer", "accelvit.prune.core"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run(args)


if __name__ == "__main__":
    main()
