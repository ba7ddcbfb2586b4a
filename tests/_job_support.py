"""Helpers shared by the tests that drive real job processes (test_job_process, test_job_torchrun)."""

from __future__ import annotations

import time
from pathlib import Path

from accelvit.runs import RUNNING, RunStore

TIMEOUT = 240


def wait_stage(store: RunStore, rid: str, stage: str, timeout: float = TIMEOUT) -> None:
    """Wait until run ``rid`` is in ``stage``; fail at once if it stops running first."""
    deadline = time.monotonic() + timeout
    while store.get_run(rid)["stage"] != stage:
        assert store.status(rid) == RUNNING or store.get_run(rid)["stage"] is None, store.get_run(rid)["error"]
        assert time.monotonic() < deadline, f"run {rid} never reached the {stage} stage"
        time.sleep(0.05)


def worker_pids(home: Path, rank: int | None = None) -> list[int]:
    """Pids of live (not zombie) job processes of the store ``home``, read from /proc (no pgrep needed);
    with ``rank``, only the torchrun worker started with ``RANK=rank``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            env = (proc / "environ").read_bytes().split(b"\0") if rank is not None else []
        except OSError:
            continue
        if b"accelvit.runs.worker" not in cmd or str(home).encode() not in cmd or state == "Z":
            continue
        if rank is None or f"RANK={rank}".encode() in env:
            pids.append(int(proc.name))
    return pids
