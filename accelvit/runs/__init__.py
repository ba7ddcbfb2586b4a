"""The run store and the job runner: what runs, what it measured, and who runs it.

Rooms:

- :mod:`~accelvit.runs.schema`: tables, schema version, statuses, measured columns.
- :mod:`~accelvit.runs.owners`: owner ids of executing runs, their heartbeat, and the one rule
  that says whether they are alive.
- :mod:`~accelvit.runs.store`: :class:`RunStore`, the SQL (writers and readers).
- :mod:`~accelvit.runs.rows`: stored values decoded (a damaged row is read as empty, with a warning).
- :mod:`~accelvit.runs.queries`: the DataFrames, the one before/after computation
  (:func:`ratio_to_before`) and which run a live view follows (:func:`run_to_watch`).
- :mod:`~accelvit.runs.execute`: :func:`execute` runs one experiment against the store in the
  calling thread (``accelvit run``, the job process), recording every event.
- :mod:`~accelvit.runs.jobs`: :class:`JobManager`, a scheduler thread running queued runs one
  at a time, each in its own process (:mod:`~accelvit.runs.worker`) or in the thread.

``import accelvit.runs`` stays free of torch: the job runner's names are imported on first use.

Reader API (stable; the dashboard builds on it)
-----------------------------------------------
DataFrames (empty frames still have every column listed):

``runs_df(status=None, sweep_id=None)``: one row per run, newest first. Columns:
    ``id, name, status, stage, progress, created, started, finished, duration_s, error,
    sweep_id, baseline_key, model, dataset, img_size, pretrained, train_epochs,
    finetune_epochs, device`` plus one column per pruning field of the config
    (``head_ratio, mlp_ratio, rank_ratio, sparsity, ...``, whatever PruneConfig holds).
    ``created/started/finished`` are tz-aware UTC timestamps; ``progress`` is the
    overall fraction in [0, 1]; ``stage`` the stage running now (or last run).
``metrics_df(run_ids=None)``: one row per run x measured stage (``before``, ``pruned``,
    ``after``, and ``control`` when enabled), ordered by run then stage. Columns:
    ``run_id, name, status, stage, stage_order, top1, top5, loss, n, dense_flops,
    effective_flops, thop_flops, params, nonzero_params, size_dense_bytes,
    size_sparse_bytes, latency_ms_b1, latency_ms_batch, device`` plus every other scalar
    the metrics dict held, the run's config columns (as in ``runs_df``), and ratios to the
    same run's ``before`` row: ``flops_ratio`` (effective FLOPs / before), ``params_ratio``
    (nonzero params / before), ``size_ratio`` (sparse size / before dense size),
    ``speedup_b1`` / ``speedup_batch`` (the stage's stored interleaved comparison with the
    baseline, ``speedup_method="interleaved"``; for runs stored before that, before latency /
    latency, marked ``"separate"``), ``top1_delta`` (top1 - before top1).
    Accuracies are fractions in [0, 1]; FLOPs are FLOPs (2 x MACs).
``events_df(run_id, kinds=None)``: ``id, time, kind, stage, fraction, message, data``
    (``data`` a dict); kinds: ``status, stage_started, stage_finished, progress, metrics,
    warning, error, artifact``.
``stages_df(run_id)``: ``stage, state, started, finished, seconds, info``.
``progress_df(run_id)``: the throttled progress rows: ``time, stage, fraction, overall,
    epoch, epochs, step, steps, loss, accuracy, lr, images_per_s, eta_s``.
``artifacts_df(run_id=None)``: ``run_id, name, kind, path (absolute), created``.

Dicts (``runs --json``):
``get_run(run_id)`` / ``list_runs(...)``: ``{id, name, status, config, error, traceback,
    created_at, started_at, finished_at, stage, progress, live, sweep_id, baseline_key,
    stages: {stage: metrics dict (as from measure, plus top1, top5, loss)},
    artifacts: {name: absolute path}}``. ``live`` is the last progress event (a dict) or None.
``status(run_id)``, ``queued_ids(owner)``, ``artifacts(run_id)``, ``cancel_requested(run_id)``.

Statuses: ``queued, running, finished, failed, cancelled, interrupted``.

Liveness: ``runs_df``, ``list_runs`` / ``get_run`` and ``request_cancel`` first mark queued or
running runs whose owner is gone ``interrupted`` (``RunStore.mark_orphans_interrupted``, the rule
in :mod:`~accelvit.runs.owners`), so the dashboard, ``accelvit runs`` and ``runs --cancel`` agree;
what those runs recorded stays.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..paths import home_dir
from .owners import new_owner, owner_alive, release_owner
from .queries import (before_value, config_columns, ratio_to_before, run_metrics, run_to_watch, stage_ratios,
                      watched_runs)
from .schema import (ACTIVE, CANCELLED, FAILED, FINISHED, INTERRUPTED, METRIC_COLUMNS, QUEUED, RUNNING,
                     SCHEMA_VERSION, STATUSES, TERMINAL, StoreError)
from .store import RunStore, new_run_id

#: Names imported on first use (they import torch): where each lives.
_JOBS = {"JobManager": "jobs", "get_manager": "jobs", "shutdown_all": "jobs", "StoreRecorder": "execute",
         "execute": "execute"}

__all__ = ["ACTIVE", "CANCELLED", "FAILED", "FINISHED", "INTERRUPTED", "METRIC_COLUMNS", "QUEUED", "RUNNING",
           "SCHEMA_VERSION", "STATUSES", "TERMINAL", "RunStore", "StoreError", "before_value", "config_columns",
           "home_dir", "new_owner", "new_run_id", "owner_alive", "ratio_to_before", "release_owner", "run_metrics",
           "run_to_watch", "stage_ratios", "watched_runs", *_JOBS]


def __getattr__(name: str) -> Any:
    if name in _JOBS:
        return getattr(importlib.import_module(f"accelvit.runs.{_JOBS[name]}"), name)
    raise AttributeError(f"module 'accelvit.runs' has no attribute {name!r}")
