"""Who is executing a run, and whether they still are.

A run being executed has an owner ``host:pid:start:tag-random``. A run whose owner is gone
(its process died, or it belonged to a manager of this process that no longer exists) is
marked interrupted by the next job manager that opens the store
(:meth:`accelvit.runs.store.RunStore.mark_orphans_interrupted`).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time

_HOST = socket.gethostname()
_LIVE_OWNERS: set[str] = set()
_OWNERS_LOCK = threading.Lock()


def _proc_start(pid: int) -> str:
    """The start time of a process (Linux ``/proc``), to tell a reused pid from the original."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return ""


def new_owner(tag: str = "jobs") -> str:
    """A new owner id ``host:pid:start:tag-random`` registered as live in this process."""
    pid = os.getpid()
    owner = f"{_HOST}:{pid}:{_proc_start(pid)}:{tag}-{secrets.token_hex(4)}"
    with _OWNERS_LOCK:
        _LIVE_OWNERS.add(owner)
    return owner


def release_owner(owner: str) -> None:
    """This process no longer works for ``owner``: its unfinished runs count as orphaned."""
    with _OWNERS_LOCK:
        _LIVE_OWNERS.discard(owner)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def owner_alive(owner: str | None, heartbeat: float | None = None, stale_s: float = 3600.0) -> bool:
    """Whether the owner of a run may still be working on it.

    Same machine: this process -> the owner is registered (its manager is open); another
    process -> that pid exists and started when the owner was made. Another machine sharing
    the folder: the run's heartbeat is recent.
    """
    if not owner:
        return False
    try:
        host, pid_s, start, _token = owner.rsplit(":", 3)
        pid = int(pid_s)
    except ValueError:
        return False
    if host != _HOST:
        return heartbeat is not None and time.time() - heartbeat < stale_s
    if pid == os.getpid():
        with _OWNERS_LOCK:
            return owner in _LIVE_OWNERS
    if not _pid_alive(pid):
        return False
    return not start or _proc_start(pid) in ("", start)
