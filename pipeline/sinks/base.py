"""The sink interface and the stage that feeds one sink from its queue."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod

from pipeline.frames import EndOfStream, FrameResult
from pipeline.rules.engine import Event
from pipeline.queues import BoundedQueue
from pipeline.stage import CameraSet, Stage, StageContext, consume

log = logging.getLogger(__name__)


class Sink(ABC):
    name: str
    wants_frames: bool = True  # FrameResults (detections per frame)
    wants_events: bool = False  # rule events

    def write_event(self, event: Event) -> None:
        """An event from the rules (only called when `wants_events`)."""
        raise TypeError(f"{self.name} does not take events")

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def write(self, result: FrameResult) -> None: ...

    def end_camera(self, camera_id: str) -> None:
        """The camera's stream has ended (e.g. finish its file)."""

    @abstractmethod
    def close(self) -> None:
        """Flushes and closes everything; must leave valid files whether the run ended or was stopped."""


class SinkStage(Stage):
    def __init__(self, index: int, sink: Sink, inp: BoundedQueue, cameras: CameraSet | list[str]) -> None:
        # The config index keeps names unique when two sinks write files of the same name.
        super().__init__(f"sink[{index}:{sink.name}]")
        self.sink = sink
        self.inp = inp
        self.cameras = cameras if isinstance(cameras, CameraSet) else CameraSet(cameras)

    def run(self, ctx: StageContext) -> None:
        stats = ctx.metrics.stage(self.name)
        self.sink.open()
        try:
            for item in consume(self.inp, self.cameras, ctx):
                if isinstance(item, EndOfStream):
                    self.sink.end_camera(item.camera_id)
                    continue
                t0 = time.perf_counter()
                if isinstance(item, Event):
                    self.sink.write_event(item)
                    # An event's age: capture of the frame that caused it → handed to this sink.
                    stats.ages.add((time.time() - item.ts) * 1000.0)
                else:
                    stats.ages.add(item.frame.age_ms())
                    self.sink.write(item)
                stats.add_work(time.perf_counter() - t0, 1)
        finally:
            self.sink.close()
