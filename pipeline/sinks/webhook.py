"""`type: webhook`: POSTs each event's JSON to a URL, through the outbox.

Events go one at a time, in order: an event that cannot be delivered now (no connection, a
timeout, 5xx, 408, 429) is retried with exponential backoff (0.5 s doubling up to `max_backoff_s`,
or the server's Retry-After) and holds back the ones after it, so a receiver sees each camera's
events in order. A 4xx other than 408/429 is the receiver refusing this event for good (a bad
token, a schema it rejects): logged, counted as failed, and not retried.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from pipeline.frames import Event
from pipeline.metrics import Metrics
from pipeline.outbox import OutboxRow, SharedOutbox
from pipeline.redact import mask_url
from pipeline.sinks.base import SinkContext
from pipeline.sinks.network import OutboxSink

if TYPE_CHECKING:
    from pipeline.config import WebhookSinkConfig

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.5
RETRYABLE_4XX = (408, 429)  # request timeout, too many requests: the receiver asks us to come back
IDLE_WAIT_S = 0.5


class WebhookSink(OutboxSink):
    """POSTs events as JSON (`Content-Type: application/json` plus the configured headers).

    Args:
        config: the sink's config entry.
        outbox: the graph's outbox.
        metrics: the graph's counters.
    """

    def __init__(self, config: WebhookSinkConfig, outbox: SharedOutbox, metrics: Metrics) -> None:
        super().__init__(f"webhook:{mask_url(config.url)}", outbox, metrics)
        self.key = f"webhook:{config.url.split('?', 1)[0]}"  # no query string: tokens there stay out of the file
        self.config = config
        self._headers = {"Content-Type": "application/json", "User-Agent": "vigil", **config.headers}

    @classmethod
    def from_config(cls, config: WebhookSinkConfig, context: SinkContext) -> WebhookSink:
        if context.outbox is None:
            raise ValueError("the webhook sink needs the graph's outbox (SinkContext.outbox)")
        return cls(config, context.outbox, context.metrics)

    def topic(self, event: Event) -> str:
        return f"{event.camera}/{event.rule}"

    def deliver(self) -> None:
        backoff = FIRST_BACKOFF_S
        while not self.stopping.is_set():
            self.refresh_backlog()
            rows = self.outbox.pending(self.key, 0, 20)
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
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = exc.headers.get("Retry-After") if exc.headers is not None else None
            exc.close()
            if 400 <= status < 500 and status not in RETRYABLE_4XX:
                self.outbox.confirm(self.key, [row.id])
                self.stats.failed += 1
                log.error("sink %s: the receiver refused an event of camera %s with HTTP %d: not retried",
                          self.name, row.camera, status)
                return None
            self.stats.set_state("retrying", f"HTTP {status}")
            return _retry_after_s(retry_after, backoff, self.config.max_backoff_s)
        except (OSError, ValueError) as exc:  # no connection, a timeout, a reset, a bad reply
            self.stats.set_state("retrying", f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
            return backoff
        if not 200 <= status < 300:  # 1xx/3xx that urllib did not follow: not a confirmation
            self.stats.set_state("retrying", f"HTTP {status}")
            return backoff
        self.outbox.confirm(self.key, [row.id])
        self.stats.sent += 1
        self.stats.set_state("connected", f"HTTP {status}")
        return None


def _retry_after_s(header: str | None, backoff: float, cap: float) -> float:
    """The server's Retry-After in seconds (the delta form), within [backoff, cap]; else `backoff`."""
    try:
        asked = float(header) if header is not None else 0.0
    except ValueError:
        asked = 0.0  # the HTTP-date form: our own backoff is as good
    return min(max(asked, backoff), cap)
