"""The base of the sinks that deliver events over the network through the outbox (mqtt, webhook).

An event is written to the outbox on the sink's own stage thread (never the analytics thread),
and is on disk before the sink returns. A delivery thread per sink sends the backlog in order and
removes each message once the server confirmed it. What the server has not confirmed when the run
ends stays in the outbox and is sent first by the next start.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import abstractmethod
from typing import Any

from pipeline.delivery import DeliveryMetrics
from pipeline.frames import Event, FrameResult
from pipeline.metrics import Metrics
from pipeline.outbox import Outbox, OutboxError, SharedOutbox
from pipeline.sinks.base import Sink, SinkContext

log = logging.getLogger(__name__)

FLUSH_ON_CLOSE_S = 5.0  # at the end of a run, a sink gets this long to empty its backlog
JOIN_TIMEOUT_S = 5.0


def event_payload(event: Event) -> bytes:
    """The event's published JSON (the same document the zmq and events sinks write)."""
    return json.dumps(event.to_dict()).encode()


class OutboxSink(Sink):
    """An event sink whose events go through the outbox to a server.

    Subclasses set `key` (names the sink's backlog in the outbox: stable across restarts),
    implement `topic` and `deliver` (the delivery thread's loop; it returns once `stopping` is set)
    and may override `shutdown` (after the loop has returned).

    Args:
        key: the backlog's name; also the sink's name.
        outbox: the graph's shared outbox.
        metrics: the graph's counters (this sink's DeliveryMetrics live there).
    """

    wants_frames = False
    wants_events = True

    def __init__(self, key: str, outbox: SharedOutbox, metrics: Metrics) -> None:
        self.key = key
        self.name = key
        self.metrics = metrics
        self.stats: DeliveryMetrics = metrics.delivery(key)
        self._shared = outbox
        self._outbox: Outbox | None = None
        self.stopping = threading.Event()
        self.wake = threading.Event()  # set by each append: the delivery thread looks at once
        self._thread: threading.Thread | None = None
        self._not_kept = 0  # events the outbox refused to store (a full disk): part of stats.dropped

    @classmethod
    def from_config(cls, config: Any, context: SinkContext) -> OutboxSink:
        """The sink of one `sinks[]` entry, delivering through the graph's outbox."""
        if context.outbox is None:
            raise ValueError(f"the {config.type} sink needs the graph's outbox (SinkContext.outbox)")
        return cls(config, context.outbox, context.metrics)  # type: ignore[call-arg]

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError(f"{self.name}: used before open()")
        return self._outbox

    @abstractmethod
    def topic(self, event: Event) -> str:
        """Where the event goes (an MQTT topic; informational for a webhook)."""

    @abstractmethod
    def deliver(self) -> None:
        """The delivery loop (on the sink's delivery thread) until `stopping` is set."""

    def shutdown(self) -> None:
        """After the delivery loop has returned: close connections."""

    def open(self) -> None:
        self._outbox = self._shared.acquire()
        self.refresh_backlog()
        self._thread = threading.Thread(target=self._deliver_main, name=f"deliver[{self.key}]", daemon=True)
        self._thread.start()

    def _deliver_main(self) -> None:
        try:
            self.deliver()
        except Exception:  # a bug here must be seen, and must not take the pipeline down
            log.exception("sink %s: delivery stopped by an error; events stay in the outbox", self.name)
            self.stats.set_state("disconnected", "delivery stopped by an error (see the log)")

    def write(self, result: FrameResult) -> None:
        raise TypeError(f"{self.name} takes events, not frames")

    def write_event(self, event: Event) -> None:
        try:
            self.outbox.append(self.key, event.camera, self.topic(event), event_payload(event))
        except OutboxError as exc:
            # Watching goes on; the event cannot be kept for this sink (a full disk).
            self._not_kept += 1
            self.stats.dropped += 1
            log.error("sink %s: event %s %s of camera %s not kept: %s", self.name, event.kind, event.rule, event.camera, exc)
            return
        self.stats.backlog += 1
        self.wake.set()

    def refresh_backlog(self) -> None:
        """Re-reads the backlog size and the outbox's drop counters into the metrics."""
        box = self.outbox
        self.stats.backlog = box.backlog(self.key)
        self.stats.dropped = box.dropped[self.key] + self._not_kept
        self.stats.expired = box.expired[self.key]

    def flushed(self) -> bool:
        """Whether nothing of this sink waits to be confirmed (override when sends are in flight)."""
        return self.outbox.backlog(self.key) == 0

    def close(self) -> None:
        if self._outbox is None:
            return
        # The sink gets a moment to deliver the last events of the run (a broker that is coming
        # back may still take them); what is left stays in the outbox for the next start.
        deadline = time.monotonic() + FLUSH_ON_CLOSE_S
        try:
            while not self.flushed() and time.monotonic() < deadline:
                self.wake.set()
                time.sleep(0.02)
        except OutboxError as exc:  # a full disk: what is left is sent by the next start
            log.error("sink %s: %s", self.name, exc)
        self.stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
        self.shutdown()
        try:
            self.refresh_backlog()
        except OutboxError as exc:
            log.error("sink %s: %s", self.name, exc)
        if self.stats.backlog:
            log.warning("sink %s: %d events wait in the outbox %s; the next start sends them", self.name,
                        self.stats.backlog, self.outbox.path)
        self._outbox = None
        self._shared.release()
