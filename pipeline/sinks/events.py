"""Event sinks: ZeroMQ PUB (topic `camera/rule`) and events JSON Lines.

The PUB socket never blocks the pipeline: sends are non-blocking, and when a subscriber's queue
(the high-water mark) is full ZeroMQ drops further events for that subscriber. A PUB socket does
that silently, so those drops cannot be counted here; `published` counts what was handed over."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from pipeline.frames import Event, FrameResult
from pipeline.sinks.base import Sink, SinkContext
from pipeline.sinks.jsonl import JsonLinesFile

if TYPE_CHECKING:
    from pipeline.config import EventsSinkConfig, ZmqSinkConfig

log = logging.getLogger(__name__)


class ZmqEventSink(Sink):
    """Publishes each event on a ZeroMQ PUB socket, topic `CAMERA/RULE` (`type: zmq`).

    Args:
        endpoint: where the socket binds, e.g. tcp://127.0.0.1:5560.
        hwm: events queued per subscriber before ZeroMQ drops for it.
    """

    wants_frames = False
    wants_events = True

    def __init__(self, endpoint: str, *, hwm: int = 1000) -> None:
        self.endpoint = endpoint
        self.hwm = hwm
        self.name = f"zmq:{endpoint}"
        self._ctx: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self.published = 0

    @classmethod
    def from_config(cls, config: ZmqSinkConfig, context: SinkContext) -> ZmqEventSink:
        return cls(config.endpoint, hwm=config.hwm)

    def open(self) -> None:
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.LINGER, 0)  # close never waits for slow subscribers
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close()
            self._ctx.term()
            self._ctx = None
            raise OSError(f"cannot bind ZeroMQ PUB socket on {self.endpoint}: {exc} (port in use? wrong address?)") from exc
        self._socket = sock
        log.info("publishing events on %s", self.endpoint)

    def write(self, result: FrameResult) -> None:
        raise TypeError(f"{self.name} takes events, not frames")

    def write_event(self, event: Event) -> None:
        if self._socket is None:
            raise RuntimeError(f"{self.name}: write_event() before open()")
        topic = f"{event.camera}/{event.rule}".encode()
        # NOBLOCK: a PUB socket drops at the high-water mark rather than wait; never stall here.
        self._socket.send_multipart([topic, json.dumps(event.to_dict()).encode()], flags=zmq.NOBLOCK)
        self.published += 1

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None


class EventsJsonlSink(Sink):
    """Writes each event as one JSON line (`type: events`).

    Args:
        path: the output file.
    """

    wants_frames = False
    wants_events = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = f"events:{self.path.name}"
        self._out = JsonLinesFile(self.path)

    @classmethod
    def from_config(cls, config: EventsSinkConfig, context: SinkContext) -> EventsJsonlSink:
        return cls(config.path)

    def open(self) -> None:
        self._out.open()

    def write(self, result: FrameResult) -> None:
        raise TypeError(f"{self.name} takes events, not frames")

    def write_event(self, event: Event) -> None:
        self._out.write(event.to_dict())

    def finish(self) -> None:
        self._out.finish()

    def close(self) -> None:
        self._out.close()
