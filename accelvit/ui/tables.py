"""Tables and display formats built from the run store's DataFrames (pure functions).

The Home page's runs table (:func:`summarize_runs`, :func:`runs_table_view`), the Results
page's metrics table (:func:`metrics_table`, :func:`metrics_table_view`) and latency summary
(:func:`latency_summary`), and the formats they show numbers with (``fmt_*``; ``MISSING`` for
what was not measured). Nothing here touches Streamlit, the store or a model. The frames and
helpers shared with the figures (``with_size``, ``PRUNE_COLUMNS``, ``TRADEOFF_METRICS``,
``slower_reasons``) live in :mod:`accelvit.ui.charts`, which does not import this module.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..runs.queries import AFTER, BEFORE, INTERLEAVED, SEPARATE, add_speedups, stage_ratios
from ..runs.queries import BASELINE as BASELINE_METHOD
from .charts import PRUNE_COLUMNS, TRADEOFF_METRICS, _num, slower_reasons, with_size


# ----------------------------------------------------------------------------- formatting
MISSING = "–"


def finite(value: Any) -> float | None:
    """``value`` as a finite float, else None (missing, NaN, inf, not a number): what every format
    here shows as :data:`MISSING`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt_si(value: Any, unit: str = "") -> str:
    """``92_700_000 -> '92.7 M'``; missing values -> an en dash."""
    v = finite(value)
    if v is None:
        return MISSING
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g} {suffix}{unit}"
    return f"{v:.3g} {unit}".rstrip()


def fmt_pct(value: Any, digits: int = 1) -> str:
    """The tables' one percent format: ``0.3812 -> '38.1%'``."""
    v = finite(value)
    return MISSING if v is None else f"{100 * v:.{digits}f}%"


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


# ----------------------------------------------------------------------------- tables
METRICS_TABLE_COLUMNS = ["run_id", "name", "status", "stage", "top1", "top5", "dense_flops", "effective_flops",
                         "params", "nonzero_params", "size_dense_bytes", "size_sparse_bytes", "latency_ms_b1",
                         "latency_ms_batch", "flops_ratio", "params_ratio", "size_ratio", "speedup_b1",
                         "speedup_batch", "speedup_method", "top1_delta", "model", "dataset", "img_size",
                         *PRUNE_COLUMNS, "device", "device_name", "num_threads", "batch_size"]

#: What a table cell shows for a missing value; pass it to ``st.dataframe(placeholder=...)`` too
#: (Streamlit draws missing cells itself, as "None" unless told otherwise).
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


def fmt_points(value: Any) -> str:
    """A difference of two fractions in percentage points: ``-0.02 -> '−2.0 pts'``."""
    v = finite(value)
    return MISSING if v is None else f"{100 * v:+.1f} pts".replace("-", "−")


def fmt_bytes(value: Any) -> str:
    """``23_105_280 -> '23.1 MB'`` (decimal units, as file managers show them)."""
    v = finite(value)
    return MISSING if v is None else fmt_si(v, "B")


def fmt_count(value: Any) -> str:
    """``23_105_280 -> '23.1 M'``; small counts as they are (``'12'``)."""
    v = finite(value)
    if v is None:
        return MISSING
    return f"{v:,.0f}" if abs(v) < 1000 and v == int(v) else fmt_si(v)


def fmt_ms(value: Any) -> str:
    """``86.8 -> '86.8 ms'``, ``1234 -> '1.23 s'``."""
    v = finite(value)
    if v is None:
        return MISSING
    return f"{v / 1000:.3g} s" if v >= 1000 else f"{v:.3g} ms"


def fmt_seconds(value: Any) -> str:
    """``75 -> '1 min 15 s'``, rounded to whole seconds; negative or missing -> :data:`MISSING`."""
    v = finite(value)
    if v is None or v < 0:
        return MISSING
    v = int(round(v))
    if v < 60:
        return f"{v} s"
    if v < 3600:
        return f"{v // 60} min {v % 60:02d} s"
    return f"{v // 3600} h {(v % 3600) // 60:02d} min"


def fmt_speedup(value: Any, method: Any = INTERLEAVED) -> str:
    """``1.523 -> '1.52×'``; a speedup from two separate timings says so."""
    v = finite(value)
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
    pct = {c: fmt_pct for c in ("top1", "top5", "flops_ratio", "params_ratio", "size_ratio", *PRUNE_COLUMNS)}
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


#: A run's progress in a table: a bar of whole percents (0-100), the live card's format
#: ("overall 38%"), not the grid's "37.99%". Label and help, and the column type.
PROGRESS_COLUMN = ("Progress", "Share of the run's work done (stages weighted by their expected time).")
PROGRESS_TYPE = {"type": "progress", "format": "%d%%", "min_value": 0, "max_value": 100, "step": 1}


def whole_percent(progress: pd.Series) -> pd.Series:
    """Progress fractions as whole percents 0-100 (missing: 0), for a :data:`PROGRESS_TYPE` column."""
    return (100 * _num(progress).fillna(0.0)).round()


def progress_column() -> dict[str, Any]:
    """The ``column_config`` entry of a :func:`whole_percent` progress column."""
    return _column(*PROGRESS_COLUMN, type_config=PROGRESS_TYPE)


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
        "progress": (*PROGRESS_COLUMN, {"type_config": PROGRESS_TYPE}),
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
    pct = {c: fmt_pct for c in ("top1_after", "top1_before", "effective_flops_reduction",
                                    "dense_flops_reduction", "size_reduction", *PRUNE_COLUMNS)}
    formats = {**pct, "top1_delta": fmt_points, "duration_s": fmt_seconds, "img_size": fmt_count,
               "speedup_b1": fmt_speedup}
    t["progress"] = whole_percent(t["progress"])
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
    if finite(d.get("latency_ms_b1")) is None:
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
        s1 = finite(d.get("speedup_b1"))
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
    s1 = finite(d.get("speedup_b1"))
    if s1 is not None and s1 < 1 and method != BASELINE_METHOD:
        reasons = slower_reasons({**(config or {}), "device": dev})
        out["warning"] = ("Speedup below 1: the pruned model is slower than the baseline on " + where + ". "
                          + " ".join(reasons))
    return out
