"""The workspace layout: one home folder holds the run store, cached baselines, run artifacts and uploads.

    $ACCELVIT_HOME/            (``--home DIR`` on the CLI; default ``./runs``)
        runs.db                the SQLite run store (``accelvit.runs``)
        baselines/<key>/       trained baselines shared by every run with the same key
        artifacts/<run id>/    what a run saved: model/, report.json, layers_<stage>.csv
        uploads/               weights files uploaded through the dashboard

Resolved when asked, never at import time, so tests and the CLI can point ``ACCELVIT_HOME``
elsewhere before anything is opened. This module imports nothing of accelvit (ground floor).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "runs"
DB_FILE = "runs.db"


def home_dir(home: str | os.PathLike | None = None) -> Path:
    """The store folder: ``home``, else ``$ACCELVIT_HOME``, else ``./runs`` (resolved now)."""
    raw = home if home not in (None, "") else (os.environ.get("ACCELVIT_HOME") or DEFAULT_HOME)
    return Path(raw).expanduser().resolve()


def db_path(home: str | os.PathLike | None = None) -> Path:
    return home_dir(home) / DB_FILE


def baselines_dir(home: str | os.PathLike | None = None) -> Path:
    """Trained baselines, one folder per baseline key (``accelvit.experiment.baselines``)."""
    return home_dir(home) / "baselines"


def artifacts_dir(home: str | os.PathLike | None = None) -> Path:
    """Run artifacts, one folder per run id."""
    return home_dir(home) / "artifacts"


def uploads_dir(home: str | os.PathLike | None = None) -> Path:
    """Files uploaded through the dashboard (content-addressed names)."""
    return home_dir(home) / "uploads"
