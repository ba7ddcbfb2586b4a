"""Who is executing a run, and whether they still are.

A queued or running run has an owner ``host:pid:start:tag-random`` (the job manager holding
the queue, or ``accelvit run``) and a heartbeat: the owner writes the time into the run's row
every :data:`HEARTBEAT_S` seconds from a thread of its own (:class:`Heartbeat`), whatever the
run is doing, and records that period in ``runs.heartbeat_s``.

The rule (:func:`owner_gone`), applied by every reader through
:meth:`accelvit.runs.store.RunStore.mark_orphans_interrupted`:

- owner on this host: gone when its process is (the pid is missing, or it is another process
  that reused the pid: its start time differs), or, inside this process, when its manager was
  released. Exact and immediate, and a late heartbeat (a loaded machine, a long database lock,
  a debugger) never kills a live local run.
- owner on another host sharing the folder, or no readable owner: gone when the heartbeat is
  older than :func:`stale_after` (``max(STALE_S, 12 x heartbeat_s)``; :data:`LEGACY_STALE_S`
  for rows of an accelvit that beat only on progress events). This compares the owner's clock
  with the reader's, so hosts' clocks must agree to well within that window (NTP does).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

#: Seconds between two heartbeats of a run's owner (``$ACCELVIT_HEARTBEAT_S`` overrides it).
HEARTBEAT_S = 10.0
#: A heartbeat older than this (and 12 periods) means the owner on another host is gone: a
#: beat delayed by a 30 s database lock, a few missed beats and a minute of clock skew fit in.
STALE_S = 120.0
#: For rows whose owner declared no period (written before schema 2, beating only on events).
LEGACY_STALE_S = 3600.0

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


def heartbeat_interval() -> float:
    """The beat period: ``$ACCELVIT_HEARTBEAT_S`` when it is a number in [0.05, 3600], else :data:`HEARTBEAT_S`."""
    try:
        value = float(os.environ.get("ACCELVIT_HEARTBEAT_S", ""))
    except ValueError:
        return HEARTBEAT_S
    return value if 0.05 <= value <= 3600 else HEARTBEAT_S


def stale_after(heartbeat_s: float | None) -> float:
    """Seconds without a heartbeat after which an owner on another host counts as gone."""
    try:
        period = float(heartbeat_s)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # none declared (schema 1), or a damaged row
        return LEGACY_STALE_S
    return max(STALE_S, 12.0 * period) if 0 < period <= 3600 else LEGACY_STALE_S


def _age(heartbeat: float | None, now: float) -> float | None:
    try:
        return now - float(heartbeat)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def owner_gone(owner: str | None, heartbeat: float | None = None, heartbeat_s: float | None = None,
               now: float | None = None) -> str | None:
    """Why the owner of a queued or running run can no longer be working on it, or None while it may
    be (the rule in the module doc). The reason is a phrase for the run's error message."""
    now = time.time() if now is None else now
    host, pid, start = _parse(owner)
    if host == _HOST and pid is not None:
        if pid == os.getpid():
            with _OWNERS_LOCK:
                alive = owner in _LIVE_OWNERS
            return None if alive else "its job manager in this process was shut down"
        if not _pid_alive(pid):
            return f"its process (pid {pid}) is gone: killed, crashed or the machine restarted"
        if start and _proc_start(pid) not in ("", start):
            return f"its process (pid {pid}) is gone; that pid now belongs to another process"
        return None
    age = _age(heartbeat, now)
    limit = stale_after(heartbeat_s)
    if age is not None and age < limit:
        return None
    where = f"host {host}" if host else "its owner"
    if age is None:
        return f"no heartbeat from {where} was ever recorded"
    return f"no heartbeat from {where} for {age:.0f} s (more than {limit:.0f} s)"


def _parse(owner: str | None) -> tuple[str | None, int | None, str]:
    """``(host, pid, start)`` of an owner id; ``(None, None, "")`` when it is not one."""
    if not owner or not isinstance(owner, str):
        return None, None, ""
    try:
        host, pid_s, start, _token = owner.rsplit(":", 3)
        return host, int(pid_s), start
    except ValueError:
        return None, None, ""


def orphan_message(status: str, why: str, stage: object) -> str:
    """The error of a run marked ``interrupted`` because its owner is gone (``why``: :func:`owner_gone`)."""
    if status == "running":
        where = f" in its {stage} stage" if isinstance(stage, str) and stage else ""
        return (f"The process running this job stopped before it finished{where} ({why}). What it recorded "
                "until then (stage metrics, artifacts) is kept; launch it again to rerun it.")
    return f"The job was still queued when the process holding the queue stopped ({why}); submit it again."


def owner_alive(owner: str | None, heartbeat: float | None = None, heartbeat_s: float | None = None) -> bool:
    """Whether the owner of a run may still be working on it (:func:`owner_gone` says why not)."""
    return owner_gone(owner, heartbeat, heartbeat_s) is None


class Heartbeat:
    """Calls ``beat()`` now and then every ``interval`` seconds from a daemon thread until
    :meth:`stop` (or the ``with`` block ends). ``beat`` returns False when there is nothing left
    to beat for (the run was ended by someone else): ``on_lost`` is called once and beating stops.
    A failing beat (a locked or unreachable database) is logged and retried at the next period."""

    def __init__(self, beat: Callable[[], bool | None], interval: float | None = None,
                 on_lost: Callable[[], None] | None = None, name: str = "accelvit-heartbeat"):
        self._beat, self._on_lost = beat, on_lost
        self.interval = heartbeat_interval() if interval is None else float(interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                alive = self._beat()
            except Exception:  # noqa: BLE001 - a missed beat is retried; the run goes on
                log.warning("heartbeat failed; retrying in %.0f s", self.interval, exc_info=True)
                alive = True
            if alive is False and not self._stop.is_set():
                if self._on_lost is not None:
                    try:
                        self._on_lost()
                    except Exception:  # noqa: BLE001
                        log.exception("heartbeat: on_lost failed")
                return
            self._stop.wait(self.interval)
