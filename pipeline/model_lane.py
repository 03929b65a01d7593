"""A model lane's state for /healthz and /metrics: ready, or unavailable while its backend (a
model server) cannot run batches. Kept beside Metrics (which registers one per model) like
delivery.py's sink counters."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class ModelLaneMetrics:
    """A model lane's state: `ready`, or `unavailable` while its backend cannot run batches (a model
    server down or too slow; their frames are dropped and counted `model_unavailable` per camera).
    Written by the lane's inference thread only; each change is logged once.

    Args:
        model_id: the model's id.
    """

    READY = "ready"
    UNAVAILABLE = "unavailable"

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.state = self.READY
        self.state_reason = ""
        self.state_since_mono = time.monotonic()
        self.dropped = 0  # frames dropped while unavailable, all cameras
        self.outages = 0  # ready -> unavailable changes

    def set_ready(self) -> None:
        """Marks the lane ready (logs when it was unavailable)."""
        if self.state == self.READY:
            return
        now = time.monotonic()
        log.warning("model %s: ready again after %.1f s unavailable (%d frames dropped so far)", self.model_id,
                    now - self.state_since_mono, self.dropped)
        self.state, self.state_reason, self.state_since_mono = self.READY, "", now

    def set_unavailable(self, reason: str, dropped: int) -> None:
        """Marks the lane unavailable for `reason` (logged on the change only) and counts `dropped` frames."""
        self.dropped += dropped
        if self.state != self.UNAVAILABLE:
            log.error("model %s: unavailable: %s; its frames are dropped (model_unavailable) until it answers again",
                      self.model_id, reason)
            self.state, self.state_since_mono = self.UNAVAILABLE, time.monotonic()
            self.outages += 1
        self.state_reason = reason
