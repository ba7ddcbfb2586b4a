"""Background job runner: a queue of experiments run one at a time in one worker thread.

Usage (the dashboard wraps ``get_manager`` in ``st.cache_resource``)::

    from accelvit.runs import get_manager
    jobs = get_manager()                       # one per store folder, per process
    run_id = jobs.submit(config, submit_key=form_token)   # idempotent per submit_key
    jobs.status(run_id); jobs.get_run(run_id); jobs.cancel(run_id); jobs.wait(run_id, timeout=60)
    jobs.store.runs_df(); jobs.store.progress_df(run_id)  # what pages render

Everything a run does is written to the :class:`~accelvit.runs.store.RunStore` as it happens
(throttled progress, stage metrics, artifacts, status), so any thread, browser tab or
process reads the same state from the store; nothing lives only in memory.

Lifecycle of a run: ``queued`` -> ``running`` -> ``finished`` | ``failed`` (message and
traceback stored) | ``cancelled`` (metrics of finished stages kept). A queued run that is
cancelled goes straight to ``cancelled``. When a manager opens a store, runs left
``running`` (or ``queued``) by a process that is gone are marked ``interrupted``.

:func:`execute` runs one experiment against the store in the calling thread; the worker
thread and ``accelvit run`` (foreground) both use it, so CLI and dashboard runs look alike.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import logging
import os
import threading
import time
import traceback as tb_mod
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import AccelvitError, Cancelled
from ..experiment import Experiment, ExperimentConfig, SweepConfig, describe_error
from ..paths import home_dir
from ..utils import CancelToken
from .owners import new_owner, release_owner
from .schema import CANCELLED, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING, TERMINAL
from .store import RunStore, new_run_id

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


def execute(store: RunStore, run_id: str, config: Any, *, cancel: CancelToken | None = None,
            listeners: Iterable[Listener] = (), on_event: Callable[[Any], None] | None = None,
            experiment_options: dict[str, Any] | None = None) -> str:
    """Run ``config`` as run ``run_id`` in this thread, recording everything; the final status.

    ``experiment_options`` go to :class:`~accelvit.experiment.Experiment` as they are (its
    seams: ``overrides``, ``measure_cost``, ``stages``).

    Never raises for a failing experiment (it is stored as ``failed`` with message and
    traceback); ``KeyboardInterrupt`` marks the run ``cancelled`` and is re-raised.
    """
    token = cancel or CancelToken()
    extra = list(listeners)
    if on_event is not None:
        extra.append(lambda _rid, ev: on_event(ev))
    recorder = StoreRecorder(store, run_id, token, extra)
    store.set_status(run_id, RUNNING, only_from=(QUEUED,))  # claim_next / create_run may have done it
    if store.cancel_requested(run_id):
        token.cancel()
    try:
        cfg = config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_dict(config)
        Experiment(cfg, on_event=recorder, cancel=token, home=store.home,
                   artifact_dir=store.artifact_dir(run_id), run_id=run_id, **(experiment_options or {})).run()
    except Cancelled as exc:
        recorder.flush()
        store.set_status(run_id, CANCELLED, error=str(exc))
        log.info("run %s cancelled", run_id)
        return CANCELLED
    except KeyboardInterrupt:
        recorder.flush()
        store.set_status(run_id, CANCELLED, error="Interrupted by the user (Ctrl-C).")
        raise
    except Exception as exc:
        recorder.flush()
        stage = recorder.stage
        msg = describe_error(exc)
        if stage:
            msg = f"Stage '{stage}' failed: {msg}"
        store.set_status(run_id, FAILED, error=msg, traceback=tb_mod.format_exc())
        if isinstance(exc, AccelvitError):
            log.warning("run %s failed: %s", run_id, msg)
        else:
            log.exception("run %s failed", run_id)
        return FAILED
    recorder.flush()
    store.set_status(run_id, FINISHED)
    return FINISHED


class JobManager:
    """Queues experiments and runs them one at a time in one background thread.

    Args:
        store: a RunStore, or a home folder (None: ``$ACCELVIT_HOME`` / ``./runs``).
        start: start the worker thread now (else on the first submit).
        experiment_options: keyword arguments for every run's
            :class:`~accelvit.experiment.Experiment` (its seams: ``overrides``, ``measure_cost``).

    Opening a manager marks runs orphaned by dead processes ``interrupted``.
    """

    def __init__(self, store: RunStore | str | os.PathLike | None = None, *, start: bool = True,
                 experiment_options: dict[str, Any] | None = None):
        self.store = store if isinstance(store, RunStore) else RunStore(store)
        self.experiment_options = dict(experiment_options or {})
        self.owner = new_owner("jobs")
        self._cond = threading.Condition(threading.RLock())
        self._configs: dict[str, Any] = {}
        self._tokens: dict[str, CancelToken] = {}
        self._current: str | None = None
        self._listeners: list[Listener] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._wake = False
        self.store.mark_orphans_interrupted()
        if start:
            self._ensure_thread()

    def __repr__(self) -> str:
        return f"JobManager({str(self.store.home)!r}, current={self._current!r})"

    # ------------------------------------------------------------------ submitting
    def submit(self, config: Any, *, submit_key: str | None = None, name: str | None = None,
               sweep_id: str | None = None) -> str:
        """Validate and queue an experiment; its run id.

        ``config`` is an ExperimentConfig or its dict. With a ``submit_key`` already used in
        this store (a Streamlit rerun, a double click), the existing run's id is returned and
        nothing new is queued. Raises ConfigError (naming the field) before anything is stored.
        """
        cfg = copy.deepcopy(config) if isinstance(config, ExperimentConfig) else ExperimentConfig.from_dict(config)
        cfg.validate()
        if name:
            cfg.name = name
        with self._cond:
            if self._closed:
                raise AccelvitError("The job manager was shut down; create a new one (accelvit.runs.get_manager()).")
            run_id, created = self.store.create_run(
                cfg.to_dict(), name=cfg.display_name(), status=QUEUED, submit_key=submit_key, sweep_id=sweep_id,
                baseline_key=cfg.baseline_key(), owner=self.owner)
            if created:
                self._configs[run_id] = cfg
                self._wake = True
                self._cond.notify_all()
            self._ensure_thread()
        return run_id

    def submit_sweep(self, sweep: Any, *, submit_key: str | None = None) -> list[str]:
        """Expand a SweepConfig (or its dict) and queue every point; their run ids in order.

        All points get one ``sweep_id``; points with the same baseline key train it once
        (the first run caches it, the others load it). Validates every point first.
        """
        sw = sweep if isinstance(sweep, SweepConfig) else SweepConfig.from_dict(sweep)
        configs = sw.expand()
        if submit_key is not None:
            sweep_id = "sweep-" + hashlib.sha256(submit_key.encode()).hexdigest()[:12]
        else:
            sweep_id = "sweep-" + new_run_id()
        return [self.submit(c, submit_key=None if submit_key is None else f"{submit_key}#{i}", sweep_id=sweep_id)
                for i, c in enumerate(configs)]

    # ------------------------------------------------------------------ control
    def cancel(self, run_id: str) -> str | None:
        """Cancel a run: queued -> ``cancelled`` now; running -> stops within one training step
        and becomes ``cancelled``. Works for runs of other processes too (via the store).
        Returns the status right after the call (None for an unknown run)."""
        status = self.store.request_cancel(run_id)
        with self._cond:
            token = self._tokens.get(run_id)
            if token is not None:
                token.cancel()
            if status == CANCELLED:
                self._configs.pop(run_id, None)
        return status

    def status(self, run_id: str) -> str | None:
        return self.store.status(run_id)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run as a dict (status, stage, progress, live progress, stages' metrics...)."""
        return self.store.get_run(run_id)

    @property
    def current(self) -> str | None:
        """The id of the run executing now, if any."""
        return self._current

    def queued(self) -> list[str]:
        """Ids of this manager's queued runs, oldest first."""
        return self.store.queued_ids(self.owner)

    def is_busy(self) -> bool:
        return self._current is not None or bool(self.queued())

    def add_listener(self, fn: Listener) -> None:
        """Also call ``fn(run_id, event)`` for every event (in the worker thread)."""
        self._listeners.append(fn)

    def wait(self, run_id: str, timeout: float | None = None, poll: float = 0.05) -> str:
        """Block until the run is finished/failed/cancelled/interrupted; its status.
        Raises TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            st = self.store.status(run_id)
            if st is None:
                raise KeyError(f"no run {run_id!r} in {self.store.home}")
            if st in TERMINAL:
                return st
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {st} after {timeout} s")
            time.sleep(poll)

    def shutdown(self, cancel_running: bool = True, wait: bool = True, timeout: float | None = 30.0) -> None:
        """Stop the worker. Queued runs of this manager become ``interrupted``; the running one is
        cancelled (``cancel_running``) or finishes first."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            if cancel_running and self._current is not None:
                tok = self._tokens.get(self._current)
                if tok is not None:
                    tok.cancel()
            for rid in list(self._configs):
                if rid != self._current:
                    self.store.set_status(rid, INTERRUPTED, only_from=(QUEUED,),
                                          error="The job manager shut down before this queued job ran.")
            self._configs = {k: v for k, v in self._configs.items() if k == self._current}
            self._cond.notify_all()
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is None or not thread.is_alive():
            release_owner(self.owner)

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ worker
    def _ensure_thread(self) -> None:
        with self._cond:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._loop, name=f"accelvit-jobs[{self.store.home.name}]",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    break
            try:
                run_id = self.store.claim_next(self.owner)
            except Exception:
                log.exception("job worker could not read the queue")
                run_id = None
            if run_id is None:
                with self._cond:
                    if not self._wake and not self._stopping:
                        self._cond.wait(timeout=2.0)
                    self._wake = False
                continue
            self._run_one(run_id)
        release_owner(self.owner)

    def _notify(self, run_id: str, event: Any) -> None:
        for fn in list(self._listeners):
            fn(run_id, event)

    def _run_one(self, run_id: str) -> None:
        token = CancelToken()
        with self._cond:
            cfg = self._configs.pop(run_id, None)
            self._tokens[run_id] = token
            self._current = run_id
            if self._stopping:
                token.cancel()
        try:
            if cfg is None:
                run = self.store.get_run(run_id)
                cfg = run["config"] if run else {}
            execute(self.store, run_id, cfg, cancel=token, listeners=[self._notify],
                    experiment_options=self.experiment_options)
        except BaseException:  # never let the worker die silently
            log.exception("job worker: run %s crashed the runner", run_id)
            try:
                self.store.set_status(run_id, FAILED, error="The job runner crashed while running this job.",
                                      traceback=tb_mod.format_exc(), only_from=(RUNNING, QUEUED))
            except Exception:
                log.exception("could not record the crash of run %s", run_id)
        finally:
            with self._cond:
                self._tokens.pop(run_id, None)
                self._current = None
            _release_memory()


def _release_memory() -> None:
    """Give the finished run's tensors back (the GPU is shared with the dashboard's inference)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - best effort
        pass


_MANAGERS: dict[Path, JobManager] = {}
_MANAGERS_LOCK = threading.Lock()


def get_manager(home: str | os.PathLike | None = None) -> JobManager:
    """The process-wide manager of a store folder (created on first use; a shut-down one is replaced)."""
    key = home_dir(home)
    with _MANAGERS_LOCK:
        mgr = _MANAGERS.get(key)
        if mgr is None or mgr.closed:
            mgr = JobManager(RunStore(key))
            _MANAGERS[key] = mgr
        return mgr


def shutdown_all(timeout: float | None = 30.0) -> None:
    """Shut down every manager made by :func:`get_manager` (tests, server shutdown)."""
    with _MANAGERS_LOCK:
        managers = list(_MANAGERS.values())
        _MANAGERS.clear()
    for m in managers:
        m.shutdown(timeout=timeout)
