"""Tables and Plotly figures built from the run store's DataFrames (pure functions).

Inputs are the frames of :mod:`accelvit.runs` (``runs_df``, ``metrics_df``,
``progress_df``) and the per-layer table of :func:`accelvit.metrics.layer_table`
(the pipeline's ``layers_<stage>.csv`` artifacts). Nothing here touches Streamlit, the store
or a model, so every figure is unit-tested on hand-made frames.

Units: accuracies are plotted in percent; FLOPs, parameters and bytes are plotted as they
are measured (Plotly's SI tick labels make them readable), so a point's ``x`` is exactly the
stored number.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..runs.queries import AFTER, BEFORE, INTERLEAVED, SEPARATE, add_speedups, stage_ratios
from ..runs.queries import BASELINE as BASELINE_METHOD

#: x-axis choices of the accuracy trade-off chart: column -> (axis title, how it was measured).
TRADEOFF_METRICS: dict[str, tuple[str, str]] = {
    "dense_flops": ("Dense FLOPs per image",
                    "Dense FLOPs: 2 x the multiply-adds of one forward pass at batch 1, every matrix product "
                    "counted in full, attention included (torch FlopCounterMode)"),
    "effective_flops": ("Effective FLOPs per image",
                        "Effective FLOPs: dense FLOPs with each linear layer's share scaled by its fraction of "
                        "nonzero weights, what a sparse kernel could reach"),
    "nonzero_params": ("Nonzero parameters", "Nonzero parameters: weights and biases that are not zero, over "
                                             "every parameter of the model"),
    "size_bytes": ("Size on disk (bytes)",
                   "Size on disk: the smaller of the two files really written, dense fp32 safetensors or the "
                   "bitmask + values sparse form"),
}

COLORS = {"before": "#6e7781", "after": "#1f6feb", "pruned": "#d29922", "control": "#8250df",
          "frontier": "#cf222e"}
PRUNE_COLUMNS = ("head_ratio", "mlp_ratio", "rank_ratio", "energy", "sparsity")


# ----------------------------------------------------------------------------- formatting
def fmt_si(value: Any, unit: str = "") -> str:
    """``92_700_000 -> '92.7 M'``; missing values -> an en dash."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(v):
        return "–"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g} {suffix}{unit}"
    return f"{v:.3g} {unit}".rstrip()


def fmt_pct(value: Any, digits: int = 1) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if not math.isfinite(v) else f"{100 * v:.{digits}f}%"


def short_module(name: str) -> str:
    """``layers.0.blocks.1.attn.qkv -> s0.b1.qkv``; other names are kept."""
    m = re.match(r"^layers\.(\d+)\.blocks\.(\d+)\.(?:attn|mlp)(?:\.(.+))?$", str(name))
    if m:
        return f"s{m.group(1)}.b{m.group(2)}" + (f".{m.group(3)}" if m.group(3) else ".attn")
    m = re.match(r"^layers\.(\d+)\.(.+)$", str(name))
    if m:
        return f"s{m.group(1)}.{m.group(2)}"
    return str(name)


def _num(s: Any) -> pd.Series:
    return pd.to_numeric(s, errors="coerce")


# ----------------------------------------------------------------------------- frames
def with_size(metrics: pd.DataFrame) -> pd.DataFrame:
    """Add ``size_bytes``: the smaller of the dense and the sparse file size of each row."""
    df = metrics.copy()
    dense = _num(df["size_dense_bytes"]) if "size_dense_bytes" in df else pd.Series(np.nan, index=df.index)
    sparse = _num(df["size_sparse_bytes"]) if "size_sparse_bytes" in df else pd.Series(np.nan, index=df.index)
    df["size_bytes"] = pd.concat([dense, sparse], axis=1).min(axis=1, skipna=True)
    return df


def summarize_runs(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """The Home page's runs table: one row per run, newest first.

    Columns: ``id, name, status, progress, top1_before, top1_after, top1_delta,
    dense_flops_reduction, effective_flops_reduction, size_reduction, dataset, model, img_size``
    + the pruning ratios + ``stage, duration_s, created, error, speedup_b1, speedup_method``.
    Reductions are fractions removed (``1 - after / before``); size compares the smaller file
    of each stage; the speedup is the after stage's (:func:`accelvit.runs.queries.add_speedups`).
    """
    cols = ["id", "name", "status", "progress", "top1_before", "top1_after", "top1_delta", "dense_flops_reduction",
            "effective_flops_reduction", "size_reduction", "dataset", "model", "img_size", *PRUNE_COLUMNS,
            "stage", "duration_s", "created", "error", "speedup_b1", "speedup_method"]
    if runs is None or runs.empty:
        return pd.DataFrame(columns=cols)
    out = runs.copy()
    for c in cols:
        if c not in out.columns:
            out[c] = np.nan
    m = with_size(metrics) if metrics is not None and not metrics.empty else None
    if m is not None:
        def col(stage: str, c: str) -> pd.Series:
            rows = m[m["stage"] == stage].drop_duplicates("run_id").set_index("run_id")
            return out["id"].map(_num(rows[c])) if c in rows else pd.Series(np.nan, index=out.index)

        out["top1_before"] = col(BEFORE, "top1")
        out["top1_after"] = col(AFTER, "top1")
        out["top1_delta"] = out["top1_after"] - out["top1_before"]
        ratios = stage_ratios(m, [c for c in ("dense_flops", "effective_flops", "size_bytes") if c in m.columns])
        for c, name in (("dense_flops", "dense_flops_reduction"), ("effective_flops", "effective_flops_reduction"),
                        ("size_bytes", "size_reduction")):
            out[name] = 1 - out["id"].map(ratios[c]) if c in ratios else np.nan
        sp = add_speedups(m.copy())
        sp = sp[sp["stage"] == AFTER].drop_duplicates("run_id").set_index("run_id")
        out["speedup_b1"] = out["id"].map(sp["speedup_b1"])
        out["speedup_method"] = out["id"].map(sp["speedup_method"])
    for c in ("progress", "top1_before", "top1_after", "top1_delta", "dense_flops_reduction",
              "effective_flops_reduction", "size_reduction", "duration_s", "speedup_b1", *PRUNE_COLUMNS):
        out[c] = _num(out[c])
    return out[cols].reset_index(drop=True)


def tradeoff_points(metrics: pd.DataFrame, x: str = "effective_flops",
                    stages: tuple[str, ...] = (BEFORE, AFTER)) -> pd.DataFrame:
    """``run_id, name, stage, x, top1`` of every measured (run, stage) with both numbers."""
    if x not in TRADEOFF_METRICS:
        raise ValueError(f"unknown trade-off metric {x!r}; use one of {list(TRADEOFF_METRICS)}")
    cols = ["run_id", "name", "stage", "x", "top1"]
    if metrics is None or metrics.empty:
        return pd.DataFrame(columns=cols)
    df = with_size(metrics)
    df = df[df["stage"].isin(stages)].copy()
    df["x"] = _num(df[x])
    df["top1"] = _num(df["top1"])
    df = df.dropna(subset=["x", "top1"])
    return df[cols].reset_index(drop=True)


def pareto_front(points: pd.DataFrame, x: str = "x", y: str = "top1") -> pd.DataFrame:
    """The points no other point beats (lower or equal ``x`` and higher or equal ``y``,
    one strictly), sorted by ``x``. Ties in both keep the first."""
    if points is None or points.empty:
        return points.iloc[0:0] if points is not None else pd.DataFrame()
    p = points.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False], kind="stable")
    keep, best = [], -math.inf
    for idx, yy in zip(p.index, p[y]):
        if yy > best:
            keep.append(idx)
            best = yy
    return p.loc[keep]


def tradeoff_figure(metrics: pd.DataFrame, x: str = "effective_flops", title: str | None = None,
                    height: int = 420) -> go.Figure:
    """Accuracy against ``x`` (a key of :data:`TRADEOFF_METRICS`).

    Traces (by ``name``): ``baseline (before)`` stars, ``pruned (after)`` dots, ``Pareto
    frontier`` (a staircase through the non-dominated points of both). Every run that has
    both points gets an arrow from its baseline to its pruned model (layout annotations).
    """
    label, how = TRADEOFF_METRICS[x]
    pts = tradeoff_points(metrics, x)
    fig = go.Figure()
    hover = "%{customdata[0]}<br>%{customdata[1]}<br>" + label + ": %{x:.4s}<br>top-1: %{y:.2f}%<extra></extra>"
    for stage, trace_name, symbol, size in ((BEFORE, "baseline (before)", "star", 15),
                                             (AFTER, "pruned (after)", "circle", 11)):
        s = pts[pts["stage"] == stage]
        fig.add_trace(go.Scatter(
            x=s["x"].tolist(), y=(s["top1"] * 100).tolist(), mode="markers", name=trace_name,
            marker=dict(symbol=symbol, size=size, color=COLORS[stage], line=dict(width=1, color="white")),
            customdata=s[["name", "run_id"]].values.tolist(), hovertemplate=hover))
    front = pareto_front(pts)
    fig.add_trace(go.Scatter(
        x=front["x"].tolist(), y=(front["top1"] * 100).tolist(), mode="lines+markers", name="Pareto frontier",
        line=dict(color=COLORS["frontier"], dash="dash", shape="hv", width=2),
        marker=dict(symbol="circle-open", size=18, color=COLORS["frontier"], line=dict(width=2)),
        customdata=front[["name", "run_id"]].values.tolist(), hovertemplate=hover))
    b = pts[pts["stage"] == BEFORE].drop_duplicates("run_id").set_index("run_id")
    a = pts[pts["stage"] == AFTER].drop_duplicates("run_id").set_index("run_id")
    for rid in a.index.intersection(b.index):
        fig.add_annotation(x=float(a.at[rid, "x"]), y=float(a.at[rid, "top1"]) * 100,
                           ax=float(b.at[rid, "x"]), ay=float(b.at[rid, "top1"]) * 100,
                           xref="x", yref="y", axref="x", ayref="y", text="", showarrow=True,
                           arrowhead=3, arrowsize=1.2, arrowwidth=1.5, arrowcolor="rgba(31,111,235,0.55)",
                           standoff=6, startstandoff=8)
    fig.update_layout(
        title=title or f"Top-1 accuracy vs {label[0].lower() + label[1:]}", height=height, margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        xaxis=dict(title=label, tickformat="~s", rangemode="tozero"),
        yaxis=dict(title="test top-1 (%)"), meta={"metric": x, "measured": how})
    if pts.empty:
        fig.add_annotation(text="No finished runs yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


SPEEDUP_POINT_COLUMNS = ["run_id", "name", "dense_reduction", "effective_reduction", "speedup_b1", "speedup_batch",
                         "speedup_method", "device", "device_name", "why_slower"]


def speedup_points(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run with a before and an after row: FLOP reduction factors (before / after, from
    :func:`accelvit.runs.queries.stage_ratios`) and the measured speedups of the after row
    (:func:`accelvit.runs.queries.add_speedups`: the stored interleaved comparison, else two
    separate timings, as ``speedup_method`` says), the device they were timed on, and, where
    the speedup is below 1, why (:func:`slower_reasons`)."""
    cols = SPEEDUP_POINT_COLUMNS
    if metrics is None or metrics.empty:
        return pd.DataFrame(columns=cols)
    r = stage_ratios(metrics, [c for c in ("dense_flops", "effective_flops") if c in metrics.columns])
    if r.empty:
        return pd.DataFrame(columns=cols)
    m = add_speedups(metrics.copy())
    after = m[m["stage"] == AFTER].drop_duplicates("run_id").set_index("run_id").reindex(r.index)
    out = pd.DataFrame({"run_id": r.index, "name": r["name"].to_numpy()})
    for c, name in (("dense_flops", "dense_reduction"), ("effective_flops", "effective_reduction")):
        out[name] = 1.0 / r[c].to_numpy() if c in r else np.nan  # factors before / after
    for c in ("speedup_b1", "speedup_batch"):
        out[c] = _num(after[c]).to_numpy()
    for c in ("speedup_method", "device", "device_name"):
        out[c] = after[c].to_numpy() if c in after else None
    out["why_slower"] = [" ".join(slower_reasons(row)) if _num(pd.Series([row.get("speedup_b1")]))[0] < 1 else ""
                         for row in after.reset_index().to_dict("records")]
    return out[cols]


def _flag(value: Any) -> bool:
    """A config value that switches something on (a ratio > 0, a set energy, True)."""
    if value is None or value is False:
        return False
    try:
        v = float(value)
    except (TypeError, ValueError):
        return bool(value)
    return math.isfinite(v) and v > 0


def slower_reasons(row: Any) -> list[str]:
    """Why a pruned model can time slower than its baseline (a speedup below 1), for one
    ``metrics_df`` row: only the reasons that apply to what the run did (its prune config and
    its FLOPs), and the timing spread when it covers the difference."""
    get = row.get if hasattr(row, "get") else (lambda k, d=None: getattr(row, k, d))
    cpu = str(get("device") or "cpu").startswith("cpu")
    out = []
    if _flag(get("rank_ratio")) or _flag(get("energy")):
        out.append("SVD replaced each factorised linear layer by two thinner ones: two matrix products where "
                   "there was one, and at these sizes the extra call and memory pass can cost more than the "
                   "FLOPs saved.")
    if _flag(get("head_ratio")) or _flag(get("mlp_ratio")) or _flag(get("target_flops")):
        out.append("Fewer heads and a narrower MLP make smaller matrices, which keep the "
                   + ("CPU's vector units" if cpu else "GPU") + " less busy; at batch 1 the time is mostly "
                   "per-operation overhead (norms, reshapes, " + ("thread hand-offs" if cpu else "kernel launches")
                   + ") that pruning does not remove.")
    if _flag(get("sparsity")):
        out.append("IHT zeros are still multiplied: dense kernels do not skip them, so sparsity lowers the "
                   "effective FLOPs but not the time.")
    if not out:
        out.append("Nothing in this run makes the dense computation smaller.")
    return out


def speedup_figure(metrics: pd.DataFrame, height: int = 400) -> go.Figure:
    """Measured speedup (batch 1, baseline / pruned latency) against the FLOP reduction factor.

    Two traces share the y: the dense and the effective FLOP reduction; the ``ideal`` line is
    speedup = reduction and the ``no speedup`` line y = 1. Speedups come from the interleaved
    comparison each run stored (filled markers); runs from older versions only have two
    separate timings (open markers, said in the hover). The title names the device(s). Dense
    kernels cannot turn zeros into speed, so the effective points usually sit far right.
    """
    pts = speedup_points(metrics).dropna(subset=["speedup_b1"])
    devices = {_device_text(d, dv) for d, dv in zip(pts["device_name"], pts["device"])} - {"?"}
    devices = sorted(d for d in devices if not any(e.startswith(d + " ") for e in devices))  # "cpu" in "cpu (...)"
    fig = go.Figure()
    pts = pts.assign(how=[("timed interleaved with the baseline" if m == INTERLEAVED else
                           "from two separate timings (run stored before interleaved timing)")
                          for m in pts["speedup_method"]],
                     where=[_device_text(d, dv) for d, dv in zip(pts["device_name"], pts["device"])],
                     why=[("<br>below 1: the pruned model is slower here.<br>" + _wrap(w)) if w else ""
                          for w in pts["why_slower"]])
    hover = ("%{customdata[0]}<br>FLOPs / %{x:.2f}<br>speedup x%{y:.2f} on %{customdata[2]}<br>%{customdata[3]}"
             "%{customdata[4]}<extra></extra>")
    for col, name, symbol in (("dense_reduction", "vs dense FLOP reduction", "circle"),
                              ("effective_reduction", "vs effective FLOP reduction", "diamond")):
        s = pts.dropna(subset=[col])
        symbols = [symbol if m == INTERLEAVED else f"{symbol}-open" for m in s["speedup_method"]]
        fig.add_trace(go.Scatter(x=s[col].tolist(), y=s["speedup_b1"].tolist(), mode="markers", name=name,
                                 marker=dict(symbol=symbols, size=11),
                                 customdata=s[["name", "run_id", "where", "how", "why"]].values.tolist(),
                                 hovertemplate=hover))
    hi = max([1.0, *pts["dense_reduction"].dropna().tolist(), *pts["effective_reduction"].dropna().tolist(),
              *pts["speedup_b1"].dropna().tolist()]) * 1.1
    fig.add_trace(go.Scatter(x=[1.0, hi], y=[1.0, hi], mode="lines", name="ideal (speedup = reduction)",
                             line=dict(color="#8c959f", dash="dot"), hoverinfo="skip"))
    fig.add_hline(y=1.0, line=dict(color="#cf222e", width=1, dash="dash"), annotation_text="no speedup",
                  annotation_position="bottom right")
    on = f" on {', '.join(devices)}" if devices else ""
    fig.update_layout(title=f"Measured speedup (batch 1){on} vs FLOP reduction", height=height,
                      margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
                      xaxis=dict(title="FLOP reduction (before / after)"),
                      yaxis=dict(title="speedup (baseline / pruned latency)", rangemode="tozero"),
                      meta={"devices": devices})
    if pts.empty:
        fig.add_annotation(text="No run with latency measured before and after", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def _device_text(name: Any, device: Any) -> str:
    """The device's long name (``cpu (2 threads, 16 cores)``), else its short one, else ``?``."""
    for v in (name, device):
        if isinstance(v, str) and v:
            return v
    return "?"


def _wrap(text: str, width: int = 60) -> str:
    """Line breaks (``<br>``) for Plotly hover text."""
    import textwrap

    return "<br>".join(textwrap.wrap(text, width))


# ----------------------------------------------------------------------------- live progress
def progress_curves(progress: pd.DataFrame) -> pd.DataFrame:
    """Training rows of a run's ``progress_df`` with ``epoch_x`` (fractional epoch)."""
    cols = ["stage", "epoch_x", "loss", "accuracy", "images_per_s"]
    if progress is None or progress.empty:
        return pd.DataFrame(columns=cols)
    df = progress.copy()
    df = df[_num(df["epoch"]).notna()]
    if df.empty:
        return pd.DataFrame(columns=cols)
    steps = _num(df["steps"]).replace(0, np.nan)
    frac = (_num(df["step"]) / steps).fillna(0.0)
    df["epoch_x"] = _num(df["epoch"]) - 1 + frac
    return df[cols].reset_index(drop=True)


def progress_figure(progress: pd.DataFrame, height: int = 300) -> go.Figure:
    """Training loss and accuracy by (fractional) epoch, one line per training stage."""
    cur = progress_curves(progress)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "training accuracy (%)"))
    palette = {"baseline": "#1f6feb", "finetune": "#2da44e", "control": "#8250df"}
    for stage, s in cur.groupby("stage", sort=False):
        color = palette.get(stage, "#6e7781")
        fig.add_trace(go.Scatter(x=s["epoch_x"].tolist(), y=_num(s["loss"]).tolist(), mode="lines+markers",
                                 name=f"{stage}", legendgroup=stage, line=dict(color=color)), row=1, col=1)
        fig.add_trace(go.Scatter(x=s["epoch_x"].tolist(), y=(_num(s["accuracy"]) * 100).tolist(),
                                 mode="lines+markers", name=f"{stage}", legendgroup=stage, showlegend=False,
                                 line=dict(color=color)), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.1, xanchor="right", x=1.0))
    return fig


# ----------------------------------------------------------------------------- per-layer pictures
_ATTN = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.attn$")


def heads_matrix(layers: pd.DataFrame) -> pd.DataFrame:
    """``stage, block, heads_kept, heads_total, kept_fraction`` of every attention module."""
    cols = ["stage", "block", "heads_kept", "heads_total", "kept_fraction"]
    if layers is None or layers.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for _, r in layers[layers["kind"] == "attn"].iterrows():
        m = _ATTN.match(str(r["module"]))
        if not m:
            continue
        kept, total = _num(pd.Series([r["heads_kept"]]))[0], _num(pd.Series([r["heads_total"]]))[0]
        rows.append({"stage": int(m.group(1)), "block": int(m.group(2)), "heads_kept": kept,
                     "heads_total": total, "kept_fraction": kept / total if total else np.nan})
    return pd.DataFrame(rows, columns=cols)


def heads_heatmap(layers: pd.DataFrame, height: int = 260) -> go.Figure:
    """Heads kept per block: rows are stages, columns blocks; colour = fraction kept, text = kept/total."""
    hm = heads_matrix(layers)
    fig = go.Figure()
    if not hm.empty:
        stages = sorted(hm["stage"].unique())
        blocks = sorted(hm["block"].unique())
        z = [[np.nan] * len(blocks) for _ in stages]
        text = [[""] * len(blocks) for _ in stages]
        for _, r in hm.iterrows():
            i, j = stages.index(r["stage"]), blocks.index(r["block"])
            z[i][j] = float(r["kept_fraction"])
            text[i][j] = f"{int(r['heads_kept'])}/{int(r['heads_total'])}"
        fig.add_trace(go.Heatmap(
            z=z, x=[f"block {b}" for b in blocks], y=[f"stage {s}" for s in stages], text=text,
            texttemplate="%{text}", zmin=0, zmax=1, colorscale="Blues",
            colorbar=dict(title="kept", tickformat=".0%"),
            hovertemplate="%{y}, %{x}: %{text} heads kept<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
    else:
        fig.add_annotation(text="No attention layers in the table", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5)
    fig.update_layout(title="Attention heads kept per block", height=height, margin=dict(l=10, r=10, t=50, b=10))
    return fig


LINEAR_KINDS = ("qkv", "proj", "fc1", "fc2", "reduction", "head", "linear")


def linear_table(layers: pd.DataFrame) -> pd.DataFrame:
    """``module, label, kind, rank, full_rank, rank_fraction, density`` of every linear layer."""
    cols = ["module", "label", "kind", "rank", "full_rank", "rank_fraction", "density"]
    if layers is None or layers.empty:
        return pd.DataFrame(columns=cols)
    df = layers[layers["kind"].isin(LINEAR_KINDS)].copy()
    df["rank"] = _num(df["rank"])
    df["full_rank"] = _num(df["full_rank"])
    df["rank_fraction"] = df["rank"] / df["full_rank"]
    df["density"] = _num(df["density"])
    df["label"] = [short_module(m) for m in df["module"]]
    return df[cols].reset_index(drop=True)


def linear_bars(layers: pd.DataFrame, height: int = 340) -> go.Figure:
    """Per linear layer: the rank kept (rank / full rank) and the weight density, side by side."""
    lt = linear_table(layers)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=lt["label"].tolist(), y=lt["rank_fraction"].tolist(), name="rank / full rank",
                         customdata=lt[["rank", "full_rank", "module"]].values.tolist(),
                         hovertemplate="%{customdata[2]}<br>rank %{customdata[0]} of %{customdata[1]}<extra></extra>"))
    fig.add_trace(go.Bar(x=lt["label"].tolist(), y=lt["density"].tolist(), name="weight density (nonzero)",
                         customdata=lt[["module"]].values.tolist(),
                         hovertemplate="%{customdata[0]}<br>density %{y:.1%}<extra></extra>"))
    fig.update_layout(title="Rank and density per linear layer", barmode="group", height=height,
                      margin=dict(l=10, r=10, t=50, b=10), yaxis=dict(range=[0, 1.05], tickformat=".0%"),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


# ----------------------------------------------------------------------------- tables
METRICS_TABLE_COLUMNS = ["run_id", "name", "status", "stage", "top1", "top5", "dense_flops", "effective_flops",
                         "params", "nonzero_params", "size_dense_bytes", "size_sparse_bytes", "latency_ms_b1",
                         "latency_ms_batch", "flops_ratio", "params_ratio", "size_ratio", "speedup_b1",
                         "speedup_batch", "speedup_method", "top1_delta", "model", "dataset", "img_size",
                         *PRUNE_COLUMNS, "device", "device_name", "num_threads", "batch_size"]

#: What a table cell shows for a missing value; pass it to ``st.dataframe(placeholder=...)`` too
#: (Streamlit draws missing cells itself, as "None" unless told otherwise).
MISSING = "–"
STAGE_LABELS = {"before": "baseline", "pruned": "pruned", "after": "pruned + finetuned", "control": "control"}


def metrics_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The Results page's metrics, raw (the CSV download): store columns in a fixed order."""
    if metrics is None or metrics.empty:
        return pd.DataFrame(columns=METRICS_TABLE_COLUMNS)
    df = metrics.copy()
    for c in METRICS_TABLE_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    return df[METRICS_TABLE_COLUMNS].reset_index(drop=True)


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt_percent(value: Any) -> str:
    """The tables' one percent format: ``0.3812 -> '38.1%'``."""
    v = _finite(value)
    return MISSING if v is None else f"{100 * v:.1f}%"


def fmt_points(value: Any) -> str:
    """A difference of two fractions in percentage points: ``-0.02 -> '−2.0 pts'``."""
    v = _finite(value)
    return MISSING if v is None else f"{100 * v:+.1f} pts".replace("-", "−")


def fmt_bytes(value: Any) -> str:
    """``23_105_280 -> '23.1 MB'`` (decimal units, as file managers show them)."""
    v = _finite(value)
    return MISSING if v is None else fmt_si(v, "B")


def fmt_count(value: Any) -> str:
    """``23_105_280 -> '23.1 M'``; small counts as they are (``'12'``)."""
    v = _finite(value)
    if v is None:
        return MISSING
    return f"{v:,.0f}" if abs(v) < 1000 and v == int(v) else fmt_si(v)


def fmt_ms(value: Any) -> str:
    """``86.8 -> '86.8 ms'``, ``1234 -> '1.23 s'``."""
    v = _finite(value)
    if v is None:
        return MISSING
    return f"{v / 1000:.3g} s" if v >= 1000 else f"{v:.3g} ms"


def fmt_seconds(value: Any) -> str:
    """``75 -> '1 min 15 s'``."""
    v = _finite(value)
    if v is None:
        return MISSING
    if v < 60:
        return f"{v:.0f} s"
    if v < 3600:
        return f"{int(v // 60)} min {int(v % 60):02d} s"
    return f"{int(v // 3600)} h {int(v % 3600 // 60):02d} min"


def fmt_speedup(value: Any, method: Any = INTERLEAVED) -> str:
    """``1.523 -> '1.52×'``; a speedup from two separate timings says so."""
    v = _finite(value)
    if v is None:
        return MISSING
    if method == BASELINE_METHOD:
        return "1× (reference)"
    return f"{v:.2f}×" + ("" if method == INTERLEAVED else " (separate)")


def fmt_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NA:
        return MISSING
    return str(value)


def _column(label: str, help: str | None = None, *, pinned: bool = False, width: str | None = None,
            type_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``st.column_config`` entry as the plain dict Streamlit takes (this module stays Streamlit-free)."""
    d: dict[str, Any] = {"label": label, "help": help, "pinned": pinned or None, "width": width}
    if type_config:
        d["type_config"] = type_config
    return d


def _view(df: pd.DataFrame, spec: dict[str, tuple], formats: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(Styler, column_config)``: the columns of ``spec`` present in ``df`` in its order, the
    numbers kept underneath (sorting stays numeric) and shown through ``formats``. ``df`` has a
    0..n-1 index."""
    cols = [c for c in spec if c in df.columns]
    data = df[cols]
    config = {c: _column(*spec[c][:2], **(spec[c][2] if len(spec[c]) > 2 else {})) for c in cols}
    styler = data.style.format({c: formats.get(c, fmt_text) for c in cols if c not in NO_STYLER}, na_rep=MISSING)
    return styler, config


#: Columns Streamlit draws itself (progress bars, dates): no display text from the Styler.
NO_STYLER = {"progress", "created"}


def _speedup_help(batch: str) -> str:
    return (f"Baseline latency / pruned latency at {batch}: both models timed interleaved (A,B then B,A) in one "
            "process on the device in 'Timed on', so machine load hits both alike; the median over the pairs. "
            "'(separate)': a run stored before interleaved timing, whose two latencies were measured minutes "
            "apart. Below 1: the pruned model is slower on that device (smaller matrices, SVD's two products "
            "per layer, and IHT zeros that dense kernels still multiply do not make it faster).")


def metrics_table_view(metrics: pd.DataFrame) -> tuple[Any, dict[str, Any]]:
    """The Results page's metrics table, readable: ``(Styler, column_config)`` for
    ``st.dataframe(view, column_config=config, hide_index=True, placeholder=MISSING)``.

    One row per run x stage, what matters first (accuracy, speedup, latency with its device,
    then FLOPs, parameters, sizes, the pruning settings, the run id). Numbers stay numbers
    underneath (sorting works); the display has units (``'23.1 MB'``, ``'86.8 ms'``,
    ``'38.1%'``), ``MISSING`` where nothing was measured; run name and stage are pinned.
    Pruning settings no row uses are left out.
    """
    df = metrics_table(metrics)
    if not df.empty:
        df = add_speedups(df.copy())
    df = df.reset_index(drop=True)
    df["timed_on"] = [fmt_text(n) if fmt_text(n) != MISSING else fmt_text(d)
                      for n, d in zip(df["device_name"], df["device"])]
    sizes = sorted({int(b) for b in _num(df["batch_size"]).dropna()})
    batch = f"batch {sizes[0]}" if len(sizes) == 1 else "the large batch"
    b = f"b={sizes[0]}" if len(sizes) == 1 else "batch"
    spec: dict[str, tuple] = {
        "name": ("Run", "The run's name (Experiment page).", {"pinned": True, "width": "medium"}),
        "stage": ("Model", "baseline: before pruning; pruned: right after pruning; pruned + finetuned: the final "
                           "model; control: the baseline finetuned as long.", {"pinned": True}),
        "top1": ("Top-1", "Test top-1 accuracy."),
        "top1_delta": ("Δ top-1", "Top-1 minus the baseline's, in percentage points."),
        "speedup_b1": ("Speedup b=1", _speedup_help("batch 1")),
        "speedup_batch": (f"Speedup {b}", _speedup_help(batch)),
        "latency_ms_b1": ("Latency b=1", "Median wall time of one forward pass at batch 1 on the device in "
                                         "'Timed on' (pruned models: from the interleaved comparison)."),
        "latency_ms_batch": (f"Latency {b}", f"Median wall time of one forward pass at {batch} on the device in "
                                             "'Timed on'."),
        "timed_on": ("Timed on", "The device the latencies were measured on, with its thread count."),
        "dense_flops": ("Dense FLOPs", TRADEOFF_METRICS["dense_flops"][1]),
        "effective_flops": ("Effective FLOPs", TRADEOFF_METRICS["effective_flops"][1]),
        "flops_ratio": ("FLOPs left", "Effective FLOPs as a share of the baseline's."),
        "nonzero_params": ("Nonzero params", TRADEOFF_METRICS["nonzero_params"][1]),
        "params": ("Params", "Parameters, zeros included."),
        "params_ratio": ("Params left", "Nonzero parameters as a share of the baseline's."),
        "size_dense_bytes": ("Size dense", "Bytes of the state dict written as dense fp32 safetensors."),
        "size_sparse_bytes": ("Size sparse", "Bytes of the same tensors in the bitmask + nonzero values form."),
        "size_ratio": ("Size left", "The sparse file as a share of the baseline's dense file."),
        "top5": ("Top-5", "Test top-5 accuracy."),
        "model": ("Architecture", None), "dataset": ("Data set", None), "img_size": ("Image px", "Input side."),
        "head_ratio": ("Heads cut", "Fraction of attention heads removed (config)."),
        "mlp_ratio": ("MLP cut", "Fraction of MLP hidden units removed (config)."),
        "rank_ratio": ("SVD rank", "Rank kept by the SVD factorisation, as a fraction (config)."),
        "energy": ("SVD energy", "Share of squared singular values the SVD rank keeps (config)."),
        "sparsity": ("Sparsity", "Fraction of zero weights IHT reaches during the finetune (config)."),
        "status": ("Status", None),
        "run_id": ("Run id", None),
    }
    df = df.drop(columns=[c for c in PRUNE_COLUMNS if _num(df[c]).fillna(0).eq(0).all()])
    pct = {c: fmt_percent for c in ("top1", "top5", "flops_ratio", "params_ratio", "size_ratio", *PRUNE_COLUMNS)}
    method = df["speedup_method"] if "speedup_method" in df else pd.Series(None, index=df.index)
    formats: dict[str, Any] = {
        **pct, "top1_delta": fmt_points, "dense_flops": fmt_si, "effective_flops": fmt_si,
        "nonzero_params": fmt_count, "params": fmt_count, "size_dense_bytes": fmt_bytes,
        "size_sparse_bytes": fmt_bytes, "latency_ms_b1": fmt_ms, "latency_ms_batch": fmt_ms,
        "img_size": fmt_count, "stage": lambda v: STAGE_LABELS.get(v, fmt_text(v)),
        "speedup_b1": fmt_speedup, "speedup_batch": fmt_speedup,
    }
    styler, config = _view(df, spec, formats)
    # a speedup's text says how it was measured: formatted per group of rows
    for m in (SEPARATE, BASELINE_METHOD):
        rows = list(np.flatnonzero((method == m).to_numpy()))
        if rows:
            styler = styler.format(lambda v, m=m: fmt_speedup(v, m), na_rep=MISSING,
                                   subset=pd.IndexSlice[rows, ["speedup_b1", "speedup_batch"]])
    return styler, config


def runs_table_view(runs: pd.DataFrame, metrics: pd.DataFrame) -> tuple[Any, dict[str, Any]]:
    """The Home page's runs table, readable: ``(Styler, column_config)`` for
    ``st.dataframe(view, column_config=config, hide_index=True, placeholder=MISSING)``.

    The rows and raw columns of :func:`summarize_runs` (numbers stay numbers underneath, so
    sorting works), shown with one percent format
    (``'38.1%'``), ``MISSING`` for what is not there, the status as text, the progress as a bar
    of whole percents (0-100, as on the live card),
    the run name pinned; pruning settings no run uses are left out. ``view.data`` holds the
    raw numbers (``summarize_runs``' columns, in display order).
    """
    t = summarize_runs(runs, metrics)
    t = t.drop(columns=[c for c in PRUNE_COLUMNS if _num(t[c]).fillna(0).eq(0).all()]).reset_index(drop=True)
    spec: dict[str, tuple] = {
        "name": ("Run", "The run's name (Experiment page).", {"pinned": True, "width": "medium"}),
        "status": ("Status", "queued, running, finished, failed, cancelled or interrupted."),
        "progress": ("Progress", "Share of the run's work done (stages weighted by their expected time).",
                     {"type_config": {"type": "progress", "format": "%d%%", "min_value": 0, "max_value": 100,
                                      "step": 1}}),
        "top1_after": ("Top-1", "Test top-1 accuracy of the pruned, finetuned model."),
        "top1_delta": ("Δ top-1", "Top-1 minus the baseline's, in percentage points."),
        "speedup_b1": ("Speedup b=1", _speedup_help("batch 1")),
        "effective_flops_reduction": ("Eff. FLOPs cut", "Share of effective FLOPs removed (dense FLOPs with each "
                                                        "linear layer scaled by its nonzero weights)."),
        "dense_flops_reduction": ("FLOPs cut", "Share of dense FLOPs removed (every matrix product counted in full)."),
        "size_reduction": ("Size cut", "Share of bytes on disk removed: the smaller file written (dense fp32 "
                                       "safetensors or the sparse bitmask form), after vs before."),
        "top1_before": ("Top-1 before", "Test top-1 accuracy of the baseline."),
        "dataset": ("Data set", None), "model": ("Architecture", None), "img_size": ("Image px", "Input side."),
        "head_ratio": ("Heads cut", "Fraction of attention heads removed (config)."),
        "mlp_ratio": ("MLP cut", "Fraction of MLP hidden units removed (config)."),
        "rank_ratio": ("SVD rank", "Rank kept by the SVD factorisation, as a fraction (config)."),
        "energy": ("SVD energy", "Share of squared singular values the SVD rank keeps (config)."),
        "sparsity": ("Sparsity", "Fraction of zero weights IHT reaches during the finetune (config)."),
        "stage": ("Stage", "The stage a run is in, or stopped in."),
        "duration_s": ("Duration", "Wall time from start to end (so far, while running)."),
        "created": ("Created", None, {"type_config": {"type": "datetime", "format": "YYYY-MM-DD HH:mm"}}),
        "error": ("Error", "Why the run failed.", {"width": "large"}),
        "id": ("Run id", None),
    }
    pct = {c: fmt_percent for c in ("top1_after", "top1_before", "effective_flops_reduction",
                                    "dense_flops_reduction", "size_reduction", *PRUNE_COLUMNS)}
    formats = {**pct, "top1_delta": fmt_points, "duration_s": fmt_seconds, "img_size": fmt_count,
               "speedup_b1": fmt_speedup}
    # whole percents, 0-100: the live card's format ("overall 38%"), not the grid's "37.99%"
    t["progress"] = (100 * _num(t["progress"]).fillna(0.0)).round()
    styler, config = _view(t, spec, formats)
    rows = list(np.flatnonzero((t["speedup_method"] == SEPARATE).to_numpy()))
    if rows:
        styler = styler.format(lambda v: fmt_speedup(v, SEPARATE), na_rep=MISSING,
                               subset=pd.IndexSlice[rows, ["speedup_b1"]])
    return styler, config


def latency_summary(stage_metrics: dict[str, Any] | None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the Results page says about one stage's latency: ``{"metrics": [(label, value, help)],
    "caption": str, "warning": str | None}`` from the stage's stored metrics dict (as in
    ``RunStore.get_run(id)["stages"][stage]``, best merged over its ``metrics_df`` row, which
    adds the speedup of runs stored before interleaved timing) and the run's prune config (for
    :func:`slower_reasons`).

    Every label names the device; speedups are the stored interleaved comparison's, or, for a
    run stored before interleaved timing, the ratio of two separate timings, said so.
    """
    d = stage_metrics or {}
    dev = str(d.get("device") or "?")
    where = str(d.get("device_name") or dev)
    lc = d.get("latency_compare") or {}
    method = d.get("speedup_method")
    out: dict[str, Any] = {"metrics": [], "caption": "", "warning": None}
    if _finite(d.get("latency_ms_b1")) is None:
        out["caption"] = "Latency: not measured for this model (the run had latency timing off)."
        return out
    points = {int(p["batch_size"]): p for p in lc.get("points") or [] if isinstance(p, dict)}
    big = max(points) if points else d.get("batch_size")
    big_label = f"batch {big}" if big else "the large batch"
    if method == INTERLEAVED and points:
        p1 = points.get(1) or next(iter(points.values()))
        out["metrics"] = [
            (f"Baseline, batch 1 ({dev})", fmt_ms(p1["baseline"]["median_ms"]),
             f"Median of {p1['baseline']['reps']} timed passes on {where}, interleaved with the pruned model."),
            (f"Pruned, batch 1 ({dev})", fmt_ms(p1["pruned"]["median_ms"]),
             f"Median of {p1['pruned']['reps']} timed passes on {where}, interleaved with the baseline."),
            (f"Speedup, batch 1 ({dev})", fmt_speedup(d.get("speedup_b1")),
             "Baseline median / pruned median; paired (median of per-pair ratios): "
             f"{fmt_speedup(d.get('paired_speedup_b1'))}."),
            (f"Speedup, {big_label} ({dev})", fmt_speedup(d.get("speedup_batch")),
             "Baseline median / pruned median; paired (median of per-pair ratios): "
             f"{fmt_speedup(d.get('paired_speedup_batch'))}."),
        ]
        n_threads = lc.get("num_threads", d.get("num_threads"))
        threads = f", {n_threads} threads" if n_threads and "thread" not in where else ""
        iqr = "; ".join(
            f"batch {bs}: baseline {fmt_ms(p['baseline']['p25_ms'])}–{fmt_ms(p['baseline']['p75_ms'])}, "
            f"pruned {fmt_ms(p['pruned']['p25_ms'])}–{fmt_ms(p['pruned']['p75_ms'])} ({p['pruned']['reps']} pairs)"
            for bs, p in sorted(points.items()))
        out["caption"] = (f"Speedup: baseline latency / pruned latency, both models timed interleaved (A,B then "
                          f"B,A) in one process on {where}{threads}, after {lc.get('warmup', '?')} warm-up pairs. "
                          "Middle half of the times "
                          f"(p25–p75): {iqr}.")
    else:
        s1 = _finite(d.get("speedup_b1"))
        compared = method != BASELINE_METHOD and s1 is not None
        out["metrics"] = [(f"Latency, batch 1 ({dev})", fmt_ms(d.get("latency_ms_b1")), f"Median, timed alone on {where}."),
                          (f"Latency, {big_label} ({dev})", fmt_ms(d.get("latency_ms_batch")),
                           f"Median, timed alone on {where}.")]
        if compared:
            out["metrics"].append((f"Speedup, batch 1 ({dev})", fmt_speedup(s1, SEPARATE),
                                   "Baseline latency / this latency: two separate timings."))
        out["caption"] = (f"Latency: median wall time per batch, this model timed alone on {where}."
                          + (" Its speedup divides two timings taken minutes apart (the run predates interleaved "
                             "timing, or its baseline could not be reloaded), so machine load can skew it."
                             if compared else ""))
    s1 = _finite(d.get("speedup_b1"))
    if s1 is not None and s1 < 1 and method != BASELINE_METHOD:
        reasons = slower_reasons({**(config or {}), "device": dev})
        out["warning"] = ("Speedup below 1: the pruned model is slower than the baseline on " + where + ". "
                          + " ".join(reasons))
    return out
