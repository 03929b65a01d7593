"""The sink interface and the stage that feeds one sink from its queue.

A sink only writes what it is handed (frames, events, ends of camera streams) and closes cleanly;
which cameras reach it, and when, is the graph's job. Each sink class is registered by its config
`type` in `pipeline.sinks.SINKS` and built through `from_config`.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from pipeline.frames import EndOfStream, Event, FrameResult
from pipeline.metrics import Metrics
from pipeline.outbox import SharedOutbox
from pipeline.queues import BoundedQueue
from pipeline.stage import CameraSet, Stage, StageContext, consume

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a sink may ask of the running graph when it is built.

    Args:
        metrics: the graph's counters (e.g. a camera's source fps, for a video file's rate).
        outbox: the graph's outbox, for the sinks that deliver over the network (mqtt, webhook).
    """

    metrics: Metrics
    outbox: SharedOutbox | None = None


class Sink(ABC):
    """One output. Frames arrive through `write` (when `wants_frames`), rule events through
    `write_event` (when `wants_events`), `end_camera` when a camera's stream ends; `close` must
    leave valid files whether the run ended or was stopped.

    Subclasses set `name` (shown in stage names and logs) and implement `from_config`.
    """

    name: str
    wants_frames: bool = True  # FrameResults (detections per frame)
    wants_events: bool = False  # rule events
    needs_images: bool = False  # every frame's picture, also of frames the model skips (drawing sinks)

    @classmethod
    def from_config(cls, config: Any, context: SinkContext) -> Sink:
        """Builds the sink from its validated config section (one `sinks[]` entry).

        Args:
            config: the sink's pydantic model (its `type` selected this class).
            context: what the sink may ask of the graph.

        Returns:
            The sink, not opened yet.
        """
        raise NotImplementedError(f"{cls.__name__} does not implement from_config")

    def write_event(self, event: Event) -> None:
        """An event from the rules (only called when `wants_events`)."""
        raise TypeError(f"{self.name} does not take events")

    @abstractmethod
    def open(self) -> None:
        """Opens what the sink writes to; called on the sink's own thread before anything else."""

    @abstractmethod
    def write(self, result: FrameResult) -> None:
        """One frame's result (only called when `wants_frames`)."""

    def end_camera(self, camera_id: str) -> None:  # noqa: B027 - optional hook: most sinks have nothing to finish
        """The camera's stream has ended (e.g. finish its file)."""

    def finish(self) -> None:  # noqa: B027 - optional hook: most sinks have nothing to do here
        """Every camera the sink serves has ended (the run was not stopped by an error or a second
        signal): outputs that nothing was written to are created now (an empty result is still
        this run's result). Called before `close`; not called when the graph failed, so a run that
        fails at start leaves the previous run's files as they were."""

    @abstractmethod
    def close(self) -> None:
        """Flushes and closes everything; must leave valid files whether the run ended or was stopped."""


class SinkStage(Stage):
    """Feeds one sink from its queue until every camera it serves has ended, then closes it.

    Args:
        index: the sink's position in the config (keeps stage names unique).
        sink: the sink.
        inp: its queue (frames, events and EndOfStream of its cameras).
        cameras: the cameras it still expects an EndOfStream from.
    """

    def __init__(self, index: int, sink: Sink, inp: BoundedQueue, cameras: CameraSet | list[str]) -> None:
        # The config index keeps names unique when two sinks write files of the same name.
        super().__init__(f"sink[{index}:{sink.name}]")
        self.sink = sink
        self.inp = inp
        self.cameras = cameras if isinstance(cameras, CameraSet) else CameraSet(cameras)
        self.opened = threading.Event()  # the runner starts the sources once every sink is open

    def run(self, ctx: StageContext) -> None:
        stats = ctx.metrics.stage(self.name)
        self.sink.open()
        self.opened.set()
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
            # A stopped graph (an error, a second signal) can also end the loop without Stopped
            # (a sealed graph whose cameras had not joined yet): only a run that completed finishes.
            if not ctx.stop.is_set():
                self.sink.finish()
        finally:
            self.sink.close()
