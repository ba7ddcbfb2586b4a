"""Upload quotas: how much the dashboard keeps of what people upload, and for how long.

Two kinds of upload:

- **weights files** (Experiment page) are stored under ``<home>/uploads/`` with content-addressed
  names (:func:`store_upload`). The folder holds at most ``max_files`` files and ``max_bytes``
  bytes; files older than ``max_age_s`` are deleted, and to make room the oldest go first. A
  file written (or uploaded again) within ``min_age_s`` is never deleted to make room, since a
  queued run may still need it: then the upload is refused with a message saying why and what
  to do.
- **images** (Inference page) are never written to disk; a page predicts at most
  ``max_images`` of them, ``max_image_bytes`` each (:func:`image_batch`).

Every limit can be set by environment variable (read by :meth:`UploadQuota.from_env`):
``ACCELVIT_UPLOADS_MAX_MB``, ``ACCELVIT_UPLOADS_MAX_FILES``, ``ACCELVIT_UPLOADS_MAX_AGE_DAYS``,
``ACCELVIT_UPLOAD_MAX_IMAGES``, ``ACCELVIT_UPLOAD_MAX_IMAGE_MB``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping, Sequence

from .errors import ConfigError, InputError
from .fileio import atomic_write_bytes
from .paths import uploads_dir

log = logging.getLogger(__name__)

MB = 1024 * 1024
DAY = 86_400.0
# field -> (environment variable, multiplier from the variable's unit to the field's)
_ENV = {"max_bytes": ("ACCELVIT_UPLOADS_MAX_MB", MB), "max_files": ("ACCELVIT_UPLOADS_MAX_FILES", 1),
        "max_age_s": ("ACCELVIT_UPLOADS_MAX_AGE_DAYS", DAY), "max_images": ("ACCELVIT_UPLOAD_MAX_IMAGES", 1),
        "max_image_bytes": ("ACCELVIT_UPLOAD_MAX_IMAGE_MB", MB)}


@dataclass(frozen=True)
class UploadQuota:
    """Limits on uploads (see the module docstring).

    Args:
        max_bytes: total size of the stored uploads folder (default 4 GiB: two 2 GiB weights files).
        max_files: stored files at most.
        max_age_s: stored files older than this are deleted (default 7 days).
        min_age_s: stored files younger than this are never deleted to make room (default 1 hour).
        max_images: images one Inference page predicts at a time.
        max_image_bytes: bytes per uploaded image.
    """

    max_bytes: int = 4 * 1024 * MB
    max_files: int = 20
    max_age_s: float = 7 * DAY
    min_age_s: float = 3600.0
    max_images: int = 16
    max_image_bytes: int = 20 * MB

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < (0 if f.name == "min_age_s"
                                                                                          else 1):
                raise ConfigError(f"uploads.{f.name}", f"must be a positive number, got {v!r}.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "UploadQuota":
        """The defaults, with any limit given by its environment variable (ConfigError naming a bad one)."""
        env = os.environ if env is None else env
        kw = {}
        for name, (var, unit) in _ENV.items():
            raw = env.get(var)
            if raw in (None, ""):
                continue
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(var, f"must be a number, got {raw!r}.") from None
            if not value > 0 or value == float("inf"):
                raise ConfigError(var, f"must be a positive number, got {raw!r}.")
            kw[name] = value * unit if name == "max_age_s" else max(1, int(value * unit))
        return cls(**kw)


def _mb(n: float) -> str:
    return f"{n / MB:,.1f} MB" if n < 10 * MB else f"{n / MB:,.0f} MB"


def _stored(folder: Path) -> list[tuple[float, int, Path]]:
    """``(mtime, bytes, path)`` of the stored uploads, oldest first (temp files of writes in flight excluded)."""
    out = []
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    for p in entries:
        if p.name.startswith("."):
            continue
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if p.is_file() and not p.is_symlink():
            out.append((st.st_mtime, st.st_size, p))
    return sorted(out)


def _remove(p: Path) -> bool:
    try:
        p.unlink()
        return True
    except FileNotFoundError:
        return False


def clean_uploads(home: str | os.PathLike | None = None, quota: UploadQuota | None = None,
                  now: float | None = None) -> list[Path]:
    """Delete stored uploads older than ``quota.max_age_s``; the paths removed."""
    quota = quota or UploadQuota.from_env()
    now = time.time() if now is None else now
    gone = [p for mtime, _, p in _stored(uploads_dir(home)) if now - mtime > quota.max_age_s and _remove(p)]
    if gone:
        log.info("removed %d uploads older than %.0f days", len(gone), quota.max_age_s / DAY)
    return gone


def upload_name(name: str, data: bytes) -> str:
    """The stored name of an upload: the first 16 hex digits of its SHA-256, a dash, its name made safe."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"{digest}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(name).name)[:100]}"


def store_upload(name: str, data: bytes, home: str | os.PathLike | None = None,
                 quota: UploadQuota | None = None, now: float | None = None) -> Path:
    """Keep ``data`` under ``<home>/uploads/`` within the quota; its path.

    The same content and name uploaded again is not written twice (its age starts over). Room is
    made by deleting the oldest stored files that are older than ``quota.min_age_s``; when that is
    not enough, InputError says what the quota is, what the folder holds and what to do.
    """
    quota = quota or UploadQuota.from_env()
    now = time.time() if now is None else now
    folder = uploads_dir(home)
    clean_uploads(home, quota, now)
    out = folder / upload_name(name, data)
    if out.is_file():
        os.utime(out, (now, now))
        return out
    size = len(data)
    if size > quota.max_bytes:
        raise InputError(f"{name} is {_mb(size)}; the uploads folder keeps at most {_mb(quota.max_bytes)} in all "
                         "(ACCELVIT_UPLOADS_MAX_MB). Give the file's path on the server instead, or raise "
                         "the limit.")
    stored = _stored(folder)
    count, total = len(stored), sum(s for _, s, _ in stored)
    for mtime, s, p in stored:  # oldest first
        if count + 1 <= quota.max_files and total + size <= quota.max_bytes:
            break
        if now - mtime < quota.min_age_s:
            break  # this and every later file is recent: a queued run may still read it
        if _remove(p):
            log.info("removed upload %s (%d bytes) to make room for %s", p.name, s, name)
        count, total = count - 1, total - s
    if count + 1 > quota.max_files or total + size > quota.max_bytes:
        raise InputError(
            f"{name} was not stored: the uploads folder ({folder}) holds {count} files, {_mb(total)}, and "
            f"keeps at most {quota.max_files} files and {_mb(quota.max_bytes)} "
            "(ACCELVIT_UPLOADS_MAX_FILES, ACCELVIT_UPLOADS_MAX_MB). The files there were uploaded within the last "
            f"{quota.min_age_s / 60:.0f} minutes and queued runs may still need them, so none was deleted to make "
            "room. Try again later, give the file's path on the server instead, or raise the limits.")
    atomic_write_bytes(out, data)
    os.utime(out, (now, now))  # its age counts from ``now`` (the same clock the quota reads)
    return out


def image_batch(names_sizes: Sequence[tuple[str, int]], quota: UploadQuota | None = None
                ) -> tuple[list[int], list[str]]:
    """Which uploaded images a page predicts: ``(indices kept, messages for those refused)``.

    At most ``quota.max_images`` files, each at most ``quota.max_image_bytes``; the rest are named.
    """
    quota = quota or UploadQuota.from_env()
    keep, refused, too_many = [], [], []
    for i, (name, size) in enumerate(names_sizes):
        if size > quota.max_image_bytes:
            refused.append(f"{name} is {_mb(size)}; images of at most {_mb(quota.max_image_bytes)} are accepted. Resize "
                           "it and upload it again.")
        elif len(keep) >= quota.max_images:
            too_many.append(name)
        else:
            keep.append(i)
    if too_many:
        refused.append(f"At most {quota.max_images} images are predicted at a time; {len(too_many)} more were left "
                       f"out: {', '.join(too_many[:10])}{' …' if len(too_many) > 10 else ''}. Remove some and add "
                       "these in another batch.")
    return keep, refused
