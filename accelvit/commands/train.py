"""``accelvit train``: train (or finetune) a baseline and save it with its test metrics."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .. import distributed, serialize
from ..layout import TRAIN_METRICS_FILE
from ..data import load_data
from ..models import build_model, model_spec
from ..train import TrainConfig, check_finite, evaluate, fit
from .common import (add_data_args, add_output_args, add_runtime_args, check_output_folder, data_config_from_args,
                     output_folder, tqdm_progress)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a baseline model and save it",
                       description="Train a Swin model from scratch, or finetune a pretrained / local-weights "
                                   "one, then evaluate it on the test split and save it to --out.")
    add_data_args(p)
    p.add_argument("--model", default="swin_micro", help="scratch config (swin_micro, swin_small32, swin_pico) "
                                                          "or a timm Swin name")
    p.add_argument("--pretrained", action="store_true", help="start from timm's pretrained weights (hub)")
    p.add_argument("--weights", default=None, help="start from a local weights file (.safetensors / .pth)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-frac", type=float, default=0.1)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    add_output_args(p, "the model and metrics.json")
    add_runtime_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser()
    check_output_folder(out, args.overwrite)  # before any training: a refused --out costs nothing
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, warmup_frac=args.warmup_frac,
                      label_smoothing=args.label_smoothing, device=args.device, seed=args.seed).validate()
    probe = model_spec(args.model, 2, args.img_size, pretrained=args.pretrained or args.weights is not None)
    # Normalise with the model's own statistics (timm's for pretrained weights, 0.5 for
    # scratch configs) so the saved spec records exactly what the model was trained with.
    data_cfg = data_config_from_args(args, probe.img_size, mean=probe.mean, std=probe.std)
    data = load_data(data_cfg)
    model = build_model(args.model, data.num_classes, pretrained=args.pretrained, weights_path=args.weights,
                        img_size=probe.img_size)
    log.info("training %s on %s: %d train / %d val / %d test images", args.model, args.dataset,
             data.split["train"], data.split["val"], data.split["test"])
    with tqdm_progress(f"train {args.model}") as cb:
        result = fit(model, data.train, cfg, val_loader=data.val, progress=cb)  # TrainingError if it diverged
    check_finite(model, f"The {args.model} model")  # also with --epochs 0 from weights that were not finite
    ev = evaluate(model, data.test, device=cfg.device, num_classes=data.num_classes)
    distributed.log_digest(model)  # under torchrun: equal on every rank, DDP keeps the weights in step
    if not distributed.is_main():  # rank 0 alone writes --out and prints
        return 0
    meta = {"data": data_cfg.to_dict(), "split": data.split, "train": cfg.to_dict()}
    metrics = {"top1": ev.top1, "top5": ev.top5, "loss": ev.loss, "n_test": ev.n, "per_class": ev.per_class,
               "epochs": result.epochs, "steps": result.steps, "train_seconds": result.train_seconds,
               "train_images_per_s": result.images_per_s, "history": result.history,
               "model": args.model, "dataset": args.dataset, "split": data.split}
    with output_folder(out, args.overwrite) as tmp:  # complete, then renamed into place
        serialize.atomic_write_json(tmp / TRAIN_METRICS_FILE, metrics)  # first: save's model card reads it
        serialize.save(model, tmp, class_names=data.class_names, meta=meta)
    print(json.dumps({k: metrics[k] for k in ("top1", "top5", "loss", "epochs", "train_seconds")}))
    return 0
