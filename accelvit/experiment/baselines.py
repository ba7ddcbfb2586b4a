"""Trained baselines, shared: one folder per baseline key under ``<home>/baselines/``.

Every run (dashboard, ``accelvit run``, a sweep point, a ``bench.pareto`` method) whose data,
model and baseline training agree has the same :meth:`ExperimentConfig.baseline_key` and
reuses the same trained weights. A cache entry is a saved model folder
(``accelvit.serialize``) plus ``baseline.json`` (how it was trained); it is written to a temp
folder and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import serialize
from ..errors import AccelvitError
from ..paths import baselines_dir
from ..train import check_finite

log = logging.getLogger(__name__)

INFO_FILE = "baseline.json"


def cache_path(key: str, home: str | os.PathLike | None = None) -> Path:
    return baselines_dir(home) / key


def load_cached(key: str, home: str | os.PathLike | None = None,
                check: Callable[[torch.nn.Module, str], None] | None = None,
                warn: Callable[[str], None] = log.warning) -> tuple[torch.nn.Module, dict[str, Any]] | None:
    """The cached baseline ``(model on CPU, info)``, or None when there is none or it is unusable.

    ``check(model, what)`` may raise to reject an entry (e.g. a class count that does not fit).
    """
    cache = cache_path(key, home)
    if not ((cache / serialize.SPEC_FILE).exists() and (cache / INFO_FILE).exists()):
        return None
    try:
        model, _ = serialize.load(cache, device="cpu")
        check_finite(model, "It", "a diverged training left it (older accelvit cached such baselines).")
        if check is not None:
            check(model, f"the cached baseline {cache}")
        info = json.loads((cache / INFO_FILE).read_text())
    except (AccelvitError, OSError, ValueError) as exc:
        warn(f"The cached baseline in {cache} could not be used ({exc}); training a new one.")
        return None
    return model, {**info, "source": "cache", "trained_as": info.get("source"), "path": str(cache),
                   "baseline_key": key}


def save_cached(model: torch.nn.Module, key: str, info: dict[str, Any], *, class_names: list[str] | None,
                meta: dict[str, Any], home: str | os.PathLike | None = None,
                warn: Callable[[str], None] = log.warning) -> Path:
    """Save into ``baselines/<key>/`` atomically (a temp folder renamed into place); the folder.

    A model with a NaN or infinite weight is never cached: :class:`~accelvit.errors.TrainingError`."""
    check_finite(model, "The trained baseline", "it was not cached. Train it again with a lower learning rate.")
    root = baselines_dir(home)
    final = root / key
    tmp = root / f".tmp-{key}-{secrets.token_hex(4)}"
    try:
        serialize.save(model, tmp, class_names=class_names, meta=meta)
        serialize.atomic_write_json(tmp / INFO_FILE, {**info, "baseline_key": key, "created": time.time()})
        if (final / INFO_FILE).exists():  # another run cached the same baseline meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            return final
        if final.exists():  # a damaged cache entry (it failed to load)
            shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if (final / INFO_FILE).exists():  # another process cached the same baseline first
            return final
        warn(f"Could not cache the baseline in {final} ({exc}); it will be retrained next time.")
    return final
