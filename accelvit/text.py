"""Showing text a user typed (run names, errors, class names) where it could do more than be read.

A run's name comes from whoever started the run (the Experiment form, ``--name``, a sweep file):
printed raw, ``"\\x1b[2J"`` clears the terminal of whoever runs ``accelvit runs``; rendered as
Markdown, ``"[click](https://evil)"`` or ``"![](https://tracker/px.png)"`` becomes a link or a remote
image in the dashboard. Two functions, used everywhere such text is shown:

- :func:`terminal_safe`: control characters (escape sequences, carriage returns, new lines,
  bidi overrides) become visible ``\\xNN`` / ``\\uNNNN`` escapes;
- :func:`md_escape`: the same, and every Markdown / HTML special character backslash-escaped,
  so ``st.markdown`` shows the text literally.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&$:=\"'])")


def _escape_char(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def terminal_safe(text: Any) -> str:
    """``text`` with every control or format character (C0/C1 controls, DEL, bidi overrides, zero-width
    marks) shown as an escape, so printing it cannot move the cursor, recolour or rewrite the terminal."""
    s = "" if text is None else str(text)
    return "".join(_escape_char(ch) if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in s)


def md_escape(text: Any) -> str:
    """``text`` shown literally by ``st.markdown`` (and in labels, captions, tables that render Markdown):
    control characters as in :func:`terminal_safe`, Markdown and HTML specials backslash-escaped."""
    return _MD_SPECIAL.sub(r"\\\1", terminal_safe(text))


def plotly_escape(text: Any) -> str:
    """``text`` shown literally in a Plotly legend, title or hover label, which render a subset of HTML
    (``<a href>`` makes a legend entry a link): control characters as in :func:`terminal_safe`, ``& < >``
    as entities, and ``%`` too, so that ``%{...}`` in a name is no hover-template variable (Plotly decodes
    them)."""
    return html.escape(terminal_safe(text), quote=False).replace("%", "&#37;")
