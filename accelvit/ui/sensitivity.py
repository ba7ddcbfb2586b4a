"""The sensitivity heatmap of the Results page: what the pruning measured per layer, beside what it kept.

Input is a run's ``prune_report`` (``PruneReport.to_dict()`` as stored in ``report.json`` and
the prune stage's event), whose ``sensitivity`` rows :class:`accelvit.prune.PruneReport`
documents. Pure functions: nothing here touches Streamlit, the store or a model. Kept apart
from :mod:`accelvit.ui.charts` so that module stays one topic under the guide's ~500 lines.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

#: Kinds of ``prune_report.sensitivity`` rows in column order, with their column label and unit name.
SENSITIVITY_KINDS: dict[str, tuple[str, str]] = {"heads": ("heads", "head"), "mlp": ("MLP", "hidden unit"),
                                                 "rank": ("rank", "rank")}
_CRITERION_TEXT = {"taylor": "Taylor score (loss change if removed)",
                   "taylor_signed": "signed Taylor score (ablation)",
                   "l1": "l1 weight magnitude (not a loss change)"}
_RANK_COLUMNS = ("qkv", "proj", "fc1", "fc2", "reduction", "head")
SENSITIVITY_COLUMNS = ["layer", "column", "kind", "module", "measure", "value", "normalized", "kept", "units", "text",
                       "what"]


def _layer_key(module: str) -> tuple[str, tuple]:
    """(row label, model-order key) of a module path: the block it sits in, a stage's downsample, or the head."""
    m = re.match(r"^layers\.(\d+)\.blocks\.(\d+)\.", module + ".")
    if m:
        return f"s{m.group(1)}.b{m.group(2)}", (int(m.group(1)), 1, int(m.group(2)))
    m = re.match(r"^layers\.(\d+)\.downsample\.", module + ".")
    if m:  # timm runs a stage's patch merging before its blocks
        return f"s{m.group(1)}.downsample", (int(m.group(1)), 0, 0)
    if module.startswith("head"):
        return "head", (math.inf, 0, 0)
    return module, (math.inf, -1, 0)


def _rank_column(module: str) -> str:
    last = "head" if module.startswith("head") else module.rsplit(".", 1)[-1]
    return f"rank {last}"


def _sensitivity_rows(report: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = (report or {}).get("sensitivity") or []
    return [r for r in rows if isinstance(r, dict) and r.get("kind") in SENSITIVITY_KINDS
            and r.get("measure") != "random"]


def sensitivity_frame(report: dict[str, Any] | None) -> pd.DataFrame:
    """One row per heatmap cell of a run's ``prune_report`` (the ``PruneReport`` as stored), in model order.

    ``value`` is the layer's measured sensitivity: for heads and MLP units the criterion's
    ``score_per_mflop`` where the FLOP target's sensitivity rule ranked by it (every row of the
    kind has it), else its ``score_mean`` per unit; for a factorised linear (``rank <kind>``
    columns) the ``energy_discarded`` at the kept rank. ``normalized`` is ``value`` divided by
    the largest value of its kind in the run (so kinds are comparable: 1 is the most sensitive
    layer of that kind). ``text`` is what was kept (``kept/units``, ``r<rank>/<full rank>``,
    ``dense``); ``what`` says what ``value`` is. Rows with ``random`` scores are left out.
    """
    rows = _sensitivity_rows(report)
    if not rows:
        return pd.DataFrame(columns=SENSITIVITY_COLUMNS)
    cfg = (report or {}).get("config") or {}
    per_mflop = {k: all(r.get("score_per_mflop") is not None for r in rows if r["kind"] == k)
                 for k in ("heads", "mlp")}
    out = []
    for r in rows:
        kind, module = r["kind"], str(r["module"])
        label, key = _layer_key(module)
        kept, units = r.get("kept"), r.get("units")
        if kind == "rank":
            value = _finite(r.get("energy_discarded"))
            column = _rank_column(module)
            text = "dense" if r.get("dense") else f"r{kept}/{units}"
            what = (f"{value:.1%} " if value is not None else "? ") + (
                "relative output error on the calibration inputs (activation-aware SVD)"
                if r.get("measure") == "activation_energy" else "of the weight's spectral energy discarded")
            what += (" (left dense: a factorisation would not cut its weights)" if r.get("dense")
                     else f" at rank {kept} of {units}")
        else:
            unit = SENSITIVITY_KINDS[kind][1]
            measure = r.get("measure") or cfg.get("head_criterion" if kind == "heads" else "mlp_criterion") or "score"
            crit = _CRITERION_TEXT.get(measure, measure)
            column = SENSITIVITY_KINDS[kind][0]
            text = f"{kept}/{units}"
            if per_mflop[kind]:
                value = _finite(r.get("score_per_mflop"))
                what = f"{crit} per MFLOP of one {unit}: {_g(value)} (what the FLOP-target ranking sorted by)"
            else:
                value = _finite(r.get("score_mean"))
                what = f"mean {crit} per {unit}: {_g(value)}"
            what += f"; kept {_g(r.get('score_mean_kept'))}, removed {_g(r.get('score_mean_removed'))} on average"
        out.append({"layer": label, "_key": key, "column": column, "kind": kind, "module": module,
                    "measure": r.get("measure"), "value": value, "kept": kept, "units": units, "text": text,
                    "what": what})
    df = pd.DataFrame(out)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    top = df.groupby("kind")["value"].transform("max")
    df["normalized"] = np.where(top > 0, df["value"] / top.where(top > 0, 1.0), np.where(df["value"].notna(), 0.0, np.nan))
    df = df.sort_values("_key", kind="stable").drop(columns="_key")
    return df[SENSITIVITY_COLUMNS].reset_index(drop=True)


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _positive(v: Any) -> bool:
    f = _finite(v)
    return f is not None and f > 0


def _g(v: Any) -> str:
    f = _finite(v)
    return "-" if f is None else f"{f:.3g}"


def sensitivity_notes(report: dict[str, Any] | None) -> dict[str, str]:
    """``{kind: why it has no sensitivity}`` for each kind of :data:`SENSITIVITY_KINDS` without data in
    ``report`` (a run's ``prune_report``), from the prune config it records; ``steps`` when the run
    pruned gradually (the rows are its last step's)."""
    report = report or {}
    have = {r["kind"] for r in _sensitivity_rows(report)}
    cfg = report.get("config") or {}
    notes = {}
    for kind in SENSITIVITY_KINDS:
        if kind in have:
            continue
        if kind == "rank":
            rr, energy = cfg.get("rank_ratio"), cfg.get("energy")
            svd = (rr is not None and _finite(rr) is not None and float(rr) < 1) or energy is not None
            notes[kind] = ("not recorded (the run predates sensitivity recording)" if svd
                           else "no SVD in this run: no layer was factorised")
            continue
        field_, ratio = ("head_criterion", cfg.get("head_ratio")) if kind == "heads" else \
            ("mlp_criterion", cfg.get("mlp_ratio"))
        pruned = _positive(ratio) or (kind == "heads" and any(_positive(x) for x in cfg.get("stage_head_ratios") or []))
        what = "heads" if kind == "heads" else "MLP width"
        if not pruned and not cfg.get("target_flops"):
            notes[kind] = f"this run did not prune {what}"
        elif cfg.get(field_) == "random":
            notes[kind] = "the random criterion measures nothing"
        elif not pruned:
            notes[kind] = f"the FLOP-target search did not prune {what}"
        else:
            notes[kind] = "not recorded (the run predates sensitivity recording)"
    steps = report.get("steps")
    if steps:
        notes["steps"] = (f"gradual pruning in {len(steps)} steps: kept counts and sensitivity are the last step's, "
                          "on the model the earlier steps left")
    return notes


def sensitivity_heatmap(report: dict[str, Any] | None, height: int | None = None) -> go.Figure:
    """A run's per-layer sensitivity: rows are layers in model order (blocks, downsamples, head), columns
    heads, MLP and the rank of each factorised linear kind. Colour: :func:`sensitivity_frame`'s
    ``normalized`` (per kind); text: what was kept; hover: the measured number and what it is. A kind
    without data is a blank column labelled ``(no data)``, with the reason (:func:`sensitivity_notes`)
    under the plot; ``layout.meta`` holds the notes."""
    df = sensitivity_frame(report)
    notes = sensitivity_notes(report)
    rank_cols = [f"rank {c}" for c in _RANK_COLUMNS if f"rank {c}" in set(df["column"])]
    columns = [SENSITIVITY_KINDS["heads"][0], SENSITIVITY_KINDS["mlp"][0]] + (rank_cols or ["rank"])
    col_kind = {c: ("rank" if c.startswith("rank") else ("heads" if c == "heads" else "mlp")) for c in columns}
    x = [f"{c}<br>(no data)" if col_kind[c] in notes else c for c in columns]
    layers = list(dict.fromkeys(df["layer"]))
    z = [[None] * len(columns) for _ in layers]
    text = [[""] * len(columns) for _ in layers]
    custom = [[["", ""]] * len(columns) for _ in layers]
    for r in df.itertuples():
        i, j = layers.index(r.layer), columns.index(r.column)
        z[i][j] = None if pd.isna(r.normalized) else float(r.normalized)
        text[i][j] = r.text
        custom[i][j] = [r.module, r.what]
    fig = go.Figure()
    if layers:
        fig.add_trace(go.Heatmap(
            z=z, x=x, y=layers, text=text, texttemplate="%{text}", customdata=custom, zmin=0, zmax=1,
            colorscale="YlOrRd", xgap=2, ygap=2, name="sensitivity", hoverongaps=False,
            colorbar=dict(title=dict(text="sensitivity<br>(÷ max of<br>its kind)"), tickformat=".1f"),
            hovertemplate="%{y} · %{x}: kept %{text}<br>%{customdata[0]}<br>%{customdata[1]}<br>"
                          "colour %{z:.2f} of the most sensitive layer of this kind<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
        fig.update_xaxes(side="top")
    else:
        fig.add_annotation(text="No sensitivity recorded for this run", showarrow=False, xref="paper",
                           yref="paper", x=0.5, y=0.5)
    lines = [f"{SENSITIVITY_KINDS[k][0] if k in SENSITIVITY_KINDS else 'note'}: {v}" for k, v in notes.items()]
    if lines and layers:
        fig.add_annotation(text="<br>".join(lines), showarrow=False, xref="paper", yref="paper", x=0, y=0,
                           xanchor="left", yanchor="top", yshift=-8, align="left", font=dict(size=11))
    fig.update_layout(title="Sensitivity per layer (colour), what was kept (text)",
                      height=height or max(300, 90 + 34 * len(layers) + 18 * len(lines)),
                      margin=dict(l=10, r=10, t=90, b=10 + 18 * len(lines)), meta={"notes": notes})
    return fig


def no_sensitivity_message(report: dict[str, Any] | None) -> str | None:
    """What the Results page says instead of the heatmap when ``report`` (a run's ``prune_report``) has no
    sensitivity to show, and why; None when it has some."""
    if not report:
        return ("No sensitivity for this run: it has no pruning report (it has not finished its prune stage, "
                "or was stored without one).")
    if _sensitivity_rows(report):
        return None
    notes = sensitivity_notes(report)
    why = "; ".join(f"{SENSITIVITY_KINDS[k][0]}: {v}" for k, v in notes.items() if k in SENSITIVITY_KINDS)
    return (f"No sensitivity for this run: its pruning measured nothing per layer that could be shown ({why}). "
            "Runs scored by taylor or l1, or factorised by SVD, record it.")
