"""Results: compare runs (accuracy vs cost, Pareto frontier, speedups), look inside one run, download."""

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from accelvit.runs import FINISHED
from accelvit.ui import charts, downloads, sensitivity, tables
from accelvit.ui.state import PAGE_ICON, manager

st.set_page_config(page_title="accelvit · Results", page_icon=PAGE_ICON, layout="wide")
store = manager().store

st.title("Results")
runs = store.runs_df()
metrics = store.metrics_df()
with_metrics = runs[runs["id"].isin(set(metrics["run_id"]))]
if with_metrics.empty:
    st.info("No measured runs yet. Launch one on the **Experiment** page (or the quick demo on **Home**).")
    st.stop()

labels = {r.id: f"{r.name or r.id} · {r.status} · {r.id}" for r in with_metrics.itertuples()}
default = [r for r in with_metrics["id"] if with_metrics.set_index("id").at[r, "status"] == FINISHED][:20]
selected = st.multiselect("Runs", list(labels), default=default or list(labels)[:1], format_func=labels.get,
                          key="res_runs")
if not selected:
    st.info("Pick at least one run.")
    st.stop()
m = metrics[metrics["run_id"].isin(selected)]

# ----------------------------------------------------------------------------- trade-offs
st.subheader("Accuracy against cost")
st.caption("Stars: baselines (before pruning). Dots: pruned and finetuned models (after). Arrows join each "
           "run's before and after. Dashed red staircase: the Pareto frontier, where nothing is both cheaper and "
           "more accurate.")
cols = st.columns(2)
for i, metric in enumerate(charts.TRADEOFF_METRICS):
    with cols[i % 2]:
        st.plotly_chart(charts.tradeoff_figure(m, metric, height=380), key=f"tradeoff-{metric}")
        st.caption(charts.TRADEOFF_METRICS[metric][1] + ".")

st.subheader("Speedup against FLOP reduction")
speed = charts.speedup_figure(m)
st.plotly_chart(speed, key="speedup")
on = ", ".join(speed.layout.meta.get("devices") or []) or "the run's device"
st.caption(f"Speedup: baseline latency / pruned latency at batch 1 on {on}, both models timed interleaved in one "
           "process (A,B then B,A), so machine load hits both alike. Hollow markers: runs stored before interleaved "
           "timing, whose speedup divides two separate timings. Below the red line (speedup 1) the pruned model is "
           "slower there: hover a point for why. IHT zeros cut effective FLOPs but not dense-kernel time; heads, "
           "MLP width and rank cut both.")

# ----------------------------------------------------------------------------- one run
st.subheader("Inside one run")
one = st.selectbox("Run", selected, format_func=labels.get, key="res_one")
arts = store.artifacts_df(one)
art = dict(zip(arts["name"], arts["path"]))
stage = st.radio("Model", ["after", "pruned", "before"], horizontal=True, key="res_stage",
                 format_func={"after": "pruned + finetuned", "pruned": "pruned, before finetuning",
                              "before": "baseline"}.get)


@st.cache_data(show_spinner=False, max_entries=32)
def _layers(path: str, mtime: float) -> pd.DataFrame:
    return pd.read_csv(path)


run = store.get_run(one) or {}
row = m[(m["run_id"] == one) & (m["stage"] == stage)]
merged = {**(row.iloc[0].dropna().to_dict() if not row.empty else {}), **((run.get("stages") or {}).get(stage) or {})}
lat = tables.latency_summary(merged, (run.get("config") or {}).get("prune"))
if lat["metrics"]:
    for col, (label, value, help_) in zip(st.columns(len(lat["metrics"])), lat["metrics"]):
        col.metric(label, value, help=help_)
st.caption(lat["caption"])
if lat["warning"]:
    st.warning(lat["warning"], icon=":material/speed:")

layers = None
path = art.get(f"layers_{stage}")
if path and Path(path).exists():
    layers = _layers(path, Path(path).stat().st_mtime)


@st.cache_data(show_spinner=False, max_entries=32)
def _report_json(path: str, mtime: float) -> dict:
    return json.loads(Path(path).read_text())


def _prune_report(run_id: str, report_path: str | None) -> dict | None:
    """The run's prune report: from report.json once saved, else from its prune stage's record."""
    if report_path and Path(report_path).is_file():
        found = _report_json(report_path, Path(report_path).stat().st_mtime).get("prune_report")
        if found:
            return found
    stages = store.stages_df(run_id)
    info = stages.loc[stages["stage"] == "prune", "info"]
    return info.iloc[0] if len(info) and isinstance(info.iloc[0], dict) and info.iloc[0] else None


prune_report = _prune_report(one, art.get("report"))
no_sens = sensitivity.no_sensitivity_message(prune_report)
s1, s2 = st.columns([1, 1])
with s1:
    if no_sens:
        st.info(no_sens, icon=":material/grid_off:")
    else:
        st.plotly_chart(sensitivity.sensitivity_heatmap(prune_report), key="sensitivity")
        st.caption("Sensitivity: what the pruning measured per layer when it chose what to cut, once, at the "
                   "prune stage (whatever model is picked above). One row per layer in model order (s1.b0: stage "
                   "1, block 0). Colour: the measurement divided by the largest of its kind, so 1.0 is the most "
                   "sensitive layer of that kind. Heads and MLP: the mean importance score of the layer's units "
                   "(taylor: the loss change of removing one, per MFLOP of a unit where the FLOP target ranked by "
                   "that; l1: weight magnitude). Rank: the share of the weight's spectral energy (activation-aware "
                   "SVD: of its output) discarded at the kept rank. Text: what was kept (kept/total units, r "
                   "rank/full rank). Pale cells that lost many units beside dark ones that kept theirs: the cut "
                   "followed the measurement. Hover a cell for the numbers.")
with s2:
    if layers is None or layers.empty:
        st.info("This run has no per-layer table for that stage (it did not reach it, or it predates per-layer "
                "tables).")
    else:
        st.plotly_chart(charts.heads_heatmap(layers), key="heads")
        st.plotly_chart(charts.linear_bars(layers), key="linears")
if layers is not None and not layers.empty:
    with st.expander("Per-layer table"):
        st.dataframe(layers, hide_index=True, width="stretch", placeholder=tables.MISSING)

# ----------------------------------------------------------------------------- table + downloads
st.subheader("Metrics")
table = tables.metrics_table(m)
view, config = tables.metrics_table_view(m)
st.caption("Metrics: one row per run and model. Hover a column header for how it was measured; speedups and "
           "latencies were timed on the device in 'Timed on'.")
st.dataframe(view, hide_index=True, width="stretch", column_config=config, placeholder=tables.MISSING)
d1, d2, d3, d4 = st.columns(4)
d1.download_button("Metrics as CSV", table.to_csv(index=False).encode(), file_name="accelvit_metrics.csv",
                   mime="text/csv", icon=":material/download:", key="dl_csv")
downloads.model_downloads(d2, d4, art.get("model"), one)
report = art.get("report")
if report and Path(report).is_file():
    d3.download_button("report.json", Path(report).read_bytes(), file_name=f"{one}_report.json",
                       mime="application/json", icon=":material/description:", key="dl_report")
