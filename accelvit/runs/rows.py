"""Values the run store reads back and writes: JSON columns decoded to the type they should
hold, numbers from REAL columns, Python values made fit for a SQL column.

A row damaged by hand or by a crashed writer (a JSON column that is not JSON or holds a list
where a dict belongs, text in a REAL column) is read as empty, with one warning naming the
table, column and run, so no reader (``accelvit runs``, the dashboard) fails on it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("accelvit.runs.store")


def loads(s: Any, default: Any = None, where: str = "", warned: set | None = None) -> Any:
    """A JSON column's value; ``default`` when it is empty, not JSON, or (with a dict or list
    ``default``) not of that type. A damaged value is logged once per ``where`` (``warned``
    holds what was told), named by table, column and run, and the row is read without it."""
    if s is None or s == "":
        return default
    try:
        value = json.loads(s)
    except (TypeError, ValueError, RecursionError):
        value, why = default, "is not valid JSON"
    else:
        if default is None or value is None or isinstance(value, type(default)):
            return default if value is None else value
        value, why = default, f"holds a {type(value).__name__}, expected a {type(default).__name__}"
    if where and (warned is None or where not in warned):
        if warned is not None and len(warned) < 1000:
            warned.add(where)
        log.warning("run store: %s %s; it is read as empty (the row is damaged: %r)", where, why, str(s)[:60])
    return value


def scalar(v: Any) -> Any:
    """A value fit for a SQL column: numbers and strings; anything else becomes None."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float, str)) or v is None:
        return v
    if hasattr(v, "item"):
        try:
            return v.item()
        except Exception:
            return None
    return None


def num(v: Any) -> float | None:
    """A REAL column's value as a float; None when it is missing or not a number (a damaged row)."""
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None
