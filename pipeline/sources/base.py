"""The source interface and the capture stage that drives any source.

A source only opens, reads and closes. Timing (pacing, stamping), queueing and end-of-stream are the
capture stage's job, so a new kind of source (RTSP, USB) is one small class.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.frames import EndOfStream, Frame
from pipeline.gating import DETECT, FrameGate
from pipeline.metrics import CameraState
from pipeline.queues import BoundedQueue
from pipeline.stage import Stage, StageContext

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A source cannot be opened or read. The message names the source and what to do."""


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What `Source.open` learned about the stream: its native rate and length, where known."""

    fps: float | None  # native rate, None when unknown
    total_frames: int | None  # None for endless or unknown-length sources


@dataclass(frozen=True, slots=True)
class SourceFrame:
    """One frame as a source read it (BGR image), before the capture stage stamps it into a Frame."""

    image: np.ndarray | None  # None: read with decode=False by a source that can skip the conversion
    name: str  # file name for image sources, the source's name otherwise
    # The stream's own timestamp (ms) where the source has one (files, RTSP): freeze detection
    # watches it advance. None where there is none.
    stream_ms: float | None = None


class Source(ABC):
    """Opens, reads, closes. Whether a source is live (drop_oldest) is the camera config's call.

    `read` returning None means the stream has truly ended (end of a file); a source that can fail
    and come back (RTSP, USB) raises SourceError instead, and the live capture reconnects. A source
    object serves one connection: the live capture makes a new one for every attempt.

    Each source class is registered by its config `type` in `pipeline.sources.SOURCES` and built
    through `from_config`."""

    @classmethod
    def from_config(cls, config: Any, *, camera_id: str, read_timeout_s: float) -> Source:
        """Builds the source from a camera's validated `source:` section.

        Args:
            config: the source's pydantic model (its `type` selected this class).
            camera_id: the camera's id (a name for sources that have none of their own).
            read_timeout_s: how long one read may block (network and device sources).

        Returns:
            A source, not opened yet.
        """
        raise NotImplementedError(f"{cls.__name__} does not implement from_config")

    @property
    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    def open(self) -> SourceInfo: ...

    @abstractmethod
    def read(self, decode: bool = True) -> SourceFrame | None:
        """The next frame, or None at the end of the stream. Raises SourceError on failure.

        Args:
            decode: False when nobody needs this frame's picture (the model skips it and no sink
                draws it): a source that can, advances without converting it (`image` is None).
        """

    @abstractmethod
    def close(self) -> None: ...

    def drops(self) -> dict[str, int]:
        """Frames the source skipped so far, by reason (e.g. unreadable images); the capture stage
        adds them to the camera's drop counters when the stream ends."""
        return {}


def read_or_grab(cap: Any, decode: bool) -> tuple[bool, np.ndarray | None]:
    """The next frame of an OpenCV capture: decoded to BGR (`read`), or only advanced past (`grab`,
    which still decodes the stream but skips the BGR conversion and copy) when not `decode`."""
    if decode:
        return cap.read()
    return cap.grab(), None


class CaptureStage(Stage):
    """Reads one file-like source as fast as the camera's queue takes frames (`block`: nothing is
    lost), stamps each frame and puts it on the queue. Live sources (cameras, files replayed at
    their rate) use sources.live.LiveCaptureStage instead."""

    is_source = True  # started once every output has opened (see Stage)

    def __init__(self, camera_id: str, source: Source, out: BoundedQueue, *, gate: FrameGate | None = None,
                 needs_images: bool = True) -> None:
        super().__init__(f"capture[{camera_id}]")
        self.camera_id = camera_id
        self.source = source
        self.out = out
        # Which frames the model runs on (detection rate, motion); None: every frame. Skipped
        # frames still go out, marked (a file loses nothing), decoded only when `needs_images`.
        self.gate = gate if gate is not None and gate.active else None
        self.needs_images = needs_images
        self.removed = threading.Event()  # set to take the camera out of a running graph
        self.on_end: Callable[[str, bool], None] | None = None  # (camera id, removed) once its sentinel is out

    def run(self, ctx: StageContext) -> None:
        cam = ctx.metrics.camera(self.camera_id)
        # A source that cannot be opened or read fails this camera alone: it is marked failed (the
        # run names it and exits 1 at the end) and ends like a stream, so the other cameras finish.
        try:
            seq = self._capture(ctx)
        except SourceError as exc:
            cam.set_state(CameraState.FAILED, str(exc))  # logged (a warning) with the reason
        else:
            how = "stopped" if ctx.drain.is_set() or self.removed.is_set() else "end of stream"
            cam.set_state(CameraState.ENDED, f"{how} after {seq} frames")
        self.out.put(EndOfStream(self.camera_id), ctx.stop)
        if self.on_end is not None:
            self.on_end(self.camera_id, self.removed.is_set())

    def _capture(self, ctx: StageContext) -> int:
        """Opens, reads and closes the source; returns the frames put out. Raises SourceError."""
        cam = ctx.metrics.camera(self.camera_id)
        stage = ctx.metrics.stage(self.name)
        info = self.source.open()
        cam.total_frames = info.total_frames
        cam.source_fps = info.fps
        started = time.monotonic()
        file_rate = info.fps  # pts from the frame index: the same events however fast it is read
        cam.detect_fps = self.gate.settings.detect_fps if self.gate is not None else None
        gate = self.gate
        seq = 0
        size: tuple[int, int] | None = None  # of the last decoded frame, for frames read without decoding
        try:
            while not ctx.drain.is_set() and not self.removed.is_set():
                t0 = time.perf_counter()
                pts = seq / file_rate if file_rate else time.monotonic() - started
                due = gate is None or gate.due(pts) or size is None
                got = self.source.read(decode=due or self.needs_images)
                if got is None:
                    break
                now_mono = time.monotonic()
                if got.image is not None:
                    size = (int(got.image.shape[1]), int(got.image.shape[0]))
                decision = gate.decide(pts, got.image) if gate is not None else DETECT
                if gate is not None:
                    cam.record_gate(now_mono, decision.skipped_by)
                frame = Frame(
                    camera_id=self.camera_id,
                    seq=seq,
                    image=got.image,
                    capture_mono=now_mono,
                    capture_wall=time.time(),
                    source_name=got.name,
                    pts=pts,
                    detect=decision.detect,
                    size=size,
                )
                cam.record_in(now_mono)
                if seq == 0:
                    cam.set_state(CameraState.STREAMING)
                stage.add_work(time.perf_counter() - t0, 1)
                self.out.put(frame, ctx.stop)
                seq += 1
        finally:
            for reason, count in self.source.drops().items():  # counted, never silent
                ctx.metrics.count_drop(self.camera_id, reason, count)
            self.source.close()
        return seq
