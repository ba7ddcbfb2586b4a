"""DataFrame analytics over the run store: the frames pages and the CLI read, and the one
before/after computation.

:class:`~accelvit.runs.store.RunStore` fetches rows (SQL, JSON decoded) and hands them to the
``*_frame`` builders here. Everything else is a pure function of frames, so it is tested on
hand-made ones:

- :func:`ratio_to_before` is *the* before/after computation: every ratio and reduction shown
  anywhere (``metrics_df``'s ratio columns, the Home table, the live summary, ``accelvit runs``)
  is a value divided by the same run's ``before`` value.
- :func:`add_speedups` is the one speedup computation: a stage's stored ``speedup_b1`` /
  ``speedup_batch`` when the run timed it interleaved with the baseline (``speedup_method ==
  "interleaved"``, :func:`accelvit.metrics.compare`); otherwise (runs stored by older versions,
  a baseline that could not be reloaded, the control stage) the ratio of two separate timings,
  marked ``speedup_method == "separate"`` so that pages can say so.
- :func:`run_to_watch` decides which run a live view follows (Home and Experiment pages).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import pandas as pd

from .schema import ACTIVE, METRIC_COLUMNS, RUN_CONFIG_COLUMNS, RUNNING, stage_sort_key

BEFORE, AFTER = "before", "after"

RUN_FRONT_COLUMNS = ("id", "name", "status", "stage", "progress", "created", "started", "finished", "duration_s",
                     "error", "sweep_id", "baseline_key")
EVENT_COLUMNS = ("id", "ts", "kind", "stage", "fraction", "message", "data")
STAGE_COLUMNS = ("stage", "state", "started", "finished", "seconds", "info")
PROGRESS_COLUMNS = ("time", "stage", "fraction", "overall", "epoch", "epochs", "step", "steps", "loss",
                    "accuracy", "lr", "images_per_s", "eta_s")
ARTIFACT_COLUMNS = ("run_id", "name", "kind", "path", "created_at")


def _num(s: Any) -> pd.Series:
    return pd.to_numeric(s, errors="coerce")


def _ts(col: pd.Series) -> pd.Series:
    return pd.to_datetime(_num(col), unit="s", utc=True)


def _dict(v: Any) -> dict:
    """``v`` when it is a dict, else an empty one (a stored config or metrics dict that is damaged)."""
    return v if isinstance(v, dict) else {}


def config_columns(config: dict[str, Any] | None) -> dict[str, Any]:
    """Flat, plottable columns of an experiment config dict (model, data set, pruning fields)."""
    cfg = _dict(config)
    data, train, finetune = _dict(cfg.get("data")), _dict(cfg.get("train")), _dict(cfg.get("finetune"))
    out: dict[str, Any] = {
        "model": cfg.get("model"),
        "dataset": data.get("dataset"),
        "img_size": data.get("img_size"),
        "pretrained": cfg.get("pretrained"),
        "train_epochs": train.get("epochs"),
        "finetune_epochs": finetune.get("epochs"),
        "device": cfg.get("device"),
    }
    for k, v in _dict(cfg.get("prune")).items():
        if k not in out and (v is None or isinstance(v, (int, float, str, bool))):
            out[k] = v
    return out


# ----------------------------------------------------------------------------- before / after
def before_value(metrics: pd.DataFrame, col: str) -> pd.Series:
    """Per row of ``metrics``: ``col`` of the same run's ``before`` row (NaN where there is none)."""
    if metrics is None or not {"run_id", "stage", col} <= set(metrics.columns):
        return pd.Series(float("nan"), index=None if metrics is None else metrics.index, dtype=float)
    ref = metrics[metrics["stage"] == BEFORE].drop_duplicates("run_id").set_index("run_id")[col]
    return _num(metrics["run_id"].map(_num(ref)))


def ratio_to_before(metrics: pd.DataFrame, num: str, den: str | None = None) -> pd.Series:
    """Per row: ``num`` divided by the same run's ``before`` value of ``den`` (default ``num``).

    The one before/after computation; NaN where a run has no ``before`` row or a value is missing.
    """
    if metrics is None or num not in metrics.columns:
        return pd.Series(float("nan"), index=None if metrics is None else metrics.index, dtype=float)
    return _num(metrics[num]) / before_value(metrics, den or num)


def stage_ratios(metrics: pd.DataFrame, cols: Iterable[str], stage: str = AFTER) -> pd.DataFrame:
    """One row per run that has both a ``before`` and a ``stage`` row, indexed by ``run_id`` in
    the order of ``metrics``: ``name`` and each of ``cols`` as the ratio ``stage / before``."""
    cols = list(cols)
    if metrics is None or metrics.empty or "stage" not in metrics.columns:
        return pd.DataFrame(columns=["name", *cols], index=pd.Index([], name="run_id"))
    ratios = pd.DataFrame({c: ratio_to_before(metrics, c) for c in cols}, index=metrics.index)
    has_before = metrics["run_id"].isin(set(metrics.loc[metrics["stage"] == BEFORE, "run_id"]))
    rows = (metrics["stage"] == stage) & has_before
    out = ratios[rows].copy()
    out.insert(0, "name", metrics.loc[rows, "name"] if "name" in metrics.columns else None)
    out.index = pd.Index(metrics.loc[rows, "run_id"], name="run_id")
    return out[~out.index.duplicated()]


def run_metrics(run: dict[str, Any]) -> pd.DataFrame:
    """A run dict's ``stages`` (as from ``get_run``) as ``metrics_df``-like rows: ``run_id, name, stage, ...``."""
    rows = [{"run_id": run.get("id"), "name": run.get("name"), "stage": stage,
             **{k: v for k, v in _dict(m).items() if v is None or isinstance(v, (int, float, str, bool))}}
            for stage, m in _dict(_dict(run).get("stages")).items()]
    return pd.DataFrame.from_records(rows, columns=None if rows else ["run_id", "name", "stage"])


#: ``speedup_method`` values: timed interleaved with the baseline, from two separate timings, the baseline itself.
INTERLEAVED, SEPARATE, BASELINE = "interleaved", "separate", "baseline"


def add_speedups(df: pd.DataFrame) -> pd.DataFrame:
    """``speedup_b1`` / ``speedup_batch`` (baseline latency / this stage's) and ``speedup_method``
    per row, in place; returns ``df``. Idempotent.

    A row whose run stored an interleaved comparison (``speedup_method == "interleaved"`` and a
    ``speedup_b1``) keeps its stored speedups. Any other row gets ``before`` latency / its own
    latency, two separate timings, and ``speedup_method`` ``"separate"`` (``"baseline"`` on the
    ``before`` row itself, NaN where no speedup can be had).
    """
    if df is None:
        return df
    method = df["speedup_method"] if "speedup_method" in df.columns else pd.Series(None, index=df.index, dtype=object)
    stored_b1 = _num(df["speedup_b1"]) if "speedup_b1" in df.columns else pd.Series(float("nan"), index=df.index)
    interleaved = (method == INTERLEAVED) & stored_b1.notna()
    derived = {}
    for col, lat in (("speedup_b1", "latency_ms_b1"), ("speedup_batch", "latency_ms_batch")):
        stored = _num(df[col]) if col in df.columns else pd.Series(float("nan"), index=df.index)
        derived[col] = 1.0 / ratio_to_before(df, lat)
        df[col] = stored.where(interleaved, derived[col])
    is_before = (df["stage"] == BEFORE) if "stage" in df.columns else pd.Series(False, index=df.index)
    out = pd.Series(None, index=df.index, dtype=object)
    out[derived["speedup_b1"].notna() | derived["speedup_batch"].notna()] = SEPARATE
    out[is_before] = BASELINE
    out[interleaved] = INTERLEAVED
    df["speedup_method"] = out
    return df


def add_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """``metrics_df``'s comparisons to the same run's ``before`` row and the speedups of
    :func:`add_speedups` (in place; returns ``df``)."""
    df["flops_ratio"] = ratio_to_before(df, "effective_flops")
    df["params_ratio"] = ratio_to_before(df, "nonzero_params")
    df["size_ratio"] = ratio_to_before(df, "size_sparse_bytes", "size_dense_bytes")
    add_speedups(df)
    df["top1_delta"] = df["top1"] - before_value(df, "top1")
    return df


# ----------------------------------------------------------------------------- frames
def runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``runs_df``: rows of the ``runs`` table (``config`` decoded) -> one row per run, as given."""
    records = []
    for r in rows:
        rec = dict(r)
        for k, v in config_columns(rec.pop("config", None)).items():
            rec.setdefault(k, v)
        records.append(rec)
    cols = ["id", "name", "status", "stage", "progress", "created_at", "started_at", "finished_at", "error",
            "sweep_id", "baseline_key", *RUN_CONFIG_COLUMNS]
    df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=cols)
    for c in cols:
        if c not in df.columns:
            df[c] = pd.Series(dtype="object")
    df["progress"] = _num(df["progress"])  # a damaged row's text reads as NaN, not as a crash later
    end = _num(df["finished_at"])
    start = _num(df["started_at"])
    running = df["status"] == RUNNING
    end = end.where(~running, time.time())
    df["duration_s"] = end - start
    df["created"] = _ts(df["created_at"])
    df["started"] = _ts(df["started_at"])
    df["finished"] = _ts(df["finished_at"])
    df = df.drop(columns=["created_at", "started_at", "finished_at"])
    front = list(RUN_FRONT_COLUMNS)
    return df[front + [c for c in df.columns if c not in front]]


def metrics_frame(metric_rows: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """``metrics_df``: ``stage_metrics`` rows (``data`` decoded) joined with their run (``name,
    status, sweep_id, config`` decoded) -> one row per run x stage, with :func:`add_ratios`."""
    records = []
    for m in metric_rows:
        r = runs.get(m["run_id"])
        if r is None:
            continue
        rec: dict[str, Any] = {"run_id": m["run_id"], "name": r["name"], "status": r["status"],
                               "sweep_id": r["sweep_id"], "stage": m["stage"],
                               "stage_order": stage_sort_key(m["stage"])}
        for c in METRIC_COLUMNS:
            rec[c] = m[c]
        for k, v in _dict(m.get("data")).items():
            if k not in rec and (v is None or isinstance(v, (int, float, str, bool))):
                rec[k] = v
        for k, v in config_columns(r.get("config")).items():
            rec.setdefault(k, v)
        records.append(rec)
    base_cols = ["run_id", "name", "status", "sweep_id", "stage", "stage_order", *METRIC_COLUMNS]
    df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=base_cols)
    for c in base_cols + list(RUN_CONFIG_COLUMNS):
        if c not in df.columns:
            df[c] = pd.Series(dtype="object")
    for c in METRIC_COLUMNS:
        if c != "device":
            df[c] = _num(df[c])
    df = df.sort_values(["run_id", "stage_order"], kind="stable").reset_index(drop=True)
    return add_ratios(df)


def events_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``events_df``: event rows (``data`` decoded) -> ``id, time, kind, stage, fraction, message, data``."""
    df = pd.DataFrame.from_records(rows, columns=list(EVENT_COLUMNS))
    df.insert(1, "time", _ts(df["ts"]))
    return df.drop(columns=["ts"])


def stages_frame(rows: list[dict[str, Any]], active: bool) -> pd.DataFrame:
    """``stages_df``: ``stage_started``/``stage_finished`` events in order -> one row per stage started;
    a stage without its end is ``running`` while the run is ``active``, else ``stopped``."""
    recs: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["kind"] == "stage_started":
            recs[r["stage"]] = {"stage": r["stage"], "state": "running" if active else "stopped",
                                "started": r["ts"], "finished": None, "seconds": None, "info": {}}
        elif r["stage"] in recs:
            d = _dict(r["data"])
            recs[r["stage"]].update(state="done", finished=r["ts"], seconds=d.get("seconds"),
                                    info=d.get("info") or {})
    df = pd.DataFrame.from_records(list(recs.values()), columns=list(STAGE_COLUMNS))
    df["started"] = _ts(df["started"])
    df["finished"] = _ts(df["finished"])
    df["seconds"] = _num(df["seconds"])
    return df


def progress_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``progress_df``: progress events (``ts, stage, fraction, data`` decoded) -> :data:`PROGRESS_COLUMNS`."""
    records = []
    for r in rows:
        d = _dict(r["data"])
        rec = {c: d.get(c) for c in PROGRESS_COLUMNS}
        rec.update(time=r["ts"], stage=r["stage"], fraction=r["fraction"])
        records.append(rec)
    df = pd.DataFrame.from_records(records, columns=list(PROGRESS_COLUMNS))
    df["time"] = _ts(df["time"])
    for c in PROGRESS_COLUMNS[2:]:
        df[c] = _num(df[c])
    return df


def artifacts_frame(rows: list[dict[str, Any]], absolute: Callable[[str], str]) -> pd.DataFrame:
    """``artifacts_df``: artifact rows -> ``run_id, name, kind, path`` (made ``absolute``), ``created``."""
    df = pd.DataFrame.from_records(rows, columns=list(ARTIFACT_COLUMNS))
    df["path"] = [absolute(p) for p in df["path"]]
    df["created"] = _ts(df["created_at"])
    return df.drop(columns=["created_at"])


# ----------------------------------------------------------------------------- live views
def watched_runs(runs: pd.DataFrame, mine: Iterable[str | None] = ()) -> list[str]:
    """The runs a live view follows: ``mine`` (what this browser session launched) that are in
    ``runs``, else, after a reload or in another tab, every queued or running run (oldest first)."""
    known = set(runs["id"])
    watched = [r for r in mine if r in known]
    if not watched:
        watched = list(runs.loc[runs["status"].isin(ACTIVE), "id"][::-1])
    return watched


def run_to_watch(runs: pd.DataFrame, mine: Iterable[str | None] = ()) -> str | None:
    """The one run a live view shows among :func:`watched_runs`: the running one, else the next
    queued one (oldest), else the newest. ``runs`` is ``runs_df`` (newest first); None when idle."""
    watched = watched_runs(runs, mine)
    if not watched:
        return None
    sub = runs[runs["id"].isin(watched)]
    running = sub[sub["status"] == RUNNING]
    if not running.empty:
        return running["id"].iloc[0]
    queued = sub[sub["status"].isin(ACTIVE)]
    return (queued["id"].iloc[-1] if not queued.empty else sub["id"].iloc[0])
