"""``accelvit export``: write a saved model as ONNX and verify it in onnxruntime."""

from __future__ import annotations

import argparse
import json
import sys

from ..export import DEFAULT_OPSET, EXPORTERS, ONNX_FILE, ONNX_REPORT, TOLERANCE, export_folder


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a saved model to ONNX, checked against PyTorch in onnxruntime",
                       description="Export a model folder written by accelvit (baseline, pruned, low-rank or sparse) "
                                   f"to ONNX ({ONNX_FILE} in the folder, with {ONNX_REPORT} saying how it was checked). "
                                   "The export is verified: onnxruntime's logits must equal PyTorch's within "
                                   f"{TOLERANCE:g} on real images of the model's data set (random inputs where they "
                                   "cannot be loaded). IHT zeros are stored dense in ONNX. Needs the onnx extra: "
                                   "pip install 'accelvit[onnx]'.")
    p.add_argument("--checkpoint", required=True, help="directory written by accelvit (accelvit.json + weights)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (only onnx)")
    p.add_argument("--out", default=None, help=f"output .onnx file or folder (default: CHECKPOINT/{ONNX_FILE})")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (dynamo exporter: 18 or newer)")
    p.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="a symbolic batch dimension (default) or the fixed batch 2 the model was traced with")
    p.add_argument("--exporter", default="dynamo", choices=EXPORTERS,
                   help="torch.onnx exporter: dynamo (torch.export based, the default) or torchscript (legacy)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest |onnxruntime - PyTorch| logit allowed")
    p.add_argument("--json", action="store_true", help="print the export record as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = export_folder(args.checkpoint, out=args.out, opset=args.opset, dynamic_batch=args.dynamic_batch,
                           exporter=args.exporter, tolerance=args.tolerance,
                           progress=lambda msg: print(f"{msg}...", file=sys.stderr, flush=True))
    sys.stdout.write((json.dumps(result.to_dict(), indent=2) if args.json else result.summary()) + "\n")
    return 0
