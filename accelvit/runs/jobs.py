"""Background job runner: a queue of experiments run one at a time; one scheduler thread.

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
cancelled goes straight to ``cancelled``. Runs left ``running`` (or ``queued``) by a process
that is gone are marked ``interrupted`` when a manager opens a store, every ``orphan_check_s``
while it is idle, and by every reader of the store (``RunStore.mark_orphans_interrupted``). A
manager beats a heartbeat for its queued and running runs (:mod:`accelvit.runs.owners`).

Each job runs :func:`accelvit.runs.execute.execute`, in the scheduler thread (``executor="thread"``,
``accelvit sweep``) or in a job process (``executor="process"``, the dashboard's, see
:mod:`accelvit.runs.worker`), as ``accelvit run`` does in the foreground.
"""

from __future__ import annotations

import atexit
import base64
import copy
import gc
import hashlib
import itertools
import json
import logging
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback as tb_mod
from pathlib import Path
from typing import Any

from ..errors import AccelvitError, ConfigError
from ..experiment import ExperimentConfig, SweepConfig
from ..paths import home_dir
from ..utils import CancelToken
from . import worker
from .execute import Listener, execute, interrupted_message
from .owners import Heartbeat, new_owner, release_owner
from .schema import CANCELLED, FAILED, INTERRUPTED, QUEUED, RUNNING, TERMINAL
from .store import RunStore, new_run_id

log = logging.getLogger(__name__)

class JobManager:
    """Queues experiments and runs them one at a time; one background thread schedules them.

    Args:
        store: a RunStore, or a home folder (None: ``$ACCELVIT_HOME`` / ``./runs``).
        start: start the scheduler thread now (else on the first submit).
        experiment_options: keyword arguments for every run's
            :class:`~accelvit.experiment.Experiment` (its seams: ``overrides``, ``measure_cost``);
            with the process executor they must pickle (module-level functions).
        executor: ``"thread"`` runs each job in the scheduler thread (listeners see every
            event); ``"process"`` runs each job in a child process
            (``python -m accelvit.runs.worker``) that reports through the run store, so a
            busy web server cannot starve it. One child is kept warm (imports done) while
            the queue is idle, so a job starts at once. Cancel reaches the child through the
            store's cancel flag; :meth:`shutdown` marks its run ``interrupted`` at once and
            sends it SIGTERM (SIGKILL after ``grace_s``). A run whose config asks for
            ``processes`` > 1 is launched as ``torchrun --standalone --nproc_per_node N -m
            accelvit.runs.worker --run-id ID`` instead (not in the standby): rank 0 records it in
            the store, a cancel stops every rank at the same training step, SIGTERM goes to the
            torchrun agent (which forwards it to every rank), and a rank that dies fails the run with
            the group's log. The ``thread`` executor refuses such runs (a thread cannot host a
            process group).
        prewarm: (process executor) keep one child warm (torch imported) while the queue is
            idle, so the next job starts at once instead of after the imports.

    Opening a manager marks runs orphaned by dead processes ``interrupted``, and the
    scheduler checks again every ``orphan_check_s`` seconds while the queue is idle.
    """

    def __init__(self, store: RunStore | str | os.PathLike | None = None, *, start: bool = True,
                 experiment_options: dict[str, Any] | None = None, executor: str = "thread",
                 prewarm: bool = False, grace_s: float = 10.0, orphan_check_s: float = 10.0):
        if executor not in EXECUTORS:
            raise AccelvitError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}.")
        self.store = store if isinstance(store, RunStore) else RunStore(store)
        self.experiment_options = dict(experiment_options or {})
        self.executor = executor
        self.prewarm = prewarm and executor == "process"
        self.grace_s = grace_s
        self.orphan_check_s = orphan_check_s
        self._standby: subprocess.Popen | None = None
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
        # beats for every queued and running run of this manager (readers on other hosts go by it)
        self._heartbeat = Heartbeat(self._beat, name=f"accelvit-heartbeat[{self.owner}]").start()
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
        if cfg.processes > 1 and self.executor != "process":
            raise ConfigError("processes", f"{cfg.processes} processes need a torchrun group, which this job manager "
                                           f"cannot start: it runs each job in its own thread ({self.executor!r} "
                                           "executor, as accelvit sweep does), and a thread cannot host a process "
                                           "group. Set processes to 1, start the run from the dashboard, or run it "
                                           f"with torchrun --nproc_per_node {cfg.processes} -m accelvit run ...")
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
        """Also call ``fn(run_id, event)`` for every event, in the scheduler thread. Thread executor
        only: a job process reports through the store (read it, or use ``executor="thread"``)."""
        if self.executor != "thread":
            raise AccelvitError(f"listeners need executor='thread'; this manager runs jobs in processes "
                                f"({self.executor!r}), which report only through the run store.")
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
        """Stop the scheduler. Queued runs of this manager become ``interrupted``; the running one
        is stopped and marked ``interrupted`` at once (``cancel_running``), or finishes first."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            if cancel_running and self._current is not None:
                tok = self._tokens.get(self._current)
                if tok is not None:
                    tok.cancel(INTERRUPTED)
                self.store.set_status(self._current, INTERRUPTED, only_from=(RUNNING,),
                                      error=interrupted_message())
                # a job process gets SIGTERM from the scheduler thread, which watches this token;
                # the standby is stopped by that thread as it leaves its loop
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
            self._heartbeat.stop()
            release_owner(self.owner)

    @property
    def closed(self) -> bool:
        return self._closed

    def _beat(self) -> bool:
        if self._configs or self._current is not None:  # idle: nothing to stamp, no write
            self.store.beat(owner=self.owner, interval=self._heartbeat.interval)
        return True

    # ------------------------------------------------------------------ worker
    def _ensure_thread(self) -> None:
        with self._cond:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._loop, name=f"accelvit-jobs[{self.store.home.name}]",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        last_orphan_check = time.monotonic()
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
                if self.prewarm and self._standby is None:
                    self._standby = self._spawn()  # warm while idle: the next job starts at once
                if time.monotonic() - last_orphan_check > self.orphan_check_s:
                    last_orphan_check = time.monotonic()
                    try:  # runs of a process killed since (kill -9) do not stay "running"
                        self.store.mark_orphans_interrupted()
                    except Exception:
                        log.exception("could not check for orphaned runs")
                with self._cond:
                    if not self._wake and not self._stopping:
                        self._cond.wait(timeout=2.0)
                    self._wake = False
                continue
            self._run_one(run_id)
        if self._standby is not None:
            _stop_standby(self._standby)
            self._standby = None
        self._heartbeat.stop()
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
            if self.executor == "process":  # the job process reads the config from the store
                self._run_in_process(run_id, token, _processes(cfg, self.store, run_id))
            else:
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


    # ------------------------------------------------------------------ process executor
    def _spawn(self) -> subprocess.Popen:
        """A worker process (imports under way) waiting for its run id on stdin. Called from the
        scheduler thread only: on Linux the child gets SIGTERM when that thread ends."""
        log_path = self._log_path("worker")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).strip(os.pathsep)
        with open(log_path, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "accelvit.runs.worker", "--home", str(self.store.home), "--parent",
                 str(os.getpid())], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env,
                start_new_session=True)  # a Ctrl-C in the server's terminal reaches only the server
        proc.log_path = log_path  # type: ignore[attr-defined]
        return proc

    def _log_path(self, kind: str) -> Path:
        logs = self.store.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return logs / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(_SPAWNED)}.log"

    def _options(self) -> str | None:
        if not self.experiment_options:
            return None
        return base64.b64encode(pickle.dumps(self.experiment_options)).decode()

    def _spawn_torchrun(self, run_id: str, processes: int) -> subprocess.Popen | None:
        """``torchrun --standalone --nproc_per_node N -m accelvit.runs.worker --home DIR --run-id ID`` (None when
        torchrun is not installed). Each rank joins the group; rank 0 records the run in the store."""
        cmd = torchrun_command()
        if cmd is None:
            return None
        log_path = self._log_path("torchrun")
        env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV}  # a fresh group, not the server's
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).strip(os.pathsep)
        options = self._options()
        if options:  # private to the process tree, like the standby's stdin
            env[worker.OPTIONS_ENV] = options
        with open(log_path, "ab") as err:
            proc = subprocess.Popen(
                [*cmd, "--standalone", "--nproc_per_node", str(processes), "-m", "accelvit.runs.worker",
                 "--home", str(self.store.home), "--run-id", run_id, "--parent", str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        proc.log_path = log_path  # type: ignore[attr-defined]
        return proc

    def _run_in_process(self, run_id: str, token: CancelToken, processes: int = 1) -> None:
        if processes > 1:  # a torchrun group; the warm standby waits for the next one-process job
            proc = self._spawn_torchrun(run_id, processes)
            if proc is None:
                self.store.set_status(run_id, FAILED, only_from=(RUNNING, QUEUED), error=(
                    f"This run asks for {processes} processes, which start through torchrun, but torchrun was not "
                    f"found next to this Python ({Path(sys.executable).parent}) or on PATH. It comes with PyTorch: "
                    "install torch in the dashboard's environment, or set processes to 1."))
                return
        else:
            proc, self._standby = self._standby, None
            if proc is None or proc.poll() is not None:
                proc = self._spawn()
        try:  # the job process's own log (stderr): where a crash that bypasses the store is told
            self.store.add_artifact(run_id, "worker_log", proc.log_path, kind="log")  # type: ignore[attr-defined]
        except Exception:
            log.exception("could not record the worker log of run %s", run_id)
        if processes == 1:
            try:
                proc.stdin.write((json.dumps({"run_id": run_id, "options": self._options()}) + "\n").encode())
                proc.stdin.close()
            except OSError:
                pass  # it died while waiting; reported below from its exit code and log
        signalled = None
        while True:
            try:
                rc = proc.wait(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                pass
            if token.cancelled and token.reason == INTERRUPTED:
                if signalled is None:
                    _signal(proc, signal.SIGTERM)
                    signalled = time.monotonic()
                elif time.monotonic() - signalled > self.grace_s:
                    log.warning("job process of run %s ignored SIGTERM for %.0f s; killing it", run_id, self.grace_s)
                    _signal(proc, signal.SIGKILL)
        status = self.store.status(run_id)
        stopped_here = token.cancelled and token.reason == INTERRUPTED  # this manager stopped it (shutdown)
        log_path = getattr(proc, "log_path", None)
        what = f"The job process stopped unexpectedly ({_why(rc)})"
        group_crash = False
        if processes > 1 and rc != 0 and not stopped_here:
            # A rank that dies makes the agent SIGTERM the others: rank 0 then records its run "interrupted" (as if
            # the server were stopping) or "failed" with the broken connection it saw. torchrun names the rank
            # that failed first; unless that is rank 0 (whose own error is then the reason), it is a crash.
            cause = _torchrun_root_cause(_tail(log_path, 400) or "")
            first = f"Rank {cause[0]}" if cause else "A process"
            what = (f"{first} of this run's torchrun group ({processes} processes) stopped unexpectedly "
                    f"({_why(cause[1]) if cause else 'torchrun ' + _why(rc)})")
            group_crash = status == INTERRUPTED or (status == FAILED and cause is not None and cause[0] != 0)
        if status in (RUNNING, QUEUED) or group_crash:
            if stopped_here:
                self.store.set_status(run_id, INTERRUPTED, error=interrupted_message(), only_from=(RUNNING, QUEUED))
            else:
                self.store.set_status(run_id, FAILED, only_from=(RUNNING, QUEUED, INTERRUPTED, FAILED),
                                      traceback=_tail(log_path),
                                      error=f"{what} before the run ended (out of memory? see the log below).")


_SPAWNED = itertools.count()
EXECUTORS = ("thread", "process")
#: What torchrun sets for its workers: a job's torchrun must not inherit a group the server itself is in.
_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
             "TORCHELASTIC_RUN_ID")


def torchrun_command() -> list[str] | None:
    """The torchrun launcher of this environment: the ``torchrun`` script next to ``sys.executable`` (the
    virtualenv's), else the one on PATH; None when there is none."""
    here = Path(sys.executable).parent / "torchrun"
    if here.is_file() and os.access(here, os.X_OK):
        return [str(here)]
    found = shutil.which("torchrun")
    return [found] if found else None


def _processes(cfg: Any, store: RunStore, run_id: str) -> int:
    """How many processes run ``run_id`` trains in (its config's ``processes``; 1 when unreadable)."""
    if cfg is None:
        run = store.get_run(run_id)
        cfg = (run or {}).get("config") or {}
    n = cfg.processes if isinstance(cfg, ExperimentConfig) else (cfg.get("processes") if isinstance(cfg, dict) else 1)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass


def _stop_standby(proc: subprocess.Popen) -> None:
    """A standby exits on EOF (or SIGTERM while it imports)."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    _signal(proc, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL)


def _why(rc: int) -> str:
    return f"signal {-rc}" if rc < 0 else f"exit code {rc}"


_ROOT_CAUSE = re.compile(r"Root Cause \(first observed failure\):.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)


def _torchrun_root_cause(text: str) -> tuple[int, int] | None:
    """``(rank, exit code)`` of the first failure torchrun's summary names ("Root Cause (first observed
    failure)"), or None when its log has none."""
    m = _ROOT_CAUSE.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _tail(path: Any, n: int = 40) -> str | None:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except (OSError, TypeError):
        return None


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


def get_manager(home: str | os.PathLike | None = None, executor: str = "process",
                prewarm: bool | None = None) -> JobManager:
    """The process-wide manager of a store folder (created on first use; a shut-down one is replaced).

    The dashboard's: jobs run in child processes (``executor="process"``). At interpreter exit
    (a server stopped by SIGTERM or Ctrl-C exits normally) every manager is shut down, which
    marks its running job ``interrupted`` and stops its process. Called in the main thread of a
    process whose SIGTERM is untouched, it also makes SIGTERM exit normally (so that happens).
    ``prewarm`` (default: on unless ``$ACCELVIT_PREWARM`` is ``0``) keeps a job process warm.
    """
    if prewarm is None:
        prewarm = os.environ.get("ACCELVIT_PREWARM", "1") != "0"
    key = home_dir(home)
    with _MANAGERS_LOCK:
        mgr = _MANAGERS.get(key)
        if mgr is None or mgr.closed:
            mgr = JobManager(RunStore(key), executor=executor, prewarm=prewarm)
            _MANAGERS[key] = mgr
        _install_exit_hooks()
        return mgr


_HOOKS_INSTALLED = False


def _install_exit_hooks() -> None:
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(shutdown_all, 10.0)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def shutdown_all(timeout: float | None = 30.0) -> None:
    """Shut down every manager made by :func:`get_manager` (tests, server shutdown)."""
    with _MANAGERS_LOCK:
        managers = list(_MANAGERS.values())
        _MANAGERS.clear()
    for m in managers:
        m.shutdown(timeout=timeout)
