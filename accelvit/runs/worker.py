"""One job in its own process: ``python -m accelvit.runs.worker --home DIR``.

The job manager's ``process`` executor keeps one such process warm (torch, timm and the
runner imported) and hands it a run id on stdin when a job starts; the process runs
:func:`accelvit.runs.execute.execute` against the run store and exits. Rendering in the web
server then cannot starve the training (they no longer share a GIL or a process), and
the same seam launches the other executor, ``torchrun``, which reports through the store too.

Protocol (one JSON line on stdin)::

    {"run_id": "...", "options": "<base64 pickle of experiment_options>" | null}

EOF before a line: the standby exits quietly. Nothing untrusted is unpickled: the options
come from the parent process through this private pipe.

``--run-id ID`` instead: no stdin; the options (if any) come in the environment variable
``ACCELVIT_WORKER_OPTIONS`` (same encoding, private to the process tree). This is how a run with
``processes`` > 1 starts: ``torchrun --standalone --nproc_per_node N -m accelvit.runs.worker --home DIR
--run-id ID``. Each rank joins the process group (gloo on the CPU, NCCL on CUDA); rank 0 runs
:func:`~accelvit.runs.execute.execute` against the store as for one process (its store cancel flag
reaches its token, and every training step's collective cancel check stops all ranks at the same
step); the other ranks run the same Experiment with no store (as ``accelvit run`` under torchrun
does). Exit status under torchrun: 0 when the run finished, was cancelled or interrupted, 1 when it
failed, so that torchrun stops the other ranks at once instead of leaving them waiting in a collective.

Signals: SIGTERM (the server is stopping) cancels the run with reason ``interrupted``, so it
ends ``interrupted`` within one training step; SIGINT is ignored (a Ctrl-C in the server's
terminal reaches the server, which sends SIGTERM). On Linux the process also gets SIGTERM
when its parent dies (``PR_SET_PDEATHSIG``), and a watcher thread checks the parent anyway:
``--parent`` is the job manager's pid; under torchrun the worker's parent is the torchrun agent
(which forwards SIGTERM to every rank), so there the watcher checks that the manager is alive and
that the agent is still its parent.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import pickle
import signal
import sys
import threading
import time

from .schema import INTERRUPTED

log = logging.getLogger(__name__)

#: The environment variable that carries ``experiment_options`` to a worker started with ``--run-id``.
OPTIONS_ENV = "ACCELVIT_WORKER_OPTIONS"


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the thread that spawned it exits."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - best effort; the watcher thread covers it
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process with that pid
        return True
    return True


def _watch_parent(parent: int, token, interval: float = 1.0, agent: int | None = None) -> None:
    """Cancel ``token`` (interrupted) when the job manager ``parent`` is gone: it is no longer this
    process's parent, or, under torchrun (``agent``: the torchrun agent, this process's parent), the
    manager is not alive or the agent is no longer the parent."""
    def gone() -> bool:
        if agent is None:
            return os.getppid() != parent
        return os.getppid() != agent or not _alive(parent)

    def loop() -> None:
        while not token.cancelled:
            if gone():
                token.cancel(INTERRUPTED)
                return
            time.sleep(interval)

    threading.Thread(target=loop, name="accelvit-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m accelvit.runs.worker")
    ap.add_argument("--home", required=True, help="the run store folder")
    ap.add_argument("--parent", type=int, default=None, help="the pid of the job manager's process")
    ap.add_argument("--run-id", default=None,
                    help="run this run at once (no standby, nothing read from stdin); how torchrun starts it")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    state = {"token": None}

    def on_term(signum, frame):  # noqa: ARG001
        if state["token"] is None:  # a standby: nothing to save
            raise SystemExit(0)
        state["token"].cancel(INTERRUPTED)

    signal.signal(signal.SIGTERM, on_term)
    # The expensive imports happen here, while the process waits as a standby.
    from ..experiment import runner  # noqa: F401  (torch, timm, the runner)
    from ..utils import CancelToken

    if args.run_id is not None:
        run_id, raw_options = args.run_id, os.environ.get(OPTIONS_ENV) or None
    else:
        line = sys.stdin.readline()
        if not line.strip():
            return 0
        msg = json.loads(line)
        run_id, raw_options = msg["run_id"], msg.get("options")
    token = CancelToken()
    state["token"] = token
    from .. import distributed

    launched = distributed.launched()
    if args.parent:  # its first look is at once: a parent gone already interrupts the run
        _watch_parent(args.parent, token, agent=os.getppid() if launched else None)
    options = pickle.loads(base64.b64decode(raw_options)) if raw_options else None
    if launched:
        return _run_rank(args.home, run_id, token, options)
    return _run(args.home, run_id, token, options)


def _run(home: str, run_id: str, token, options) -> int:
    from .execute import execute
    from .store import RunStore

    store = RunStore(home)
    run = store.get_run(run_id)
    if run is None:
        print(f"no run {run_id!r} in {home}", file=sys.stderr)
        return 2
    execute(store, run_id, run["config"], cancel=token, experiment_options=options)
    return 0


def _run_rank(home: str, run_id: str, token, options) -> int:
    """One rank of a torchrun group (``processes`` > 1): join the group; rank 0 runs the run against the
    store, the others the same Experiment without it."""
    from .. import distributed
    from ..errors import Cancelled
    from ..experiment import Experiment, ExperimentConfig
    from .execute import execute
    from .schema import FAILED, QUEUED, RUNNING
    from .store import RunStore

    store = RunStore(home)
    run = store.get_run(run_id)
    if run is None:
        print(f"no run {run_id!r} in {home}", file=sys.stderr)
        return 2
    cfg = ExperimentConfig.from_dict(run["config"])
    info = None
    try:
        info = distributed.setup(cfg.device)
        cfg.device = info.device  # cuda:LOCAL_RANK with NCCL, else the CPU with gloo
        if info.rank != 0:  # one log for the group, rank 0's (each rank's digest and end aside)
            logging.getLogger().setLevel(logging.WARNING)
            for name in (distributed.__name__, __name__):
                logging.getLogger(name).setLevel(logging.INFO)
            try:
                # the same store folder, so every rank finds (or misses) the same cached baseline
                Experiment(cfg, cancel=token, home=store.home, **(options or {})).run()
            except Cancelled as exc:
                log.info("rank %d of %d: %s (%s)", info.rank, info.world_size,
                         "interrupted" if token.reason == INTERRUPTED else "cancelled", exc)
            return 0
        status = execute(store, run_id, cfg, cancel=token, experiment_options=options)
        log.info("rank 0 of %d: run %s ended %s", info.world_size, run_id, status)
        return 1 if status == FAILED else 0
    except Exception as exc:
        if info is None or info.rank == 0:  # rank 0 could not even start the run (joining the group failed)
            store.set_status(run_id, FAILED, error=f"This run's process group could not start: {exc}",
                             only_from=(RUNNING, QUEUED))
        raise
    finally:
        distributed.teardown()


if __name__ == "__main__":
    sys.exit(main())
