"""Atomic file writes (temp file in the same folder + rename) and the one JSON sanitiser.

Kept free of torch so the run store (and the dashboard's readers) import it cheaply.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers never see half a file; the file is 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; artifacts are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)``: config/report objects, paths, numpy/torch scalars and tensors, sets."""
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist") and getattr(o, "ndim", 0) > 0:  # tensors, arrays
        return o.tolist()
    if hasattr(o, "item"):  # numpy / torch scalars
        try:
            return o.item()
        except Exception:
            pass
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types, recursively (NaN kept as float; keys as text; see :func:`json_default`)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return to_jsonable(json_default(obj))


def dumps(obj: Any, **kw: Any) -> str:
    """``json.dumps`` with :func:`json_default` (NaN allowed, as Python's json writes it)."""
    return json.dumps(obj, default=json_default, allow_nan=True, **kw)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, dumps(obj, indent=2).encode())
