"""bench.pareto's writers: the rows as CSV / JSON / Markdown, a Plotly figure, and the RESULTS.md block."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

from accelvit.fileio import json_default

log = logging.getLogger("bench.pareto")

SECTION = "## Pareto benchmark (issue 7)"
SECTION_STANDARD = "## Standard benchmark (issue 11)"
INTROS = {SECTION_STANDARD: (
    "`python -m bench.pareto --profile standard` (see its docstring and the profile's comment): every CIFAR-10 "
    "training image, the shared 10-epoch swin_micro baseline, tested on every image it never saw; accelvit, "
    "its ablations (no KD, the old Taylor score, the uniform rule), IHT, Torch-Pruning and the controls, all "
    "finetuned with one recipe (KD from the baseline). One block per run, newest last.")}
#: ``top1`` is the mean over the seeds (= ``top1_mean``), ``top1_se`` its standard error (None for
#: one seed), ``top1_seeds`` the seeds' values (JSON); ``distill`` what the finetune distilled with.
COLUMNS = ["method", "target_flops", "status", "top1", "top1_mean", "top1_se", "n_seeds", "top1_seeds", "top5",
           "top1_pruned", "distill", "dense_flops", "flops_ratio", "effective_flops", "params", "nonzero_params",
           "size_bytes", "size_format", "size_dense_bytes", "size_sparse_bytes", "speedup_b64", "paired_speedup_b64",
           "latency_ms_b64", "baseline_latency_ms_b64", "prune_settings", "search_evals", "search_seconds",
           "finetune_seconds", "note"]


def write_outputs(result: dict[str, Any], out_dir: Path, name: str) -> None:
    import pandas as pd

    df = pd.DataFrame(result["rows"], columns=COLUMNS)
    df.to_csv(out_dir / f"{name}.csv", index=False)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1, default=json_default))
    (out_dir / f"{name}.md").write_text(markdown_table(result) + "\n")
    figure(result, out_dir, name)
    log.info("Wrote %s/%s.{csv,json,md,html,png}", out_dir, name)


def _fmt(v: Any, spec: str, scale: float = 1.0, dash: str = "-") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return dash
    return format(v * scale if scale != 1.0 else v, spec)


def _se(r: dict[str, Any] | None) -> float | None:
    v = (r or {}).get("top1_se")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _top1(r: dict[str, Any]) -> str:
    """``mean`` for one seed, ``mean ± SE (n)`` for several (percent)."""
    if r.get("top1") is None:
        return "-"
    se = _se(r)
    return f"{100 * r['top1']:.2f}" + (f" ± {100 * se:.2f} ({r['n_seeds']})" if se is not None else "")


def diff(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float | None]:
    """``a - b`` in top-1 points and its standard error over the seeds (None unless both have one)."""
    sa, sb = _se(a), _se(b)
    se = math.hypot(sa, sb) if sa is not None and sb is not None else None
    return 100 * (a["top1"] - b["top1"]), None if se is None else 100 * se


def markdown_table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    ctrl = next((r for r in rows if r["method"] == "baseline_ft" and r["status"] == "ok"), None)
    head = ("| method | target | top-1 % | vs baseline_ft | top-1 before finetune | KD | dense MFLOPs (ratio) | "
            "effective MFLOPs | params | nonzeros | size on disk (KB) | CPU speedup b64 | status |")
    lines = [head, "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    order = {m: i for i, m in enumerate(result["method_order"])}
    for r in sorted(rows, key=lambda r: (-r["target_flops"], order.get(r["method"], 99))):
        ok = r["status"] == "ok"
        delta = "-"
        if ok and ctrl and r["top1"] is not None:
            d, se = diff(r, ctrl)
            delta = f"{d:+.2f}" + (f" ± {se:.2f}" if se is not None else "")
        flops = (f"{r['dense_flops'] / 1e6:.1f} ({r['flops_ratio']:.3f})" if ok and r["dense_flops"] else "-")
        size = _fmt(r["size_bytes"], ".0f", 1 / 1024)
        if ok and (r.get("size_format") or "").startswith("sparse"):
            size += " (sparse)"
        status = r["status"] if not ok else "ok"
        lines.append(" | ".join([
            f"| {r['method']}", f"{r['target_flops']:.2f}", _top1(r) if ok else "-", delta,
            _fmt(r["top1_pruned"], ".2f", 100), r.get("distill") or "-", flops,
            _fmt(r["effective_flops"], ".1f", 1e-6), _fmt(r["params"], ",d"), _fmt(r["nonzero_params"], ",d"), size,
            _fmt(r["speedup_b64"], ".2f") + ("x" if r["speedup_b64"] else ""), status.replace("|", "/") + " |"]))
    return "\n".join(lines)


def figure(result: dict[str, Any], out_dir: Path, name: str) -> None:
    try:
        import plotly.graph_objects as go
    except ImportError:  # pragma: no cover - plotly is a dependency
        log.warning("plotly is not installed; no figure.")
        return
    fig = go.Figure()
    ok = [r for r in result["rows"] if r["status"] == "ok" and r["top1"] is not None]
    for method in result["method_order"]:
        pts = sorted((r for r in ok if r["method"] == method), key=lambda r: r["dense_flops"])
        if not pts:
            continue
        if method in ("baseline", "baseline_ft"):
            fig.add_hline(y=100 * pts[0]["top1"], line_dash="dash" if method == "baseline_ft" else "dot",
                          annotation_text=method, annotation_position="bottom left")
        ses = [_se(r) for r in pts]
        fig.add_trace(go.Scatter(x=[r["dense_flops"] / 1e6 for r in pts], y=[100 * r["top1"] for r in pts],
                                 error_y=dict(type="data", array=[100 * (v or 0.0) for v in ses],
                                              visible=any(v is not None for v in ses)),
                                 mode="lines+markers", name=method,
                                 text=[f"target {r['target_flops']:.2f}, speedup {r['speedup_b64'] or 0:.2f}x"
                                       for r in pts]))
    failed = sorted({r["method"] for r in result["rows"] if r["status"] != "ok"})
    title = f"{result['name']}: top-1 vs dense FLOPs ({result['model']}, {result['profile']} profile)"
    if failed:
        title += f"<br><sub>failed: {', '.join(failed)} (see the table)</sub>"
    fig.update_layout(title=title, xaxis_title="dense MFLOPs per image (FlopCounterMode, attention included)",
                      yaxis_title="test top-1 (%; mean ± SE over seeds)", template="plotly_white", width=900, height=560)
    fig.write_html(out_dir / f"{name}.html", include_plotlyjs="cdn")
    try:
        fig.write_image(out_dir / f"{name}.png", scale=1)
    except Exception as exc:  # kaleido missing, or no Chrome for it
        log.warning("No PNG figure (%s: %s); the HTML figure was written.", type(exc).__name__, exc)


# ============================================================================ RESULTS.md
#: The targets each benchmark section checks (issue 7's quick/full runs; issue 11's standard profile).
TARGETS: dict[str, dict[str, float]] = {
    "issue7": {"tp_gap_05": 1.0, "ctrl_gap": -1.5, "speedup": 1.6, "iht_red": 2.0, "iht_drop": 1.0},
    "issue11": {"tp_gap_05": 1.0, "tp_gap_03": 1.5, "ctrl_gap": 0.0, "speedup": 1.5, "iht_red": 2.0, "iht_drop": 0.5},
}


def target_checks(result: dict[str, Any]) -> list[str]:
    """The issue's targets, measured; misses say by how much (issue 11's for the standard profile)."""
    t = TARGETS["issue11" if result.get("profile") == "standard" else "issue7"]
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    ctrl = next((r for r in rows if r["method"] == "baseline_ft"), None)
    n_test = result["split"].get("test", 0) or 1
    out = []

    def noise(p: float) -> float:  # one standard error of a difference of two accuracies on n_test images
        return 100 * math.sqrt(2 * p * (1 - p) / n_test)

    def at(target: float) -> dict[str, dict[str, Any]]:
        return {r["method"]: r for r in rows if abs(r["target_flops"] - target) < 1e-9}

    get = at(0.5)
    av = get.get("accelvit")
    for target, key in ((0.5, "tp_gap_05"), (0.3, "tp_gap_03")):
        if key not in t:
            continue
        g = at(target)
        a = g.get("accelvit")
        tps = [r for m, r in g.items() if m.startswith("tp_")]
        if a and tps:
            best = max(tps, key=lambda r: r["top1"])
            gap = 100 * (a["top1"] - best["top1"])
            out.append(f"accelvit vs Torch-Pruning's best ({best['method']}) at {target}: {gap:+.2f} points "
                       f"(target >= +{t[key]}): " + ("met" if gap >= t[key] else f"missed by {t[key] - gap:.2f} points")
                       + f"; one standard error of such a difference on {n_test} test images is {noise(a['top1']):.2f}.")
    if av and ctrl:
        gap = 100 * (av["top1"] - ctrl["top1"])
        out.append(f"accelvit at 0.5 vs the unpruned baseline finetuned equally: {gap:+.2f} points (target >= "
                   f"{t['ctrl_gap']:+.1f}): " + ("met" if gap >= t["ctrl_gap"] else
                                                   f"missed by {t['ctrl_gap'] - gap:.2f} points") + ".")
    if av and av.get("speedup_b64"):
        s = av["speedup_b64"]
        out.append(f"CPU speedup at batch 64, 0.5 of the dense FLOPs: {s:.2f}x (paired {av['paired_speedup_b64']:.2f}x; "
                   f"target >= {t['speedup']}x): " + ("met" if s >= t["speedup"] else
                                                      f"missed by {t['speedup'] - s:.2f}x") + ".")
    iht = get.get("accelvit_iht")
    if av and iht:
        red = av["nonzero_params"] / max(iht["nonzero_params"], 1)
        drop = 100 * (av["top1"] - iht["top1"])
        ok = red >= t["iht_red"] and drop <= t["iht_drop"]
        out.append(f"IHT: nonzeros {av['nonzero_params']:,} -> {iht['nonzero_params']:,} ({red:.2f}x fewer; target >= "
                   f"{t['iht_red']:g}x) for {drop:+.2f} points of top-1 (target <= {t['iht_drop']}): "
                   + ("met" if ok else "missed") + ".")
    return out


def differences(result: dict[str, Any]) -> list[str]:
    """accelvit against every other pruned method at each target: the difference of the mean top-1 and
    its standard error over the seeds (with one seed, the test-set noise of a difference instead)."""
    rows = [r for r in result["rows"] if r["status"] == "ok" and r.get("top1") is not None]
    n_test = result["split"].get("test", 0) or 1
    out = []
    for target in sorted({r["target_flops"] for r in rows if r["target_flops"] < 1}, reverse=True):
        at = {r["method"]: r for r in rows if r["target_flops"] == target}
        av = at.get("accelvit")
        if av is None:
            continue
        parts = []
        for m in result["method_order"]:
            if m in at and m != "accelvit":
                d, se = diff(av, at[m])
                parts.append(f"{m} {d:+.2f}" + (f" ± {se:.2f}" if se is not None else ""))
        if not parts:
            continue
        p = av["top1"]
        noise = 100 * math.sqrt(2 * p * (1 - p) / n_test)
        seeds = av.get("n_seeds") or 1
        basis = (f"± one standard error over {seeds} seeds" if _se(av) is not None else
                 f"one seed: a difference of two accuracies on {n_test} test images has a standard error of "
                 f"about {noise:.2f}, seed-to-seed spread not included")
        out.append(f"at {target:g}: accelvit minus " + "; ".join(parts) + f" points ({basis}).")
    return out


def append_results_md(result: dict[str, Any], path: Path, out_dir: Path, name: str,
                      section: str | None = None) -> None:
    m = result["machine"]
    s = result["settings"]
    b = result["baseline"]
    section = section or result.get("section") or SECTION
    held, kd = result.get("heldout"), result.get("distill")
    rel = os.path.relpath(out_dir, path.parent)
    fails = [f"`{r['method']}` at {r['target_flops']}: {r['status']}" for r in result["rows"] if r["status"] != "ok"]
    lines = [
        f"### {name} ({result['started'].replace('T', ' ')[:16]}, profile `{result['profile']}`)", "",
        f"Command: `{result['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, training on {m['train_device']}, "
        f"torch {m['torch']}, torch-pruning {result['torch_pruning']}; load average {m['load_start']} at the start, "
        f"{m['load_end']} at the end.  ",
        f"Wall time: {result['wall_seconds'] / 60:.1f} min.  ",
        f"Data: {result['split'].get('method')}, {result['split'].get('train')} train / {result['split'].get('val')} "
        f"val / {result['split'].get('test')} test images, {result['model']} at {result['input_size'][1]} px"
        + (f"; the test images are every image the baseline never saw ({held['unseen_test']}; it trained on "
           f"{held['baseline_train']}, as `{os.path.basename(held['baseline_record'])}` records)"
           if held else "") + ".  ",
        f"Baseline: {s['epochs']} epochs (lr {s['lr']}), test top-1 {100 * b['top1']:.2f}%"
        f"{' (reused from cache)' if b.get('reused') else ''}; every method and `baseline_ft` then get "
        f"{s['finetune_epochs']} finetune epochs"
        + (f" (at most {s['finetune_steps']} steps of {s['batch_size']} images)" if s.get("finetune_steps") else "")
        + f" (AdamW, lr {s['finetune_lr']}, warmup "
        f"{100 * result['finetune'].get('warmup_frac', 0):g}% + cosine; accelvit's one finetune default"
        + (f", distilled from the unpruned baseline with alpha {kd['alpha']:g}, T {kd['temperature']:g} unless the "
           f"KD column says off" if kd else "")
        + f"); seeds {', '.join(str(x) for x in result.get('seeds') or [0])} (top-1: mean ± standard error over "
        f"the seeds when more than one). accelvit "
        f"direction {result['direction']}; {s['calib_batches']} calibration batches; speedup = "
        f"`accelvit.metrics.compare` at batch 64 on the CPU, {s['speed_reps']} interleaved pairs"
        f"{'' if not s.get('speed_threads') else ', ' + str(s['speed_threads']) + ' thread(s)'}.", "",
        markdown_table(result), "",
        f"Figure: `{rel}/{name}.png` (interactive: `{rel}/{name}.html`); rows: `{rel}/{name}.csv`.", "",
    ]
    checks = target_checks(result)
    if checks:
        lines += ["Targets (measured):", ""] + [f"- {c}" for c in checks] + [""]
    diffs = differences(result)
    if diffs:
        lines += ["Differences in top-1 points:", ""] + [f"- {c}" for c in diffs] + [""]
    if fails:
        lines += ["Recorded failures:", ""] + [f"- {f}" for f in fails] + [""]
    block = "\n".join(lines)
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    match = pattern.search(text)
    if match:
        section = match.group(0).rstrip("\n") + "\n\n" + block + "\n"
        text = text[:match.start()] + section + ("\n" if match.end() < len(text) else "") + text[match.end():]
    else:
        intro = ("Accuracy vs dense FLOPs on real data, accelvit against Torch-Pruning on one baseline with one "
                 "finetune budget: `python -m bench.pareto` (see its docstring). One block per run, newest last.")
        text = text.rstrip("\n") + f"\n\n{section}\n\n{INTROS.get(section, intro)}\n\n{block}\n"
    path.write_text(text)
    log.info("Appended the run to %s.", path)
