"""bench/RESULTS.md: one benchmark's section replaced in place, the others kept (one writer for every bench)."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def replace_section(section: str, text: str, path: Path = RESULTS, keep_notes: bool = False) -> None:
    """Replace ``section`` (its ``## `` heading line up to the next ``## `` heading) with ``text``, or append
    ``text`` when the file has no such section. ``keep_notes``: hand-written notes under a ``### Notes``
    heading inside the old section are kept after the new text."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    m = pattern.search(old)
    if not m:
        path.write_text(old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")
        return
    notes = ""
    if keep_notes:
        n = re.search(r"^### Notes\n.*", m.group(0), re.S | re.M)
        notes = n.group(0).rstrip() + "\n\n" if n else ""
    tail = old[m.end():]
    path.write_text(old[:m.start()] + text.rstrip("\n") + "\n" + ("\n" + notes if notes else "")
                    + ("\n" if tail else "") + tail)
