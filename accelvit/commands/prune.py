"""``accelvit prune``: an experiment whose baseline is a saved model (no baseline training).

    python -m accelvit prune --checkpoint DIR --dataset digits --head-ratio 0.3 --rank-ratio 0.5 \\
        --sparsity 0.5 --finetune-epochs 3 --out DIR2

It runs the same :class:`accelvit.experiment.Experiment` as the dashboard and ``accelvit
run`` (``baseline_checkpoint=DIR``), with the same finetune default, and writes the same
files: ``DIR2`` receives the pruned model (``accelvit.serialize`` format, loadable by
``load``), ``report.json`` (the run report: ``metrics.{before,pruned,after}``,
``prune_report.layers``, ``config``, ``baseline``, ``split``, ``timings``) and the per-layer
tables ``layers_<stage>.csv``. It is not recorded in the run store (use ``accelvit run
--baseline DIR`` for that).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from .. import distributed, serialize
from ..errors import ConfigError
from ..experiment import Experiment, ExperimentConfig, default_finetune
from ..metrics import param_counts
from ..distill import DistillConfig
from ..prune.config import CRITERIA, IHT_PATTERNS, IHT_SCOPES, LINEAR_KINDS, RANKINGS, TARGET_RULES, PruneConfig
from .common import (RunProgressBar, add_data_args, add_output_args, add_runtime_args, check_output_folder, follow_rank_0,
                     data_config_from_args, output_folder)

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
    add_output_args(p, "the pruned model and report.json")
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
    g.add_argument("--target-rule", choices=TARGET_RULES, default=PruneConfig.target_rule,
                   help="how --target-flops allocates: sensitivity (units ranked by loss score per FLOP across "
                        "layers) or uniform (the same fractions in every layer)")
    g.add_argument("--prune-steps", type=int, default=PruneConfig.prune_steps,
                   help="reach --target-flops in this many steps with a short distilled recovery between them")
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
    g.add_argument("--iht-ramp-frac", type=float, default=PruneConfig.iht_ramp_frac,
                   help="fraction of steps of the cubic ramp")
    g.add_argument("--iht-scope", choices=IHT_SCOPES, default="layer")
    g.add_argument("--iht-pattern", choices=IHT_PATTERNS, default="unstructured",
                   help="2:4: exactly 2 nonzeros in every 4 consecutive weights (needs --sparsity 0.5), the "
                        "pattern NVIDIA sparse tensor cores run")
    g.add_argument("--iht-layers", type=_kinds, default=("qkv", "proj", "fc1", "fc2"))
    g.add_argument("--calib-batches", type=int, default=8, help="calibration batches (taylor, activation-aware)")
    g = p.add_argument_group("finetuning")
    ft = default_finetune()
    g.add_argument("--finetune-epochs", type=int, default=ft.epochs)
    g.add_argument("--lr", type=float, default=ft.lr, help="finetune peak learning rate")
    g.add_argument("--weight-decay", type=float, default=ft.weight_decay)
    g.add_argument("--warmup-frac", type=float, default=ft.warmup_frac)
    g.add_argument("--label-smoothing", type=float, default=ft.label_smoothing)
    g.add_argument("--kd-alpha", type=float, default=DistillConfig.alpha,
                   help="weight of distillation from the unpruned model in the finetune (0: off)")
    g.add_argument("--kd-temperature", type=float, default=DistillConfig.temperature,
                   help="softmax temperature of the distillation")
    g = p.add_argument_group("measurement")
    g.add_argument("--no-measure", action="store_true",
                   help="skip accelvit.metrics (FLOPs, sizes); count parameters and nonzeros only")
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
        iht_scope=args.iht_scope, iht_pattern=args.iht_pattern, iht_layers=tuple(args.iht_layers),
        calib_batches=args.calib_batches,
        seed=args.seed, target_flops=args.target_flops, target_rule=args.target_rule,
        prune_steps=args.prune_steps).validate()


def experiment_config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The experiment ``accelvit prune`` runs: the checkpoint as baseline, the flags as prune/finetune."""
    ckpt = Path(args.checkpoint).expanduser()
    doc = serialize.read_spec(ckpt)
    spec = doc.get("model") or {}
    img_size = int(spec.get("img_size") or 0) or None
    if args.img_size is not None and img_size is not None and args.img_size != img_size:
        raise ConfigError("img_size", f"the checkpoint was built for {img_size} px inputs, not "
                                      f"{args.img_size}; leave --img-size out.")
    # Evaluate on the split the checkpoint was trained with (same data seed and normalisation).
    trained = (doc.get("meta") or {}).get("data") or {}
    seed = args.seed
    if trained.get("dataset") == args.dataset and trained.get("seed") is not None and trained["seed"] != seed:
        log.info("Using the checkpoint's data seed %s so the test split matches its training.", trained["seed"])
        seed = int(trained["seed"])
    data = data_config_from_args(args, img_size or args.img_size or 32)
    finetune = default_finetune(epochs=args.finetune_epochs, lr=args.lr, weight_decay=args.weight_decay,
                                warmup_frac=args.warmup_frac, label_smoothing=args.label_smoothing)
    return ExperimentConfig(model=str(spec.get("name") or "checkpoint"), data=data,
                            baseline_checkpoint=str(ckpt), finetune=finetune, prune=prune_config_from_args(args),
                            distill=DistillConfig(alpha=args.kd_alpha, temperature=args.kd_temperature),
                            device=args.device, seed=seed, measure_latency=bool(args.latency)).validate()


def _count_only(model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    params, nonzero = param_counts(model)
    return {"params": params, "nonzero_params": nonzero}


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser()
    ckpt = Path(args.checkpoint).expanduser()
    check_output_folder(out, args.overwrite, checkpoint=ckpt)  # before anything runs
    cfg = experiment_config_from_args(args)
    if not distributed.is_main():  # under torchrun: rank 0 writes --out; the others finetune their shards
        return follow_rank_0(cfg)
    bar = RunProgressBar(True, "prune")
    try:
        with output_folder(out, args.overwrite, checkpoint=ckpt) as tmp:  # complete, then renamed into place
            result = Experiment(cfg, on_event=bar, artifact_dir=tmp, model_dir=tmp,
                                measure_cost=_count_only if args.no_measure else None).run()
    finally:
        bar.close()
    m = result.metrics
    summary = {"before_top1": m["before"]["top1"], "pruned_top1": m["pruned"]["top1"],
               "after_top1": m["after"]["top1"], "params": [m["before"]["params"], m["after"]["params"]],
               "nonzero_params": [m["before"]["nonzero_params"], m["after"]["nonzero_params"]], "out": str(out)}
    print(json.dumps(summary))
    return 0
