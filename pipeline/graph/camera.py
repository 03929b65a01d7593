"""One camera's lifecycle in a running graph: what it owns, how it joins, drains and leaves.

A camera owns its capture stage (plain or live), its input queue, its analytics stage (when it has
rules) and its routes to sinks and evidence. It joins the shared parts it feeds (its model lane,
sink lanes, the evidence stage) all or nothing. It does not build those shared parts
(graph/lanes.py) nor decide when cameras come and go (graph/builder.py, graph/reload.py).

States: created → running (stages started) → draining (asked to stop: its queued frames finish)
→ stopped (its end of stream has passed every stage and its own threads have returned).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.analytics import AnalyticsStage, CameraAnalytics
from pipeline.config import CameraConfig
from pipeline.evidence import EvidenceStage
from pipeline.gating import DEFAULT_MAX_IDLE_S, CameraActivity, FrameGate, GateSettings, MotionSettings
from pipeline.graph.lanes import CameraRefused, ModelLane, SinkLane
from pipeline.metrics import Metrics
from pipeline.queues import BoundedQueue, QueuePolicy
from pipeline.sources import CaptureStage, create_source
from pipeline.sources.live import READ_TIMEOUT_MARGIN_S, LiveCaptureStage, LiveSettings
from pipeline.stage import CameraSet, GraphRunner, Stage
from pipeline.waiting import POLL_S

log = logging.getLogger(__name__)


class CameraLifecycle(str, enum.Enum):
    """Where a camera is in its life in the graph (its stream health is metrics.CameraState)."""

    CREATED = "created"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class CameraWiring:
    """The shared parts of the graph a camera connects to.

    Args:
        lanes: model id -> its lane.
        sinks: every sink lane (a camera joins those that want it).
        evidence: the evidence stage and its queue, when the config has `evidence:` (a rule
            camera hands it its event sinks' queues when it joins: evidence publishes its events on).
        metrics: the graph's counters.
        queue_size: size of the queue into a camera's analytics stage.
    """

    lanes: dict[str, ModelLane]
    sinks: list[SinkLane]
    evidence: EvidenceStage | None
    evidence_queue: BoundedQueue | None
    metrics: Metrics
    queue_size: int


def camera_gate_settings(cam: CameraConfig) -> GateSettings:
    """The gate settings (detection rate, motion) from a camera's config."""
    motion = cam.motion if cam.motion is not None and cam.motion.enabled else None
    return GateSettings(
        detect_fps=cam.detect_fps,
        motion=MotionSettings(threshold=motion.threshold, min_area=motion.min_area, frame_height=motion.frame_height,
                              alpha=motion.alpha, mask=tuple(tuple(tuple(p) for p in poly) for poly in motion.mask))
        if motion is not None else None,
        max_idle_s=motion.max_idle_s if motion is not None else DEFAULT_MAX_IDLE_S,
    )


def live_settings(cam: CameraConfig) -> LiveSettings:
    """The live capture's settings from a camera's config (timeouts, backoff, pacing)."""
    src = cam.source
    return LiveSettings(
        stall_timeout_s=cam.stall_timeout_s,
        freeze_timeout_s=cam.freeze_timeout_s,
        open_timeout_s=src.open_timeout_s,
        initial_delay_s=cam.reconnect.initial_delay_s,
        max_delay_s=cam.reconnect.max_delay_s,
        jitter=cam.reconnect.jitter,
        max_attempts=cam.reconnect.max_attempts,
        pace=src.replayed,  # a replayed file or synthetic source is paced at the camera's rate
        pace_fps=src.pace_fps,
    )


class Camera:
    """One camera of the graph: builds its own stages and queue, joins the shared ones.

    Args:
        config: the camera's config.
        wiring: the shared parts it joins.
        on_end: called with (camera id, removed) once its capture has sent its end of stream.

    Example:
        >>> cam = Camera(config, wiring, on_end)     # created: nothing joined yet
        >>> for stage in cam.attach(): runner.add_stage(stage)   # running
        >>> cam.drain(); cam.wait_stopped(runner, 30.0, stop)    # stopped
    """

    def __init__(self, config: CameraConfig, wiring: CameraWiring, on_end: Callable[[str, bool], None]) -> None:
        self.config = config
        self.wiring = wiring
        self.state = CameraLifecycle.CREATED
        self.lane = wiring.lanes[config.model]
        metrics = wiring.metrics
        self.queue: BoundedQueue = BoundedQueue(
            f"{config.id}>preprocess", config.queue_size, QueuePolicy(config.policy), condition=self.lane.condition,
            on_drop=lambda frame: metrics.count_drop(frame.camera_id, "queue_full"))
        self.frame_routes = [s.queue for s in wiring.sinks if s.sink.wants_frames and s.wants(config)]
        self.event_routes = [s.queue for s in wiring.sinks if not s.sink.wants_frames and s.wants(config)]
        # Frames the model skips are decoded (and, live, queued) only for sinks that draw them.
        needs_images = any(s.sink.needs_images and s.wants(config) for s in wiring.sinks) or bool(
            config.rules and wiring.evidence is not None)
        self.activity = CameraActivity()
        self.gate = FrameGate(camera_gate_settings(config), self.activity)
        self.capture = self._make_capture(needs_images)
        self.capture.on_end = on_end
        self.analytics: AnalyticsStage | None = None
        # The analytics stage tracks and runs the rules; for a live camera without rules that feeds
        # an event sink it only watches the camera's health (camera_down / camera_restored).
        if config.rules or (config.live and self.event_routes):
            evidence_q = wiring.evidence_queue if config.rules else None  # evidence is for rule incidents
            to_events = [evidence_q] if evidence_q is not None else self.event_routes
            to_frames = self.frame_routes + ([evidence_q] if evidence_q is not None else [])
            q = BoundedQueue(f"postprocess>analytics[{config.id}]", wiring.queue_size, QueuePolicy.BLOCK)
            self.analytics = AnalyticsStage(CameraAnalytics(config, self.lane.model.backend.info.class_names,
                                                            self.activity), q, to_frames, to_events,
                                            events_to_evidence=evidence_q is not None)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def stages(self) -> list[Stage]:
        """The camera's own stages: capture, then analytics when it has rules."""
        return [self.capture] + ([self.analytics] if self.analytics is not None else [])

    def _make_capture(self, needs_images: bool) -> CaptureStage | LiveCaptureStage:
        cam = self.config
        if not cam.live:
            return CaptureStage(cam.id, create_source(cam.source, cam.id), self.queue, gate=self.gate,
                                needs_images=needs_images)
        settings = live_settings(cam)
        # The decoder's own read timeout is set past the stall timeout, so a silent stream is
        # caught (and reported as stalled) by the supervisor; the abandoned reader then ends
        # when that read times out.
        read_timeout = settings.stall_timeout_s + READ_TIMEOUT_MARGIN_S
        return LiveCaptureStage(cam.id, lambda: create_source(cam.source, cam.id, read_timeout_s=read_timeout),
                                self.queue, settings, gate=self.gate, needs_images=needs_images)

    def attach(self) -> list[Stage]:
        """Joins the sinks, the evidence stage and the model lane, all or nothing: raises
        CameraRefused, with nothing joined, when one of them has finished (the graph is finishing).
        Returns the camera's stages, to be started by the caller. The graph calls it under
        `StageContext.seal_lock`, so that a drain cannot seal the graph halfway through."""
        if self.state is not CameraLifecycle.CREATED:
            raise RuntimeError(f"camera {self.id!r} is {self.state.value}: a camera object is attached once")
        w = self.wiring
        joined: list[CameraSet] = []
        try:
            for lane in w.sinks:
                if lane.wants(self.config):
                    self._join(lane.cameras, lane.cameras.add(self.id), joined)
            if self.analytics is not None and self.config.rules and w.evidence is not None:
                self._join(w.evidence.cameras, w.evidence.add_camera(self.id, self.event_routes), joined)
            post_routes = [self.analytics.inp] if self.analytics is not None else self.frame_routes
            self.lane.join(self.id, self.queue, post_routes, self.config.max_frame_age_s)
        except CameraRefused:
            for camera_set in joined:  # a half-joined camera would hold up the drain, or lose frames
                camera_set.discard(self.id)
            raise
        w.metrics.camera(self.id).reset_for_restart()
        if not self.frame_routes and not self.event_routes:
            log.warning("camera %s feeds no sink: its detections are counted but not written", self.id)
        self.state = CameraLifecycle.RUNNING
        return self.stages

    def _join(self, camera_set: CameraSet, added: bool, joined: list[CameraSet]) -> None:
        if not added:
            raise CameraRefused(f"cannot add camera {self.id!r}: the graph is finishing")
        joined.append(camera_set)

    def drain(self) -> None:
        """Asks the capture to stop: its end of stream follows its queued frames through the graph."""
        if self.state is CameraLifecycle.RUNNING:
            self.state = CameraLifecycle.DRAINING
        self.capture.removed.set()

    def finished(self, runner: GraphRunner) -> bool:
        """Whether its end of stream has passed every stage and its own threads have returned."""
        w = self.wiring
        sets = [s.cameras for s in w.sinks] + ([w.evidence.cameras] if w.evidence is not None else [])
        return (not self.lane.serves(self.id) and not any(self.id in s for s in sets)
                and not any(runner.is_running(stage.name) for stage in self.stages))

    def wait_stopped(self, runner: GraphRunner, timeout_s: float, stop: threading.Event) -> None:
        """Waits (after `drain`) until the camera has finished, then detaches it.

        Raises TimeoutError when it has not finished within `timeout_s` (it stays draining; a later
        call may wait again)."""
        deadline = time.monotonic() + timeout_s
        while not self.finished(runner):
            if time.monotonic() > deadline:
                raise TimeoutError(f"camera {self.id!r} did not finish within {timeout_s:.0f} s of its removal")
            if stop.wait(POLL_S):
                break  # the graph is stopping: its stages return on their own
        self.lane.leave(self.id)
        self.state = CameraLifecycle.STOPPED
