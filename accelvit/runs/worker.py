"""One job in its own process: ``python -m accelvit.runs.worker --home DIR``.

The job manager's ``process`` executor keeps one such process warm (torch, timm and the
runner imported) and hands it a run id on stdin when a job starts; the process runs
:func:`accelvit.runs.execute.execute` against the run store and exits. Rendering in the web
server then cannot starve the training (they no longer share a GIL or a process), and
the same seam can launch other executors (``torchrun``) that report through the store.

Protocol (one JSON line on stdin)::

    {"run_id": "...", "options": "<base64 pickle of experiment_options>" | null}

EOF before a line: the standby exits quietly. Nothing untrusted is unpickled: the options
come from the parent process through this private pipe.

Signals: SIGTERM (the server is stopping) cancels the run with reason ``interrupted``, so it
ends ``interrupted`` within one training step; SIGINT is ignored (a Ctrl-C in the server's
terminal reaches the server, which sends SIGTERM). On Linux the process also gets SIGTERM
when its parent dies (``PR_SET_PDEATHSIG``), and a watcher thread checks the parent anyway.
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


def _watch_parent(parent: int, token, interval: float = 1.0) -> None:
    def loop() -> None:
        while not token.cancelled:
            if os.getppid() != parent:
                token.cancel(INTERRUPTED)
                return
            time.sleep(interval)

    threading.Thread(target=loop, name="accelvit-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m accelvit.runs.worker")
    ap.add_argument("--home", required=True, help="the run store folder")
    ap.add_argument("--parent", type=int, default=None, help="the pid of the job manager's process")
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
    from .execute import execute
    from .store import RunStore

    line = sys.stdin.readline()
    if not line.strip():
        return 0
    msg = json.loads(line)
    token = CancelToken()
    state["token"] = token
    if args.parent:  # its first look is at once: a parent gone already interrupts the run
        _watch_parent(args.parent, token)
    options = pickle.loads(base64.b64decode(msg["options"])) if msg.get("options") else None
    store = RunStore(args.home)
    run = store.get_run(msg["run_id"])
    if run is None:
        print(f"no run {msg['run_id']!r} in {args.home}", file=sys.stderr)
        return 2
    execute(store, msg["run_id"], run["config"], cancel=token, experiment_options=options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
