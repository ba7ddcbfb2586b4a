"""DDP scaling on this machine: training throughput with 1 process against 2 (torchrun, gloo).

    python -m bench.ddp_scaling                     # 3 alternating pairs, swin_micro at 32 px on digits
    python -m bench.ddp_scaling --repeats 5 --no-write

Both sides run the same ``accelvit train`` command (the ``fit`` loop every finetune uses) with the same global
batch; one process gets all the machine's cores as torch threads, each of the 2 torchrun processes gets half.
They alternate (1, 2, 1, 2, ...) so machine load hits both alike. Throughput is the command's own
``train_images_per_s`` (images of the global batch per second of training, the data and model set-up excluded),
the median over the repeats with min and max; the scaling is the ratio of the medians.

The section ``## DDP scaling (issue 15)`` of ``bench/RESULTS.md`` is rewritten; raw numbers go to
``bench/_work/ddp_scaling.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from bench.results_md import replace_section

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "RESULTS.md"
WORK = ROOT / "_work"
SECTION = "## DDP scaling (issue 15)"


def _train(procs: int, cores: int, args: argparse.Namespace, tmp: Path, i: int) -> float:
    out = tmp / f"p{procs}-{i}"
    cmd = ["-m", "accelvit", "train", "--dataset", "digits", "--model", args.model, "--img-size", str(args.img_size),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--no-augment", "--device", "cpu",
           "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // procs)), ACCELVIT_HOME=str(tmp / "home"))
    if procs == 1:
        full = [sys.executable, *cmd]
    else:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        full = [torchrun, "--standalone", "--nproc_per_node", str(procs), *cmd]
    proc = subprocess.run(full, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(full)} failed:\n{proc.stderr[-2000:]}")
    return float(json.loads((out / "metrics.json").read_text())["train_images_per_s"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    cores = os.cpu_count() or 2
    speeds: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for procs in (1, 2):
                speeds[procs].append(_train(procs, cores, args, Path(tmp), i))
                print(f"repeat {i + 1}: {procs} process(es) {speeds[procs][-1]:.1f} images/s", file=sys.stderr)
    med = {p: statistics.median(v) for p, v in speeds.items()}
    return {"date": dt.date.today().isoformat(), "cores": cores, "model": args.model, "img_size": args.img_size,
            "batch": args.batch_size, "epochs": args.epochs, "speeds": speeds, "median": med,
            "scaling": med[2] / med[1]}


def section(res: dict[str, Any], command: str) -> str:
    s = res["speeds"]
    lines = [SECTION, "", f"`{command}` — {res['date']}, {res['cores']} CPU cores, `accelvit train` of {res['model']} "
             f"at {res['img_size']} px on digits, global batch {res['batch']}, {res['epochs']} epochs per run, "
             f"{len(s[1])} alternating runs per side.", "",
             "| processes | threads each | images/s median | min | max |", "|---|---|---|---|---|"]
    for p in (1, 2):
        lines.append(f"| {p} | {max(1, res['cores'] // p)} | {res['median'][p]:.1f} | {min(s[p]):.1f} | "
                     f"{max(s[p]):.1f} |")
    lines += ["", f"2 processes / 1 process: **{res['scaling']:.2f}x**. On one machine with few cores DDP only "
              "trades intra-op threads for processes (and adds a gradient all-reduce per step), so about 1x is what "
              "to expect here; the point of torchrun is several GPUs or machines.", ""]
    return "\n".join(lines)


def write_section(text: str) -> None:
    replace_section(SECTION, text, RESULTS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="swin_micro")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    res = run(args)
    WORK.mkdir(exist_ok=True)
    (WORK / "ddp_scaling.json").write_text(json.dumps(res, indent=2))
    text = section(res, "python -m bench.ddp_scaling " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(text)
    if not args.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
