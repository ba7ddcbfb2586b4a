"""``accelvit sweep --backend ray``: a sweep's trials as Ray tasks; the driver alone writes the run store.

Ray is optional (``pip install accelvit[ray]``): it is imported inside the functions here, never at
import time, and nothing else in accelvit imports this module at top level.

How a sweep runs (:func:`run_sweep_ray`):

1. The driver expands the sweep and creates every run in its store as ``queued`` (one ``sweep_id``),
   so the dashboard lists them at once; it beats a heartbeat for them as the job manager does.
2. The shared baseline of each baseline key is trained **once**: by one Ray task
   (:func:`_train_baseline_task`) unless the driver's cache (``<home>/baselines/<key>/``) has it
   already. What travels is the cache folder as bytes (a tar of the safetensors + spec + baseline.json),
   an object reference handed to every trial of that key: Ray ships it to each node once, and no
   shared folder is needed. The driver also puts it into its own cache, so later runs reuse it.
   A ``baseline_checkpoint`` folder given in the config travels the same way.
3. One Ray task per trial (:func:`_trial_task`, a streaming generator, ``num_cpus`` /
   ``num_gpus`` per trial): it unpacks the baseline into a private temporary workspace (its
   ``home``), runs the very same :class:`~accelvit.experiment.Experiment`, and yields its events
   in small batches, paths already rewritten to the driver's (``<home>/artifacts/<run id>/...``,
   ``<home>/baselines/<key>``). Its last item is the artifact folder (model, report.json, layer
   CSVs) as bytes, unpacked by the driver into ``<home>/artifacts/<run id>/``. A worker never opens
   the run store or writes into the driver's folders: SQLite on a shared network folder is not
   safe for several writers.
4. The driver follows each trial in a thread that calls :func:`~accelvit.runs.execute.execute`
   with a runner (:class:`_RayRunner`) replaying the worker's events: the run is recorded exactly
   as an in-process run (``StoreRecorder``: throttled progress, stage metrics, artifacts, final
   status, error message and traceback). The run becomes ``running`` when its worker starts.

Cancel: ``accelvit runs --cancel ID`` (or the dashboard) flags the run in the store; the recorder
sees the flag, the driver cancels the Ray task (the worker process is stopped at once) and the run
ends ``cancelled`` with the metrics of the stages it finished; a queued trial is dropped from Ray's
queue. Ctrl-C of the driver stops every trial the same way and marks them ``interrupted``.
A trial that fails ends ``failed`` with its message (an exception, a worker that died, a baseline
that could not be trained); the others go on.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import queue
import secrets
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import traceback as tb_mod
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import AccelvitError, Cancelled, ConfigError
from ..experiment import ExperimentConfig, SweepConfig
from ..experiment.baselines import INFO_FILE, cache_path
from ..utils import CancelToken
from .execute import Listener, execute, interrupted_message
from .owners import Heartbeat, new_owner, release_owner
from .schema import FAILED, INTERRUPTED, QUEUED, RUNNING
from .store import RunStore, new_run_id

log = logging.getLogger(__name__)

#: How long the driver waits for a trial's next batch before it looks at the cancel flags again.
POLL_S = 0.25
#: How often a worker sends what its trial emitted (progress in between is merged: the latest wins).
BATCH_S = 0.25


class TrialLost(AccelvitError):
    """The Ray worker running a trial died (out of memory, a node lost, the cluster stopped)."""


def require_ray():
    """``import ray``, or ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend", "Ray is not installed here. Install the extra (pip install "
                                       "'accelvit[ray]') or use --backend queue (the default).") from None
    return ray


# ============================================================================ bytes <-> folders
def pack(folder: str | os.PathLike) -> bytes:
    """A folder as an uncompressed tar (weights hardly compress), members relative to it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(folder), arcname=".")
    return buf.getvalue()


def unpack(data: bytes, dest: str | os.PathLike) -> Path:
    """Extract :func:`pack` bytes into ``dest`` (created; existing files replaced). Only plain
    files and folders inside ``dest`` are accepted (tarfile's ``data`` filter)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(dest, filter="data")
    return dest


def install_baseline(data: bytes, key: str, home: str | os.PathLike) -> Path:
    """Put a packed baseline cache entry into ``<home>/baselines/<key>`` atomically (a temp folder
    renamed into place); an entry already there (cached meanwhile) is kept."""
    final = cache_path(key, home)
    if (final / INFO_FILE).exists():
        return final
    tmp = final.parent / f".tmp-{key}-{secrets.token_hex(4)}"
    try:
        unpack(data, tmp)
        if final.exists():  # a damaged entry
            shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / INFO_FILE).exists():
            raise
    return final


def rehome(obj: Any, moves: Iterable[tuple[str, str]]) -> Any:
    """``obj`` with every string that starts with a worker path of ``moves`` (``(worker, driver)``
    prefixes) rewritten to the driver's; dicts, lists and event dataclasses are walked."""
    moves = list(moves)
    if isinstance(obj, str):
        for src, dst in moves:
            if obj == src or obj.startswith(src.rstrip("/") + "/"):
                return dst + obj[len(src):]
        return obj
    if isinstance(obj, dict):
        return {k: rehome(v, moves) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(rehome(v, moves) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: rehome(getattr(obj, f.name), moves) for f in dataclasses.fields(obj)
                   if isinstance(getattr(obj, f.name), (str, dict, list, tuple))}
        return dataclasses.replace(obj, **changes)
    return obj


# ============================================================================ worker side
def _train_baseline_task(config: dict[str, Any]) -> bytes:
    """(Ray task) Train the shared baseline of ``config`` in a private workspace; the packed cache entry."""
    from ..experiment import Experiment

    cfg = ExperimentConfig.from_dict(config)
    tmp = Path(tempfile.mkdtemp(prefix="accelvit-ray-baseline-"))
    try:
        Experiment(cfg, home=tmp, stages=("data", "baseline")).run()
        return pack(cache_path(cfg.baseline_key(), tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_DONE = object()


def _trial_task(config: dict[str, Any], run_id: str, driver_home: str, baseline: bytes | None,
                checkpoint: bytes | None, options: dict[str, Any] | None):
    """(Ray streaming task) One trial in a private workspace: yields ``{"started": ...}``, then lists
    of events (paths rewritten to the driver's), then ``{"artifacts": bytes}``. An exception of the
    experiment is raised as it is (Ray hands it to the driver)."""
    from ..experiment import Experiment

    tmp = Path(tempfile.mkdtemp(prefix=f"accelvit-ray-{run_id}-"))
    token = CancelToken()
    try:
        home = tmp / "home"
        moves: list[tuple[str, str]] = []
        if checkpoint is not None:
            local = unpack(checkpoint, tmp / "checkpoint")
            moves.append((str(local), str(config["baseline_checkpoint"])))
            config = {**config, "baseline_checkpoint": str(local)}
        cfg = ExperimentConfig.from_dict(config)
        if baseline is not None:
            unpack(baseline, cache_path(cfg.baseline_key(), home))
        moves.append((str(home), driver_home))
        artifact_dir = home / "artifacts" / run_id
        options = dict(options or {})
        overrides = dict(options.pop("overrides", None) or {})
        inner = overrides.get("baseline") or Experiment.stage_baseline

        def stage_baseline(exp: Any) -> Any:  # meta and report.json name the driver's baseline folder
            info = inner(exp)
            exp.baseline_info = rehome(exp.baseline_info, moves)
            return rehome(info, moves)

        overrides["baseline"] = stage_baseline
        yield {"started": {"host": os.uname().nodename, "pid": os.getpid()}}
        events: queue.Queue = queue.Queue()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                Experiment(cfg, on_event=events.put, cancel=token, home=home, artifact_dir=artifact_dir,
                           run_id=run_id, overrides=overrides, **options).run()
            except BaseException as exc:  # noqa: BLE001 - handed to the driver below
                failure.append(exc)
            finally:
                events.put(_DONE)

        thread = threading.Thread(target=work, name=f"accelvit-trial[{run_id}]", daemon=True)
        thread.start()
        done = False
        while not done:
            batch = []
            try:
                batch.append(events.get(timeout=BATCH_S))
                while True:
                    batch.append(events.get_nowait())
            except queue.Empty:
                pass
            done = _DONE in batch
            batch = _merge_progress([rehome(ev, moves) for ev in batch if ev is not _DONE])
            if batch:
                yield batch
        thread.join()
        if failure:
            raise failure[0]
        yield {"artifacts": pack(artifact_dir) if artifact_dir.exists() else None}
    finally:
        token.cancel()  # the generator closed early (cancelled): stop the experiment
        shutil.rmtree(tmp, ignore_errors=True)


def _merge_progress(batch: list[Any]) -> list[Any]:
    """Drop a progress event followed by another one before any other event (the recorder keeps the
    latest anyway): fewer objects on the wire, the same store."""
    out: list[Any] = []
    for ev in batch:
        if getattr(ev, "kind", None) == "progress" and out and getattr(out[-1], "kind", None) == "progress":
            out[-1] = ev
        else:
            out.append(ev)
    return out


# ============================================================================ driver side
@dataclasses.dataclass
class _Trial:
    run_id: str
    config: ExperimentConfig
    gen: Any  # ray.ObjectRefGenerator
    token: CancelToken = dataclasses.field(default_factory=CancelToken)
    status: str | None = None


class _RayRunner:
    """An :data:`~accelvit.runs.execute.Runner` that follows a trial running on Ray: its events go to
    ``on_event`` (the run's recorder), its artifacts are unpacked into ``artifact_dir``, and what the
    worker raised is raised here, so :func:`execute` ends the run as for an in-process experiment."""

    def __init__(self, ray: Any, store: RunStore, trial: _Trial):
        self.ray, self.store, self.trial = ray, store, trial

    def __call__(self, config: Any, *, on_event: Callable[[Any], None], cancel: CancelToken,
                 artifact_dir: Path, run_id: str, **_: Any) -> None:
        ray, gen = self.ray, self.trial.gen
        last_poll = 0.0
        while True:
            if time.monotonic() - last_poll > 1.0:  # a silent stage (a long evaluation) still sees it
                last_poll = time.monotonic()
                if self.store.cancel_requested(run_id):
                    cancel.cancel()
            if cancel.cancelled:
                _cancel_task(ray, gen)
                raise Cancelled(f"The run was {cancel.reason or 'cancelled'}.")
            ready, _ = ray.wait([gen], timeout=POLL_S)
            if not ready:
                continue
            try:
                ref = next(gen)
            except StopIteration:
                return
            item = _get(ray, ref)
            if isinstance(item, list):
                for ev in item:
                    on_event(ev)
            elif isinstance(item, dict) and item.get("artifacts"):
                unpack(item["artifacts"], artifact_dir)


def _get(ray: Any, ref: Any) -> Any:
    """``ray.get``, with the worker's own exception raised as it is, and a lost worker as TrialLost."""
    from ray import exceptions as rx

    try:
        return ray.get(ref)
    except rx.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if getattr(exc, "function_name", "").endswith("_train_baseline_task"):
            msg = str(cause) if isinstance(cause, AccelvitError) else f"{type(cause).__name__}: {cause}"
            raise AccelvitError(f"The shared baseline could not be trained: {msg}") from exc
        if isinstance(cause, Exception):
            raise cause from None
        raise
    except (rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError, rx.RaySystemError,
            rx.OutOfMemoryError) as exc:
        raise TrialLost(f"The Ray worker running this trial stopped before the run ended ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}); out of memory, "
                        "or a node left the cluster? The other trials go on.") from exc


def _cancel_task(ray: Any, gen: Any) -> None:
    try:
        ray.cancel(gen, force=True)
    except Exception:  # already finished or gone
        log.debug("ray.cancel failed", exc_info=True)


def _object_for(ray: Any, cfg: ExperimentConfig) -> Any:
    """The packed checkpoint folder a trial needs (an object reference), or None."""
    if cfg.baseline_source != "checkpoint":
        return None
    return ray.put(pack(Path(cfg.baseline_checkpoint).expanduser()))


def run_sweep_ray(sweep: SweepConfig | dict[str, Any], store: RunStore | None = None, *,
                  address: str | None = None, num_cpus: int | None = None, cpus_per_trial: float = 1.0,
                  gpus_per_trial: float = 0.0, listeners: Iterable[Listener] = (),
                  experiment_options: dict[str, Any] | None = None, init_options: dict[str, Any] | None = None,
                  on_created: Callable[[list[str]], None] | None = None) -> list[str]:
    """Run every point of ``sweep`` as a Ray task, recording each in ``store`` (module docstring);
    the run ids in order, once every trial has ended.

    Args:
        address: an existing cluster (``auto``, ``ray://host:10001``, ``host:6379``); None starts a
            local one (``num_cpus`` cores, default all) unless this process is connected already.
        cpus_per_trial, gpus_per_trial: what Ray reserves for each trial (and so how many run at once).
        listeners: ``fn(run_id, event)`` for every event, in the driver (one thread per trial).
        experiment_options: the Experiment seams (``overrides``, ``measure_cost``); they must pickle.
        init_options: more keyword arguments for ``ray.init`` (e.g. ``object_store_memory``).
        on_created: called with the run ids once they are queued in the store.

    Ctrl-C stops every trial, marks them ``interrupted`` and re-raises KeyboardInterrupt.
    """
    ray = require_ray()
    store = store if isinstance(store, RunStore) else RunStore(store)
    sw = sweep if isinstance(sweep, SweepConfig) else SweepConfig.from_dict(sweep)
    configs = sw.expand()  # validates every point before anything is queued
    sweep_id = "sweep-" + new_run_id()
    owner = new_owner("ray-sweep")
    ids = [store.create_run(c.to_dict(), name=c.display_name(), status=QUEUED, sweep_id=sweep_id,
                            baseline_key=c.baseline_key(), owner=owner)[0] for c in configs]
    beat = Heartbeat(lambda: store.beat(owner=owner, interval=beat.interval) >= 0,
                     name=f"accelvit-heartbeat[{owner}]")
    beat.start()
    if on_created is not None:
        on_created(ids)
    started_here = False
    trials: list[_Trial] = []
    threads: list[threading.Thread] = []
    try:
        if not ray.is_initialized():
            started_here = True
            ray.init(**_init_kwargs(address, num_cpus, init_options))
        trial_remote = ray.remote(_trial_task).options(num_returns="streaming", num_cpus=cpus_per_trial,
                                                        num_gpus=gpus_per_trial, max_retries=0,
                                                        name="accelvit-trial")
        baselines, installs = _baselines(ray, store, configs, cpus_per_trial, gpus_per_trial)
        opts = dict(experiment_options or {})
        for rid, cfg in zip(ids, configs):
            base = baselines.get(cfg.baseline_key()) if cfg.baseline_source != "checkpoint" else None
            gen = trial_remote.remote(cfg.to_dict(), rid, str(store.home), base, _object_for(ray, cfg), opts)
            trials.append(_Trial(rid, cfg, gen))
        threads = [threading.Thread(target=fn, name=f"accelvit-ray-install[{k}]", daemon=True)
                   for k, fn in installs.items()]
        threads += [threading.Thread(target=_follow, args=(ray, store, t, list(listeners), opts),
                                     name=f"accelvit-ray[{t.run_id}]", daemon=True) for t in trials]
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads):
            for th in threads:
                th.join(0.2)
    except KeyboardInterrupt:
        _interrupt(ray, store, trials, threads)
        raise
    except BaseException:
        _interrupt(ray, store, trials, threads, why="The sweep driver stopped before this trial ended.")
        raise
    finally:
        beat.stop()
        release_owner(owner)
        if started_here:
            ray.shutdown()
    return ids


def _init_kwargs(address: str | None, num_cpus: int | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    kw: dict[str, Any] = {"address": address, "include_dashboard": False, "logging_level": logging.WARNING}
    if address is None:  # a local cluster: its workers import accelvit from where this process does
        kw["num_cpus"] = num_cpus
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        kw["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
    kw.update(extra or {})
    return kw


def _baselines(ray: Any, store: RunStore, configs: list[ExperimentConfig], cpus: float,
               gpus: float) -> tuple[dict[str, Any], dict[str, Callable[[], None]]]:
    """``{baseline key: object ref of the packed baseline}`` for every key the sweep trains, and the
    jobs that put the ones trained now into the driver's cache. Each key is trained by one task."""
    refs: dict[str, Any] = {}
    installs: dict[str, Callable[[], None]] = {}
    train = ray.remote(_train_baseline_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=0,
                                                     name="accelvit-baseline")
    for cfg in configs:
        key = cfg.baseline_key()
        if cfg.baseline_source == "checkpoint" or key in refs:
            continue
        cached = cache_path(key, store.home)
        if (cached / INFO_FILE).exists():
            log.info("baseline %s: from the cache %s", key, cached)
            refs[key] = ray.put(pack(cached))
            continue
        log.info("baseline %s: training it once on Ray", key)
        ref = refs[key] = train.remote(cfg.to_dict())

        def install(ref: Any = ref, key: str = key) -> None:
            try:
                install_baseline(ray.get(ref), key, store.home)
            except Exception:  # the trials report a failed training; the cache is a convenience
                log.warning("baseline %s was not put into the driver's cache", key, exc_info=True)
        installs[key] = install
    return refs, installs


def _follow(ray: Any, store: RunStore, trial: _Trial, listeners: list[Listener], opts: dict[str, Any]) -> None:
    """(driver thread) Wait until the trial's worker starts (or its task fails, or the run is cancelled
    while queued), then record it through :func:`execute`."""
    try:
        while True:
            if trial.token.cancelled:  # the sweep is stopping
                _cancel_task(ray, trial.gen)
                store.set_status(trial.run_id, INTERRUPTED, only_from=(QUEUED,),
                                 error="The sweep was stopped before this trial ran.")
                return
            if store.status(trial.run_id) != QUEUED:  # cancelled while queued
                _cancel_task(ray, trial.gen)
                return
            ready, _ = ray.wait([trial.gen], timeout=POLL_S)
            if ready:
                break
        trial.status = execute(store, trial.run_id, trial.config, cancel=trial.token, listeners=listeners,
                               runner=_RayRunner(ray, store, trial))
    except BaseException:
        log.exception("following trial %s failed", trial.run_id)
        store.set_status(trial.run_id, FAILED, only_from=(QUEUED, RUNNING), traceback=tb_mod.format_exc(),
                         error="The sweep driver lost track of this trial (see the traceback).")


def _interrupt(ray: Any, store: RunStore, trials: list[_Trial], threads: list[threading.Thread],
               why: str | None = None, grace_s: float = 10.0) -> None:
    """Stop every trial: running ones end ``interrupted`` (their recorder writes it), queued ones too."""
    print("stopping the sweep's trials...", file=sys.stderr)
    for t in trials:
        t.token.cancel(INTERRUPTED)
    deadline = time.monotonic() + grace_s
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    for t in trials:  # a thread that did not finish in time
        store.set_status(t.run_id, INTERRUPTED, only_from=(QUEUED, RUNNING), error=why or interrupted_message())
