"""One run executed against the run store, in the calling thread or process.

:func:`execute` runs one experiment and records everything it does in the
:class:`~accelvit.runs.store.RunStore` through :class:`StoreRecorder` (throttled progress,
stage metrics, artifacts, status, cancel polling). ``accelvit run`` (foreground), the job
manager's thread executor and the job process (``accelvit.runs.worker``) all call it, so CLI
and dashboard runs look alike.

Final status: ``finished``; ``failed`` (message and traceback stored); ``cancelled`` (the user
asked; metrics of finished stages kept); ``interrupted`` (the process hosting the run is
stopping: its cancel token says ``interrupted``). A status set by someone else meanwhile (the
job manager marking the run ``interrupted`` at server shutdown) is never overwritten.

While it runs, a :class:`~accelvit.runs.owners.Heartbeat` thread stamps the run every
``HEARTBEAT_S`` seconds (readers on other hosts tell a dead owner by a stale stamp); if the run
is no longer running when it beats (a reader declared this process dead), the run stops as
``interrupted`` at its next step.
"""

from __future__ import annotations

import logging
import time
import traceback as tb_mod
from typing import Any, Callable, Iterable

from ..errors import AccelvitError, Cancelled
from ..experiment import Experiment, ExperimentConfig, describe_error
from ..utils import CancelToken
from .owners import Heartbeat
from .schema import CANCELLED, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING
from .store import RunStore

log = logging.getLogger(__name__)

#: ``listener(run_id, event)``: called in the worker thread for every pipeline event.
Listener = Callable[[str, Any], None]


class StoreRecorder:
    """The pipeline's ``on_event`` callback that writes events into the store.

    Progress events are throttled to one row per ``min_interval`` seconds per run (the
    latest pending one is flushed at stage ends and at the end of the run); every other
    event is written at once. While recording it also polls the store's cancel flag, so a
    run can be cancelled from another process (``accelvit runs --cancel ID``).
    """

    def __init__(self, store: RunStore, run_id: str, token: CancelToken | None = None,
                 listeners: Iterable[Listener] = (), min_interval: float = 0.5):
        self.store, self.run_id, self.token = store, run_id, token
        self.listeners = list(listeners)
        self.min_interval = min_interval
        self.stage: str | None = None
        self._last_write = 0.0
        self._last_poll = 0.0
        self._pending: Any = None

    def __call__(self, event: Any) -> None:
        kind = getattr(event, "kind", "event")
        if kind == "progress":
            now = time.monotonic()
            if now - self._last_write >= self.min_interval:
                self._write_progress(event)
                self._last_write = now
                self._pending = None
            else:
                self._pending = event
        else:
            self.flush()
            self._write(kind, event)
        self._poll_cancel()
        for fn in self.listeners:
            try:
                fn(self.run_id, event)
            except Exception:  # a listener must never break a run
                log.exception("job listener failed")

    def flush(self) -> None:
        if self._pending is not None:
            ev, self._pending = self._pending, None
            self._write_progress(ev)
            self._last_write = time.monotonic()

    def _write_progress(self, event: Any) -> None:
        try:
            d = event.to_dict()
            self.store.add_event(self.run_id, "progress", stage=d.get("stage"), fraction=d.get("fraction"),
                                 message=d.get("message"), data=d, update_live=True, overall=d.get("overall"))
        except Exception:  # progress is best effort; results are not
            log.exception("could not record progress of run %s", self.run_id)

    def _write(self, kind: str, event: Any) -> None:
        d = event.to_dict() if hasattr(event, "to_dict") else {"value": repr(event)}
        stage = d.get("stage")
        if kind == "stage_started":
            self.stage = stage
            self.store.add_event(self.run_id, kind, stage=stage, message=stage, data=d,
                                 overall=d.get("overall"), update_live=True)
        elif kind == "stage_finished":
            self.store.add_event(self.run_id, kind, stage=stage, message=stage, fraction=1.0,
                                 data={"seconds": d.get("seconds"), "info": d.get("info") or {}},
                                 overall=d.get("overall"))
        elif kind == "metrics":
            self.store.add_metrics(self.run_id, stage, d.get("metrics") or {})
        elif kind == "artifact":
            self.store.add_artifact(self.run_id, d["name"], d["path"], kind=d.get("type") or "file", stage=stage)
        elif kind in ("warning", "error"):
            data = {k: v for k, v in d.items() if k not in ("message", "stage", "kind")}
            self.store.add_event(self.run_id, kind, stage=stage, message=d.get("message"), data=data)
        else:
            self.store.add_event(self.run_id, kind, stage=stage, data=d)

    def _poll_cancel(self) -> None:
        if self.token is None or self.token.cancelled:
            return
        now = time.monotonic()
        if now - self._last_poll < self.min_interval:
            return
        self._last_poll = now
        try:
            if self.store.cancel_requested(self.run_id):
                self.token.cancel()
        except Exception:
            log.exception("could not poll the cancel flag of run %s", self.run_id)


#: ``runner(config, *, on_event, cancel, home, artifact_dir, run_id, **experiment_options)``: what runs
#: the experiment for :func:`execute`. The default runs it here (:func:`run_here`); the Ray backend's runs
#: it on a worker and replays the worker's events into ``on_event`` (``accelvit.runs.ray_sweep``).
Runner = Callable[..., Any]


def run_here(config: ExperimentConfig, **kwargs: Any) -> Any:
    """The default :data:`Runner`: the experiment in the calling thread."""
    return Experiment(config, **kwargs).run()


def execute(store: RunStore, run_id: str, config: Any, *, cancel: CancelToken | None = None,
            listeners: Iterable[Listener] = (), on_event: Callable[[Any], None] | None = None,
            experiment_options: dict[str, Any] | None = None, runner: Runner | None = None) -> str:
    """Run ``config`` as run ``run_id`` in this thread, recording everything; the final status.

    ``experiment_options`` go to :class:`~accelvit.experiment.Experiment` as they are (its
    seams: ``overrides``, ``measure_cost``, ``stages``). ``runner`` replaces where the experiment
    runs (:data:`Runner`; default :func:`run_here`): its events reach the same recorder, and what it
    raises ends the run as an exception of the experiment would.

    Never raises for a failing experiment (it is stored as ``failed`` with message and
    traceback); ``KeyboardInterrupt`` marks the run ``cancelled`` and is re-raised.
    """
    token = cancel or CancelToken()
    extra = list(listeners)
    if on_event is not None:
        extra.append(lambda _rid, ev: on_event(ev))
    recorder = StoreRecorder(store, run_id, token, extra)
    store.set_status(run_id, RUNNING, only_from=(QUEUED,))  # claim_next / create_run may have done it
    now = store.status(run_id)
    if now != RUNNING:  # cancelled or interrupted while it was being handed over
        return now or CANCELLED
    if store.cancel_requested(run_id):
        token.cancel()
    # the heartbeat readers on other hosts go by; a run someone else ended meanwhile (marked
    # interrupted when this process looked dead) stops instead of working on for nobody
    heartbeat = Heartbeat(lambda: store.beat(run_id=run_id, interval=heartbeat.interval) > 0,
                          on_lost=lambda: token.cancel(INTERRUPTED), name=f"accelvit-heartbeat[{run_id}]")
    heartbeat.start()
    try:
        return _execute(store, run_id, config, token, recorder, experiment_options, runner or run_here)
    finally:
        heartbeat.stop()


def _execute(store: RunStore, run_id: str, config: Any, token: CancelToken, recorder: StoreRecorder,
             experiment_options: dict[str, Any] | None, runner: Runner) -> str:
    try:
        cfg = config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_dict(config)
        runner(cfg, on_event=recorder, cancel=token, home=store.home, artifact_dir=store.artifact_dir(run_id),
               run_id=run_id, **(experiment_options or {}))
    except Cancelled as exc:
        recorder.flush()
        if token.reason == INTERRUPTED:
            log.info("run %s interrupted", run_id)
            return _end(store, run_id, INTERRUPTED, error=interrupted_message(recorder.stage))
        log.info("run %s cancelled (%s)", run_id, exc)
        return _end(store, run_id, CANCELLED, error=f"Cancelled by the user {_during(recorder.stage)}.")
    except KeyboardInterrupt:
        recorder.flush()
        _end(store, run_id, CANCELLED, error="Interrupted by the user (Ctrl-C).")
        raise
    except Exception as exc:
        recorder.flush()
        stage = recorder.stage
        msg = describe_error(exc)
        if stage:
            msg = f"Stage '{stage}' failed: {msg}"
        if isinstance(exc, AccelvitError):
            log.warning("run %s failed: %s", run_id, msg)
        else:
            log.exception("run %s failed", run_id)
        return _end(store, run_id, FAILED, error=msg, traceback=tb_mod.format_exc())
    recorder.flush()
    return _end(store, run_id, FINISHED)


def _end(store: RunStore, run_id: str, status: str, **fields: Any) -> str:
    """Move a running run to its final ``status``; the status it has then. A status someone else set
    meanwhile (the job manager marking it ``interrupted`` at server shutdown) is kept."""
    if store.set_status(run_id, status, only_from=(RUNNING,), **fields):
        return status
    return store.status(run_id) or status


def interrupted_message(stage: str | None = None) -> str:
    """Why a run whose process was stopped (server shutdown, SIGTERM) ends ``interrupted``."""
    where = f" (in its {stage} stage)" if stage else ""
    return f"The server stopped while this job ran{where}; launch it again to rerun it."


def _during(stage: str | None) -> str:
    return f"during the {stage} stage" if stage else "before it started"
