"""The live view of one run: stage, progress, curves, throughput, ETA, log and Cancel.

Everything shown is read from the run store on every tick of ``st.fragment(run_every=...)``,
so a reloaded page or a second tab shows the same progress. When the run ends while it is
watched, the whole page reruns once so tables and charts pick up the final numbers.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from ..runs import (ACTIVE, CANCELLED, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING, TERMINAL, run_metrics,
                    stage_ratios)
from . import charts
from .state import manager, store

# Material icons ship with Streamlit's frontend, so they render without emoji fonts.
STATUS_ICONS = {QUEUED: ":material/schedule:", RUNNING: ":material/directions_run:",
                FINISHED: ":material/check_circle:", FAILED: ":material/error:", CANCELLED: ":material/block:",
                INTERRUPTED: ":material/warning:"}
LOG_KINDS = ("status", "stage_started", "stage_finished", "warning", "error", "artifact")


def fmt_seconds(s: Any) -> str:
    try:
        v = float(s)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(v) or v < 0:
        return "–"
    v = int(round(v))
    if v < 60:
        return f"{v} s"
    if v < 3600:
        return f"{v // 60} min {v % 60:02d} s"
    return f"{v // 3600} h {(v % 3600) // 60:02d} min"


def run_log(run_id: str, limit: int = 200) -> pd.DataFrame:
    """The run's log: ``time, kind, stage, message`` of status, stage, warning, error and artifact events."""
    ev = store().events_df(run_id, kinds=LOG_KINDS)
    if ev.empty:
        return pd.DataFrame(columns=["time", "kind", "stage", "message"])
    ev = ev.tail(limit).copy()
    msgs = []
    for kind, stage, msg, data in zip(ev["kind"], ev["stage"], ev["message"], ev["data"]):
        data = data if isinstance(data, dict) else {}
        if kind == "stage_finished":
            secs = data.get("seconds")
            msgs.append(f"{stage} done" + (f" in {secs:.1f} s" if isinstance(secs, (int, float)) else ""))
        elif kind == "stage_started":
            msgs.append(f"{stage} started")
        elif kind == "status":
            err = data.get("error")
            msgs.append(f"status: {msg}" + (f" ({err})" if err else ""))
        elif kind == "artifact":
            msgs.append(f"saved {msg}: {data.get('path', '')}")
        else:
            msgs.append(str(msg or ""))
    ev["message"] = msgs
    ev["time"] = ev["time"].dt.tz_convert(datetime.now().astimezone().tzinfo).dt.strftime("%H:%M:%S")
    return ev[["time", "kind", "stage", "message"]].reset_index(drop=True)


def _summary_line(run: dict[str, Any]) -> str:
    st_ = run.get("stages") or {}
    b, a = st_.get("before") or {}, st_.get("after") or {}
    parts = []
    if b.get("top1") is not None and a.get("top1") is not None:
        parts.append(f"top-1 {100 * b['top1']:.1f}% → {100 * a['top1']:.1f}%")
    m = run_metrics(run)
    ratios = stage_ratios(m, [c for c in ("dense_flops", "effective_flops") if c in m.columns])
    for c, label in (("dense_flops", "dense FLOPs"), ("effective_flops", "effective FLOPs")):
        r = ratios[c].iloc[0] if c in ratios and len(ratios) else math.nan
        if b.get(c) and a.get(c) and math.isfinite(r):
            parts.append(f"{label} −{100 * (1 - r):.0f}%")
    return ", ".join(parts)


def _body(run_id: str, key: str, show_curves: bool, show_log: bool) -> str | None:
    s = store()
    run = s.get_run(run_id)
    if run is None:
        st.warning(f"Run {run_id} is not in the store {s.home}.")
        return None
    status = run["status"]
    live = run.get("live") or {}
    st.markdown(f"**{STATUS_ICONS.get(status, '')} {run['name'] or run_id}** · `{run_id}` · status **{status}**")
    progress = float(run.get("progress") or 0.0)
    stage = run.get("stage") or live.get("stage") or "–"
    started = run.get("started_at")
    elapsed = (run.get("finished_at") or time.time()) - started if started else None
    eta_all = elapsed * (1 - progress) / progress if (status == RUNNING and elapsed and progress > 0.01) else None
    st.progress(min(max(progress, 0.0), 1.0), text=f"overall {100 * progress:.0f}% · stage: {stage}")
    if status in ACTIVE:
        frac = live.get("fraction")
        if isinstance(frac, (int, float)) and live.get("stage") == stage:
            st.progress(min(max(float(frac), 0.0), 1.0), text=f"{stage}: {100 * float(frac):.0f}%")
        cols = st.columns(6)
        ep, eps = live.get("epoch"), live.get("epochs")
        cols[0].metric("Stage", str(stage))
        cols[1].metric("Epoch", f"{ep}/{eps}" if ep and eps else "–")
        cols[2].metric("Loss", f"{live['loss']:.3f}" if isinstance(live.get("loss"), (int, float)) else "–")
        cols[3].metric("Train acc.", charts.fmt_pct(live.get("accuracy")))
        cols[4].metric("Images/s", f"{live['images_per_s']:.0f}"
                       if isinstance(live.get("images_per_s"), (int, float)) else "–")
        cols[5].metric("ETA", fmt_seconds(eta_all), help=f"stage ETA {fmt_seconds(live.get('eta_s'))}; "
                       "overall ETA from the overall progress so far")
        if st.button("Cancel this run", key=f"cancel-{key}-{run_id}", icon=":material/stop_circle:"):
            after = manager().cancel(run_id)
            st.toast(f"Cancel requested: run is {after}.")
    elif status == FINISHED:
        st.success(f"Finished in {fmt_seconds(elapsed)}: {_summary_line(run) or 'no metrics'}.")
    elif status == FAILED:
        st.error(run.get("error") or "The run failed.")
        if run.get("traceback"):
            with st.expander("Traceback"):
                st.code(run["traceback"], language="text")
    else:
        st.warning(f"{status.capitalize()}: {run.get('error') or ''}")
    if show_curves:
        prog = s.progress_df(run_id)
        if not charts.progress_curves(prog).empty:
            st.plotly_chart(charts.progress_figure(prog), key=f"curves-{key}-{run_id}")
    if show_log:
        with st.expander("Log", expanded=status in (FAILED,)):
            st.dataframe(run_log(run_id), hide_index=True, width="stretch")
    return status


def render_live(run_id: str, key: str = "live", interval: float = 1.0, show_curves: bool = True,
                show_log: bool = True) -> None:
    """Show one run; refreshes every ``interval`` seconds while it is queued or running."""
    status0 = store().status(run_id)
    active = status0 in ACTIVE

    @st.fragment(run_every=interval if active else None)
    def view() -> None:
        status = _body(run_id, key, show_curves, show_log)
        if active and status in TERMINAL:
            flag = f"_live_ended_{key}_{run_id}"
            if not st.session_state.get(flag):
                st.session_state[flag] = True
                st.rerun()  # the whole page, so results tables and charts show the final numbers

    view()
