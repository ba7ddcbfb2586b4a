"""``accelvit prune``: prune a saved model, finetune it (with IHT), save it and a report.

    python -m accelvit prune --checkpoint DIR --dataset digits --head-ratio 0.3 --rank-ratio 0.5 \\
        --sparsity 0.5 --finetune-epochs 3 --out DIR2

``DIR2`` receives the pruned model (``accelvit.serialize`` format, loadable by ``load``) and
``report.json`` with ``before`` / ``pruned`` / ``after`` objects (``top1``, ``params``,
``nonzero_params``, plus ``accelvit.metrics.measure`` numbers when available) and the
``layers`` list of what pruning changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from .. import serialize
from ..data import load_data
from ..errors import ConfigError
from ..models import spec_of
from ..prune import PruneConfig, make_iht_hook, prune
from ..prune.common import count_nonzero, count_params
from ..prune.config import CRITERIA, IHT_SCOPES, LINEAR_KINDS, RANKINGS
from ..train import TrainConfig, evaluate, fit
from ..utils import resolve_device
from .common import add_data_args, add_runtime_args, data_config_from_args, tqdm_progress

log = logging.getLogger(__name__)


def _float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0.2,0.5, got {text!r}") from exc


def _kinds(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a saved model, finetune it with IHT, save it and report.json",
                       description="Remove attention heads and MLP units, factorise linear layers by SVD, then "
                                   "finetune with iterative hard thresholding (IHT) to the target sparsity. "
                                   "Writes the pruned model and report.json to --out.")
    p.add_argument("--checkpoint", required=True, help="model directory written by accelvit (e.g. by train)")
    p.add_argument("--out", required=True, help="directory for the pruned model and report.json")
    add_data_args(p)
    g = p.add_argument_group("heads and MLP width")
    g.add_argument("--head-ratio", type=float, default=0.0, help="fraction of attention heads removed")
    g.add_argument("--head-criterion", choices=CRITERIA, default="taylor")
    g.add_argument("--head-ranking", choices=RANKINGS, default="global")
    g.add_argument("--stage-head-ratios", type=_float_list, default=None,
                   help="per-stage head ratios, comma-separated (overrides --head-ratio)")
    g.add_argument("--mlp-ratio", type=float, default=0.0, help="fraction of MLP hidden units removed")
    g.add_argument("--mlp-criterion", choices=CRITERIA, default="taylor")
    g.add_argument("--mlp-ranking", choices=RANKINGS, default="uniform")
    g.add_argument("--target-flops", type=float, default=None,
                   help="reach this fraction of the dense FLOPs (e.g. 0.5) by searching the head / MLP / rank "
                        "ratios; the ratios given set the direction of the search")
    g = p.add_argument_group("low rank (SVD)")
    g.add_argument("--rank-ratio", type=float, default=None, help="fraction of each layer's weights kept by SVD")
    g.add_argument("--energy", type=float, default=None, help="alternative: fraction of squared singular values kept")
    g.add_argument("--activation-aware", action="store_true", help="whiten by the calibration inputs (SVD-LLM)")
    g.add_argument("--svd-damping", type=float, default=0.01)
    g.add_argument("--svd-layers", type=_kinds, default=("qkv", "proj", "fc1", "fc2"),
                   help=f"comma-separated kinds from {','.join(LINEAR_KINDS)}")
    g = p.add_argument_group("sparsity (IHT during finetuning)")
    g.add_argument("--sparsity", type=float, default=0.0, help="final fraction of zero weights")
    g.add_argument("--iht-interval", type=int, default=16, help="steps between mask updates")
    g.add_argument("--iht-ramp-frac", type=float, default=0.7, help="fraction of steps of the cubic ramp")
    g.add_argument("--iht-scope", choices=IHT_SCOPES, default="layer")
    g.add_argument("--iht-layers", type=_kinds, default=("qkv", "proj", "fc1", "fc2"))
    g.add_argument("--calib-batches", type=int, default=8, help="calibration batches (taylor, activation-aware)")
    g = p.add_argument_group("finetuning")
    g.add_argument("--finetune-epochs", type=int, default=3)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--weight-decay", type=float, default=0.05)
    g.add_argument("--warmup-frac", type=float, default=0.0)
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g = p.add_argument_group("measurement")
    g.add_argument("--no-measure", action="store_true", help="skip accelvit.metrics (FLOPs, sizes)")
    g.add_argument("--latency", action="store_true", help="also time the model before and after (slow)")
    add_runtime_args(p)
    p.set_defaults(func=run)


def prune_config_from_args(args: argparse.Namespace) -> PruneConfig:
    return PruneConfig(
        head_ratio=args.head_ratio, head_criterion=args.head_criterion, head_ranking=args.head_ranking,
        stage_head_ratios=args.stage_head_ratios, mlp_ratio=args.mlp_ratio, mlp_criterion=args.mlp_criterion,
        mlp_ranking=args.mlp_ranking, rank_ratio=args.rank_ratio, energy=args.energy,
        activation_aware=args.activation_aware, svd_damping=args.svd_damping, svd_layers=tuple(args.svd_layers),
        sparsity=args.sparsity, iht_interval=args.iht_interval, iht_ramp_frac=args.iht_ramp_frac,
        iht_scope=args.iht_scope, iht_layers=tuple(args.iht_layers), calib_batches=args.calib_batches,
        seed=args.seed, target_flops=args.target_flops).validate()


def _state(model: torch.nn.Module, loader, device, num_classes: int, args: argparse.Namespace,
           input_size) -> dict[str, Any]:
    ev = evaluate(model, loader, device=device, num_classes=num_classes)
    out: dict[str, Any] = {"top1": ev.top1, "top5": ev.top5, "loss": ev.loss, "n": ev.n,
                           "params": count_params(model), "nonzero_params": count_nonzero(model)}
    if not args.no_measure:
        try:
            from ..metrics import measure
        except ImportError:  # metrics is optional here
            return out
        try:
            m = measure(model, input_size, device="cpu", latency=args.latency)
            out["metrics"] = m.to_dict()
            out["flops"] = out["metrics"].get("dense_flops")
        except Exception as exc:  # a measurement must never lose a pruned model
            log.warning("measure failed: %s", exc)
            out["metrics"] = {"error": str(exc)}
    return out


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    pcfg = prune_config_from_args(args)
    ft = TrainConfig(epochs=args.finetune_epochs, lr=args.lr, weight_decay=args.weight_decay,
                     warmup_frac=args.warmup_frac, label_smoothing=args.label_smoothing, device=args.device,
                     seed=args.seed).validate()
    model, doc = serialize.load(args.checkpoint, device="cpu")
    spec = spec_of(model)
    if args.img_size is not None and args.img_size != spec.img_size:
        raise ConfigError("img_size", f"the checkpoint was built for {spec.img_size} px inputs, not "
                                      f"{args.img_size}; leave --img-size out.")
    # Evaluate on the split the checkpoint was trained with (same data seed and normalisation).
    trained = (doc.get("meta") or {}).get("data") or {}
    same_data = trained.get("dataset") == args.dataset
    if same_data and trained.get("seed") is not None and trained.get("seed") != args.seed:
        log.info("Using the checkpoint's data seed %s so the test split matches its training.", trained["seed"])
        args.seed = int(trained["seed"])
    data_cfg = data_config_from_args(args, spec.img_size, mean=trained.get("mean") if same_data else None,
                                     std=trained.get("std") if same_data else None)
    data = load_data(data_cfg)
    if data.num_classes != spec.num_classes:
        raise ConfigError("dataset", f"{args.dataset} has {data.num_classes} classes but the checkpoint's classifier "
                                     f"has {spec.num_classes}; prune on the data set the model was trained on.")
    device = resolve_device(args.device)
    model.to(device)
    test = data.test if len(data.test.dataset) else data.val
    input_size = (3, spec.img_size, spec.img_size)

    log.info("evaluating the checkpoint")
    before = _state(model, test, device, data.num_classes, args, input_size)
    model, report = prune(model, pcfg, data.train)
    model.to(device)
    pruned = _state(model, test, device, data.num_classes, argparse.Namespace(**{**vars(args), "no_measure": True}),
                    input_size)
    hook = make_iht_hook(model, pcfg)
    finetune: dict[str, Any] = {"epochs": 0}
    if ft.epochs > 0:
        with tqdm_progress("finetune") as cb:
            res = fit(model, data.train, ft, val_loader=data.val if len(data.val.dataset) else None,
                      hooks=[hook] if hook is not None else [], progress=cb)
        finetune = {"epochs": res.epochs, "steps": res.steps, "train_seconds": res.train_seconds,
                    "history": res.history}
    elif hook is not None:
        log.warning("No finetuning: sparsity %.2f is applied one-shot by magnitude.", pcfg.sparsity)
        hook.finalize(model)
    model.eval()
    after = _state(model, test, device, data.num_classes, args, input_size)

    out = Path(args.out)
    meta = {"source_checkpoint": str(args.checkpoint), "prune": pcfg.to_dict(), "finetune": ft.to_dict(),
            "data": data_cfg.to_dict(), "split": data.split, "before": {k: before[k] for k in ("top1", "params")},
            "after": {k: after[k] for k in ("top1", "params", "nonzero_params")}}
    serialize.save(model, out, class_names=data.class_names, meta=meta)
    rep = report.to_dict()
    full = {"checkpoint": str(args.checkpoint), "model": spec.name, "dataset": args.dataset,
            "before": before, "pruned": pruned, "after": after,
            "delta_top1": after["top1"] - before["top1"],
            "param_reduction": 1 - after["params"] / before["params"],
            "layers": rep.pop("layers"), "prune": rep, "config": pcfg.to_dict(), "finetune_config": ft.to_dict(),
            "finetune": finetune, "iht": hook.state() if hook is not None else None,
            "data": data_cfg.to_dict(), "split": data.split, "seconds": time.perf_counter() - started}
    serialize.atomic_write_json(out / "report.json", full)
    summary = {"before_top1": before["top1"], "pruned_top1": pruned["top1"], "after_top1": after["top1"],
               "params": [before["params"], after["params"]],
               "nonzero_params": [before["nonzero_params"], after["nonzero_params"]], "out": str(out)}
    print(json.dumps(summary))
    return 0
