"""Keeps camera credentials out of logs, errors and metrics.

RTSP URLs often carry `user:password@`; whatever prints a URL (a log line, a SourceError, a config
error, /healthz) prints `mask_url(url)` instead, and a logging filter masks any that slip through.
"""

from __future__ import annotations

import logging
import re

# scheme://user:password@host  or  scheme://user@host (a user name alone can be a secret too)
# Greedy up to the *last* '@' before the path: FFmpeg takes an unescaped '@' inside a password.
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s]+)@")


def mask_url(text: str) -> str:
    """`rtsp://admin:s3cret@10.0.0.5/stream` → `rtsp://***:***@10.0.0.5/stream` (also inside longer text)."""
    return _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{'***:***' if ':' in m.group('userinfo') else '***'}@", text)


class RedactingFilter(logging.Filter):
    """Masks credentials in every record that passes a handler (message and arguments formatted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_url(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:  # a traceback can quote a URL too
            record.exc_text = mask_url(logging.Formatter().formatException(record.exc_info))
        return True


def install_log_redaction() -> None:
    """Adds the filter to every handler of the root logger (call after logging is configured)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
