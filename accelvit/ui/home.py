"""The Home page: what the tool does, the device, every run, the best trade-offs, a one-click quick demo.

``app.py`` sends the navigation first and imports this module only when Home is shown, so the
first page load after a server start never shows Streamlit's auto-discovered page list while
these imports run.
"""

from __future__ import annotations

import streamlit as st

from accelvit.runs import ACTIVE, FINISHED, run_to_watch
from accelvit.ui import charts, tables
from accelvit.ui.forms import QUICK_DEMO, quick_demo_config
from accelvit.ui.live import render_live
from accelvit.ui.state import device_text, manager, remember_submit, submit_key


def _runs_table(runs, metrics) -> None:
    st.subheader("Runs")
    if runs.empty:
        st.info("No runs yet. Run the quick demo above, or set up an experiment on the **Experiment** page.")
        return
    view, config = tables.runs_table_view(runs, metrics)
    st.dataframe(view, column_config=config, hide_index=True, placeholder=tables.MISSING, width="stretch")
    st.caption("Reductions: the fraction removed, after vs before; size compares the smaller file written "
               "(dense fp32 safetensors or the sparse bitmask form). Open **Results** for the details.")


def render() -> None:
    mgr = manager()
    store = mgr.store

    st.title("accelvit")
    st.markdown(
        "accelvit makes Swin vision transformers smaller and faster by pruning: attention heads are removed "
        "structurally, linear layers factorised by SVD and sparsified by iterative hard thresholding. "
        "It then measures honestly what that cost: accuracy before and after, FLOPs including attention, "
        "nonzero parameters, bytes on disk and latency."
    )
    c1, c2 = st.columns([2, 3])
    c1.markdown(f"**Device:** {device_text()}")
    c2.markdown(f"**Run store:** `{store.home}`")

    # ----------------------------------------------------------------------------- quick demo
    st.subheader("Quick demo")
    demo = QUICK_DEMO
    st.caption(
        f"Digits (embedded, offline) · {demo['model']} at {demo['data']['img_size']} px · "
        f"{demo['train']['epochs']} training + {demo['finetune']['epochs']} finetuning epochs · "
        f"head ratio {demo['prune']['head_ratio']}, SVD rank ratio {demo['prune']['rank_ratio']}, "
        f"IHT sparsity {demo['prune']['sparsity']}. About 45 s on two CPU cores.")
    demo_run = st.session_state.get("demo_run")
    runs = store.runs_df()
    demo_active = bool(((runs["name"] == demo["name"]) & runs["status"].isin(ACTIVE)).any())
    if st.button("Run the quick demo", type="primary", icon=":material/play_arrow:", disabled=demo_active,
                 key="quick_demo", help="Disabled while a quick demo is queued or running." if demo_active else None):
        cfg = quick_demo_config()
        key = submit_key("demo", cfg.to_dict())
        demo_run = mgr.submit(cfg, submit_key=key)
        remember_submit("demo", [demo_run])
        st.session_state["demo_run"] = demo_run
        st.rerun()  # draw the button disabled and the live card for the queued demo

    # One refresh draws the live card (this session's demo, else, after a reload or in a second
    # tab, whatever is queued or running) and the runs table from the same record.
    metrics = store.metrics_df()
    live = bool(runs["status"].isin(ACTIVE).any())
    render_live(lambda df: run_to_watch(df, [demo_run]), key="home", show_curves=True, curves_default=False,
                show_log=False, extra=lambda df: _runs_table(df, metrics))

    # ----------------------------------------------------------------------------- trade-offs
    st.subheader("Best trade-offs")
    done = metrics[metrics["status"] == FINISHED]
    if done.empty:
        st.info("The accuracy / FLOPs trade-off plot appears here once a run has finished.")
    elif live and not st.toggle(
            "Show the plot while a run is live", value=False, key="home-tradeoff-live",
            help="While the run above refreshes, the browser redraws every chart on the page each time (about a "
                 "quarter of a CPU core per tab); on a small machine that slows the run. The plot comes back "
                 "when the run ends, or now with this switch."):
        st.caption(f"{len(done['run_id'].unique())} finished run(s); the plot is hidden while a run is live.")
    else:
        st.plotly_chart(charts.tradeoff_figure(done, "effective_flops"), key="home-tradeoff")
        st.caption(charts.TRADEOFF_METRICS["effective_flops"][1] + ". Stars: baselines; dots: pruned models; "
                   "arrows join each run's before and after; the dashed line is the Pareto frontier.")
