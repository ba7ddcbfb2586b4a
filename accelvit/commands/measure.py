"""``accelvit measure``: FLOPs (dense, effective, thop), nonzeros, size on disk and latency of a saved model."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import pandas as pd

from .. import serialize
from ..errors import ConfigError
from ..export import ONNX_FILE, export_folder, onnx_latency, onnx_summary
from ..metrics import measure

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="measure FLOPs, nonzeros, size on disk and latency of a saved model",
                       description="Load a model saved by accelvit (pruned or not) and measure it: dense FLOPs "
                                   "(FlopCounterMode, attention included), effective FLOPs (x weight density), "
                                   "thop's figure as a cross-check, parameters and nonzeros, dense and sparse "
                                   "size on disk, and latency at batch 1 and --batch-size.")
    p.add_argument("--checkpoint", required=True, help="directory written by accelvit (accelvit.json + weights)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON (per-layer rows included)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--batch-size", type=int, default=64, help="the larger batch timed besides batch 1")
    p.add_argument("--no-latency", action="store_true", help="skip timing (latency fields are null)")
    p.add_argument("--warmup", type=int, default=2, help="untimed forward passes per batch size")
    p.add_argument("--reps", type=int, default=5, help="timed forward passes per batch size")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads while timing (default: torch's)")
    p.add_argument("--no-thop", action="store_true", help="skip the thop cross-check")
    p.add_argument("--layers", action="store_true", help="also print the per-layer table (text output)")
    p.add_argument("--onnx", nargs="?", const="auto", default=None, metavar="FILE",
                   help="also time the ONNX export in onnxruntime (CPU), interleaved with PyTorch at batch 1 and "
                        "--batch-size, same threads: FILE, else CHECKPOINT/model.onnx, exported and verified first "
                        "if missing (needs pip install 'accelvit[onnx]')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_measure_args(args)  # before loading anything
    model, _doc = serialize.load(args.checkpoint, device="cpu")
    ort = _onnx_file(args) if args.onnx else None  # export first: a failed export costs no timing
    result = measure(model, device=args.device, latency=not args.no_latency, batch_size=args.batch_size,
                     warmup=args.warmup, reps=args.reps, thop=not args.no_thop, num_threads=args.threads)
    ort_lat = onnx_latency(model, ort, batch_sizes=(1, args.batch_size), warmup=args.warmup, reps=args.reps,
                           threads=args.threads) if ort else None
    if args.json:
        doc = result.to_dict()
        doc["onnxruntime"] = ort_lat
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    sys.stdout.write(result.summary() + "\n")
    if ort_lat:
        sys.stdout.write(onnx_summary(ort_lat) + "\n")
    if args.layers:
        with pd.option_context("display.width", 250, "display.max_rows", None, "display.max_columns", None):
            sys.stdout.write(result.layers.to_string(index=False) + "\n")
    return 0


def check_measure_args(args: argparse.Namespace) -> None:
    """ConfigError naming the first timing flag out of range (``--threads -3``, ``--reps 0``...)."""
    cpus = os.cpu_count() or 1
    if args.threads is not None and not 1 <= args.threads <= 4 * cpus:
        raise ConfigError("threads", f"must be a whole number from 1 to {4 * cpus} (this machine has {cpus} "
                                     f"CPUs), got {args.threads}.")
    for flag, value, low in (("batch_size", args.batch_size, 1), ("reps", args.reps, 1), ("warmup", args.warmup, 0)):
        if value < low:
            raise ConfigError(flag, f"must be a whole number >= {low}, got {value}.")


def _onnx_file(args: argparse.Namespace) -> Path:
    if args.onnx != "auto":
        path = Path(args.onnx)
        if not path.is_file():
            raise ConfigError("onnx", f"{path} is not a file; give an .onnx file or --onnx alone to use "
                                      f"CHECKPOINT/{ONNX_FILE}.")
        return path
    folder = Path(args.checkpoint)
    path = folder / ONNX_FILE
    if not path.is_file():
        print(f"no {path}: exporting and verifying it first...", file=sys.stderr, flush=True)
        path = Path(export_folder(folder).path)
    return path
