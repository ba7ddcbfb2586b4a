"""Server-wide resources of the dashboard (the only Streamlit-aware state besides pages).

One job manager per server and store folder, shared by every session and page through
``st.cache_resource``; everything else a page shows is read from the run store, so a reload
or a second tab sees the same runs and the same live progress.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import streamlit as st

from ..runs import TERMINAL, RunStore, home_dir
from .auth import require_app_entry

#: The favicon of every page: a local file. (A Material icon as page icon makes the browser
#: fetch it from Google's font server; the dashboard must work offline.)
PAGE_ICON = str(Path(__file__).with_name("icon.png"))


@st.cache_resource(show_spinner=False)
def _manager_for(home: str):
    from ..runs.jobs import get_manager

    # Opening the manager marks runs left running by a dead server process "interrupted".
    return get_manager(home)


def manager():
    """The job manager of ``$ACCELVIT_HOME`` (default ``./runs``), made once per server.

    Every page starts here, so a page script run without ``app.py`` (and its login) is turned
    back through it first (:func:`accelvit.ui.auth.require_app_entry`).
    """
    require_app_entry()
    home = str(home_dir())
    mgr = _manager_for(home)
    if mgr.closed:  # shut down (tests, server stop): make a fresh one
        _manager_for.clear()
        mgr = _manager_for(home)
    return mgr


def store() -> RunStore:
    return manager().store


@st.cache_data(show_spinner=False, ttl=3600)
def device_text() -> str:
    from ..utils import device_description

    return device_description("auto")


@st.cache_data(show_spinner=False, ttl=3600)
def device_choices() -> list[str]:
    """The Experiment form's device options: ``auto``, ``cpu`` and every CUDA GPU of this server."""
    import torch

    return ["auto", "cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


@st.cache_data(show_spinner=False, ttl=3600)
def process_limit() -> int:
    """The most processes the Experiment form offers for one run: one per CUDA GPU where this server has
    several, else one per CPU core it may use (the form shows the field only when this is above 1)."""
    import torch

    from ..experiment.config import MAX_PROCESSES

    gpus = torch.cuda.device_count()
    if gpus > 1:
        return min(gpus, MAX_PROCESSES)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_PROCESSES))


def session_token() -> str:
    """A random id of this browser session (kept in ``st.session_state``)."""
    if "_accelvit_session" not in st.session_state:
        st.session_state["_accelvit_session"] = secrets.token_hex(6)
    return st.session_state["_accelvit_session"]


def submit_key(slot: str, payload: Any) -> str:
    """An idempotent submit key for ``payload`` from this session's ``slot`` (a button).

    Re-submitting the same payload while its previous run(s) are still queued or running gives
    the same key (a double click or a rerun queues nothing new); once they ended, a new key.
    """
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    base = f"{session_token()}:{slot}:{hashlib.sha256(blob).hexdigest()[:12]}"
    last = st.session_state.get(f"_submit_{slot}")
    if last and last["base"] == base:
        statuses = [store().status(r) for r in last.get("run_ids", [])]
        if not last.get("run_ids") or any(s not in TERMINAL for s in statuses if s is not None):
            return last["key"]
    key = f"{base}:{secrets.token_hex(3)}"
    st.session_state[f"_submit_{slot}"] = {"base": base, "key": key, "run_ids": []}
    return key


def remember_submit(slot: str, run_ids: list[str]) -> None:
    rec = st.session_state.get(f"_submit_{slot}")
    if rec is not None:
        rec["run_ids"] = list(run_ids)
