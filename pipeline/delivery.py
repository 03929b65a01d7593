"""A network sink's delivery counters (mqtt, webhook): its connection and its backlog.

Owns the numbers only; the sinks (pipeline/sinks/network.py) keep them up to date and
pipeline/health.py publishes them (/healthz `sinks`, /metrics `vigil_sink_*`).
"""

from __future__ import annotations

import logging

from pipeline.redact import mask_url

log = logging.getLogger(__name__)


class DeliveryMetrics:
    """One network sink's delivery (mqtt, webhook): its connection and its backlog in the outbox.

    Args:
        sink: the sink's name.
    """

    def __init__(self, sink: str) -> None:
        self.sink = sink
        self.state = "connecting"  # connecting | connected | disconnected | retrying
        self.state_reason = ""
        self.backlog = 0  # messages waiting in the outbox (refreshed by the delivery thread)
        self.sent = 0  # confirmed by the server (PUBACK, HTTP 2xx)
        self.failed = 0  # refused for good (HTTP 4xx other than 408/429): not retried
        self.retries = 0  # attempts that failed and will be retried
        self.dropped = 0  # fell out of the outbox: over max_mb
        self.expired = 0  # fell out of the outbox: older than max_age_s

    def set_state(self, state: str, reason: str = "") -> None:
        """Records a connection state change; logs it once per change (a warning when it is lost)."""
        if state == self.state and reason == self.state_reason:
            return
        previous, self.state, self.state_reason = self.state, state, mask_url(reason)
        if state != previous:
            level = logging.INFO if state == "connected" else logging.WARNING
            log.log(level, "sink %s: %s -> %s%s", self.sink, previous, state, f" ({self.state_reason})" if reason else "")
