"""ONNX export benchmark: export time, file size, onnxruntime-vs-PyTorch agreement and latency.

    python -m bench.onnx_export                     # the shared CIFAR-10 swin_micro baseline + pruned, Swin-T 224
    python -m bench.onnx_export --no-swin-t         # skip the 28M-parameter Swin-T (2 GB of RAM, minutes)
    python -m bench.onnx_export --no-write          # print only

Models: the CIFAR-10 swin_micro baseline in ``../shared/data/cifar10-swin_micro-10ep`` (when present),
the same model pruned (heads 0.5 + MLP 0.5 by l1, SVD rank 0.5, 50% magnitude sparsity: no finetune;
latency and export do not depend on accuracy), and timm's ``swin_tiny_patch4_window7_224`` with random
weights (no network here), pruned by heads 0.25 + SVD 0.5. Each is saved by accelvit, exported with
``accelvit.export.export_folder`` (dynamo exporter, opset 18, dynamic batch; verified in onnxruntime on
real CIFAR-10 images (8 per class from the shared tgz) where it is found, else random inputs) and timed by
``accelvit.export.onnx_latency``: PyTorch and onnxruntime interleaved in one process, same threads.

The section ``## ONNX export (issue 14)`` of ``bench/RESULTS.md`` is rewritten; raw numbers go to
``bench/_work/onnx_export.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from accelvit import serialize
from accelvit.export import export_folder, onnx_latency
from accelvit.models import build_model
from accelvit.prune import PruneConfig, make_iht_hook, prune
from bench.results_md import replace_section

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "RESULTS.md"
WORK = ROOT / "_work"
SECTION = "## ONNX export (issue 14)"
SHARED = ROOT.parent.parent / "shared" / "data" / "cifar10-swin_micro-10ep"
CIFAR_ROOT = ROOT.parent.parent / "shared" / "data"  # holds cifar10-train-jpg.tgz


def _pruned(model: torch.nn.Module, cfg: PruneConfig) -> torch.nn.Module:
    prune(model, cfg)
    hook = make_iht_hook(model, cfg)
    if hook is not None:
        hook.finalize(model)
    return model.eval()


def _cifar_folder(work: Path, per_class: int = 8) -> Path | None:
    """A few real CIFAR-10 images (``per_class`` per class) from the shared tgz as an image folder, or None."""
    import tarfile

    tgz = CIFAR_ROOT / "cifar10-train-jpg.tgz"
    if not tgz.exists():
        return None
    out = work / "cifar10-sample"
    taken: dict[str, int] = {}
    with tarfile.open(tgz) as tf:
        for member in tf:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or taken.get(parts[1], 0) >= per_class:
                continue
            taken[parts[1]] = taken.get(parts[1], 0) + 1
            dest = out / parts[1] / parts[2]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tf.extractfile(member).read())
            if len(taken) == 10 and all(v >= per_class for v in taken.values()):
                break
    return out


def _cases(work: Path, swin_t: bool) -> list[tuple[str, Path]]:
    cases = []
    if (SHARED / serialize.SPEC_FILE).exists():
        model, doc = serialize.load(SHARED)
        meta = dict(doc.get("meta") or {})
        mean, std = serialize.normalisation(doc)
        sample = _cifar_folder(work)
        if sample is not None:  # verify on real CIFAR-10 images, normalised as the baseline was trained
            meta["data"] = {"dataset": "folder", "root": str(sample), "img_size": 32,
                            "mean": list(mean) if mean else None, "std": list(std) if std else None}
        serialize.save(model, work / "micro_base", class_names=doc.get("class_names"), meta=meta)
        cases.append(("swin_micro CIFAR-10 baseline", work / "micro_base"))
        cfg = PruneConfig(head_ratio=0.5, head_criterion="l1", mlp_ratio=0.5, mlp_criterion="l1", rank_ratio=0.5,
                          sparsity=0.5)
        serialize.save(_pruned(model, cfg), work / "micro_pruned", class_names=doc.get("class_names"), meta=meta)
        cases.append(("swin_micro pruned (heads, MLP, SVD 0.5, 50% sparse)", work / "micro_pruned"))
    else:
        print(f"no {SHARED}: skipping the CIFAR-10 models", file=sys.stderr)
    if swin_t:
        torch.manual_seed(0)
        m = build_model("swin_tiny_patch4_window7_224", 10, pretrained=False)
        serialize.save(_pruned(m, PruneConfig(head_ratio=0.25, head_criterion="l1", rank_ratio=0.5)),
                       work / "swin_t_pruned")
        cases.append(("Swin-T 224 pruned (heads 0.25, SVD 0.5), random weights", work / "swin_t_pruned"))
    return cases


def run(swin_t: bool, threads: int, reps: int, batch: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, folder in _cases(Path(tmp), swin_t):
            print(f"{label}: exporting...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            ex = export_folder(folder)
            wall = time.perf_counter() - t0
            model, _ = serialize.load(folder)
            big = batch if "Swin-T" not in label else 8
            lat = onnx_latency(model, ex.path, batch_sizes=(1, big), warmup=3, reps=reps, threads=threads)
            rows.append({"model": label, "export_s": round(wall, 1), "onnx_bytes": ex.file_bytes,
                         "safetensors_bytes": (folder / serialize.WEIGHTS_FILE).stat().st_size,
                         "max_abs_diff": ex.max_abs_diff, "verify_inputs": ex.verify_inputs, "nodes": sum(ex.ops.values()),
                         "latency": lat["points"]})
            print(json.dumps(rows[-1]["latency"], indent=None)[:300], file=sys.stderr)
    return {"date": dt.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads", "torch": torch.__version__, "rows": rows, "reps": reps}


def section(res: dict[str, Any], command: str) -> str:
    lines = [SECTION, "", f"`{command}` — {res['date']}, {res['machine']}, torch {res['torch']}, onnxruntime CPU "
             f"provider with the same thread count. Latency: median of {res['reps']} pairs, PyTorch and onnxruntime "
             "interleaved in one process (`accelvit.export.onnx_latency`); PyTorch/ORT above 1 means onnxruntime is "
             "faster.", "",
             "| model | export s | .onnx | safetensors | max abs diff (inputs) | batch | PyTorch ms | ORT ms | PyTorch/ORT |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        for i, p in enumerate(r["latency"]):
            head = (f"| {r['model']} | {r['export_s']} | {r['onnx_bytes'] / 1e6:.2f} MB | "
                    f"{r['safetensors_bytes'] / 1e6:.2f} MB | {r['max_abs_diff']:.1e} ({r['verify_inputs']}) ")
            if i:
                head = "| | | | | "
            lines.append(head + f"| {p['batch_size']} | {p['pytorch']['median_ms']:.2f} | "
                         f"{p['onnxruntime']['median_ms']:.2f} | {p['speedup']:.2f}x |")
    lines += ["", "IHT zeros are dense in the ONNX file (the pruned swin_micro's .onnx is larger than its packed "
              "safetensors); heads, MLP units and SVD ranks are physically absent, as in PyTorch.", ""]
    return "\n".join(lines)


def write_section(text: str) -> None:
    replace_section(SECTION, text, RESULTS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-swin-t", action="store_true", help="skip the Swin-T 224 case")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=21)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    res = run(not args.no_swin_t, args.threads, args.reps, args.batch_size)
    WORK.mkdir(exist_ok=True)
    (WORK / "onnx_export.json").write_text(json.dumps(res, indent=2))
    text = section(res, "python -m bench.onnx_export " + shlex.join(argv if argv is not None else sys.argv[1:]))
    print(text)
    if not args.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
