"""Imported by the Ray workers of tests/test_ray_sweep.py (their setup hook and experiment seams).

:func:`install` makes a worker refuse to open any SQLite database and to write anything under
``$ACCELVIT_HOME`` (the test points it at the driver's store folder): a trial that tried to
write the run store, or the driver's artifacts or cache itself, would fail with PermissionError.
"""

from __future__ import annotations

import os
import sys
import time

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def install() -> None:
    home = os.path.realpath(os.environ["ACCELVIT_HOME"])

    def hook(event: str, args: tuple) -> None:
        if event == "sqlite3.connect":
            raise PermissionError(f"a Ray worker opened a SQLite database: {args!r}")
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path, mode, flags = (list(args) + [None, None])[:3]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writes and os.path.realpath(os.fsdecode(path)).startswith(home + os.sep):
                raise PermissionError(f"a Ray worker wrote into the driver's folder: {path}")

    sys.addaudithook(hook)


def prune_fails_or_hangs(exp):
    """A prune stage that raises for head_ratio 0.5 and hangs (until the task is stopped) for 0.25."""
    from accelvit.experiment import Experiment

    ratio = exp.config.prune.head_ratio
    if ratio == 0.5:
        raise ValueError("boom: this trial fails on purpose")
    if ratio == 0.25:
        time.sleep(300)  # ends only when the driver stops the worker (cancel)
    return Experiment.stage_prune(exp)


def probe() -> list[str]:
    """What the guard refuses in this worker (the test checks the guard is there at all)."""
    import sqlite3

    refused = []
    try:
        sqlite3.connect(os.path.join(os.environ["ACCELVIT_HOME"], "runs.db")).close()
    except PermissionError:
        refused.append("sqlite")
    try:
        with open(os.path.join(os.environ["ACCELVIT_HOME"], "probe.txt"), "w"):
            pass
    except PermissionError:
        refused.append("write")
    return refused
