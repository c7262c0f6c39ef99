"""Credentials never leave the process: URLs are shown as ``user:***@host``.

Database and tracking URLs may carry a password (``postgresql://user:secret@host/db``,
``http://user:token@host``). Every message, log line, MLflow param or tag that names such
a URL goes through :func:`redact` first.
"""

from __future__ import annotations

import re

#: ``scheme://user:password@`` inside any text; the password is group 2.
_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):([^@\s/]*)@")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    Args:
        text: a URL, or a message that may contain URLs.

    Returns:
        The same text, ``postgresql://user:secret@h/db`` shown as ``postgresql://user:***@h/db``.
    """
    return _CREDENTIALS.sub(r"\1:***@", text)


def first_line(err: BaseException) -> str:
    """An error as one short line for a user: its first line, redacted, else its type."""
    lines = str(err).strip().splitlines()
    return redact(lines[0][:300]) if lines else type(err).__name__
