"""Capture for live cameras: reconnect with backoff, stall and freeze detection, camera state.

Two threads per camera:
- a *reader* (one per connection) opens the source and reads as fast as it delivers, stamping each
  frame and putting it on the camera's drop_oldest queue at once. Reading never waits for the rest
  of the pipeline, so the decoder's buffer cannot fill with stale frames, and the queue keeps the
  newest frames only (older ones are dropped and counted).
- the *supervisor* (this stage) watches the reader: a frame every so often → `streaming`; none for
  `stall_timeout_s` → `stalled`; the picture or the stream's timestamps not changing for
  `freeze_timeout_s` → `frozen`; an error → reconnect after an exponential backoff with jitter.

A reader stuck inside a native call (a TCP connection that is open but silent) is abandoned rather
than waited for: it closes its own capture when the call returns, and the next connection starts
at once with a new source object. So a camera recovers however its old connection hangs, the
supervisor answers stop within POLL_S, and no camera waits for another. A failed read never makes a
placeholder frame: the camera simply has no frames until it is back.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.frames import EndOfStream, Frame
from pipeline.gating import FrameGate
from pipeline.metrics import CameraMetrics, CameraState, StageMetrics
from pipeline.queues import POLL_S, BoundedQueue
from pipeline.sources.base import Source, SourceError, SourceInfo
from pipeline.stage import Stage, StageContext

log = logging.getLogger(__name__)

# Beyond the source's own open timeout, how long the supervisor waits for a reader to report.
OPEN_GRACE_S = 2.0
# On leaving, how long the supervisor waits for its reader to close the capture.
READER_CLOSE_WAIT_S = 1.0
# A source's own read timeout is the stall timeout plus this, so stalls are seen by the supervisor.
READ_TIMEOUT_MARGIN_S = 1.0
# Freeze detection compares a 64x36 nearest-neighbour thumbnail of each frame. A frozen picture
# re-encoded by the camera is not bit-identical: each key frame re-quantises it (measured on our
# test server: samples move by at most 5 levels, against 120+ for a scene with motion). So
# "unchanged" means no sample moved by more than FREEZE_TOLERANCE levels.
_FREEZE_SIG = (64, 36)
FREEZE_TOLERANCE = 8


@dataclass(frozen=True, slots=True)
class LiveSettings:
    """How a live camera is captured and watched: stall and freeze timeouts, the open timeout, the
    reconnect backoff, and pacing (from the camera's config; see CameraConfig and ReconnectConfig)."""

    stall_timeout_s: float = 3.0
    freeze_timeout_s: float | None = 10.0
    open_timeout_s: float = 5.0
    initial_delay_s: float = 0.5
    max_delay_s: float = 3.0
    jitter: float = 0.2
    max_attempts: int | None = None  # consecutive failed connections before `failed`; None: forever
    # Files and synthetic sources are released at a camera's pace: `pace_fps`, else the source's own
    # rate (from open()), else 25. Cameras (RTSP, USB) deliver at their own pace.
    pace: bool = False
    pace_fps: float | None = None

    @property
    def paced(self) -> bool:
        return self.pace or self.pace_fps is not None


class Backoff:
    """Exponential delays initial, 2·initial, … capped at max; each drawn from [d·(1−jitter), d] so
    that cameras that failed together do not all retry at the same instant."""

    def __init__(self, initial_s: float, max_s: float, jitter: float, rng: random.Random | None = None) -> None:
        self.initial_s, self.max_s, self.jitter = initial_s, max_s, jitter
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        d = min(self.max_s, self.initial_s * (2.0 ** self.failures))
        self.failures += 1
        return d * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self.failures = 0


class _Reader:
    """One connection: opens `source` and reads until abandoned, ended or failed (its own thread)."""

    def __init__(self, source: Source, on_frame: Callable[[Frame, float, _Reader], None], make_frame: Callable[..., Frame],
                 settings: LiveSettings, camera_id: str, *, start: bool = True,
                 decode: Callable[[], bool] = lambda: True) -> None:
        self.source = source
        self._decode = decode  # asked before each read: False when nobody needs the next frame's picture
        self._on_frame = on_frame
        self._make_frame = make_frame
        self._settings = settings
        self.opened = threading.Event()
        self.finished = threading.Event()
        self.abandoned = threading.Event()
        self.info: SourceInfo | None = None
        self.error: str | None = None
        self.ended = False  # read() returned None: the stream truly ended (a file)
        self.started_mono = time.monotonic()
        self.opened_mono: float | None = None
        self.frames = 0
        self.last_frame_mono: float | None = None
        self.last_change_mono: float | None = None  # the picture last differed from the frame before
        self.last_advance_mono: float | None = None  # the stream timestamp last moved forward
        self._last_stream_ms: float | None = None
        self._thumb = np.zeros((_FREEZE_SIG[1], _FREEZE_SIG[0], 3), np.uint8)
        self._reference = np.zeros_like(self._thumb)  # the thumbnail when the picture last changed
        self.thread = threading.Thread(target=self._run, name=f"reader[{camera_id}]", daemon=True)
        if start:
            self.thread.start()

    def start(self) -> None:
        self.started_mono = time.monotonic()
        self.thread.start()

    def abandon(self) -> None:
        self.abandoned.set()

    def frozen_since(self) -> float | None:
        """Monotonic time since which the stream is frozen, by picture or by timestamps."""
        marks = [m for m in (self.last_change_mono, self.last_advance_mono) if m is not None]
        return min(marks) if marks else None

    def _run(self) -> None:
        try:
            self.info = self.source.open()
            self.opened_mono = time.monotonic()
            self.opened.set()
            s = self._settings
            period = 1.0 / (s.pace_fps or self.info.fps or 25.0) if s.paced else 0.0
            due = time.monotonic()
            while not self.abandoned.is_set():
                if period:
                    wait = due - time.monotonic()
                    if wait > 0 and self.abandoned.wait(wait):
                        return
                    due = max(due + period, time.monotonic() - period)
                t0 = time.perf_counter()
                got = self.source.read(decode=self._decode() or self.frames == 0)
                if got is None:
                    self.ended = True
                    return
                read_s = time.perf_counter() - t0
                now = time.monotonic()
                self._track_freeze(got.image, got.stream_ms, now)
                if self.abandoned.is_set():
                    return  # the supervisor has moved on: this frame is not ours to hand out
                self.frames += 1
                self.last_frame_mono = now
                self._on_frame(self._make_frame(got, now), read_s, self)
        except SourceError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a decoder error must become a reconnect, not a dead camera
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                self.source.close()
            finally:
                self.finished.set()

    def _track_freeze(self, image: np.ndarray | None, stream_ms: float | None, now: float) -> None:
        # Compared with the picture at its last change, not with the previous frame, so a slow
        # drift (dawn) still counts as change once it adds up. A frame read without its picture
        # (the model skips it) is judged by its timestamp alone.
        if image is not None:
            cv2.resize(image, _FREEZE_SIG, dst=self._thumb, interpolation=cv2.INTER_NEAREST)
            if self.frames == 0 or cv2.norm(self._thumb, self._reference, cv2.NORM_INF) > FREEZE_TOLERANCE:
                np.copyto(self._reference, self._thumb)
                self.last_change_mono = now
        if stream_ms is not None:
            # Any change counts: a looped file or a camera whose clock was reset goes back in time
            # and is not frozen; a stream stuck on one timestamp is.
            if stream_ms != self._last_stream_ms:
                self.last_advance_mono = now
                self._last_stream_ms = stream_ms


class LiveCaptureStage(Stage):
    """Keeps one live camera streaming: connects, supervises, reconnects; sends EndOfStream when
    the graph drains, the camera is removed, a file source ends, or it has failed for good."""

    is_source = True  # started once every output has opened (see Stage)

    def __init__(self, camera_id: str, make_source: Callable[[], Source], out: BoundedQueue,
                 settings: LiveSettings, rng: random.Random | None = None, *, gate: FrameGate | None = None,
                 needs_images: bool = True) -> None:
        super().__init__(f"capture[{camera_id}]")
        # Which frames the model runs on (detection rate, motion); None: every frame. A skipped
        # frame goes out (marked) only when a sink needs its picture (video, evidence); otherwise
        # it is not converted at all and only counted.
        self.gate = gate if gate is not None and gate.active else None
        self.needs_images = needs_images
        self._size: tuple[int, int] | None = None  # of the last decoded frame
        self.camera_id = camera_id
        self.make_source = make_source
        self.out = out
        self.settings = settings
        self.removed = threading.Event()  # set to take the camera out of a running graph
        self.on_end: Callable[[str, bool], None] | None = None  # (camera id, removed) once its sentinel is out
        self._backoff = Backoff(settings.initial_delay_s, settings.max_delay_s, settings.jitter, rng)
        self._seq = itertools.count()
        # The stream's time starts at its first frame, not when the stage was built (models may
        # load for seconds before that, and the camera may take long to answer): None until then.
        self._started_mono: float | None = None
        # Only the current connection's reader may hand out frames: an abandoned one that returns
        # from a slow read afterwards must not emit (two writers, or a frame after EndOfStream).
        self._emit_lock = threading.Lock()
        self._current: _Reader | None = None

    def run(self, ctx: StageContext) -> None:
        cam = ctx.metrics.camera(self.camera_id)
        cam.source_fps = None  # from this source, once it streams
        cam.detect_fps = self.gate.settings.detect_fps if self.gate is not None else None
        cam.set_state(CameraState.STARTING)
        stats = ctx.metrics.stage(self.name)
        failures = 0
        final = CameraState.ENDED
        reason = "stopped"
        try:
            while not self._leaving(ctx):
                reader = _Reader(self.make_source(), lambda frame, read_s, r: self._emit(r, frame, read_s, cam, stats, ctx),
                                 self._frame, self.settings, self.camera_id, start=False, decode=self._wants_picture)
                if self.gate is not None:
                    self.gate.reset()  # a new connection: the next frame is due
                with self._emit_lock:
                    self._current = reader
                reader.start()
                outcome, detail = self._supervise(reader, cam, ctx)
                with self._emit_lock:
                    self._current = None
                reader.abandon()
                if outcome == "leaving":
                    # Give the reader a moment to close its capture cleanly; one stuck in a native
                    # read is left to end with its read timeout (it is a daemon thread).
                    reader.finished.wait(READER_CLOSE_WAIT_S)
                    break
                if outcome == "ended":
                    reason = "end of stream"
                    break
                failures = 0 if reader.frames else failures + 1
                if reader.frames:
                    self._backoff.reset()
                if self.settings.max_attempts is not None and failures >= self.settings.max_attempts:
                    final, reason = CameraState.FAILED, f"{detail}; gave up after {failures} failed attempts"
                    break
                delay = self._backoff.next_delay()
                cam.set_state(CameraState.RECONNECTING, f"{detail}; retry in {delay:.1f} s")
                if self._wait(delay, ctx):
                    break
                cam.reconnects += 1
        finally:
            cam.set_state(final, reason)
        self.out.put(EndOfStream(self.camera_id), ctx.stop)
        if self.on_end is not None:
            self.on_end(self.camera_id, self.removed.is_set())

    def _leaving(self, ctx: StageContext) -> bool:
        return ctx.drain.is_set() or self.removed.is_set()

    def _wait(self, seconds: float, ctx: StageContext) -> bool:
        """Sleeps `seconds` in stop-checked steps; True if the camera is leaving first."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if ctx.drain.wait(min(remaining, POLL_S)) or self.removed.is_set():
                return True
        return self._leaving(ctx)

    def _wants_picture(self) -> bool:
        """Whether the next frame must be decoded: a sink needs every picture, or the model is due."""
        gate = self.gate
        started = self._started_mono
        return gate is None or self.needs_images or started is None or gate.due(time.monotonic() - started)

    def _frame(self, got, now_mono: float) -> Frame:  # got: a SourceFrame
        if got.image is not None:
            self._size = (int(got.image.shape[1]), int(got.image.shape[0]))
        if self._started_mono is None:
            self._started_mono = now_mono
        return Frame(camera_id=self.camera_id, seq=next(self._seq), image=got.image, capture_mono=now_mono,
                     capture_wall=time.time(), source_name=got.name, pts=now_mono - self._started_mono, size=self._size)

    def _emit(self, reader: _Reader, frame: Frame, read_s: float, cam: CameraMetrics, stats: StageMetrics,
              ctx: StageContext) -> None:
        """Called in a reader thread for each frame; only the current reader's frames go out."""
        with self._emit_lock:
            if reader is not self._current:
                return
            cam.record_in(frame.capture_mono)
            stats.add_work(read_s, 1)
            if self.gate is not None:
                decision = self.gate.decide(frame.pts, frame.image)
                cam.record_gate(frame.capture_mono, decision.skipped_by)
                frame.detect = decision.detect
                if not decision.detect and not self.needs_images:
                    return  # nothing needs it: counted as skipped, not queued
            self.out.put(frame, ctx.stop)  # drop_oldest: never waits

    def _supervise(self, reader: _Reader, cam: CameraMetrics, ctx: StageContext) -> tuple[str, str]:
        """Watches one connection until it ends, fails, stalls or freezes, or the camera leaves.
        Returns (outcome, detail) with outcome one of leaving, ended, error, stalled, frozen."""
        s = self.settings
        open_deadline = reader.started_mono + s.open_timeout_s + OPEN_GRACE_S
        while True:
            if self._leaving(ctx):
                return "leaving", "stopped"
            reader.finished.wait(POLL_S)
            now = time.monotonic()
            if reader.finished.is_set():
                if reader.ended:
                    return "ended", "end of stream"
                return "error", reader.error or "the source closed"
            if reader.opened_mono is None:
                if now > open_deadline:
                    return "error", f"no answer within {s.open_timeout_s + OPEN_GRACE_S:.0f} s of opening"
                continue
            last = reader.last_frame_mono or reader.opened_mono
            if now - last > s.stall_timeout_s:
                detail = f"no frame for {now - last:.1f} s"
                cam.set_state(CameraState.STALLED, detail)
                return "stalled", detail
            frozen_since = reader.frozen_since()
            if s.freeze_timeout_s is not None and frozen_since is not None and now - frozen_since > s.freeze_timeout_s:
                detail = f"picture or timestamps unchanged for {now - frozen_since:.1f} s"
                cam.set_state(CameraState.FROZEN, detail)
                return "frozen", detail
            if reader.frames and cam.state is not CameraState.STREAMING:
                info = reader.info
                cam.source_fps = cam.source_fps or s.pace_fps or (info.fps if info else None)
                cam.set_state(CameraState.STREAMING, reader.source.name)
