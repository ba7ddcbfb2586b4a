"""The live view of one run: stage, progress, curves, throughput, ETA, log and Cancel.

Everything shown is read from the run store on every tick of ``st.fragment(run_every=...)``
(every :data:`POLL_S` seconds), so a reloaded page or a second tab shows the same progress.
One tick reads the run once (:func:`snapshot`) and every view drawn in that tick (the live
card, and the runs table a page passes as ``extra``) shows that one record. The curves are
rebuilt only when new progress rows exist. When the run ends while it is watched, the whole
page reruns once so tables and charts pick up the final numbers.

The job itself runs in its own process (``accelvit.runs.jobs``, process executor), so these
reruns cannot starve it.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any, Callable

import pandas as pd
import streamlit as st

from ..runs import (ACTIVE, CANCELLED, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING, TERMINAL, run_metrics,
                    stage_ratios)
from ..text import md_escape
from . import charts, tables
from .state import manager, store

# Material icons ship with Streamlit's frontend, so they render without emoji fonts.
STATUS_ICONS = {QUEUED: ":material/schedule:", RUNNING: ":material/directions_run:",
                FINISHED: ":material/check_circle:", FAILED: ":material/error:", CANCELLED: ":material/block:",
                INTERRUPTED: ":material/warning:"}
LOG_KINDS = ("status", "stage_started", "stage_finished", "warning", "error", "artifact")
#: Seconds between refreshes of a live view (the issue asks for 2-5 s: often enough to follow
#: a run, rarely enough that rendering costs little).
POLL_S = 5.0
#: The curves of a live run are redrawn this often (the numbers every POLL_S).
CURVES_EVERY_S = 15.0
#: No ETA before the run has been timed this long past its data stage.
ETA_MIN_TIMED_S = 5.0


def fmt_eta(s: Any) -> str:
    """A short, readable remaining time: ``about 40 s``, ``about 3 min``, ``about 1 h 05 min``."""
    v = tables.finite(s)
    if v is None or v < 0:
        return tables.MISSING
    if v < 55:
        return f"about {max(5, int(round(v / 5)) * 5)} s"
    if v < 3570:
        return f"about {max(1, int(round(v / 60)))} min"
    h, m = divmod(int(round(v / 60)), 60)
    return f"about {h} h {m:02d} min"


def fmt_progress(fraction: Any) -> str:
    """The one format of a run's progress in every view: whole percents (``38%``), clamped to 0-100."""
    v = tables.finite(fraction)
    return tables.fmt_pct(None if v is None else min(max(v, 0.0), 1.0), digits=0)


def eta_seconds(progress: pd.DataFrame, now: float | None = None) -> float | None:
    """Seconds left, or None while the run has not been timed yet.

    The overall fraction is the stages' weights done (training stages weigh by their epochs),
    so its rate over the rows after the data stage is the measured speed in weight per
    second; the ETA is the weight left at that speed. None until those rows span
    :data:`ETA_MIN_TIMED_S` seconds with some progress (a data stage or a first slow step says
    nothing about the rest).
    """
    if progress is None or progress.empty or "overall" not in progress:
        return None
    rows = progress[(progress["stage"] != "data") & progress["overall"].notna()]
    if len(rows) < 2:
        return None
    t = rows["time"].map(lambda x: x.timestamp()).to_numpy(dtype=float)
    o = rows["overall"].to_numpy(dtype=float)
    span, done = t[-1] - t[0], o[-1] - o[0]
    if span < ETA_MIN_TIMED_S or done <= 0:
        return None
    left = (1.0 - o[-1]) * span / done - ((now or time.time()) - t[-1])
    return max(left, 0.0)


def status_text(run: dict[str, Any]) -> str:
    """One sentence for the run's state, the same wherever it is shown."""
    status = run.get("status")
    stage = run.get("stage")
    at = _clock(run.get("finished_at"))
    err = (run.get("error") or "").strip()
    if status == QUEUED:
        return "Queued: it starts when the run ahead of it ends."
    if status == RUNNING:
        if run.get("cancel_requested"):
            return f"Cancelling: it stops at the next training step{f' of the {stage} stage' if stage else ''}."
        return f"Running: {stage or 'starting'}."
    if status == CANCELLED:
        where = f"during the {stage} stage" if run.get("started_at") and stage else "before it started"
        return f"Cancelled at {at} {where}." if at else f"Cancelled {where}."
    if status == INTERRUPTED:
        return f"Interrupted at {at}: {err}" if at and err else (f"Interrupted: {err}" if err else "Interrupted.")
    if status == FAILED:
        return err or "The run failed."
    return str(status)


def _clock(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ts)).astimezone().strftime("%H:%M")
    except (TypeError, ValueError, OSError, OverflowError):
        return ""


def snapshot(runs: pd.DataFrame, run: dict[str, Any] | None) -> pd.DataFrame:
    """``runs`` with the row of ``run`` replaced by that record's status, stage and progress, so a
    table drawn beside the live card in the same refresh cannot disagree with it."""
    if run is None or runs.empty:
        return runs
    out = runs.copy()
    mask = out["id"] == run["id"]
    for col in ("status", "stage", "progress"):
        if col in out.columns:
            out.loc[mask, col] = run.get(col)
    return out


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


def _curves(run_id: str, key: str, prog: pd.DataFrame, caption: str | None = None) -> None:
    """The training curves (and ``caption`` above them), if the run has any; the figure is rebuilt
    only when new progress rows arrived."""
    if charts.progress_curves(prog).empty:
        return
    if caption:
        st.caption(caption)
    sig = (len(prog), str(prog["time"].iloc[-1]) if len(prog) else "")
    slot = f"_live_fig_{key}_{run_id}"
    cached = st.session_state.get(slot)
    if cached is None or cached[0] != sig:
        cached = (sig, charts.progress_figure(prog))
        st.session_state[slot] = cached
    st.plotly_chart(cached[1], key=f"curves-{key}-{run_id}")


def _request_cancel(run_id: str) -> None:
    after = manager().cancel(run_id)
    st.session_state["_live_cancel_toast"] = {
        CANCELLED: "Cancelled before it started.", RUNNING: "Cancelling: the run stops at its next training step.",
    }.get(after, f"The run is already {after}.")


def live_card(run: dict[str, Any], key: str, show_curves: bool = True, show_log: bool = True) -> str:
    """Draw one run from its record (``RunStore.get_run``); its status."""
    run_id = run["id"]
    status = run["status"]
    live = run.get("live") or {}
    st.markdown(f"**{STATUS_ICONS.get(status, '')} {md_escape(run['name'] or run_id)}** · `{run_id}` · "
                f"{status_text(run)}")
    progress = float(run.get("progress") or 0.0)
    stage = run.get("stage") or live.get("stage") or "–"
    started = run.get("started_at")
    elapsed = (run.get("finished_at") or time.time()) - started if started else None
    prog = store().progress_df(run_id) if (show_curves or status == RUNNING) else None  # curves, ETA
    st.progress(min(max(progress, 0.0), 1.0), text=f"overall {fmt_progress(progress)} · stage: {stage}")
    if status in ACTIVE:
        frac = live.get("fraction")
        if isinstance(frac, (int, float)) and live.get("stage") == stage:
            msg = f" · {live['message']}" if live.get("message") else ""
            st.progress(min(max(float(frac), 0.0), 1.0), text=f"{stage}: {fmt_progress(frac)}{msg}")
        cols = st.columns([1, 1, 1, 1, 1, 2])
        ep, eps = live.get("epoch"), live.get("epochs")
        training = live.get("stage") == stage and ep is not None
        cols[0].metric("Epoch", f"{ep}/{eps}" if training and eps else "–")
        cols[1].metric("Loss", f"{live['loss']:.3f}" if training and isinstance(live.get("loss"), (int, float)) else "–")
        cols[2].metric("Train acc.", tables.fmt_pct(live.get("accuracy")) if training else "–")
        ips = live.get("images_per_s")
        cols[3].metric("Images/s", f"{ips:.0f}" if training and isinstance(ips, (int, float)) else "–")
        cols[4].metric("Elapsed", tables.fmt_seconds(elapsed))
        eta = eta_seconds(prog) if status == RUNNING else None
        cols[5].metric("Time left", fmt_eta(eta),
                       help="Shown once the run has been timed past its data stage: the stages' weights left "
                            "(training stages weigh by their epochs) at the speed measured so far.")
        cancelling = status == RUNNING and run.get("cancel_requested")
        st.button("Cancel this run", key=f"cancel-{key}-{run_id}", icon=":material/stop_circle:",
                  disabled=bool(cancelling), on_click=_request_cancel, args=(run_id,))
        toast = st.session_state.pop("_live_cancel_toast", None)
        if toast:
            st.toast(toast)
    elif status == FINISHED:
        st.success(f"Finished in {tables.fmt_seconds(elapsed)}: {_summary_line(run) or 'no metrics'}.")
    elif status == FAILED:
        st.error(md_escape(run.get("error") or "The run failed."))
        if run.get("traceback"):
            with st.expander("Traceback"):
                st.code(run["traceback"], language="text")
    else:
        st.warning(status_text(run))
    if show_curves and prog is not None:
        _curves(run_id, key, prog)
    if show_log:
        with st.expander("Log", expanded=status in (FAILED,)):
            st.dataframe(run_log(run_id), hide_index=True, width="stretch")
    return status


def render_live(follow: Callable[[pd.DataFrame], str | None], key: str = "live", interval: float = POLL_S,
                show_curves: bool = True, show_log: bool = True,
                extra: Callable[[pd.DataFrame], None] | None = None, curves_default: bool = True) -> None:
    """Show one run, in a bordered card; refreshes every ``interval`` seconds while it is queued or running.

    ``follow(runs_df)`` picks the run to show on each refresh (so the view moves on to the run
    still active after one ends or is cancelled); ``extra(runs_df)`` draws more from the same
    refresh's snapshot (a runs table), patched with the live record so the two agree.

    While the run is active its curves are a separate fragment below, refreshed every
    :data:`CURVES_EVERY_S` seconds, behind a toggle (``curves_default``): any chart on the page is
    redrawn by the browser on every refresh of the numbers (measured: about 0.25 of a core per
    tab), which on a small machine shared with the job slows the run. A finished run's curves
    are drawn once, in its card.
    """
    s = store()
    runs0 = s.runs_df()
    rid0 = follow(runs0)
    active = rid0 is not None and runs0.loc[runs0["id"] == rid0, "status"].isin(ACTIVE).any()

    @st.fragment(run_every=interval if active else None)
    def view() -> None:
        runs = s.runs_df()
        rid = follow(runs)
        run = s.get_run(rid) if rid else None
        status = None
        if rid and run is None:
            st.warning(f"Run {rid} is not in the store {s.home}.")
        elif run is not None:
            with st.container(border=True):
                status = live_card(run, key, show_curves and not active, show_log)
        if extra is not None:
            extra(snapshot(runs, run))
        if active and (status in TERMINAL or rid != rid0):
            flag = f"_live_ended_{key}_{rid0}"
            if not st.session_state.get(flag):
                st.session_state[flag] = True
                st.rerun()  # the whole page, so results tables and charts show the final numbers

    view()
    if show_curves and active and st.toggle(
            "Live training curves", value=curves_default, key=f"live-curves-{key}",
            help="Charts are what a refresh costs the browser most: with curves on, each open tab takes about a "
                 "quarter of a CPU core while the run is live (bench/RESULTS.md, 'Watching a run'). When the "
                 "browser shares a small machine with the job, that time is taken from the run."):
        @st.fragment(run_every=CURVES_EVERY_S)
        def curves() -> None:
            _curves(rid0, key, s.progress_df(rid0),
                    caption=f"Training curves of {rid0}, redrawn every {CURVES_EVERY_S:.0f} s while it runs.")

        curves()
