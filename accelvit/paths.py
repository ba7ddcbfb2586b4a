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


# ----------------------------------------------------------------------------- allowed roots (dashboard)
# The folders a browser user may point the dashboard at ("Data folder", "Saved model folder", a weights
# file path). The CLI is not confined: whoever runs it already has a shell on the machine.
DATA_ROOTS_ENV = "ACCELVIT_DATA_ROOTS"
#: Where cifar10 / caltech101 are looked for when no data folder is given (``accelvit.data``).
DEFAULT_DATA_DIR = "data"


def allowed_roots(home: str | os.PathLike | None = None) -> list[Path]:
    """The folders the dashboard may read, resolved (links followed): the store folder
    (:func:`home_dir`), ``./data`` (the default data location) and every folder of
    ``$ACCELVIT_DATA_ROOTS`` (separated by ``os.pathsep``, ``:`` on Linux; relative ones from the
    current folder). Duplicates and empty entries are dropped; order is kept."""
    raw: list[str | os.PathLike] = [home_dir(home), DEFAULT_DATA_DIR]
    raw += [p.strip() for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    out: list[Path] = []
    for p in raw:
        r = Path(p).expanduser().resolve()
        if r not in out:
            out.append(r)
    return out


def describe_roots(roots: list[Path] | None = None) -> str:
    """``"/srv/runs, /srv/data"``: the allowed roots as said in messages and help texts."""
    return ", ".join(str(r) for r in (allowed_roots() if roots is None else roots))


def check_allowed(path: str | os.PathLike, what: str = "path",
                  roots: list[Path] | None = None) -> Path:
    """``path`` resolved (``~`` expanded, ``..`` normalised, every link followed) when it lies inside
    one of ``roots`` (default :func:`allowed_roots`); else InputError naming the allowed folders.

    The message does not say whether ``path`` exists, so refused paths reveal nothing of the
    server's files. Use the returned path from then on, so what was checked is what is read.
    """
    from .errors import InputError

    roots = allowed_roots() if roots is None else roots
    text = str(path).strip()
    if not text or "\x00" in text:
        raise InputError(f"The {what} is empty or not a valid path.")
    try:
        resolved = Path(text).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a link loop, an unknown ~user
        raise InputError(f"The {what} {text} cannot be resolved: {exc}.") from None
    if any(resolved == r or resolved.is_relative_to(r) for r in roots):
        return resolved
    raise InputError(
        f"The {what} {text} is outside the folders this dashboard may read (links and '..' are followed): "
        f"{describe_roots(roots)}. Put the files under one of them, or add their folder to "
        f"{DATA_ROOTS_ENV} (folders separated by '{os.pathsep}') before starting the dashboard.")
