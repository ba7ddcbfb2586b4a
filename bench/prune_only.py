"""Accuracy right after pruning (no finetune) at one dense-FLOP target, for several pruning configs.

    python -m bench.prune_only --train-dir /tmp/cifar10/train --baseline ../shared/data/cifar10-swin_micro-10ep \\
        --target 0.5 --eval-subset 2000

What selection alone is worth, before any finetune can hide it: every config prunes the same
baseline (accelvit's runner loads it and the data; the calibration batches are the run's
fixed, seeded, unaugmented validation batches) to the same dense FLOPs with
``accelvit.prune.prune``, and is evaluated on the same validation images (``--eval-subset``
of them; the baseline never trained on them when ``--baseline`` is the shared CIFAR-10
baseline, whose 45,000/5,000 split is recomputed with ``val_fraction`` 0.1, seed 0). Cheap
(about a minute a config on 2 CPU cores), so it is where scores and allocation rules are
compared; ``bench.pareto`` then measures them after the finetune.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from accelvit.data import DataConfig
from accelvit.experiment import Experiment, ExperimentConfig
from accelvit.metrics import count_flops
from accelvit.prune import PruneConfig, prune
from accelvit.train import evaluate

#: direction of the SVD configs (the bench's accelvit direction: heads 0.5, MLP 0.9, SVD share 0.45)
SVD_DIRECTION = dict(head_ratio=0.5, mlp_ratio=0.9, rank_ratio=0.55)

CONFIGS: dict[str, dict[str, Any]] = {
    "sensitivity taylor (heads+MLP)": {},
    "uniform taylor (heads+MLP)": {"target_rule": "uniform"},
    "sensitivity taylor_signed (heads+MLP, old score)": {"head_criterion": "taylor_signed",
                                                         "mlp_criterion": "taylor_signed"},
    "sensitivity taylor + SVD": {**SVD_DIRECTION},
    "sensitivity taylor + activation-aware SVD": {**SVD_DIRECTION, "activation_aware": True},
    "uniform taylor + activation-aware SVD": {**SVD_DIRECTION, "activation_aware": True, "target_rule": "uniform"},
    "sensitivity l1 (heads+MLP)": {"head_criterion": "l1", "mlp_criterion": "l1"},
    "uniform random (heads+MLP)": {"head_criterion": "random", "mlp_criterion": "random", "target_rule": "uniform"},
}


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m bench.prune_only", description=__doc__.split("\n\n")[0])
    p.add_argument("--train-dir", help="image folder of the training split (class subfolders)")
    p.add_argument("--dataset", default="folder", choices=("folder", "digits"))
    p.add_argument("--baseline", help="saved baseline folder (accelvit.serialize); required for folder data")
    p.add_argument("--target", type=float, default=0.5, help="dense FLOPs kept, as a fraction of the baseline's")
    p.add_argument("--eval-subset", type=int, default=2000, help="validation images evaluated (0: all)")
    p.add_argument("--calib-batches", type=int, default=PruneConfig.calib_batches)
    p.add_argument("--configs", default=None, help="semicolon-separated names of CONFIGS (default: all)")
    p.add_argument("--steps", type=int, default=1,
                   help="prune in this many steps toward the target, re-scoring after each (no finetune between)")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    work = Path(tempfile.mkdtemp(prefix="prune_only_"))
    if args.dataset == "digits":
        data = DataConfig(dataset="digits", augment=False, eval_subset=args.eval_subset or None)
    else:
        if not args.train_dir or not args.baseline:
            p.error("folder data needs --train-dir and --baseline")
        root = work / "data"
        root.mkdir()
        # the folder loader reads ROOT/train (+ ROOT/test); val is the seeded 10% of train, as the baseline's
        (root / "train").symlink_to(Path(args.train_dir).resolve(), target_is_directory=True)
        (root / "test").symlink_to(Path(args.train_dir).resolve(), target_is_directory=True)
        data = DataConfig(dataset="folder", root=str(root), img_size=32, batch_size=128,
                          eval_subset=args.eval_subset or None)
    cfg = ExperimentConfig(data=data, baseline_checkpoint=str(Path(args.baseline).resolve()) if args.baseline else None,
                           measure_latency=False, device="cpu")
    exp = Experiment(cfg, home=work / "home", stages=("data", "baseline"))
    exp.run()
    base, val = exp.baseline_model, exp.data.val
    ev0 = evaluate(base, val, device="cpu")
    rows = [{"config": "baseline (unpruned)", "top1": ev0.top1, "loss": ev0.loss, "n": ev0.n}]
    print(f"{'baseline (unpruned)':50s} top1 {ev0.top1:.4f} loss {ev0.loss:.3f} n {ev0.n}", flush=True)
    names = args.configs.split(";") if args.configs else list(CONFIGS)
    for name in names:
        if name not in CONFIGS:
            p.error(f"unknown config {name!r}; choose from {list(CONFIGS)}")
        t0 = time.perf_counter()
        model = copy.deepcopy(base)
        base_flops = count_flops(model).total
        for i in range(1, args.steps + 1):
            goal = 1 - (1 - args.target) * i / args.steps
            now = count_flops(model).total / base_flops
            pc = PruneConfig(target_flops=min(goal / now, 0.999), calib_batches=args.calib_batches, **CONFIGS[name])
            if i < args.steps:  # as the runner's gradual pruning: SVD in the last step only
                pc = dataclasses.replace(pc, rank_ratio=None, energy=None, activation_aware=False)
            # a fresh loader each time: its seeded generator gives every config the same calibration batches
            model, rep = prune(model, pc, exp.calibration_loader())
        ev = evaluate(model, val, device="cpu")
        c = rep.config
        row = {"config": name, "steps": args.steps, "top1": ev.top1, "loss": ev.loss, "n": ev.n,
               "flops_ratio": count_flops(model).total / base_flops,
               "head_ratio": c["head_ratio"], "mlp_ratio": c["mlp_ratio"], "rank_ratio": c["rank_ratio"],
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"{name:50s} top1 {ev.top1:.4f} loss {ev.loss:.3f} FLOPs {row['flops_ratio']:.3f} heads removed "
              f"{c['head_ratio']:.2f} MLP removed {c['mlp_ratio']:.2f} rank ratio {c['rank_ratio']} "
              f"({row['seconds']:.0f} s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
