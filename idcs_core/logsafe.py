"""Log lines that cannot be forged, and no secrets in the access log.

- ``escape``: control and format characters (line breaks, ANSI escapes, bidi marks) of
  untrusted text become visible ``\\x..`` escapes, so a typed value cannot start a fake
  log line or recolour a terminal. ``SafeFormatter`` applies it to every record's message.
- ``RedactQuerySecrets``: a filter on ``uvicorn.access`` that masks ``token=`` (and other
  secret) values in logged request lines, e.g. ``/api/client/templogin?token=***``.
"""

from __future__ import annotations

import logging
import re
import unicodedata

_SECRET_QUERY = re.compile(r"((?:^|[?&;])(?:token|password|api_token|access_token)=)[^&;\s\"]*", re.I)


def escape(text: str) -> str:
    """``text`` with every control/format character shown as an escape (``\\n``, ``\\x1b``...)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or (ch == " "):
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def redact_query(text: str) -> str:
    return _SECRET_QUERY.sub(r"\1***", text)


class SafeFormatter(logging.Formatter):
    """A formatter whose message part is escaped (tracebacks keep their line breaks)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)


class RedactQuerySecrets(logging.Filter):
    """Mask secret query values in ``uvicorn.access`` records (their args hold the path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact_query(record.msg)
        return True


def install_access_log_filter() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuerySecrets) for f in access.filters):
        access.addFilter(RedactQuerySecrets())
