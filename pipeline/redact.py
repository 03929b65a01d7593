"""Keeps camera credentials out of logs, errors and metrics.

RTSP URLs often carry `user:password@`, and some cameras take `?user=...&password=...` in the query
string; whatever prints a URL (a log line, a SourceError, a config error, /healthz, the JSONL
`source` field) prints `mask_url(url)` instead, and a logging filter masks any that slip through.
Masking errs on the side of hiding too much: a URL FFmpeg would misread (a '/' or a space in the
password) is still masked whole, since that is exactly when it ends up quoted in an error.
"""

from __future__ import annotations

import logging
import re

# scheme://user:password@host  or  scheme://user@host (a user name alone can be a secret too).
# Greedy up to the *last* '@' of the word: FFmpeg takes an unescaped '@' inside a password, and an
# unescaped '/' there (rtsp://admin:pw/x@host) would otherwise end the match and leave `pw` shown.
# The second form is a password with a space, which ends the word early; it is only taken when the
# part before the first ':' looks like a user name and no '/' comes before the '@'.
_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?:(?P<userinfo>[^\s'\"<>]+)|(?P<spaced>[^\s:/@'\"<>]+:[^\n/@'\"<>]*\s[^\n/@'\"<>]*))@"
)
# ?user=...&password=... (and the spellings cameras use: usr, pwd, token, ...), in any case.
_QUERY_SECRETS = re.compile(
    r"(?i)(?P<key>[?&;](?:user(?:name)?|usr|login|pass(?:word|wd)?|pwd|psw|token|access_token|auth|"
    r"key|api[_-]?key|secret|sig(?:nature)?)=)[^&#\s'\"<>]*"
)


def mask_url(text: str) -> str:
    """Masks credentials in URLs, also inside longer text.

    `rtsp://admin:s3cret@10.0.0.5/stream` → `rtsp://***:***@10.0.0.5/stream`;
    `rtsp://10.0.0.5/cam?user=admin&password=s3cret` → `rtsp://10.0.0.5/cam?user=***&password=***`.

    Args:
        text: a URL, or any text that may quote one.

    Returns:
        `text` with every user name, password and credential query value replaced by `***`.
    """
    def userinfo(m: re.Match[str]) -> str:
        found = m.group("userinfo") or m.group("spaced") or ""
        return f"{m.group('scheme')}{'***:***' if ':' in found else '***'}@"

    return _QUERY_SECRETS.sub(lambda m: f"{m.group('key')}***", _CREDENTIALS.sub(userinfo, text))


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
