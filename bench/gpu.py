"""GPU benchmark: bf16 training speed, and the speedup of 2:4 semi-structured sparsity over the dense model.

    python -m bench.gpu                 # needs a CUDA device (compute capability 8.0+ for the 2:4 part)
    python -m bench.gpu --no-write      # print only

1. Training throughput of ``swin_tiny_patch4_window7_224`` (random weights, random 224 px batches of 64):
   fp32 against autocast (bf16 where supported, else fp16 + GradScaler: ``accelvit.train.amp_dtype``), the
   same ``fit`` loop accelvit trains with, images/s over the timed steps after a warm-up.
2. 2:4 sparsity: the same model with IHT's 2:4 pattern applied one-shot to every qkv/proj/fc1/fc2 weight
   (``PruneConfig(sparsity=0.5, iht_pattern="2:4")``), in fp16, dense kernels against
   ``torch.sparse.to_sparse_semi_structured`` (``accelvit.prune.sparse.to_semi_structured``), timed
   interleaved with CUDA events (``accelvit.metrics.interleaved``) at batch 64 and 256. The outputs are
   compared too (max |difference| of the logits).

The section ``## GPU (issue 15)`` of ``bench/RESULTS.md`` is rewritten; raw numbers go to ``bench/_work/gpu.json``.
Without a CUDA device it says so and exits 2 (nothing is written).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from bench.results_md import replace_section

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "RESULTS.md"
WORK = ROOT / "_work"
SECTION = "## GPU (issue 15)"
MODEL = "swin_tiny_patch4_window7_224"


def train_speed(amp: bool, steps: int, batch: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader, TensorDataset

    from accelvit.models import build_model
    from accelvit.train import TrainConfig, amp_dtype, fit

    torch.manual_seed(0)
    model = build_model(MODEL, 10)
    data = TensorDataset(torch.randn(batch * steps, 3, 224, 224), torch.randint(0, 10, (batch * steps,)))
    loader = DataLoader(data, batch_size=batch, pin_memory=True)
    cfg = TrainConfig(epochs=1, device="cuda", amp=amp, warmup_frac=0.0)
    fit(model, DataLoader(TensorDataset(data.tensors[0][:batch * 3], data.tensors[1][:batch * 3]),
                          batch_size=batch), cfg)  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = fit(model, loader, cfg)
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    dtype = amp_dtype(torch.device("cuda"), amp)
    return {"autocast": str(dtype).replace("torch.", "") if dtype else "fp32", "steps": res.steps,
            "images_per_s": batch * res.steps / secs}


def sparse_speed(batches: tuple[int, ...], reps: int) -> list[dict[str, Any]]:
    from accelvit.metrics import interleaved
    from accelvit.models import build_model
    from accelvit.prune import PruneConfig, make_iht_hook
    from accelvit.prune.sparse import to_semi_structured

    torch.manual_seed(0)
    model = build_model(MODEL, 10)
    hook = make_iht_hook(model, PruneConfig(sparsity=0.5, iht_pattern="2:4"))
    hook.finalize(model)  # one-shot 2:4 by magnitude (latency does not depend on the values)
    dense = model.cuda().half().eval()
    sparse = copy.deepcopy(dense)
    converted = to_semi_structured(sparse)
    rows = []
    with torch.inference_mode():
        for bs in batches:
            x = torch.randn(bs, 3, 224, 224, device="cuda", dtype=torch.float16)
            diff = float((dense(x) - sparse(x)).abs().max())
            p = interleaved(dense, sparse, x, warmup=5, reps=reps)
            rows.append({"batch_size": bs, "dense_ms": p.baseline.median_ms, "sparse_ms": p.pruned.median_ms,
                         "speedup": p.speedup, "paired_speedup": p.paired_speedup, "reps": reps,
                         "max_abs_diff": diff, "converted": len(converted)})
    return rows


def section(res: dict[str, Any], command: str) -> str:
    lines = [SECTION, "", f"`{command}` — {res['date']}, {res['device']}, torch {res['torch']}.", "",
             f"Training `{MODEL}` (random weights, batch {res['batch']}, {res['train'][0]['steps']} timed steps, "
             "accelvit's `fit`):", "", "| precision | images/s |", "|---|---|"]
    lines += [f"| {r['autocast']} | {r['images_per_s']:.1f} |" for r in res["train"]]
    lines += ["", f"2:4 semi-structured sparsity (qkv/proj/fc1/fc2, {res['sparse'][0]['converted']} weights converted) "
              "against the same 2:4-zeroed weights run dense, fp16, interleaved with CUDA events:", "",
              "| batch | dense ms | 2:4 ms | speedup | paired | max abs diff |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['batch_size']} | {r['dense_ms']:.2f} | {r['sparse_ms']:.2f} | {r['speedup']:.2f}x | "
              f"{r['paired_speedup']:.2f}x | {r['max_abs_diff']:.1e} |" for r in res["sparse"]]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    replace_section(SECTION, text, RESULTS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="timed training steps per precision")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--reps", type=int, default=50, help="interleaved timing pairs per batch size")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench.gpu needs a CUDA device; this machine has none. Nothing was measured.", file=sys.stderr)
        return 2
    res: dict[str, Any] = {"date": dt.date.today().isoformat(), "device": torch.cuda.get_device_name(),
                           "torch": torch.__version__, "batch": args.batch_size}
    res["train"] = [train_speed(False, args.steps, args.batch_size), train_speed(True, args.steps, args.batch_size)]
    cap = torch.cuda.get_device_capability()
    res["sparse"] = sparse_speed((64, 256), args.reps) if cap[0] >= 8 else []
    WORK.mkdir(exist_ok=True)
    (WORK / "gpu.json").write_text(json.dumps(res, indent=2))
    text = section(res, "python -m bench.gpu " + " ".join(argv if argv is not None else sys.argv[1:])) \
        if res["sparse"] else json.dumps(res, indent=2)
    print(text)
    if not args.no_write and res["sparse"]:
        write_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
