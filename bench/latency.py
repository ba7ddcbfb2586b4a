"""Latency benchmark: baseline vs structurally pruned Swin, measured speedup next to the FLOP reduction.

    python -m bench.latency                       # swin_micro + swin_small32, batch 1 and 64, CPU
    python -m bench.latency --threads 1 2 --reps 21  # one thread, then two; more repetitions
    python -m bench.latency --no-write            # print only, leave bench/RESULTS.md alone

For every model and pruning preset the baseline and the pruned copy are timed interleaved
in one process (``accelvit.metrics.compare``), so machine noise hits both alike. The
target of issue 4: at batch 64 the measured speedup is at least 0.8x the dense FLOP reduction
for structured pruning (heads + SVD). The weights are random (timm init): latency does not
depend on their values, only on the shapes pruning leaves. One ``torch.profiler`` pass per
model at the large batch splits the time into matrix products (what FLOPs count) and the
rest (copies, norms, GELU, softmax, window reshapes), which explains a shortfall.

The section ``## Latency (issue 4)`` of ``bench/RESULTS.md`` is rewritten; other sections
are kept. The raw numbers go to ``bench/_work/latency.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import logging
import os
import platform
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from accelvit.metrics import compare, count_flops, param_counts
from accelvit.models import build_model
from accelvit.prune import PruneConfig, prune
from bench.results_md import replace_section

log = logging.getLogger("bench.latency")

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "RESULTS.md"
WORK = ROOT / "_work"
SECTION = "## Latency (issue 4)"
TARGET = 0.8

#: name -> (PruneConfig kwargs, counts toward the 0.8x target). l1 criteria: no data needed.
PRESETS: dict[str, tuple[dict[str, Any], bool]] = {
    "heads0.5+svd0.5": (dict(head_ratio=0.5, head_criterion="l1", rank_ratio=0.5), True),
    "heads0.5+mlp0.5": (dict(head_ratio=0.5, head_criterion="l1", mlp_ratio=0.5, mlp_criterion="l1"), True),
    "heads0.5+mlp0.5+svd0.5": (dict(head_ratio=0.5, head_criterion="l1", mlp_ratio=0.5, mlp_criterion="l1",
                                    rank_ratio=0.5), True),
}

#: aten ops that are matrix products / convolutions (what the FLOP count covers).
MATMUL_OPS = {"aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::mkldnn_convolution",
              "aten::convolution", "aten::_convolution", "aten::conv2d"}


@dataclass
class Row:
    threads: int
    model: str
    preset: str
    structured: bool
    flop_reduction: float
    param_reduction: float
    batch_size: int
    baseline_ms: float
    pruned_ms: float
    baseline_iqr_ms: tuple[float, float]
    pruned_iqr_ms: tuple[float, float]
    speedup: float
    paired_speedup: float

    @property
    def efficiency(self) -> float:
        """Measured speedup / FLOP reduction (1.0 = the speedup FLOPs promise)."""
        return self.speedup / self.flop_reduction


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence C-level stderr (kineto prints profiler_start/stop lines) for the block."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def time_split(models: dict[str, nn.Module], batch_size: int, img: int, passes: int = 5) -> dict[str, tuple[float, float]]:
    """Per model: ``(ms in matrix products / convolutions, ms in everything else)`` per forward pass.

    CPU self time from ``torch.profiler``; the models are profiled one pass each in turn
    (interleaved, like the timings), ``passes`` times, and the times averaged.
    """
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(batch_size, 3, img, img)
    acc = {k: [0.0, 0.0] for k in models}
    with torch.inference_mode():
        for m in models.values():
            m(x)
        for _ in range(passes):
            for key, m in models.items():
                with _quiet_fd2(), profile(activities=[ProfilerActivity.CPU]) as prof:
                    m(x)
                for ev in prof.key_averages():
                    acc[key][0 if ev.key in MATMUL_OPS else 1] += ev.self_cpu_time_total / 1000.0
    return {k: (mm / passes, other / passes) for k, (mm, other) in acc.items()}


def run(models: list[str], presets: list[str], batch_sizes: list[int], warmup: int, reps: int,
        threads: list[int]) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    shares: dict[str, Any] = {}
    for t in threads:
        torch.set_num_threads(t)
        log.info("== %d thread(s)", t)
        rows_t, shares_t = _run_once(models, presets, batch_sizes, warmup, reps)
        rows += rows_t
        shares.update({f"{name} ({t} thr)": v for name, v in shares_t.items()})
    return rows, shares


def _run_once(models: list[str], presets: list[str], batch_sizes: list[int], warmup: int,
              reps: int) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    shares: dict[str, Any] = {}
    for name in models:
        torch.manual_seed(0)
        base = build_model(name, 10).eval()
        img = base.accelvit_spec.img_size
        f_base, p_base = count_flops(base).total, param_counts(base)[0]
        big = max(batch_sizes)
        shares[name] = {}
        for preset in presets:
            kwargs, structured = PRESETS[preset]
            pruned = copy.deepcopy(base)
            prune(pruned, PruneConfig(**kwargs))
            pruned.eval()
            split = time_split({"baseline": base, "pruned": pruned}, big, img)
            shares[name][preset] = {"baseline": split["baseline"], "pruned": split["pruned"]}
            log.info("%s %s: %d -> %d FLOPs", name, preset, f_base, count_flops(pruned).total)
            c = compare(base, pruned, batch_sizes=batch_sizes, warmup=warmup, reps=reps)
            for pt in c.points:
                rows.append(Row(threads=torch.get_num_threads(), model=name, preset=preset, structured=structured,
                                flop_reduction=c.flop_reduction, param_reduction=p_base / param_counts(pruned)[0], batch_size=pt.batch_size,
                                baseline_ms=pt.baseline.median_ms, pruned_ms=pt.pruned.median_ms,
                                baseline_iqr_ms=(pt.baseline.p25_ms, pt.baseline.p75_ms),
                                pruned_iqr_ms=(pt.pruned.p25_ms, pt.pruned.p75_ms),
                                speedup=pt.speedup, paired_speedup=pt.paired_speedup))
                r = rows[-1]
                log.info("  b=%-3d %8.2f ms -> %8.2f ms  speedup %.2fx  FLOP reduction %.2fx  (%.2f of it)",
                         r.batch_size, r.baseline_ms, r.pruned_ms, r.speedup, r.flop_reduction, r.efficiency)
    return rows, shares


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    cpu = cpu_name()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(), "load_avg": [round(x, 2) for x in load]}


def render(rows: list[Row], shares: dict[str, Any], info: dict[str, Any], command: str, reps: int,
           warmup: int) -> str:
    big = max(r.batch_size for r in rows)
    lines = [
        SECTION,
        "",
        f"Command: `{command}` ({info['date']}).",
        f"Machine: {info['cpu']}, {info['cores']} cores visible, torch {info['torch']}; load average {info['load_avg_start']} at the start and "
        f"{info['load_avg_end']} at the end (the machine is shared with other work).",
        f"Method: `accelvit.metrics.compare`, baseline and pruned timed interleaved (A,B / B,A) in one process "
        f"under `torch.inference_mode`, {warmup} warm-up pairs and {reps} timed pairs per batch size; speedup = "
        "median baseline time / median pruned time. FLOP reduction = dense FLOPs (FlopCounterMode, attention "
        "matmuls included) baseline / pruned at batch 1. Random (timm-init) weights; pruning with l1 criteria.",
        "",
        "| threads | model | pruning | batch | baseline ms (IQR) | pruned ms (IQR) | speedup | FLOP reduction "
        f"| speedup / FLOP reduction | target {TARGET}x |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        target = ("yes" if r.efficiency >= TARGET else "**no**") if (r.structured and r.batch_size == big) else "-"
        lines.append(
            f"| {r.threads} | {r.model} | {r.preset} | {r.batch_size} | {r.baseline_ms:.2f} ({r.baseline_iqr_ms[0]:.2f}-"
            f"{r.baseline_iqr_ms[1]:.2f}) | {r.pruned_ms:.2f} ({r.pruned_iqr_ms[0]:.2f}-{r.pruned_iqr_ms[1]:.2f}) | "
            f"{r.speedup:.2f}x | {r.flop_reduction:.2f}x | {r.efficiency:.2f} | {target} |")
    lines += ["", f"Where the time goes at batch {big} (torch.profiler CPU self time per forward pass, mean of 5, "
                  "baseline and pruned profiled in turn; "
                  "'matmul' = mm/addmm/bmm/attention/convolution, what FLOPs count; 'other' = copies, norms, "
                  "GELU, softmax, adds, window shifts/reshapes, which FLOPs do not count):", "",
              "| model | pruning | matmul ms baseline -> pruned | matmul speedup | other ms baseline -> pruned "
              "| other speedup | matmul share of baseline |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for model, per_preset in shares.items():
        for preset, split in per_preset.items():
            (mm0, ot0), (mm1, ot1) = split["baseline"], split["pruned"]
            lines.append(f"| {model} | {preset} | {mm0:.1f} -> {mm1:.1f} | {mm0 / mm1:.2f}x | {ot0:.1f} -> {ot1:.1f} "
                         f"| {ot0 / ot1:.2f}x | {mm0 / (mm0 + ot0):.0%} |")
    lines.append("")
    return "\n".join(lines)


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replace our section of RESULTS.md (hand-written notes under "### Notes" in it are kept), keep the rest."""
    replace_section(SECTION, text, path, keep_notes=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["swin_micro", "swin_small32"])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", nargs="+", type=int, default=None,
                        help="torch CPU thread counts to run with, one after the other (default: torch's)")
    parser.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("accelvit").setLevel(logging.WARNING)
    command = "python -m bench.latency" + ("" if argv is None and len(sys.argv) == 1 else
                                          " " + shlex.join(argv if argv is not None else sys.argv[1:]))
    info = machine()
    info["load_avg_start"] = info.pop("load_avg")
    info["date"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    rows, shares = run(args.models, args.presets, args.batch_sizes, args.warmup, args.reps,
                       args.threads or [torch.get_num_threads()])
    info["load_avg_end"] = machine()["load_avg"]
    text = render(rows, shares, info, command, args.reps, args.warmup)
    print(text)
    WORK.mkdir(exist_ok=True)
    (WORK / "latency.json").write_text(json.dumps(
        {"info": info, "command": command, "rows": [dict(r.__dict__, efficiency=r.efficiency) for r in rows],
         "time_split_ms": shares}, indent=2))
    if not args.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
