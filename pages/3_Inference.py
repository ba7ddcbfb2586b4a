"""Inference: the baseline and the pruned model of a finished run side by side on your images."""

import streamlit as st

from accelvit.errors import AccelvitError, InputError
from accelvit.runs import FINISHED
from accelvit.ui import inference
from accelvit.ui.state import manager

st.set_page_config(page_title="accelvit · Inference", page_icon=":material/image_search:", layout="wide")
store = manager().store

st.title("Inference")
runs = [r for r in store.list_runs(status=FINISHED) if inference.run_model_paths(r)]
if not runs:
    st.info("No finished run with saved models yet. Finish a run first (the quick demo on **Home** takes about "
            "half a minute).")
    st.stop()

by_id = {r["id"]: r for r in runs}
rid = st.selectbox("Run", list(by_id), format_func=lambda i: f"{by_id[i]['name'] or i} · {i}", key="inf_run")
run = by_id[rid]
paths = inference.run_model_paths(run)


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def _load(path: str, label: str, mtime: float) -> inference.LoadedModel:
    return inference.load_model(path, label)


@st.cache_data(show_spinner="Timing both models…", max_entries=16)
def _latencies(run_id: str, stamp: tuple, _models: dict) -> tuple[dict, float | None]:
    return inference.latencies(_models)


models: dict[str, inference.LoadedModel] = {}
stamp = []
for label, path in paths.items():
    mtime = inference.weights_mtime(path)
    try:
        models[label] = _load(path, label, mtime)
        stamp.append((label, path, mtime))
    except AccelvitError as exc:
        st.error(f"The {label} model in {path} cannot be loaded: {exc}")
if not models:
    st.stop()
latency, speedup = _latencies(rid, tuple(stamp), models)

cols = st.columns(len(models) + (1 if speedup else 0))
for col, (label, lm) in zip(cols, models.items()):
    col.metric(f"{label} latency (batch 1, CPU)", f"{latency[label]:.2f} ms",
               help=f"median of 20 timed forward passes, both models interleaved; {lm.params:,} parameters; "
                    f"input {lm.img_size} px")
if speedup:
    cols[-1].metric("speedup (paired)", f"{speedup:.2f}x", help="median over the pairs of baseline / pruned time")

source = st.radio("Images", ["upload", "test"], horizontal=True, key="inf_source",
                  format_func={"upload": "upload images", "test": "test images from the run's data set"}.get)
images: list[tuple[str, object, str | None]] = []  # (name, image, true class)
if source == "upload":
    files = st.file_uploader("Images (PNG, JPEG, BMP, WebP; up to 20 MB each)", accept_multiple_files=True,
                             key="inf_files")
    for f in files or []:
        try:
            images.append((f.name, inference.read_upload(f.name, f.getvalue()), None))
        except InputError as exc:
            st.error(str(exc))
else:
    n = st.slider("How many", 1, 16, 4, key="inf_n")
    seed = st.number_input("Pick (seed)", min_value=0, value=0, step=1, key="inf_seed")

    @st.cache_data(show_spinner="Loading test images…", max_entries=8)
    def _examples(run_id: str, n: int, seed: int):
        return inference.dataset_examples(by_id[run_id]["config"].get("data") or {}, n=n, seed=seed)

    try:
        for i, (img, true) in enumerate(_examples(rid, n, int(seed))):
            images.append((f"test image {i + 1}", img, true))
    except AccelvitError as exc:
        st.error(f"The run's data set cannot be loaded here: {exc}")

for name, img, true in images:
    with st.container(border=True):
        c = st.columns([1, 2, 2])
        c[0].image(img, caption=name + (f" · true class: {true}" if true is not None else ""), width=160)
        for col, (label, lm) in zip(c[1:], models.items()):
            try:
                top = inference.predict(lm, img)
            except Exception as exc:  # never crash the page on one image
                col.error(f"{label}: prediction failed: {exc}")
                continue
            col.markdown(f"**{label}** · {latency[label]:.2f} ms")
            col.dataframe(top, hide_index=True, width="stretch",
                          column_config={"probability": st.column_config.ProgressColumn(
                              "probability", min_value=0.0, max_value=1.0, format="percent")})
