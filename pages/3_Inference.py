"""Inference: the baseline and the pruned model of a finished run side by side on your images."""

import streamlit as st
from streamlit.errors import StreamlitAPIException

from accelvit.errors import AccelvitError, ConfigError
from accelvit.runs import FINISHED
from accelvit.ui import inference
from accelvit.ui.state import PAGE_ICON, manager
from accelvit.uploads import UploadQuota

st.set_page_config(page_title="accelvit · Inference", page_icon=PAGE_ICON, layout="wide")
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
def _timing(run_id: str, stamp: tuple, _models: dict) -> inference.Timing:
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
timing = _timing(rid, tuple(stamp), models)

# Latency: one figure per model (a forward pass does not depend on the picture), shown once.
st.subheader("Latency")
cols = st.columns(len(models) + (1 if timing.speedup else 0))
for col, (label, lm) in zip(cols, models.items()):
    lo, hi = timing.spread[label]
    col.metric(f"{label} latency (batch 1, CPU)", f"{timing.ms[label]:.2f} ms",
               help=f"median of {timing.reps} timed forward passes on {timing.device}; middle half "
                    f"{lo:.2f}-{hi:.2f} ms; {lm.params:,} parameters; input {lm.img_size} px")
if timing.speedup:
    cols[-1].metric("speedup (paired)", f"{timing.speedup:.2f}x",
                    help="median over the interleaved pairs of baseline time / pruned time; above 1x the pruned "
                         "model is faster")
st.caption(timing.how())
why = inference.explain_speedup(timing)
if why:
    st.info(why, icon=":material/info:")

st.subheader("Predictions")
source = st.radio("Images", ["upload", "test"], horizontal=True, key="inf_source",
                  format_func={"upload": "upload images", "test": "test images from the run's data set"}.get)
images: list[tuple[str, object, str | None]] = []  # (name, image, true class)
if source == "upload":
    try:
        # The browser offers only these files. MIME types next to the endings leave the content check to
        # read_upload (Pillow), whose message names the file; Streamlit's own ending check would refuse the
        # whole upload with an error that does not.
        quota = UploadQuota.from_env()
        files = st.file_uploader(f"Images (PNG, JPEG, BMP, GIF, WebP, TIFF; up to {quota.max_images} at a time, "
                                 f"{quota.max_image_bytes // 2**20} MB each)",
                                 type=[*inference.IMAGE_TYPES, *inference.IMAGE_MIME_TYPES],
                                 accept_multiple_files=True, key="inf_files")
    except (StreamlitAPIException, ConfigError) as exc:
        st.error(f"That upload was refused: {exc}")
        files, quota = [], UploadQuota()
    # Each file is checked alone (format, pixels, aspect ratio, damage): a bad one is named, the rest predicted.
    read, refused = inference.read_uploads(files or [], quota)
    for msg in refused:
        st.error(msg)
    images += [(name, img, None) for name, img in read]
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

# Predict first, then show the score over the images, then one card per image.
results = []  # (name, image, true class, {label: top-k table or the error}, {label: right?})
for name, img, true in images:
    tops, verdicts = {}, {}
    for label, lm in models.items():
        try:
            tops[label] = inference.predict(lm, img)
            verdicts[label] = inference.is_right(tops[label], true, lm.class_names)
        except Exception as exc:  # never crash the page on one image
            tops[label], verdicts[label] = exc, None
    results.append((name, img, true, tops, verdicts))

score = inference.tally([r[4] for r in results], list(models))
if any(judged for _, judged in score.values()):
    st.markdown("Top-1 on these test images: " + ", ".join(
        f"**{label}** {right}/{judged} right" for label, (right, judged) in score.items() if judged))

for name, img, true, tops, verdicts in results:
    with st.container(border=True):
        c = st.columns([1, 2, 2])
        note = inference.view_note(img)
        c[0].image(inference.thumbnail(img), width=160,  # a thumbnail: safe at any aspect ratio, small to send
                   caption=name + (f" · true class: {true}" if true is not None else "") + (f" · {note}" if note else ""))
        for col, label in zip(c[1:], models):
            top = tops[label]
            if isinstance(top, Exception):
                col.error(f"{label}: prediction failed: {top}")
                continue
            col.markdown(" · ".join(x for x in (f"**{label}**", f"predicted **{inference.top1(top)}**",
                                                 inference.mark(verdicts[label])) if x))
            col.dataframe(top, hide_index=True, width="stretch",
                          column_config={"probability": st.column_config.ProgressColumn(
                              "probability", min_value=0.0, max_value=1.0, format="percent")})
