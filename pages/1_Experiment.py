"""Experiment: set up a pruning experiment (or a sweep), see its estimated cost, launch it, watch it."""

import json

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from accelvit.errors import AccelvitError, InputError
from accelvit.models import SCRATCH_CONFIGS, list_models
from accelvit.prune.config import CRITERIA, TARGET_RULES
from accelvit.runs import ACTIVE, run_to_watch, watched_runs
from accelvit.serialize import SPEC_FILE, WEIGHTS_FILE
from accelvit.ui import forms, tables
from accelvit.ui.live import render_live
from accelvit.ui.state import PAGE_ICON, device_choices, manager, process_limit, remember_submit, submit_key

st.set_page_config(page_title="accelvit · Experiment", page_icon=PAGE_ICON, layout="wide")
mgr = manager()
store = mgr.store
ss = st.session_state
P = "exp:"  # widget keys are "exp:<config field>"

for k, v in forms.DEFAULTS.items():
    ss.setdefault(P + k, v)

st.title("Experiment")
st.caption("Train (or load) a baseline, prune it, finetune it, and measure both. Every field is checked before "
           "launching; messages appear under the field.")

slots: dict = {}
# Number fields start from the session's values (the defaults above) but use value=None, so that an
# emptied field reads as None (an error on that field) instead of silently becoming its minimum.


def slot(name: str) -> None:
    slots[name] = st.empty()


# ----------------------------------------------------------------------------- data
with st.container(border=True):
    st.markdown("#### Data")
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        dataset = st.selectbox("Data set", list(forms.DATASET_LABELS), format_func=forms.DATASET_LABELS.get,
                               key=P + "data.dataset",  # augmentation helps real photos, not 8x8 digits
                               on_change=lambda: ss.__setitem__(P + "data.augment", ss[P + "data.dataset"] != "digits"))
        slot("data.dataset")
    with c2:
        st.number_input("Image size (px)", min_value=8, max_value=1024, step=8, value=None, key=P + "data.img_size",
                        help="Square input size; scratch Swin configs need a multiple of patch x window.")
        slot("data.img_size")
    with c3:
        st.number_input("Batch size", min_value=1, max_value=4096, step=16, value=None, key=P + "data.batch_size")
        slot("data.batch_size")
    with c4:
        st.number_input("Training subset (0 = all images)", min_value=0, step=100, value=None, key=P + "data.subset")
        slot("data.subset")
    st.checkbox("Augment (random crop, + flip except digits)", key=P + "data.augment",
                help="Helps on CIFAR-10, Caltech-101 and photo folders; on the tiny digits it slows training down.")
    if dataset != "digits":
        d1, d2 = st.columns([3, 1])
        with d1:
            hint = {"cifar10": "folder holding cifar-10-batches-py", "caltech101":
                    "folder holding caltech101/101_ObjectCategories", "folder": "an ImageFolder tree: <class>/<image>"}
            st.text_input("Data folder", key=P + "data.root", placeholder=hint[dataset], help=forms.roots_help())
            slot("data.root")
        with d2:
            if dataset in ("cifar10", "caltech101"):
                st.checkbox("Download if missing (needs network)", key=P + "data.download")

# ----------------------------------------------------------------------------- model
with st.container(border=True):
    st.markdown("#### Model")
    source = st.radio("Baseline", list(forms.MODEL_SOURCES), format_func=forms.MODEL_SOURCES.get,
                      key=P + "model_source", horizontal=True)
    weights_path = weights_error = None
    if source == "scratch":
        st.selectbox("Scratch config", list(SCRATCH_CONFIGS), key=P + "model")
        slot("model")
    elif source == "timm":
        timm_names = [m for m in list_models() if m not in SCRATCH_CONFIGS]
        if ss.get(P + "timm_model") not in timm_names:
            ss[P + "timm_model"] = timm_names[0]
        m1, m2 = st.columns(2)
        with m1:
            st.selectbox("timm Swin model", timm_names, key=P + "timm_model")
            slot("model")
        with m2:
            w = st.radio("Weights", list(forms.TIMM_WEIGHTS), format_func=forms.TIMM_WEIGHTS.get,
                         key=P + "timm_weights")
        if w == "pretrained":
            st.caption("Downloaded from huggingface.co when the run starts: without network access the run fails. "
                       "Offline, upload the weights file or give its path instead.")
        elif w == "path":
            st.text_input("Weights file path", key=P + "timm_weights_path",
                          placeholder="/path/to/model.safetensors (or a .pth state dict)", help=forms.roots_help())
        if w == "upload":
            up = st.file_uploader("Weights file", key=P + "weights_file",
                                  help="A .safetensors file, or a torch state dict (.pth) loaded with weights_only.")
            if up is not None:
                try:
                    weights_path = str(forms.save_weights_upload(up.name, up.getvalue(), store.home))
                    st.caption(f"Stored as `{weights_path}`")
                except InputError as exc:
                    weights_error = str(exc)
        slot("weights_path")
    else:
        st.text_input("Saved model folder", key=P + "baseline_checkpoint",
                      placeholder=f"a folder with {WEIGHTS_FILE} + {SPEC_FILE} (accelvit train --out ...)",
                      help=forms.roots_help())
        slot("baseline_checkpoint")

# ----------------------------------------------------------------------------- training
with st.container(border=True):
    st.markdown("#### Training")
    t1, t2, t3, t4, t5 = st.columns(5)
    with t1:
        st.number_input("Baseline epochs", min_value=0, max_value=1000, value=None, key=P + "train.epochs")
        slot("train.epochs")
    with t2:
        st.number_input("Baseline learning rate", min_value=0.0, max_value=10.0, format="%.5f", step=1e-4,
                        value=None, key=P + "train.lr")
        slot("train.lr")
    with t3:
        st.number_input("Finetune epochs", min_value=0, max_value=1000, value=None, key=P + "finetune.epochs")
        slot("finetune.epochs")
    with t4:
        st.number_input("Finetune learning rate", min_value=0.0, max_value=10.0, format="%.5f", step=1e-4,
                        value=None, key=P + "finetune.lr")
        slot("finetune.lr")
    with t5:
        st.selectbox("Device", device_choices(), key=P + "device")
        slot("device")
        if process_limit() > 1:  # several GPUs, or several CPU cores: a run may train in several processes
            st.number_input("Processes", min_value=1, max_value=process_limit(), step=1, value=None,
                            key=P + "processes", help=forms.PROCESSES_HELP)
            slot("processes")

# ----------------------------------------------------------------------------- pruning
with st.container(border=True):
    st.markdown("#### Pruning")
    h1, h2, h3, h4 = st.columns(4)
    with h1:
        st.slider("Head ratio (heads removed)", 0.0, 0.95, step=0.05, key=P + "prune.head_ratio")
        slot("prune.head_ratio")
    with h2:
        st.selectbox("Head criterion", CRITERIA, key=P + "prune.head_criterion",
                     help="taylor: gradient of a head gate on calibration batches; l1: weight magnitude; "
                          "random: a control.")
        slot("prune.head_criterion")
    with h3:
        st.slider("MLP width ratio (hidden units removed)", 0.0, 0.95, step=0.05, key=P + "prune.mlp_ratio")
        slot("prune.mlp_ratio")
    with h4:
        st.selectbox("MLP criterion", CRITERIA, key=P + "prune.mlp_criterion")
        slot("prune.mlp_criterion")
    s1, s2, s3 = st.columns([1, 2, 1])
    with s1:
        mode = st.radio("SVD low rank", list(forms.SVD_MODES), format_func=forms.SVD_MODES.get,
                        key=P + "svd_mode", horizontal=True)
    with s2:
        if mode == "rank":
            st.slider("Rank ratio (fraction of each layer's weights kept)", 0.05, 1.0, step=0.05,
                      key=P + "prune.rank_ratio")
            slot("prune.rank_ratio")
        elif mode == "energy":
            st.slider("Energy (fraction of squared singular values kept)", 0.5, 1.0, step=0.01,
                      key=P + "prune.energy")
            slot("prune.energy")
    with s3:
        st.checkbox("Activation-aware SVD", key=P + "prune.activation_aware",
                    help="Factorise W·S with S from calibration activations (minimises the output error).")
        slot("prune.activation_aware")
    i1, i2, i3 = st.columns(3)
    with i1:
        st.slider("IHT target sparsity", 0.0, 0.95, step=0.05, key=P + "prune.sparsity")
        slot("prune.sparsity")
    with i2:
        st.number_input("IHT interval (steps between mask updates)", min_value=1, max_value=10000,
                        value=None, key=P + "prune.iht_interval")
        slot("prune.iht_interval")
    with i3:
        st.slider("IHT ramp (fraction of finetune steps)", 0.0, 1.0, step=0.05, key=P + "prune.iht_ramp_frac")
        slot("prune.iht_ramp_frac")
    st.number_input("Target dense FLOPs (fraction of the baseline's; 0 = off, prune by the ratios above)",
                    min_value=0.0, max_value=0.95, step=0.05, value=None, key=P + "prune.target_flops",
                    help="Searches the head / MLP-width / rank ratios that bring dense FLOPs to this fraction "
                         "(within 1%). The ratios above set the direction of the search: heads and MLP width "
                         "alike when they are all zero.")
    slot("prune.target_flops")
    r1, r2, r3, r4 = st.columns(4)
    with r1:
        st.selectbox("FLOP-target allocation", TARGET_RULES, key=P + "prune.target_rule",
                     help="sensitivity: heads and MLP units ranked across all layers by their loss score per FLOP "
                          "they cost (cheap, unimportant units go first); uniform: the same fractions in every layer.")
        slot("prune.target_rule")
    with r2:
        st.number_input("Prune steps (gradual pruning)", min_value=1, max_value=20, value=None,
                        key=P + "prune.prune_steps",
                        help="Reach the FLOP target in this many steps with a short distilled recovery between "
                             "them, inside the finetune's epochs. Needs a FLOP target.")
        slot("prune.prune_steps")
    with r3:
        st.slider("Distillation weight (0 = off)", 0.0, 1.0, step=0.05, key=P + "distill.alpha",
                  help="The finetune learns from the unpruned baseline's logits (KL at the temperature) mixed "
                       "with the labels by this weight.")
        slot("distill.alpha")
    with r4:
        st.number_input("Distillation temperature", min_value=0.1, max_value=20.0, step=0.5,
                        value=None, key=P + "distill.temperature")
        slot("distill.temperature")
    sweep = st.toggle("Sweep over several ratios (one run per combination, one shared baseline)", key=P + "sweep")
    if sweep:
        w1, w2, w3, w4, w5 = st.columns(5)
        for col, k, label in ((w1, "head_ratio", "Head ratios"), (w2, "mlp_ratio", "MLP width ratios"),
                              (w3, "rank_ratio", "Rank ratios (none = no SVD)"), (w4, "sparsity", "Sparsities"),
                              (w5, "target_flops", "FLOP targets (e.g. 0.7, 0.5, 0.3)")):
            with col:
                st.text_input(label, key=P + "sweep." + k, placeholder="e.g. 0.25, 0.5, 0.75")
                slot("sweep." + k)
        slot("sweep")

with st.expander("Options"):
    o1, o2, o3, o4 = st.columns(4)
    with o1:
        st.text_input("Run name (optional)", key=P + "name")
        slot("name")
    with o2:
        st.number_input("Seed", min_value=0, step=1, value=None, key=P + "seed")
        slot("seed")
    with o3:
        st.checkbox("Measure latency", key=P + "measure_latency")
    with o4:
        st.checkbox("Control run (baseline finetuned as long)", key=P + "control")

# ----------------------------------------------------------------------------- validate + estimate
values = {k: ss.get(P + k, v) for k, v in forms.DEFAULTS.items()}
values["weights_path"] = weights_path
result = forms.validate_form(values)
errors = dict(result.errors)
if weights_error:
    errors["weights_path"] = weights_error


@st.cache_data(show_spinner="Estimating the cost after pruning…", max_entries=64)
def _estimate(key_json: str) -> dict:
    """The cost preview of one estimate key (forms.estimate_key): recomputed only when the model, image
    size, classes or prune settings change. A failure is a result too (cached, shown under its field)."""
    from accelvit.experiment import estimate

    try:
        return estimate.estimate_from_key(json.loads(key_json))
    except Exception as exc:  # a model that cannot be built at this size, a FLOP target out of reach, ...
        field, msg = forms.estimate_error(exc)
        return {"error": msg, "field": field}


def _key_json(cfg) -> str:
    return json.dumps(forms.estimate_key(cfg), sort_keys=True)


def _pct(before: float, after: float) -> str | None:
    """The change from ``before`` to ``after`` in percent ("-42%", "+0.3%"); None for no change."""
    r = after / before - 1 if before else 0.0
    if abs(r) < 5e-4:
        return None
    return f"{100 * r:+.0f}%" if abs(r) >= 5e-3 else f"{100 * r:+.1f}%"


def _delta(before: float, after: float) -> dict:
    """st.metric's delta for a change from ``before`` to ``after``: no red arrow for no change."""
    pct = _pct(before, after)
    if pct is None:
        return dict(delta=f"no change vs {tables.fmt_si(before)}", delta_color="off", delta_arrow="off")
    return dict(delta=f"{pct} vs {tables.fmt_si(before)}", delta_color="inverse")


METRICS = (("dense_flops", "Dense FLOPs / image"), ("effective_flops", "Effective FLOPs"),
           ("params", "Parameters"), ("nonzero_params", "Nonzero parameters"))

# What the estimate is for: the run, or the sweep's least and most pruned runs (the other settings are
# the sliders'). Each is keyed only on what changes it, so other edits find it in the cache.
targets: list[tuple[str, str]] = []  # (what it is, estimate key)
sweep_note = None
noop = False
if result.ok and result.sweep is not None:
    ext = forms.sweep_extremes(result.sweep)
    (light, light_pt), (heavy, heavy_pt) = ext["lightest"], ext["heaviest"]
    targets = [(forms.describe_point(light_pt), _key_json(light)), (forms.describe_point(heavy_pt), _key_json(heavy))]
    if targets[0][1] == targets[1][1]:
        targets = targets[:1]
        sweep_note = f"Sweep of {forms.sweep_summary(result.sweep)}. Its runs prune alike: the estimate is for all."
    else:
        sweep_note = (f"Sweep of {forms.sweep_summary(result.sweep)}. The estimate spans its least pruned run "
                      f"({forms.describe_point(light_pt)}) and its most pruned run "
                      f"({forms.describe_point(heavy_pt)}); the settings not swept are the ones above.")
elif result.ok:
    targets = [("", _key_json(result.config))]
    noop = result.config.prune.is_noop()


@st.fragment
def estimate_panel(targets: list[tuple[str, str]], auto: bool, noop: bool, sweep_note: str | None) -> dict | None:
    """The cost preview, in its own fragment: the Estimate button reruns only this. Returns the
    estimate's error (for the page to show under its field and to disable Launch), else None."""
    st.markdown("#### Estimated cost after pruning")
    if not targets:
        st.info("Fix the fields marked above to see the estimate.")
        return None
    if sweep_note:
        st.caption(sweep_note)
    if noop:
        st.info("This run prunes nothing: it only trains and measures a baseline.", icon=":material/info:")
    requested = ss.setdefault("_estimate_requested", set())
    keys = [k for _, k in targets]
    # Scratch configs are estimated as you type; big models (seconds of SVD) on request.
    if not (auto or all(k in requested for k in keys)):
        st.button("Estimate the cost after pruning", key="estimate", icon=":material/calculate:",
                  on_click=requested.update, args=(keys,),
                  help="Builds the model, prunes a copy and counts its FLOPs; takes a while for large models.")
        return None
    results = [_estimate(k) for k in keys]
    failed = next(({**r, "point": what} for (what, _), r in zip(targets, results) if "error" in r), None)
    if failed is not None:
        ctx = get_script_run_ctx()
        if ctx is not None and ctx.fragment_ids_this_run:  # a rerun of this fragment alone: let the page
            st.rerun()  # mark the field and disable Launch (the failure is cached)
        st.info("Fix the fields marked above to see the estimate.")
        return failed
    cols = st.columns(len(METRICS))
    if len(results) == 1:
        b, a = results[0]["before"], results[0]["after"]
        for col, (k, label) in zip(cols, METRICS):
            if noop:
                col.metric(label, tables.fmt_si(b[k]), "baseline: nothing is pruned", delta_color="off",
                           delta_arrow="off")
            else:
                col.metric(label, tables.fmt_si(a[k]), **_delta(b[k], a[k]))
    else:  # a sweep: the range from its most to its least pruned run
        lo, hi = results
        for col, (k, label) in zip(cols, METRICS):
            b = lo["before"][k]
            a_min, a_max = sorted((lo["after"][k], hi["after"][k]))
            if _pct(a_max, a_min) is None:  # the same for every run of the sweep
                col.metric(label, tables.fmt_si(a_min), **_delta(b, a_min))
            else:
                d_min, d_max = (_pct(b, a) or "0%" for a in (a_min, a_max))
                col.metric(label, f"{tables.fmt_si(a_min)} – {tables.fmt_si(a_max)}",
                           f"{d_min} to {d_max} vs {tables.fmt_si(b)}", delta_color="inverse")
    st.caption(results[0]["note"])
    return None


with st.container(border=True):
    failed = estimate_panel(targets, auto=source == "scratch", noop=noop, sweep_note=sweep_note)
    if failed:
        field = failed["field"] or {"scratch": "data.img_size", "checkpoint": "baseline_checkpoint"}.get(
            source, "model")
        msg = failed["error"]
        if result.sweep is not None:  # say which run of the sweep, under the swept field it concerns
            msg = f"The sweep's run with {failed['point']}: {msg}"
            swept = field.removeprefix("prune.")
            field = f"sweep.{swept}" if swept in result.sweep.grid else field
        errors[field] = msg
    general = []
    for field, msg in errors.items():
        target = forms.slot_of(field)
        if target in slots:
            slots[target].error(msg)
        else:
            general.append(f"{field}: {msg}")
    for g in general:
        st.error(g)
    n_runs = len(result.sweep.points()) if result.sweep is not None else 1
    label = f"Launch sweep ({n_runs} runs)" if result.sweep is not None else "Launch"
    if st.button(label, type="primary", icon=":material/rocket_launch:", disabled=bool(errors), key="launch"):
        try:
            if result.sweep is not None:
                key = submit_key("experiment", result.sweep.to_dict())
                ids = mgr.submit_sweep(result.sweep, submit_key=key)
            else:
                key = submit_key("experiment", result.config.to_dict())
                ids = [mgr.submit(result.config, submit_key=key)]
            remember_submit("experiment", ids)
            ss["exp_watch"] = ids
            st.toast(f"Queued {len(ids)} run(s).")
        except AccelvitError as exc:
            st.error(str(exc))

# ----------------------------------------------------------------------------- live view
st.subheader("Live view")
mine = ss.get("exp_watch", [])


def _follow(runs):
    """What this session launched (else, after a reload or in another tab, what is queued or
    running): the running one, else the next queued, else the newest."""
    return run_to_watch(runs, mine)


def _sweep_table(runs) -> None:
    """The runs of this sweep, from the same refresh as the live card above."""
    watch = watched_runs(runs, mine)
    if len(watch) <= 1:
        return
    sub = runs[runs["id"].isin(watch)]
    unfinished = sub[sub["status"].isin(ACTIVE)]["id"].tolist()
    if unfinished:
        st.button(f"Cancel the {len(unfinished)} unfinished run(s) of this sweep", key="cancel_all",
                  icon=":material/cancel:", on_click=lambda: [mgr.cancel(r) for r in unfinished])
    view = sub[["id", "name", "status", "stage", "progress"]].copy()
    view["stage"] = view["stage"].fillna("–")
    view["progress"] = tables.whole_percent(view["progress"])  # as on the live card and the Home table
    st.dataframe(view, hide_index=True, width="stretch",
                 column_config={"id": st.column_config.TextColumn("run", pinned=True),
                                "progress": tables.progress_column()})


if not watched_runs(store.runs_df(), mine):
    st.info("Nothing is running. Launch an experiment above; its progress shows here.")
else:
    render_live(_follow, key="exp", extra=_sweep_table)
