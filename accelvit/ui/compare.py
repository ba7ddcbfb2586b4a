"""The Compare page's logic: 2-4 runs side by side (pure functions, no Streamlit, no store).

Inputs are the run store's frames and dicts (``runs_df``, ``metrics_df``, ``progress_df``,
``get_run(id)["config"]``, the ``layers_<stage>.csv`` tables); outputs are frames and Plotly
figures the page (``pages/4_Compare.py``) only lays out. The first selected run is the
*reference*: every difference is another run minus (or relative to) it.

- Selection and URL: :func:`parse_runs_param` reads ``?runs=ID1,ID2`` (unknown ids and ids
  past :data:`MAX_RUNS` are reported, never raised), :func:`runs_param` writes it,
  :func:`selection_problem` says why a selection cannot be compared.
- Metrics: :func:`final_metrics` (numbers, one column per run), :func:`metric_differences`
  (to the reference), :func:`metrics_view` (the readable table, ``tables`` formats).
- Config: :func:`flatten_config` (dotted keys), :func:`config_diff` (only differing fields).
- Curves: :func:`curves_figure` overlays :func:`accelvit.ui.charts.progress_curves` of each run.
- Per layer: :func:`layers_long` (heads, rank and density per layer and run, from
  :func:`accelvit.ui.charts.heads_matrix` / :func:`accelvit.ui.charts.linear_table`),
  :func:`layers_table` (one column per run) and :func:`layers_figure` (grouped bars).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..runs import FINISHED
from ..runs.queries import AFTER
from ..text import plotly_escape
from . import charts, tables

#: Fewest and most runs one comparison shows.
MIN_RUNS, MAX_RUNS = 2, 4
#: The query parameter holding the selected run ids, comma separated.
PARAM = "runs"
#: One colour per selected run, in selection order (the reference first).
RUN_COLORS = ("#1f6feb", "#d29922", "#2da44e", "#8250df")
#: Config fields never compared: the run's name is its column header already.
IGNORED_CONFIG = ("name",)


# ----------------------------------------------------------------------------- selection and URL
@dataclass
class Selection:
    """What a ``?runs=`` parameter asks for: ``ids`` (known, in order, at most the limit),
    ``unknown`` (not in the store) and ``dropped`` (known, past the limit)."""

    ids: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """One sentence per problem, written for the user."""
        out = []
        if self.unknown:
            out.append(f"The link names {_count(len(self.unknown), 'run')} not in this run store: "
                       f"{', '.join(self.unknown)}. {'It was' if len(self.unknown) == 1 else 'They were'} "
                       "left out (deleted, or the link comes from another ACCELVIT_HOME).")
        if self.dropped:
            out.append(f"A comparison shows at most {MAX_RUNS} runs: the link's first {MAX_RUNS} are shown, "
                       f"{', '.join(self.dropped)} left out.")
        return out


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def parse_runs_param(value: str | Iterable[str] | None, known: Iterable[str], limit: int = MAX_RUNS) -> Selection:
    """The run ids of a ``runs`` query parameter (``"a,b,c"``, or a list of such values for a
    repeated parameter): split on commas, blanks and repeats dropped, order kept."""
    values = [value] if isinstance(value, str) else list(value or [])
    asked: list[str] = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if part and part not in asked:
                asked.append(part)
    known = set(known)
    found = [r for r in asked if r in known]
    return Selection(ids=found[:limit], unknown=[r for r in asked if r not in known], dropped=found[limit:])


def runs_param(ids: Iterable[str]) -> str:
    """The ``runs`` query parameter of a selection: ids joined by commas."""
    return ",".join(ids)


def selection_problem(ids: list[str]) -> str | None:
    """Why ``ids`` cannot be compared (fewer than :data:`MIN_RUNS`, more than :data:`MAX_RUNS`), or None."""
    n = len(ids)
    if n < MIN_RUNS:
        return (f"Pick at least {MIN_RUNS} runs to compare ({'none' if n == 0 else 'one'} picked so far). "
                "The first one picked is the reference the others are compared with.")
    if n > MAX_RUNS:
        return f"Compare at most {MAX_RUNS} runs at a time: {n} are picked, remove {n - MAX_RUNS}."
    return None


def default_runs(runs: pd.DataFrame, n: int = 3) -> list[str]:
    """The ``n`` newest finished runs (``runs_df`` is newest first): the page's selection when the
    URL names none."""
    if runs is None or runs.empty:
        return []
    return list(runs.loc[runs["status"] == FINISHED, "id"][:n])


def run_labels(runs: pd.DataFrame, ids: Iterable[str]) -> dict[str, str]:
    """A short, unique header per run: its name (its id when it has none); names used by more
    than one selected run get the id added."""
    ids = list(ids)
    names = {}
    if runs is not None and not runs.empty:
        names = {r: (n or r) for r, n in zip(runs["id"], runs["name"].fillna(""))}
    base = {r: str(names.get(r) or r) for r in ids}
    repeated = {b for b in base.values() if list(base.values()).count(b) > 1}
    return {r: (f"{b} ({r})" if b in repeated and b != r else b) for r, b in base.items()}


# ----------------------------------------------------------------------------- metrics
#: The rows of the metrics table: column of ``metrics_df`` -> (label, format, how runs differ).
#: ``points``: another run's value minus the reference's (accuracies, shown in percentage
#: points); ``relative``: another run's value / the reference's - 1 (costs, speedups).
METRIC_ROWS: dict[str, tuple[str, Callable[[Any], str], str]] = {
    "top1": ("Top-1", tables.fmt_pct, "points"),
    "top5": ("Top-5", tables.fmt_pct, "points"),
    "top1_delta": ("Top-1 change vs its own baseline", tables.fmt_points, "points"),
    "dense_flops": ("Dense FLOPs", tables.fmt_si, "relative"),
    "effective_flops": ("Effective FLOPs", tables.fmt_si, "relative"),
    "params": ("Params", tables.fmt_count, "relative"),
    "nonzero_params": ("Nonzero params", tables.fmt_count, "relative"),
    "size_bytes": ("Size on disk", tables.fmt_bytes, "relative"),
    "latency_ms_b1": ("Latency b=1", tables.fmt_ms, "relative"),
    "latency_ms_batch": ("Latency, large batch", tables.fmt_ms, "relative"),
    "speedup_b1": ("Speedup b=1 vs its baseline", tables.fmt_speedup, "relative"),
}


def final_metrics(metrics: pd.DataFrame, ids: list[str], stage: str = AFTER) -> pd.DataFrame:
    """The ``stage`` row of each run as numbers: index = the keys of :data:`METRIC_ROWS`,
    one column per id in order; NaN where a run has no such row or value (not finished, no
    metrics). ``size_bytes`` is the smaller file written (:func:`accelvit.ui.charts.with_size`)."""
    out = pd.DataFrame(np.nan, index=list(METRIC_ROWS), columns=list(ids), dtype=float)
    if metrics is None or metrics.empty:
        return out
    m = charts.with_size(metrics)
    rows = m[m["stage"] == stage].drop_duplicates("run_id").set_index("run_id")
    for rid in ids:
        if rid not in rows.index:
            continue
        for key in METRIC_ROWS:
            v = tables.finite(rows.at[rid, key]) if key in rows.columns else None
            out.at[key, rid] = np.nan if v is None else v
    return out


def metric_differences(values: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """Each run's difference to the reference (default: the first column), one column per other
    run: ``points`` rows subtract (0.93 vs 0.95 -> -0.02), ``relative`` rows divide
    (2e6 vs 4e6 -> -0.5); NaN where either value is missing or the reference is 0."""
    if values.empty or values.shape[1] == 0:
        return values.iloc[:, 0:0].copy()
    ref = reference if reference is not None else values.columns[0]
    others = [c for c in values.columns if c != ref]
    out = pd.DataFrame(np.nan, index=values.index, columns=others, dtype=float)
    for key in values.index:
        how = METRIC_ROWS.get(key, ("", None, "relative"))[2]
        r = values.at[key, ref]
        for c in others:
            v = values.at[key, c]
            if how == "points":
                out.at[key, c] = v - r
            elif np.isfinite(r) and r != 0:
                out.at[key, c] = v / r - 1
    return out


def _fmt_relative(value: Any) -> str:
    v = tables.finite(value)
    if v is None:
        return tables.MISSING
    return "same" if abs(v) < 0.0005 else f"{100 * v:+.1f}%".replace("-", "−")


def metrics_view(values: pd.DataFrame, labels: Mapping[str, str], runs: pd.DataFrame | None = None,
                 speedup_methods: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The readable metrics table: a ``Metric`` column, then one column per run headed by its
    label (the reference's says so). Values in the ``tables`` formats; other runs' cells add
    their difference to the reference in brackets (``'93.0% (−2.0 pts)'``, ``'1.2 M (−50.0%)'``).
    A first ``Status`` row says which runs are not finished; missing values are ``tables.MISSING``."""
    ids = list(values.columns)
    diffs = metric_differences(values)
    status = {}
    if runs is not None and not runs.empty:
        status = dict(zip(runs["id"], runs["status"]))
    heads = {rid: labels.get(rid, rid) + (" (reference)" if i == 0 else "") for i, rid in enumerate(ids)}
    rows = [{"Metric": "Status", **{heads[r]: tables.fmt_text(status.get(r)) for r in ids}}]
    for key, (label, fmt, how) in METRIC_ROWS.items():
        row = {"Metric": label}
        for i, rid in enumerate(ids):
            v = values.at[key, rid]
            methods = speedup_methods or {}
            text = fmt(v, methods[rid]) if key == "speedup_b1" and methods.get(rid) else fmt(v)
            if i and text != tables.MISSING:
                d = diffs.at[key, rid]
                dtext = tables.fmt_points(d) if how == "points" else _fmt_relative(d)
                if dtext != tables.MISSING:
                    text = f"{text} ({dtext})"
            row[heads[rid]] = text
        rows.append(row)
    return pd.DataFrame(rows, columns=["Metric", *heads.values()])


def speedup_methods(metrics: pd.DataFrame, stage: str = AFTER) -> dict[str, Any]:
    """``run_id -> speedup_method`` of each run's ``stage`` row (how its speedup was timed)."""
    if metrics is None or metrics.empty or "speedup_method" not in metrics.columns:
        return {}
    rows = metrics[metrics["stage"] == stage].drop_duplicates("run_id")
    return dict(zip(rows["run_id"], rows["speedup_method"]))


# ----------------------------------------------------------------------------- config diff
def flatten_config(config: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (``{"prune": {"head_ratio": 0.5}} -> {"prune.head_ratio": 0.5}``);
    lists and other values are kept as they are."""
    out: dict[str, Any] = {}
    for k, v in (config or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_config(v, key + "."))
        else:
            out[key] = v
    return out


_ABSENT = object()


def _same(a: Any, b: Any) -> bool:
    if a is _ABSENT or b is _ABSENT:
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def config_diff(configs: Mapping[str, Mapping[str, Any] | None], ignore: Iterable[str] = IGNORED_CONFIG) -> pd.DataFrame:
    """Only the config fields whose values differ between the runs: index = dotted keys (in
    the order the configs list them), one column per run (``configs``' keys, in order), the raw
    values (``None`` where a run's config lacks the field). Empty (no rows) when all agree."""
    ids = list(configs)
    flat = {rid: flatten_config(configs[rid]) for rid in ids}
    ignore = set(ignore)
    keys: list[str] = []
    for rid in ids:
        keys += [k for k in flat[rid] if k not in keys and k not in ignore]
    differing = []
    for k in keys:
        vals = [flat[rid].get(k, _ABSENT) for rid in ids]
        if not all(_same(vals[0], v) for v in vals[1:]):
            differing.append(k)
    out = pd.DataFrame(index=pd.Index(differing, name="field"), columns=ids, dtype=object)
    for k in differing:
        for rid in ids:
            out.at[k, rid] = flat[rid].get(k)
    return out


def fmt_config_value(value: Any) -> str:
    """A config value as text: ``None`` -> ``'none'`` (not set), lists joined, floats short."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_config_value(v) for v in value) or "(empty)"
    return str(value)


def config_diff_view(diff: pd.DataFrame, labels: Mapping[str, str]) -> pd.DataFrame:
    """:func:`config_diff` as text: a ``Field`` column, then one column per run label."""
    out = pd.DataFrame({"Field": list(diff.index)})
    for rid in diff.columns:
        out[labels.get(rid, rid)] = [fmt_config_value(v) for v in diff[rid]]
    return out


# ----------------------------------------------------------------------------- training curves
#: Training stages in the order their curves are drawn (others follow in order of appearance).
CURVE_STAGES = ("baseline", "finetune", "control")


def curves_frame(progress: Mapping[str, pd.DataFrame | None]) -> pd.DataFrame:
    """``run_id, stage, epoch_x, loss, accuracy, images_per_s`` of every run's training rows
    (:func:`accelvit.ui.charts.progress_curves`)."""
    parts = []
    for rid, prog in progress.items():
        cur = charts.progress_curves(prog)
        if not cur.empty:
            parts.append(cur.assign(run_id=rid))
    cols = ["run_id", "stage", "epoch_x", "loss", "accuracy", "images_per_s"]
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]


def curves_figure(progress: Mapping[str, pd.DataFrame | None], labels: Mapping[str, str],
                  height_per_stage: int = 260) -> go.Figure:
    """Training loss and accuracy by (fractional) epoch, every run overlaid in its own colour
    (:data:`RUN_COLORS`, in ``progress``' order): one row of two plots per training stage
    (baseline, finetune, control). ``layout.meta["missing"]`` maps each stage drawn to the
    runs with no curve there (a run that reused a cached baseline trained none)."""
    cur = curves_frame(progress)
    ids = list(progress)
    present = list(dict.fromkeys(cur["stage"])) if not cur.empty else []
    stages = [s for s in CURVE_STAGES if s in present] + [s for s in present if s not in CURVE_STAGES]
    rows = max(len(stages), 1)
    titles = [t for s in stages for t in (f"{s}: training loss", f"{s}: training accuracy (%)")] or ["", ""]
    fig = make_subplots(rows=rows, cols=2, subplot_titles=titles, vertical_spacing=0.3 / rows if rows > 1 else 0.0)
    missing: dict[str, list[str]] = {}
    shown: set[str] = set()
    for i, stage in enumerate(stages, start=1):
        missing[stage] = []
        for j, rid in enumerate(ids):
            s = cur[(cur["run_id"] == rid) & (cur["stage"] == stage)]
            if s.empty:
                missing[stage].append(rid)
                continue
            color = RUN_COLORS[j % len(RUN_COLORS)]
            name = plotly_escape(labels.get(rid, rid))
            for col, y in ((1, pd.to_numeric(s["loss"], errors="coerce")),
                           (2, pd.to_numeric(s["accuracy"], errors="coerce") * 100)):
                fig.add_trace(go.Scatter(
                    x=s["epoch_x"].tolist(), y=y.tolist(), mode="lines+markers", name=name, legendgroup=rid,
                    legendrank=1000 + j, showlegend=rid not in shown, line=dict(color=color), marker=dict(size=5),
                    hovertemplate=f"{name}<br>{stage} epoch %{{x:.2f}}<br>%{{y:.3f}}<extra></extra>"), row=i, col=col)
                shown.add(rid)
    fig.update_xaxes(title_text="epoch", row=rows)
    if not stages:
        fig.add_annotation(text="No training curves recorded for these runs", showarrow=False, xref="paper",
                           yref="paper", x=0.5, y=0.5)
    fig.update_layout(height=max(height_per_stage * rows, 260) + 60, margin=dict(l=10, r=10, t=80, b=10),
                      legend=dict(orientation="h", yanchor="top", y=1.0, yref="container", xanchor="right",
                                  x=1.0),
                      meta={"stages": stages, "missing": missing})
    return fig


# ----------------------------------------------------------------------------- per layer
LAYER_QUANTITIES = ("heads kept", "rank / full rank", "weight density")


def layers_long(layers: Mapping[str, pd.DataFrame | None]) -> pd.DataFrame:
    """Per run and layer: ``run_id, layer, quantity, value, text`` where ``quantity`` is one of
    :data:`LAYER_QUANTITIES` (heads kept as a fraction of the block's heads, text ``kept/total``;
    rank as a fraction of the full rank, text ``rank/full``; density, text a percent).
    Runs without a table (``None`` or empty) have no rows."""
    rows = []
    for rid, table in layers.items():
        if table is None or table.empty:
            continue
        for r in charts.heads_matrix(table).itertuples():
            text = f"{int(r.heads_kept)}/{int(r.heads_total)}" if np.isfinite(r.heads_kept) else tables.MISSING
            rows.append((rid, f"s{r.stage}.b{r.block}.attn", "heads kept", r.kept_fraction, text))
        for r in charts.linear_table(table).itertuples():
            if np.isfinite(r.rank) and np.isfinite(r.full_rank):
                rows.append((rid, r.label, "rank / full rank", r.rank_fraction, f"{int(r.rank)}/{int(r.full_rank)}"))
            if np.isfinite(r.density):
                rows.append((rid, r.label, "weight density", r.density, tables.fmt_pct(r.density)))
    return pd.DataFrame(rows, columns=["run_id", "layer", "quantity", "value", "text"])


def layers_table(long: pd.DataFrame, labels: Mapping[str, str], ids: Iterable[str]) -> pd.DataFrame:
    """:func:`layers_long` with one text column per run: ``Layer, Quantity, <run labels>``; a
    layer a run does not have (or a run without a table) shows ``tables.MISSING``."""
    ids = list(ids)
    heads = [labels.get(r, r) for r in ids]
    if long.empty:
        return pd.DataFrame(columns=["Layer", "Quantity", *heads])
    order = {q: i for i, q in enumerate(LAYER_QUANTITIES)}
    keys = list(dict.fromkeys(zip(long["layer"], long["quantity"])))
    keys.sort(key=lambda k: order.get(k[1], 99))
    text = {(r, lay, q): t for r, lay, q, t in zip(long["run_id"], long["layer"], long["quantity"], long["text"])}
    out = [{"Layer": lay, "Quantity": q, **{h: text.get((r, lay, q), tables.MISSING) for r, h in zip(ids, heads)}}
           for lay, q in keys]
    return pd.DataFrame(out, columns=["Layer", "Quantity", *heads])


def layers_figure(long: pd.DataFrame, labels: Mapping[str, str], ids: Iterable[str],
                  height_per_row: int = 260) -> go.Figure:
    """Grouped bars, one colour per run: heads kept per attention block, rank / full rank and
    weight density per linear layer (one plot row each, rows without data left out)."""
    ids = list(ids)
    quantities = [q for q in LAYER_QUANTITIES if not long.empty and (long["quantity"] == q).any()]
    rows = max(len(quantities), 1)
    fig = make_subplots(rows=rows, cols=1, subplot_titles=quantities or [""], vertical_spacing=0.6 / rows if rows > 1 else 0.0)
    for i, q in enumerate(quantities, start=1):
        sub = long[long["quantity"] == q]
        order = list(dict.fromkeys(sub["layer"]))
        for j, rid in enumerate(ids):
            s = sub[sub["run_id"] == rid].set_index("layer").reindex(order)
            if s["value"].isna().all():
                continue
            name = plotly_escape(labels.get(rid, rid))
            fig.add_trace(go.Bar(x=order, y=s["value"].tolist(), name=name, legendgroup=rid, showlegend=i == 1,
                                 marker_color=RUN_COLORS[j % len(RUN_COLORS)], customdata=s["text"].fillna("").tolist(),
                                 hovertemplate=f"{name}<br>%{{x}}: %{{customdata}}<extra></extra>"), row=i, col=1)
        fig.update_yaxes(range=[0, 1.05], tickformat=".0%", row=i, col=1)
    if not quantities:
        fig.add_annotation(text="No per-layer tables for these runs", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5)
    fig.update_layout(barmode="group", height=height_per_row * rows + 80, margin=dict(l=10, r=10, t=80, b=10),
                      legend=dict(orientation="h", yanchor="top", y=1.0, yref="container", xanchor="right", x=1.0))
    return fig
