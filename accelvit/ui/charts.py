"""Plotly figures built from the run store's DataFrames, and the frames they plot (pure functions).

Inputs are the frames of :mod:`accelvit.runs` (``runs_df``, ``metrics_df``,
``progress_df``) and the per-layer table of :func:`accelvit.metrics.layer_table`
(the pipeline's ``layers_<stage>.csv`` artifacts). Nothing here touches Streamlit, the store
or a model, so every figure is unit-tested on hand-made frames. The tables and the display
formats (``fmt_*``, ``MISSING``) live in :mod:`accelvit.ui.tables`.

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

from ..runs.queries import AFTER, BEFORE, INTERLEAVED, add_speedups, stage_ratios
from ..text import plotly_escape

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


# ----------------------------------------------------------------------------- names and numbers
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
    pts["name"] = [plotly_escape(n) for n in pts["name"]]  # run names in the hover: text, never markup
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
    pts = pts.assign(name=[plotly_escape(n) for n in pts["name"]],  # run names in the hover: text, never markup
                     how=[("timed interleaved with the baseline" if m == INTERLEAVED else
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
