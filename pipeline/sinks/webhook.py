"""`type: webhook`: POSTs each event's JSON to a URL, through the outbox.

Events go one at a time, in order: an event that cannot be delivered now (no connection, a
timeout, 5xx, 408, 429) is retried with exponential backoff (0.5 s doubling up to `max_backoff_s`,
or the server's Retry-After) and holds back the ones after it, so a receiver sees each camera's
events in order. A 4xx other than 408/429 is the receiver refusing this event for good (a bad
token, a schema it rejects): logged, counted as failed, and not retried. A redirect is not
followed (urllib would repeat a POST as a GET without its body): it is retried like a 5xx, and its
reason names where it points, so the url can be corrected.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from pipeline.frames import Event
from pipeline.metrics import Metrics
from pipeline.outbox import OutboxError, OutboxRow, SharedOutbox
from pipeline.redact import mask_url
from pipeline.sinks.network import OutboxSink

if TYPE_CHECKING:
    from pipeline.config import WebhookSinkConfig

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.5
RETRYABLE_4XX = (408, 429)  # request timeout, too many requests: the receiver asks us to come back
IDLE_WAIT_S = 0.5


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuses every redirect: the 3xx reaches the sink as an HTTPError (urllib would follow a 301,
    302 or 303 to a POST as a GET without the body, and that GET's 2xx would confirm an event the
    receiver never got)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def backlog_key(url: str) -> str:
    """The sink's backlog name in the outbox: the url without its query string (a token there stays
    out of the file), plus a digest of the query, so that two urls differing only in it (which the
    config allows) do not share one backlog."""
    base, sep, query = url.partition("?")
    return f"webhook:{base}" + (f"?{hashlib.sha256(query.encode()).hexdigest()[:16]}" if sep else "")


def _display_name(url: str, metrics: Metrics) -> str:
    """The sink's name in logs, /healthz and the metrics: its url with credentials masked. Urls that
    differ only in a masked part (`?token=a`, `?token=b`) would show alike and share one
    DeliveryMetrics: the later ones get ` #2`, ` #3`, ... (in config order)."""
    name = f"webhook:{mask_url(url)}"
    if name == f"webhook:{url}":
        return name  # nothing masked: the config refuses two sinks of one url
    taken = {d.sink for d in metrics.deliveries()}
    n = 1
    while (f"{name} #{n}" if n > 1 else name) in taken:
        n += 1
    return f"{name} #{n}" if n > 1 else name


class WebhookSink(OutboxSink):
    """POSTs events as JSON (`Content-Type: application/json` plus the configured headers).

    Args:
        config: the sink's config entry.
        outbox: the graph's outbox.
        metrics: the graph's counters.
    """

    def __init__(self, config: WebhookSinkConfig, outbox: SharedOutbox, metrics: Metrics) -> None:
        super().__init__(_display_name(config.url, metrics), outbox, metrics)
        self.key = backlog_key(config.url)
        self.config = config
        self._headers = {"Content-Type": "application/json", "User-Agent": "vigil", **config.headers}
        # Rows are done with in id order (delivered, or refused for good): the next row to send is
        # after `_done_upto`. `_done` holds the done rows the outbox could not remove yet (a full
        # disk: deleting writes too); they are not sent again, and removed once there is room.
        self._done_upto = 0
        self._done: list[int] = []
        self._outbox_error: str | None = None

    def topic(self, event: Event) -> str:
        return f"{event.camera}/{event.rule}"

    def deliver(self) -> None:
        backoff = FIRST_BACKOFF_S
        while not self.stopping.is_set():
            try:
                self._remove_done()
                self.refresh_backlog()
                rows = self.outbox.pending(self.key, self._done_upto, 20)
            except OutboxError as exc:  # a full disk, a file locked by another process: try again soon
                self._outbox_trouble(exc)
                self.stopping.wait(IDLE_WAIT_S)
                continue
            if not rows:
                self.wake.wait(IDLE_WAIT_S)
                self.wake.clear()
                continue
            for row in rows:
                if self.stopping.is_set():
                    return
                wait_s = self._post(row, backoff)
                if wait_s is None:
                    backoff = FIRST_BACKOFF_S
                    continue
                self.stats.retries += 1
                self.stopping.wait(wait_s)  # the same row again after the wait: order is kept
                backoff = min(backoff * 2, self.config.max_backoff_s)
                break

    def _post(self, row: OutboxRow, backoff: float) -> float | None:
        """Sends one event. Returns None when it is done with (delivered, or refused for good),
        else the seconds to wait before trying it again."""
        request = urllib.request.Request(self.config.url, data=row.payload, headers=self._headers, method="POST")
        try:
            with _OPENER.open(request, timeout=self.config.timeout_s) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = exc.headers.get("Retry-After") if exc.headers is not None else None
            location = exc.headers.get("Location") if exc.headers is not None else None
            exc.close()
            if 400 <= status < 500 and status not in RETRYABLE_4XX:
                self._finish(row)
                self.stats.failed += 1
                log.error("sink %s: the receiver refused an event of camera %s with HTTP %d: not retried",
                          self.name, row.camera, status)
                return None
            redirect = f" (a redirect to {location}: not followed, correct the url)" if 300 <= status < 400 else ""
            self.stats.set_state("retrying", f"HTTP {status}{redirect}")
            return _retry_after_s(retry_after, backoff, self.config.max_backoff_s)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # no connection, a timeout, a reset, a bad reply
            self.stats.set_state("retrying", f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
            return backoff
        if not 200 <= status < 300:  # 1xx/3xx that urllib did not follow: not a confirmation
            self.stats.set_state("retrying", f"HTTP {status}")
            return backoff
        self._finish(row)
        self.stats.sent += 1
        self.stats.set_state("connected", f"HTTP {status}")
        return None

    def _finish(self, row: OutboxRow) -> None:
        """Removes a row that is done with; when the outbox cannot remove it now, remembers it."""
        self._done_upto = row.id
        self._done.append(row.id)
        try:
            self._remove_done()
        except OutboxError as exc:
            self._outbox_trouble(exc)

    def _remove_done(self) -> None:
        """Removes the done rows from the outbox (raises OutboxError when it still cannot)."""
        if not self._done:
            return
        self.outbox.confirm(self.key, self._done)
        self._done = []
        if self._outbox_error is not None:
            log.info("sink %s: the outbox %s works again", self.name, self.outbox.path)
            self._outbox_error = None

    def _outbox_trouble(self, exc: OutboxError) -> None:
        """Logs an outbox error once (until it changes or the outbox works again)."""
        if str(exc) != self._outbox_error:
            log.error("sink %s: %s; delivery goes on (what was delivered is not sent again, and is removed once the "
                      "outbox works)", self.name, exc)
            self._outbox_error = str(exc)

    def flushed(self) -> bool:
        try:
            return self.outbox.backlog(self.key) <= len(self._done)
        except OutboxError:
            return True  # nothing more to do before the end

    def shutdown(self) -> None:
        try:
            self._remove_done()  # a last try for the rows delivered while the outbox could not remove them
        except OutboxError:
            log.warning("sink %s: %d delivered events stay in the outbox %s; the next start sends them again",
                        self.name, len(self._done), self.outbox.path)


def _retry_after_s(header: str | None, backoff: float, cap: float) -> float:
    """The server's Retry-After in seconds (the delta form), within [backoff, cap]; else `backoff`."""
    try:
        asked = float(header) if header is not None else 0.0
    except ValueError:
        asked = 0.0  # the HTTP-date form: our own backoff is as good
    return min(max(asked, backoff), cap)
