"""Accuracy vs FLOPs on real data: accelvit against Torch-Pruning, same baseline, same finetune budget.

    python -m bench.pareto --train-dir /tmp/cifar10/train --model swin_micro --profile quick
    python -m bench.pareto --train-dir DIR --test-dir DIR2 --profile full --device auto
    python -m bench.pareto --dataset caltech101 --data-root /tmp/caltech --img-size 64 --profile quick
    python -m bench.pareto ... --subset 5000 --epochs 3 --finetune-epochs 1 --methods accelvit,tp_taylor
    python -m bench.pareto --train-dir /tmp/cifar10/train --baseline ../shared/data/cifar10-swin_micro-10ep \
        --profile standard            # issue 11: the benchmark that tells the methods apart (~45 min, 2 cores)

One process trains a baseline (or reuses it from ``<work-dir>/baselines/<key>``: accelvit's own
baseline cache and key, ``accelvit.experiment.baselines``; or takes a saved model folder with
``--baseline DIR``), then for every dense-FLOP target (0.7, 0.5, 0.3 of the baseline) prunes
that same baseline with every method, finetunes each for the same epochs with the same
learning-rate schedule (accelvit's one finetune default, ``accelvit.experiment.default_finetune``),
distilled from the unpruned baseline (the runner's ``distill`` config: every finetune after
pruning, Torch-Pruning's rows and the ``baseline_ft`` control alike), and measures it on the
held-out test split (``--test-dir``, or a seeded stratified split of the train folder).

Images the baseline never saw: with ``--baseline DIR`` and a ``--train-dir`` (no ``--test-dir``),
the split is the one the baseline's ``baseline.json`` records (``heldout_root``): the images it
trained on become the training images (the finetune's, and the validation share that pruning
calibrates on), and *every* image it did not train on is the test split. For the shared CIFAR-10
baseline that is 45,000 / 5,000: a fresh split of the train folder would put about 5,000 of its
training images into the test split.

``--seeds N`` repeats every finetune (each pruned method and ``baseline_ft``) with the seeds
``--seed`` .. ``--seed + N - 1``; a seed is a run's seed (``ExperimentConfig.seed``): calibration
batches, random selections and the finetune's order and augmentation (Torch-Pruning searches again
on that seed's calibration batches when its criterion reads them). Rows give the mean top-1, its
standard error over the seeds and the seeds' values; the JSON keeps every seed's row (``seed_rows``).

accelvit's rows are not a re-implementation: each is one :class:`accelvit.experiment.Experiment`
(the runner of the dashboard, ``accelvit run`` and ``accelvit prune``) with ``prune.target_flops``
set, run for the stages ``data, baseline, prune, pruned, finetune, after`` on the data loaded
once. So a row's top-1 is what ``accelvit run`` gives for the same config and seed.
Only the Torch-Pruning adapter (``bench/peers/torch_pruning.py``) and the writers
(``bench/report.py``) live in ``bench/``.

Methods (``--methods``, comma separated; ``METHODS`` below):

- ``accelvit``: heads + MLP width + activation-aware SVD, Taylor criteria (per-batch |dL/dgate|),
  ratios found by accelvit's FLOP-target search (``prune.target_flops``, the default ``sensitivity``
  rule: units ranked across layers by score per FLOP; SVD share along ``--direction``), KD finetune;
- ``accelvit_nokd`` / ``accelvit_oldscore`` / ``accelvit_uniform`` (ablations): ``accelvit`` with
  one thing changed: no distillation (``distill.alpha=0``); the old Taylor score
  (``taylor_signed``, |sum of signed gradients|) for heads and MLP units; the ``uniform`` rule
  (the same fractions in every layer, along ``--direction``);
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
- ``random``: the ``accelvit`` config with random head / MLP-unit selection and the ``uniform``
  rule (control; with random scores the sensitivity rule would pick by FLOP cost alone), so
  ``accelvit_uniform`` vs ``random`` isolates the criterion and ``accelvit`` vs
  ``accelvit_uniform`` the allocation rule;
- ``accelvit_nosvd`` (ablation, not run by default): ``accelvit`` without the SVD share;
- ``baseline`` (reference, no extra training) and ``baseline_ft`` (control: the unpruned
  baseline finetuned for the same epochs, with the same recipe, KD from the baseline included).

Profiles (``PROFILES``): ``smoke`` (tests), ``quick``, ``full`` and ``standard`` (issue 11: all
training images, the shared baseline via ``--baseline``, targets 0.5 and 0.3, the ablations;
its comment gives the wall-time estimate and its basis). A profile's ``methods`` and ``seeds``
are the defaults of ``--methods`` and ``--seeds``.

Torch-Pruning adapter notes: ``bench/peers/torch_pruning.py``.

Outputs: ``bench/results/<name>.csv`` (one row per method and target; ``top1`` is a fraction),
``<name>.md`` (the table), ``<name>.json`` (rows + searches + machine), ``<name>.html`` (Plotly)
and ``<name>.png`` (Plotly through kaleido, when installed), and a run summary appended to the profile's section
of ``bench/RESULTS.md`` (``## Pareto benchmark (issue 7)``; the standard profile's:
``## Standard benchmark (issue 11)``; ``--no-write`` skips it).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from accelvit.data import DataConfig, stratified_split
from accelvit.experiment import Experiment, ExperimentConfig, StageFinished, default_finetune
from accelvit.metrics import compare, count_flops, disk_sizes, measure, param_counts
from accelvit.models import model_spec
from accelvit.prune import LINEAR_KINDS, PruneConfig, fixed_calibration
from accelvit.train import TrainConfig
from accelvit.utils import device_description, resolve_device

from .peers.torch_pruning import TP_MODES, tp_gradients, tp_search
from .report import COLUMNS, SECTION, SECTION_STANDARD, append_results_md, write_outputs

log = logging.getLogger("bench.pareto")

ROOT = Path(__file__).resolve().parent
RESULTS_MD = ROOT / "RESULTS.md"

METHODS: dict[str, str] = {
    "baseline": "trained baseline, no extra finetune (reference)",
    "baseline_ft": "control: unpruned baseline finetuned for the same epochs, same recipe (KD from the baseline)",
    "accelvit": "accelvit heads + MLP width + activation-aware SVD, Taylor criteria, sensitivity rule, KD finetune",
    "accelvit_nokd": "ablation: accelvit finetuned without distillation (distill.alpha=0)",
    "accelvit_oldscore": "ablation: accelvit with the old Taylor score (taylor_signed) for heads and MLP units",
    "accelvit_uniform": "ablation: accelvit with the uniform allocation rule (same fractions in every layer)",
    "accelvit_iht": "accelvit structural + IHT to 50% sparsity of the remaining linear weights",
    "tp_magnitude": "Torch-Pruning head-dim + MLP width, MagnitudeImportance(p=2), local ratios",
    "tp_taylor": "Torch-Pruning head-dim + MLP width, TaylorImportance, local ratios",
    "tp_taylor_global": "Torch-Pruning head-dim + MLP width, TaylorImportance, global_pruning=True",
    "tp_head_count": "Torch-Pruning head-count mode (prune_num_heads=True)",
    "tp_embed_channels": "Torch-Pruning default channel mode (embedding channels + head dims)",
    "random": "control: random head / MLP-unit selection, uniform rule, otherwise the accelvit config",
    "accelvit_nosvd": "ablation: accelvit without SVD (heads + MLP width only, same criteria)",
}
#: --methods of the smoke / quick / full profiles (the issue-7 set).
DEFAULT_METHODS = ["baseline", "baseline_ft", "accelvit", "accelvit_iht", "tp_magnitude", "tp_taylor", "tp_head_count",
                   "tp_embed_channels", "random"]
#: --methods of the standard profile (issue 11): the peers that work, the controls and one ablation each.
STANDARD_METHODS = ("baseline", "baseline_ft", "accelvit", "accelvit_nokd", "accelvit_oldscore", "accelvit_uniform",
                    "accelvit_iht", "tp_magnitude", "tp_taylor", "random")
PRUNED_METHODS = [m for m in METHODS if m not in ("baseline", "baseline_ft")]
#: The methods run by accelvit's runner (the others are Torch-Pruning's or references).
ACCELVIT_METHODS = ("accelvit", "accelvit_nokd", "accelvit_oldscore", "accelvit_uniform", "accelvit_iht", "random",
                    "accelvit_nosvd")


@dataclass
class Profile:
    subset: int | None          # training images kept (stratified); None: all
    eval_subset: int | None     # at most this many test (and val) images
    epochs: int                 # baseline training epochs
    finetune_epochs: int        # every method, and the baseline_ft control
    batch_size: int
    lr: float = 2e-3            # baseline peak lr (AdamW, warmup + cosine)
    finetune_lr: float | None = None  # finetune peak lr (None: accelvit's default), same for every method
    finetune_steps: int | None = None  # cap on every finetune's optimizer steps (the lr schedule spans them)
    calib_batches: int = 4      # calibration batches (Taylor scores / gradients, activation-aware SVD)
    speed_warmup: int = 3
    speed_reps: int = 10
    speed_threads: int | None = None  # torch threads while timing (None: as training)
    num_workers: int = 0
    targets: tuple[float, ...] = (0.7, 0.5, 0.3)
    search_evals: int = 40
    val_fraction: float | None = None  # validation share of the training images (None: DataConfig's 0.1)
    methods: tuple[str, ...] | None = None  # default of --methods (None: DEFAULT_METHODS)
    seeds: int = 1              # default of --seeds: finetunes per pruned method / baseline_ft
    section: str = SECTION      # the bench/RESULTS.md section its runs are appended to


PROFILES: dict[str, Profile] = {
    # the unit test: a handful of images, one epoch, one target
    "smoke": Profile(subset=None, eval_subset=None, epochs=1, finetune_epochs=1, batch_size=8, calib_batches=1,
                     speed_warmup=1, speed_reps=2, targets=(0.5,), search_evals=24),
    # ~30 min on 2 CPU cores (swin_micro, CIFAR-10)
    "quick": Profile(subset=10_000, eval_subset=5_000, epochs=10, finetune_epochs=2, batch_size=128),
    # all images, baseline near its plateau: for a GPU (or a long CPU night)
    "full": Profile(subset=None, eval_subset=None, epochs=60, finetune_epochs=10, batch_size=128, calib_batches=8,
                    speed_reps=15, num_workers=min(8, os.cpu_count() or 1)),
    # Issue 11, the benchmark that tells methods apart: every training image, from the shared baseline
    # (--baseline ../shared/data/cifar10-swin_micro-10ep; without it the bench first trains the same 10-epoch
    # recipe, about 35 min more), tested on all 5,000 images that baseline never saw (eval_subset None),
    # targets 0.5 and 0.3, the peers, controls and ablations (STANDARD_METHODS), one seed (--seeds N: about
    # N times the finetune time). The finetune data are the baseline's 45,000 training images less the 2%
    # validation share (900 images: calibration batches and the finetune's end-of-epoch check); each of the
    # 17 finetunes (baseline_ft, 8 pruned methods x 2 targets) takes 150 steps of 128 = 19,200 images (0.44
    # of an epoch of a fresh shuffle; the lr schedule spans the 150 steps), KD from the baseline in 16 of them.
    # Wall time on the 2-core CPU: the first attempt with 300 steps measured 6 min for baseline_ft (dense,
    # KD) and 5 min for the accelvit row at 0.5 (search, two test evaluations, 300 KD steps, speed): about
    # 140 training images/s with the teacher, half the rate first assumed, so 17 rows would take ~85 min.
    # At 150 steps a row takes ~3 min: about 50 min in all (bench/RESULTS.md records the measured time).
    "standard": Profile(subset=None, eval_subset=None, epochs=10, finetune_epochs=1, finetune_steps=150,
                        batch_size=128, calib_batches=4, speed_reps=20, targets=(0.5, 0.3), val_fraction=0.02,
                        methods=STANDARD_METHODS, section=SECTION_STANDARD),
}


# ============================================================================ data and configs
def heldout_root(train: Path, baseline: Path, work: Path) -> tuple[Path, dict[str, Any]] | None:
    """A folder ``ROOT/train`` + ``ROOT/test`` of links: the images of ``train`` the saved baseline
    trained on, and every image it did not (its validation share, a test share, a subset's rest).

    The baseline's ``baseline.json`` (written beside the model by the bench; the shared CIFAR-10
    baseline has one) records the data config and split it was trained with; the split is
    recomputed here with accelvit's own ``stratified_split`` and checked against the recorded
    counts. None when the baseline has no such record.
    """
    record = baseline / "baseline.json"
    if not record.is_file():
        return None
    from torchvision.datasets import ImageFolder

    rec = json.loads(record.read_text())
    d, s = rec.get("data") or {}, rec.get("split") or {}
    method = str(s.get("method", ""))
    folder = ImageFolder(str(train))
    t = np.asarray(folder.targets)
    seed = int(s.get("seed", d.get("seed", 0)))
    if method == "stratified":  # test, val and train all carved from the one folder
        _, _, train_i = stratified_split(t, [float(d["test_fraction"]), float(d["val_fraction"])], seed)
    elif method.endswith("stratified val from train"):  # a separate test set; val carved from the folder
        _, train_i = stratified_split(t, [float(d["val_fraction"])], seed)
    else:
        raise SystemExit(f"{record} records the split method {method!r}; bench.pareto cannot tell which images of "
                         f"{train} the baseline trained on. Give --test-dir with images it never saw.")
    if d.get("subset") and int(d["subset"]) < len(train_i):  # as accelvit.data caps the training split
        keep, _ = stratified_split(t[train_i], [int(d["subset"]) / len(train_i)], seed)
        train_i = train_i[keep]
    if s.get("train") is not None and len(train_i) != int(s["train"]):
        raise SystemExit(f"{record} says the baseline trained on {s['train']} images, but its split of {train} "
                         f"({len(t)} images) gives {len(train_i)}: not the folder it was trained on?")
    seen = np.zeros(len(t), dtype=bool)
    seen[train_i] = True
    info = {"baseline_record": str(record), "split_method": method, "seed": seed, "baseline_train": int(seen.sum()),
            "unseen_test": int((~seen).sum())}
    key = hashlib.sha256(f"{train.resolve()}\n{json.dumps(info, sort_keys=True)}".encode()).hexdigest()[:12]
    root = work / "data" / f"heldout-{key}"
    done = root / ".complete"
    if not done.is_file():
        tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        for part in ("train", "test"):
            for cls in folder.classes:  # every class in both parts: ImageFolder needs matching class folders
                (tmp / part / cls).mkdir(parents=True, exist_ok=True)
        for i, (path, y) in enumerate(folder.samples):
            rel = Path(path).relative_to(Path(train) / folder.classes[y])
            dst = tmp / ("train" if seen[i] else "test") / folder.classes[y] / "__".join(rel.parts)
            dst.symlink_to(Path(path).resolve())
        (tmp / ".complete").write_text(json.dumps(info, indent=1))
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    return root, {**info, "root": str(root)}


def data_config(args: argparse.Namespace, prof: Profile, work: Path, img_size: int) -> DataConfig:
    """The data config of every run; normalisation is left to the runner (the model's, or the checkpoint's).

    With ``--baseline`` and a train folder but no ``--test-dir``, the root is :func:`heldout_root`'s
    (``args.heldout`` records it): the test split is every image the baseline never saw."""
    common = dict(img_size=img_size, batch_size=prof.batch_size, subset=prof.subset, eval_subset=prof.eval_subset,
                  num_workers=prof.num_workers, seed=args.seed)
    if prof.val_fraction is not None:
        common["val_fraction"] = prof.val_fraction
    if args.dataset == "digits":  # embedded; random crops cost accuracy at 8x8 sources (as in the dashboard)
        return DataConfig(dataset="digits", augment=False, **common)
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
        if args.baseline:
            held = heldout_root(train, Path(args.baseline).expanduser().resolve(), work)
            if held is not None:
                args.heldout = held[1]
                log.info("Test split: the %d images of %s the baseline never saw (%d it trained on; %s).",
                         held[1]["unseen_test"], train, held[1]["baseline_train"], held[1]["baseline_record"])
                return DataConfig(dataset="folder", root=str(held[0]), **common)
            log.warning("%s has no baseline.json recording its split: the test split is a fresh split of %s and may "
                        "hold images the baseline trained on. Give --test-dir with images it never saw.",
                        args.baseline, train)
        return DataConfig(dataset="folder", root=str(train), **common)
    return DataConfig(dataset=args.dataset, root=str(Path(args.data_root).expanduser().resolve()), **common)


def experiment_config(args: argparse.Namespace, prof: Profile, dcfg: DataConfig) -> ExperimentConfig:
    """The experiment every accelvit row (and the baseline rows) runs; pruning is set per method."""
    ft = default_finetune(epochs=prof.finetune_epochs, max_steps=prof.finetune_steps)
    if prof.finetune_lr is not None:
        ft = replace(ft, lr=prof.finetune_lr)
    return ExperimentConfig(name=args.name or "", data=dcfg, model=args.model,
                            baseline_checkpoint=str(Path(args.baseline).expanduser().resolve()) if args.baseline
                            else None, train=TrainConfig(epochs=prof.epochs, lr=prof.lr), finetune=ft,
                            device=args.device, seed=args.seed, measure_latency=False)


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


def accelvit_config(direction: dict[str, float], criterion: str, calib_batches: int, seed: int,
                    target: float | None = None) -> PruneConfig:
    svd = direction["svd"] > 0
    return PruneConfig(head_ratio=direction["heads"], mlp_ratio=direction["mlp"],
                       rank_ratio=(1 - direction["svd"]) if svd else None, activation_aware=svd,
                       head_criterion=criterion, mlp_criterion=criterion, calib_batches=calib_batches, seed=seed,
                       target_flops=target)


def method_prune_config(method: str, direction: dict[str, float], prof: Profile, seed: int, target: float,
                        iht_sparsity: float) -> PruneConfig:
    """The PruneConfig an accelvit method runs at ``target`` of the dense FLOPs (PruneConfig's default
    ``target_rule``, ``sensitivity``, unless the method is about the rule)."""
    crit = {"random": "random", "accelvit_oldscore": "taylor_signed"}.get(method, "taylor")
    dirn = {**direction, "svd": 0.0} if method == "accelvit_nosvd" else direction
    cfg = accelvit_config(dirn, crit, prof.calib_batches, seed, target)
    if method in ("accelvit_uniform", "random"):
        cfg = replace(cfg, target_rule="uniform")
    if method == "accelvit_iht":
        # "50% of the remaining linear weights": every linear kind, patch merging and classifier too
        cfg = replace(cfg, sparsity=iht_sparsity, iht_layers=LINEAR_KINDS)
    return cfg


def method_config(base: ExperimentConfig, method: str, direction: dict[str, float], prof: Profile, seed: int,
                  target: float, iht_sparsity: float) -> ExperimentConfig:
    """The ExperimentConfig of one row at one seed. Every row shares ``base``'s finetune and distillation
    recipe; Torch-Pruning's rows prune nothing here (their model is handed to the prune stage) and
    ``baseline_ft`` runs the control stage. Only ``accelvit_nokd`` switches distillation off."""
    cfg = replace(base, seed=seed, prune=PruneConfig())
    if method in ACCELVIT_METHODS:
        cfg = replace(cfg, prune=method_prune_config(method, direction, prof, seed, target, iht_sparsity))
    if method == "baseline_ft":
        cfg = replace(cfg, control=True)
    if method == "accelvit_nokd":
        cfg = replace(cfg, distill=replace(cfg.distill, alpha=0.0))
    return cfg


def distill_label(info: dict[str, Any] | None) -> str:
    """What the finetune stage reports it distilled with (the runner's ``distill`` info), for the tables."""
    kd = (info or {}).get("distill")
    if not kd:
        return "off"
    return f"alpha={kd['alpha']:g} T={kd['temperature']:g}"


def _no_cost(model: nn.Module, device: torch.device) -> dict[str, Any]:
    """The runner's stages measure accuracy only; cost_row measures the cost, against the baseline."""
    return {}


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



def _status(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return f"failed: {type(exc).__name__}: {msg[:500]}"

# ============================================================================ the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    started = dt.datetime.now()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    prof = dataclasses.replace(PROFILES[args.profile])
    for k in ("subset", "eval_subset", "epochs", "finetune_epochs", "finetune_steps", "batch_size", "lr",
              "finetune_lr", "calib_batches", "speed_reps", "speed_threads", "num_workers", "seeds"):
        v = getattr(args, k)
        if v is not None:
            setattr(prof, k, v)
    if args.targets:
        prof.targets = tuple(args.targets)
    if prof.subset == 0:
        prof.subset = None
    if prof.eval_subset == 0:
        prof.eval_subset = None
    if prof.finetune_steps == 0:
        prof.finetune_steps = None
    if prof.seeds < 1:
        raise SystemExit("--seeds: give at least 1.")
    default_methods = list(prof.methods) if prof.methods is not None else DEFAULT_METHODS
    methods = [m.strip() for m in (args.methods.split(",") if args.methods else default_methods) if m.strip()]
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
    direction = parse_direction(args.direction)

    if args.baseline:
        from accelvit.serialize import read_spec

        img_size = int(read_spec(Path(args.baseline).expanduser())["model"]["img_size"])
    else:
        img_size = model_spec(args.model, num_classes=2, img_size=args.img_size).img_size
    dcfg = data_config(args, prof, work, img_size)
    base_cfg = experiment_config(args, prof, dcfg)

    # ---------------------------------------------------------------- the baseline, by accelvit's runner and cache
    if args.retrain and not args.baseline:
        from accelvit.experiment.baselines import cache_path

        shutil.rmtree(cache_path(base_cfg.baseline_key(), work), ignore_errors=True)
    first = Experiment(base_cfg, home=work, stages=("data", "baseline", "before"), measure_cost=_no_cost)
    res0 = first.run()
    bundle = first.data
    baseline = res0.baseline_model.cpu().eval()
    binfo = {**res0.baseline, "top1": res0.metrics["before"]["top1"], "top5": res0.metrics["before"]["top5"],
             "epochs": prof.epochs, "reused": res0.baseline.get("source") in ("cache", "checkpoint")}
    log.info("Data: %s; baseline %s (top1 %.4f).", bundle.split, binfo.get("path"), binfo["top1"])
    input_size = tuple(bundle.input_size)
    base_flops = count_flops(baseline, input_size).total
    seeds = [args.seed + i for i in range(prof.seeds)]
    tp_taylor_used = any(TP_MODES.get(m, ("", "", False))[1] == "taylor" for m in methods)

    def given_baseline(e: Experiment) -> dict[str, Any]:
        """The baseline stage with the baseline loaded above (the same weights the cache holds)."""
        e.baseline_info = dict(res0.baseline)
        e.baseline_model = copy.deepcopy(baseline).to(e.device).eval()
        return dict(e.baseline_info)

    def experiment(cfg: ExperimentConfig, stages: Sequence[str], overrides: dict[str, Any] | None = None):
        """One accelvit run on the data and baseline loaded above: the runner of the dashboard and the CLI.
        Returns the result and the info of every stage (what the finetune reports it distilled with)."""
        infos: dict[str, dict[str, Any]] = {}

        def on_event(ev: Any) -> None:
            if isinstance(ev, StageFinished):
                infos[ev.stage] = ev.info

        res = Experiment(cfg, home=work, stages=stages, measure_cost=_no_cost, on_event=on_event,
                         overrides={"data": lambda e: e.use_data(bundle), "baseline": given_baseline,
                                    **(overrides or {})}).run()
        return res, infos

    def calibration(seed: int) -> tuple[list, dict | None]:
        """The runner's calibration batches for ``seed`` (a seeded shuffle of the validation split), for
        Torch-Pruning too, and their gradients when a Taylor peer runs."""
        if seed == args.seed:
            calib = fixed_calibration(first.calibration_loader(), prof.calib_batches)
        else:
            e = Experiment(replace(base_cfg, seed=seed), home=work, stages=("data",),
                           overrides={"data": lambda e: e.use_data(bundle)})
            e.run()
            calib = fixed_calibration(e.calibration_loader(), prof.calib_batches)
        return calib, (tp_gradients(baseline, calib) if tp_taylor_used else None)

    seed_rows: list[dict[str, Any]] = []   # one per method, target and seed
    refs: list[dict[str, Any]] = []        # the baseline row (no finetune, no seeds)
    searches: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    timed: set[tuple[str, float]] = set()  # (method, target) whose CPU speedup was measured (the first seed's)

    def key(method: str, target: float, seed: int) -> str:
        return f"{method}@{target}" if seed == seeds[0] else f"{method}@{target}@seed{seed}"

    def measured_row(method: str, target: float, seed: int, model: nn.Module, top1: float, top5: float | None,
                     extra: dict[str, Any]) -> dict[str, Any]:
        speed = (method, target) not in timed
        row = {"method": method, "target_flops": target, "seed": seed, "status": "ok", "top1": top1, "top5": top5,
               **extra}
        row.update(cost_row(model, baseline, input_size, base_flops, prof, speed=speed))
        if speed:
            timed.add((method, target))
        log.info("%s @ %.2f, seed %d: top1 %.4f, %.3f of the FLOPs%s", method, target, seed, top1,
                 row["flops_ratio"], f", speedup {row['speedup_b64']:.2f}x" if speed else "")
        return row

    def tp_row(method: str, target: float, seed: int, model: nn.Module, extra: dict[str, Any]) -> dict[str, Any]:
        """Torch-Pruning's model, finetuned by the same runner stage with the same recipe as accelvit's rows
        (no IHT): distilled from the unpruned baseline, which the prune stage hands over as the teacher
        (the runner's ``Experiment.teacher``) when the config distils."""
        def take_model(e: Experiment) -> dict[str, Any]:
            e.model, e.prune_report = copy.deepcopy(model).to(e.device).eval(), {"peer": method}
            e.teacher = copy.deepcopy(baseline).to(e.device).eval() if e.distills else None
            return {"peer": method}

        cfg = method_config(base_cfg, method, direction, prof, seed, target, args.iht_sparsity)
        res, infos = experiment(cfg, ("data", "prune", "pruned", "finetune", "after"), {"prune": take_model})
        extra = {**extra, "top1_pruned": res.metrics["pruned"]["top1"], "finetune_seconds": res.timings["finetune"],
                 "distill": distill_label(infos.get("finetune"))}
        return measured_row(method, target, seed, res.model, res.metrics["after"]["top1"],
                            res.metrics["after"]["top5"], extra)

    # ---------------------------------------------------------------- the reference
    if "baseline" in methods:
        refs.append({"method": "baseline", "target_flops": 1.0, "status": "ok", "top1": binfo["top1"],
                     "top1_mean": binfo["top1"], "top5": binfo["top5"], "n_seeds": 1,
                     "note": f"{prof.epochs} epochs, no finetune",
                     **cost_row(copy.deepcopy(baseline), baseline, input_size, base_flops, prof)})

    # ---------------------------------------------------------------- every finetune, per seed
    tp_models: dict[tuple, tuple[nn.Module, dict[str, Any]]] = {}  # searches that do not read calibration data
    for seed in seeds:
        calib, grads = calibration(seed)
        if "baseline_ft" in methods:
            try:
                cfg = method_config(base_cfg, "baseline_ft", direction, prof, seed, 1.0, args.iht_sparsity)
                res, infos = experiment(cfg, ("data", "baseline", "control"))
                m = res.metrics["control"]
                configs[key("baseline_ft", 1.0, seed)] = res.config
                # the control keeps the baseline's architecture: its cost is the baseline's
                seed_rows.append(measured_row("baseline_ft", 1.0, seed, copy.deepcopy(baseline), m["top1"], m["top5"],
                                              {"note": f"+{prof.finetune_epochs} finetune epochs",
                                               "finetune_seconds": res.timings["control"],
                                               "distill": distill_label(infos.get("control"))}))
            except Exception as exc:
                log.exception("baseline_ft failed")
                seed_rows.append({"method": "baseline_ft", "target_flops": 1.0, "seed": seed, "status": _status(exc)})

        for target in prof.targets:
            for method in [m for m in PRUNED_METHODS if m in methods]:
                log.info("== %s at %.2f of the dense FLOPs, seed %d", method, target, seed)
                t0 = time.perf_counter()
                try:
                    if method in ACCELVIT_METHODS:
                        cfg = method_config(base_cfg, method, direction, prof, seed, target, args.iht_sparsity)
                        pcfg = cfg.prune
                        res, infos = experiment(cfg, ("data", "baseline", "prune", "pruned", "finetune", "after"))
                        info = res.prune_report.get("target") or {}
                        searches[key(method, target, seed)] = info
                        configs[key(method, target, seed)] = res.config  # `accelvit run --config` reproduces it
                        solved = res.prune_report.get("config") or {}
                        settings = {k: solved.get(k) for k in ("head_ratio", "mlp_ratio", "rank_ratio")}
                        settings.update(criterion=pcfg.head_criterion, target_rule=pcfg.target_rule,
                                        activation_aware=pcfg.activation_aware)
                        if pcfg.sparsity:
                            settings["sparsity"] = pcfg.sparsity
                        extra = {"prune_settings": json.dumps(settings), "search_evals": info.get("n_evaluations"),
                                 "search_seconds": info.get("seconds"), "top1_pruned": res.metrics["pruned"]["top1"],
                                 "finetune_seconds": res.timings.get("finetune"),
                                 "distill": distill_label(infos.get("finetune"))}
                        seed_rows.append(measured_row(method, target, seed, res.model, res.metrics["after"]["top1"],
                                                      res.metrics["after"]["top5"], extra))
                    else:
                        reads_calib = TP_MODES[method][1] == "taylor"
                        cache_key = (method, target, seed if reads_calib else None)
                        if cache_key not in tp_models:
                            tp_models[cache_key] = tp_search(baseline, method, target, calib, grads, args.tol,
                                                             prof.search_evals, input_size)
                        model, info = tp_models[cache_key]
                        searches[key(method, target, seed)] = info
                        settings = {k: info[k] for k in ("mode", "importance", "global_pruning", "ratio_attn",
                                                         "ratio_mlp")}
                        seed_rows.append(tp_row(method, target, seed, model, {
                            "prune_settings": json.dumps(settings), "search_evals": info["n_evaluations"],
                            "search_seconds": info["seconds"]}))
                except Exception as exc:
                    log.warning("%s at %.2f, seed %d failed: %s", method, target, seed, exc)
                    seed_rows.append({"method": method, "target_flops": target, "seed": seed, "status": _status(exc),
                                      "search_seconds": time.perf_counter() - t0})
        tp_models = {k: v for k, v in tp_models.items() if k[2] is None}  # per-seed searches are done with

    rows = refs + aggregate(seed_rows)
    wall = time.perf_counter() - t_start
    machine = machine_info(device, load_start)
    ft = replace(base_cfg.effective().finetune, device=str(device))
    prof_d = {**dataclasses.asdict(prof), "finetune_lr": ft.lr}
    result = {"name": name, "command": "python -m bench.pareto " + " ".join(shlex.quote(a) for a in args.argv),
              "profile": args.profile, "section": prof.section, "settings": prof_d, "methods": methods,
              "method_order": list(METHODS), "direction": direction, "model": args.model,
              "input_size": list(input_size), "seeds": seeds,
              "baseline": {k: v for k, v in binfo.items() if k not in ("data", "history")}, "baseline_flops": base_flops,
              "finetune": ft.to_dict(), "distill": base_cfg.distill.to_dict(), "split": bundle.split,
              "heldout": getattr(args, "heldout", None), "machine": machine,
              "started": started.isoformat(timespec="seconds"), "wall_seconds": wall,
              "rows": [_complete(r) for r in rows], "seed_rows": seed_rows, "searches": searches, "configs": configs,
              "torch_pruning": _tp_version()}
    write_outputs(result, out_dir, name)
    if not args.no_write:
        append_results_md(result, Path(args.results_md), out_dir, name, section=prof.section)
    return result


def aggregate(seed_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method and target from its seeds' rows: ``top1`` (= ``top1_mean``), ``top5`` and
    ``top1_pruned`` are means over the seeds that ran, ``top1_se`` the standard error of the mean
    (sample standard deviation / sqrt(n); None for one seed), ``top1_seeds`` the values (JSON); the
    cost columns are the first such seed's (the one whose speed was measured). Failed seeds are
    counted in ``note``; a row whose every seed failed keeps the first failure's status."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in seed_rows:
        groups.setdefault((r["method"], r["target_flops"]), []).append(r)
    out = []
    for rs in groups.values():
        ok = [r for r in rs if r["status"] == "ok"]
        if not ok:
            out.append({**rs[0], "n_seeds": 0})
            continue
        timed = next((r for r in ok if r.get("speedup_b64") is not None), ok[0])
        top1 = [float(r["top1"]) for r in ok]
        row = {**timed, "n_seeds": len(ok), "top1_seeds": json.dumps([round(v, 6) for v in top1]),
               "top1": statistics.fmean(top1), "top1_mean": statistics.fmean(top1),
               "top1_se": statistics.stdev(top1) / len(top1) ** 0.5 if len(top1) > 1 else None}
        for col in ("top5", "top1_pruned", "finetune_seconds"):
            vals = [float(r[col]) for r in ok if r.get(col) is not None]
            row[col] = statistics.fmean(vals) if vals else None
        row.pop("seed", None)
        failed = [r for r in rs if r["status"] != "ok"]
        if failed:
            note = f"{len(failed)} of {len(rs)} seeds failed ({failed[0]['status'][:200]})"
            row["note"] = f"{row['note']}; {note}" if row.get("note") else note
        out.append(row)
    return out


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


# ============================================================================ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.pareto", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("data")
    src.add_argument("--train-dir", help="ImageFolder tree of training images (e.g. the unpacked CIFAR-10 train/)")
    src.add_argument("--test-dir", help="ImageFolder test set; default: a seeded stratified split of --train-dir")
    src.add_argument("--dataset", default=None, choices=["folder", "cifar10", "caltech101", "digits"],
                     help="folder (with --train-dir), a torchvision data set under --data-root, or the embedded "
                          "digits (tests)")
    src.add_argument("--data-root", help="cifar10: folder with cifar-10-batches-py; caltech101: folder with caltech101/")
    src.add_argument("--dataset-label", default=None, help="name used in the output file names for a folder "
                                                           "(default: cifar10 if the path says so, else folder)")
    p.add_argument("--model", default="swin_micro")
    p.add_argument("--baseline", default=None, metavar="DIR",
                   help="a saved model folder used as the baseline, no training (e.g. "
                        "../shared/data/cifar10-swin_micro-10ep); its data seed and normalisation are used")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the model's, 32 for swin_micro)")
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--device", default="auto", help="training device: auto, cpu, cuda (latency is always CPU)")
    p.add_argument("--methods", default=None, help=f"comma-separated subset of: {', '.join(METHODS)} "
                                                   f"(default: the profile's; smoke, quick, full: "
                                                   f"{','.join(DEFAULT_METHODS)})")
    p.add_argument("--targets", type=float, nargs="+", default=None,
                   help="dense-FLOP targets (default: the profile's; 0.7 0.5 0.3, standard 0.5 0.3)")
    o = p.add_argument_group("profile overrides")
    o.add_argument("--subset", type=int, default=None, help="training images kept (0: all)")
    o.add_argument("--eval-subset", type=int, default=None, help="test images kept (0: all)")
    o.add_argument("--epochs", type=int, default=None, help="baseline epochs")
    o.add_argument("--finetune-epochs", type=int, default=None, help="finetune epochs of every method")
    o.add_argument("--finetune-steps", type=int, default=None,
                   help="at most this many optimizer steps per finetune (0: no cap; standard: 300)")
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
    p.add_argument("--seed", type=int, default=0, help="the first seed (data split, calibration, finetune)")
    p.add_argument("--seeds", type=int, default=None,
                   help="repeat every finetune with seeds --seed .. --seed+N-1 and report mean and standard error "
                        "(default: the profile's, 1)")
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
    args.heldout = None
    if args.dataset is None:
        args.dataset = "folder" if args.train_dir else None
    if args.dataset is None:
        raise SystemExit("Give --train-dir DIR (an ImageFolder), or --dataset caltech101|cifar10 --data-root DIR.")
    if args.dataset == "folder" and not args.train_dir:
        raise SystemExit("--dataset folder needs --train-dir.")
    if args.dataset not in ("folder", "digits") and not args.data_root:
        raise SystemExit(f"--dataset {args.dataset} needs --data-root.")
    if args.dataset == "folder" and args.dataset_label is None:
        args.dataset_label = "cifar10" if "cifar" in str(args.train_dir).lower() else "folder"
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
    for noisy in ("kaleido", "choreographer", "accelvit.prune.pruner", "accelvit.prune.flop_target"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run(args)


if __name__ == "__main__":
    main()
