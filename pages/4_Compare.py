"""Compare: 2-4 runs side by side (curves, final metrics, config diff, per-layer pruning); the URL
(``?runs=ID1,ID2``) holds the selection, so a link reopens the same comparison. Logic:
``accelvit/ui/compare.py``."""

from pathlib import Path

import pandas as pd
import streamlit as st

from accelvit.ui import compare, tables
from accelvit.ui.state import PAGE_ICON, manager
from accelvit.text import md_escape

st.set_page_config(page_title="accelvit · Compare", page_icon=PAGE_ICON, layout="wide")
store = manager().store

st.title("Compare runs")
runs = store.runs_df()
if runs.empty:
    st.info("No runs yet. Launch some on the **Experiment** page (a sweep gives several at once).")
    st.stop()

known = list(runs["id"])
KEY = "cmp_runs"
if KEY not in st.session_state:  # first run of this page in this session: the URL decides
    asked = compare.parse_runs_param(st.query_params.get_all(compare.PARAM), known)
    st.session_state[KEY] = asked.ids if (asked.ids or asked.unknown or asked.dropped) else compare.default_runs(runs)
    st.session_state["_cmp_url"] = (list(st.session_state[KEY]), asked.notes())
elif any(r not in known for r in st.session_state[KEY]):  # deleted since: the widget refuses unknown values
    st.session_state[KEY] = [r for r in st.session_state[KEY] if r in known]
labels_all = {r.id: f"{r.name or r.id} · {r.status} · {r.id}" for r in runs.itertuples()}
selected = st.multiselect(f"Runs to compare ({compare.MIN_RUNS}–{compare.MAX_RUNS}; the first is the reference)",
                          known, format_func=labels_all.get, key=KEY)
url_ids, notes = st.session_state.get("_cmp_url", ([], []))
if selected == url_ids:  # what the link asked for and could not show, until the selection changes
    for note in notes:
        st.warning(note, icon=":material/link_off:")
if selected:
    st.query_params[compare.PARAM] = compare.runs_param(selected)
elif compare.PARAM in st.query_params:
    del st.query_params[compare.PARAM]

problem = compare.selection_problem(selected)
if problem:
    st.info(problem)
    st.stop()
st.caption(f"Link to this comparison: this page's address, ending in `?{compare.PARAM}="
           f"{compare.runs_param(selected)}`.")

labels = compare.run_labels(runs, selected)
chosen = runs.set_index("id").loc[selected].reset_index()
unfinished = [md_escape(labels[r.id]) + f" ({r.status})" for r in chosen.itertuples() if r.status != "finished"]
if unfinished:
    st.warning("Not finished, so some numbers are missing (–): " + ", ".join(unfinished) + ".")

# ----------------------------------------------------------------------------- metrics
metrics = store.metrics_df(run_ids=selected)
st.subheader("Final models")
values = compare.final_metrics(metrics, selected)
view = compare.metrics_view(values, labels, chosen, compare.speedup_methods(metrics))
st.dataframe(view, hide_index=True, width="stretch", height=35 * (len(view) + 1) + 3, placeholder=tables.MISSING)
st.caption(f"Each run's pruned, finetuned model. In brackets: the difference to the reference "
           f"({md_escape(labels[selected[0]])}): accuracies in percentage points, everything else relative. Latencies of "
           "different runs were timed at different times (machine load differs); each speedup compares a run "
           "with its own baseline, timed interleaved, and compares better across runs. –: not measured.")

# ----------------------------------------------------------------------------- curves
st.subheader("Training curves")
progress = {rid: store.progress_df(rid) for rid in selected}
curves = compare.curves_figure(progress, labels)
st.plotly_chart(curves, key="cmp_curves")
gaps = [f"{stage}: {', '.join(md_escape(labels[r]) for r in rids)}" for stage, rids in curves.layout.meta["missing"].items()
        if rids]
st.caption("Loss and accuracy on the training batches, one colour per run."
           + (" No curve recorded (a run that reused a cached baseline trains none) for " + "; ".join(gaps) + "."
              if gaps else ""))

# ----------------------------------------------------------------------------- config
st.subheader("Configuration differences")
configs = {r["id"]: r.get("config") or {} for r in store.list_runs(run_ids=selected)}
diff = compare.config_diff({rid: configs.get(rid) for rid in selected})
if diff.empty:
    st.success("The runs have the same configuration (apart from their names).")
else:
    st.dataframe(compare.config_diff_view(diff, labels), hide_index=True, width="stretch")
    st.caption(f"Only the {len(diff)} config field{'s' if len(diff) != 1 else ''} whose values differ; "
               "'none': not set.")

# ----------------------------------------------------------------------------- per layer
st.subheader("Per layer: heads, ranks and density")


@st.cache_data(show_spinner=False, max_entries=32)
def _layers(path: str, mtime: float) -> pd.DataFrame:
    return pd.read_csv(path)


layer_tables = {}
for rid in selected:
    arts = store.artifacts_df(rid)
    path = dict(zip(arts["name"], arts["path"])).get("layers_after")
    layer_tables[rid] = _layers(path, Path(path).stat().st_mtime) if path and Path(path).is_file() else None
without = [md_escape(labels[r]) for r, t in layer_tables.items() if t is None or t.empty]
long = compare.layers_long(layer_tables)
if long.empty:
    st.info("None of these runs has a per-layer table of its final model (not finished, or older than per-layer "
            "tables).")
else:
    st.plotly_chart(compare.layers_figure(long, labels, selected), key="cmp_layers")
    st.caption("Heads kept per attention block, and per linear layer the rank kept by SVD and the fraction of "
               "nonzero weights, in the final model of each run."
               + (f" No per-layer table: {', '.join(without)}." if without else ""))
    with st.expander("Per-layer table"):
        st.dataframe(compare.layers_table(long, labels, selected), hide_index=True, width="stretch")
