"""accelvit dashboard. ``streamlit run app.py``; runs live in ``$ACCELVIT_HOME`` (default ``./runs``).

This file is the Home page (what the tool does, the device, every run, the best trade-offs,
a one-click quick demo) and the navigation to the other pages in ``pages/``. Pages stay thin:
they submit configs to the job manager and render what the run store says.
"""

import streamlit as st

from accelvit.runs import ACTIVE, FINISHED, run_to_watch
from accelvit.ui import charts
from accelvit.ui.forms import QUICK_DEMO, quick_demo_config
from accelvit.ui.live import render_live
from accelvit.ui.state import device_text, manager, remember_submit, submit_key


def home() -> None:
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
        f"IHT sparsity {demo['prune']['sparsity']}. About half a minute on two CPU cores.")
    demo_run = st.session_state.get("demo_run")
    demo_active = bool(demo_run) and store.status(demo_run) in ACTIVE
    if st.button("Run the quick demo", type="primary", icon=":material/play_arrow:", disabled=demo_active, key="quick_demo"):
        cfg = quick_demo_config()
        key = submit_key("demo", cfg.to_dict())
        demo_run = mgr.submit(cfg, submit_key=key)
        remember_submit("demo", [demo_run])
        st.session_state["demo_run"] = demo_run

    # Live view: this session's demo, else (a reload, a second tab) whatever is queued or running.
    runs = store.runs_df()
    watch = run_to_watch(runs, [demo_run])
    if watch:
        with st.container(border=True):
            render_live(watch, key="home", show_curves=True, show_log=False)

    # ----------------------------------------------------------------------------- runs
    st.subheader("Runs")
    metrics = store.metrics_df()
    table = charts.summarize_runs(runs, metrics)
    if table.empty:
        st.info("No runs yet. Run the quick demo above, or set up an experiment on the **Experiment** page.")
    else:
        pct = {"format": "percent"}
        unused = [c for c in charts.PRUNE_COLUMNS if table[c].isna().all()]
        st.dataframe(
            table.drop(columns=unused), hide_index=True, width="stretch",
            column_config={
                "id": st.column_config.TextColumn("run"),
                "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
                "top1_before": st.column_config.NumberColumn("top-1 before", **pct),
                "top1_after": st.column_config.NumberColumn("top-1 after", **pct),
                "top1_delta": st.column_config.NumberColumn("Δ top-1", **pct),
                "dense_flops_reduction": st.column_config.NumberColumn("dense FLOPs −", **pct),
                "effective_flops_reduction": st.column_config.NumberColumn("effective FLOPs −", **pct),
                "size_reduction": st.column_config.NumberColumn("size −", **pct),
                "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
                "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
            })
        st.caption("Reductions are the fraction removed, after vs before; size compares the smaller file written "
                   "(dense fp32 safetensors or the sparse bitmask form). Open **Results** for the details.")

    # ----------------------------------------------------------------------------- trade-offs
    st.subheader("Best trade-offs")
    done = metrics[metrics["status"] == FINISHED]
    if done.empty:
        st.info("The accuracy / FLOPs trade-off plot appears here once a run has finished.")
    else:
        st.plotly_chart(charts.tradeoff_figure(done, "effective_flops"), key="home-tradeoff")
        st.caption(charts.TRADEOFF_METRICS["effective_flops"][1] + ". Stars: baselines; dots: pruned models; "
                   "arrows join each run's before and after; the dashed line is the Pareto frontier.")


st.set_page_config(page_title="accelvit", page_icon=":material/content_cut:", layout="wide")
st.navigation([
    st.Page(home, title="Home", icon=":material/home:", default=True),
    st.Page("pages/1_Experiment.py", title="Experiment", icon=":material/science:", url_path="Experiment"),
    st.Page("pages/2_Results.py", title="Results", icon=":material/monitoring:", url_path="Results"),
    st.Page("pages/3_Inference.py", title="Inference", icon=":material/image_search:", url_path="Inference"),
]).run()
