"""Analytics stage: tracking and rules for one camera, between postprocess and the sinks.

Frames go on to the frame sinks with their track ids and open alerts; events go to the event
route (evidence, then ZeroMQ / events JSONL). Zones and lines become pixels on the camera's first
frame, when its size is known; a shape outside the frame stops the graph with a message naming
the camera and the zone."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from pipeline.camera_health import CameraWatch
from pipeline.classes import resolve_classes
from pipeline.config import CameraConfig, RuleConfig
from pipeline.frames import EndOfStream, Event, FrameResult, Overlay
from pipeline.gating import CameraActivity
from pipeline.queues import BoundedQueue
from pipeline.rules.debounce import Debouncer
from pipeline.rules.engine import Count, Dwell, FrameTracks, LineCrossing, Proximity, Rule, RuleEngine, ZoneIntrusion, ZoneRule
from pipeline.rules.geometry import Line, Polygon, outside_frame, to_pixels
from pipeline.stage import Stage, StageContext, consume
from pipeline.tracking import ByteTracker, TrackerConfig

log = logging.getLogger(__name__)


class GeometryError(ValueError):
    """A zone or line does not fit the camera's frame."""


class _RuleInputs:
    """What a rule needs besides its own config: the camera's zones and lines in pixels, the
    model's class names, and the tracker's lost timeout."""

    __slots__ = ("zones", "lines", "class_names", "lost_timeout_s")

    def __init__(self, zones: dict[str, Polygon], lines: dict[str, Line], class_names: dict[int, str],
                 lost_timeout_s: float) -> None:
        self.zones, self.lines, self.class_names, self.lost_timeout_s = zones, lines, class_names, lost_timeout_s


def _debouncer(r: RuleConfig, min_seconds: float) -> Debouncer:
    return Debouncer(min_seconds=min_seconds, clear_seconds=r.clear_seconds, cooldown_seconds=r.cooldown_seconds,
                     update_seconds=r.update_seconds)


def _classes(r: RuleConfig, k: _RuleInputs) -> frozenset[int] | None:
    return resolve_classes(k.class_names, r.classes)


# Rule config `type` -> the rule it builds. The config's discriminated union guarantees the fields.
_RULE_BUILDERS: dict[str, Callable[..., Rule]] = {
    "zone_intrusion": lambda r, k: ZoneIntrusion(r.id, k.zones[r.zone], _classes(r, k), r.anchor, _debouncer(r, r.min_seconds)),
    "dwell": lambda r, k: Dwell(r.id, k.zones[r.zone], _classes(r, k), r.anchor, _debouncer(r, r.max_seconds)),
    "count": lambda r, k: Count(r.id, k.zones[r.zone], _classes(r, k), r.anchor, _debouncer(r, r.min_seconds), r.max_count),
    "proximity": lambda r, k: Proximity(r.id, _classes(r, k), resolve_classes(k.class_names, r.classes_b), r.anchor,
                                        _debouncer(r, r.min_seconds), r.max_distance, r.units == "box_height"),
    "line_crossing": lambda r, k: LineCrossing(r.id, k.lines[r.line], _classes(r, k), r.anchor, r.direction,
                                               r.cooldown_seconds, forget_after_s=max(5.0, 2 * k.lost_timeout_s)),
}


class CameraAnalytics:
    """Tracker + rules of one camera: `process` tracks a frame's detections and runs the rules.

    Args:
        camera: the camera's config (zones, lines, rules, tracker settings).
        class_names: the model's class names (rules name classes).
    """

    def __init__(self, camera: CameraConfig, class_names: dict[int, str], activity: CameraActivity | None = None) -> None:
        self.camera = camera
        self.class_names = class_names
        self.activity = activity or CameraActivity()  # what the camera's gate needs to know
        t = camera.tracker
        self.tracker = ByteTracker(TrackerConfig(high_score=t.high_score, low_score=t.low_score,
                                                 new_track_score=t.new_track_score, lost_timeout_s=t.lost_timeout_s))
        self.engine: RuleEngine | None = None
        self.overlay: Overlay | None = None
        self._last: FrameTracks | None = None
        self.zone_counts: dict[str, int] = {}  # of the last detected frame (see _count_in_zones)

    def _build(self, width: int, height: int) -> None:
        cam = self.camera
        zones: dict[str, Polygon] = {}
        for z in cam.zones:
            pts = to_pixels(z.points, z.units, width, height)
            if outside_frame(pts, width, height):
                raise GeometryError(f"camera {cam.id!r}: zone {z.id!r} lies outside the {width}x{height} frame "
                                    f"(points {pts.round(1).tolist()}; units: {z.units})")
            zones[z.id] = Polygon(z.id, pts)
        lines: dict[str, Line] = {}
        for ln in cam.lines:
            pts = to_pixels(list(ln.points), ln.units, width, height)
            if outside_frame(pts, width, height):
                raise GeometryError(f"camera {cam.id!r}: line {ln.id!r} lies outside the {width}x{height} frame "
                                    f"(points {pts.round(1).tolist()}; units: {ln.units})")
            lines[ln.id] = Line(ln.id, pts[0], pts[1])
        inputs = _RuleInputs(zones, lines, self.class_names, cam.tracker.lost_timeout_s)
        rules = [_RULE_BUILDERS[r.type](r, inputs) for r in cam.rules]
        self.engine = RuleEngine(cam.id, rules)
        self.overlay = Overlay({k: z.points for k, z in zones.items()}, {k: (ln.a, ln.b) for k, ln in lines.items()})

    def process(self, result: FrameResult) -> tuple[FrameResult, list[Event]]:
        """Tracks a frame's detections and runs the rules on them. A frame the model skipped gets
        the tracker's predicted boxes and the incidents open so far; rules wait for detections."""
        if not self.camera.rules:  # watched for its health only: no tracking, no rules
            return result, []
        frame, det = result.frame, result.detections
        if self.engine is None:
            self._build(frame.width, frame.height)
        engine = self.engine
        if engine is None:
            raise RuntimeError(f"camera {self.camera.id!r}: rules were not built")
        if not result.detected:
            predicted = self.tracker.predict(frame.pts)
            return FrameResult(frame, predicted, result.class_names, self._alerts(engine), self.overlay, detected=False), []
        ids = self.tracker.update(det, frame.pts)
        det = det.with_track_ids(ids)
        ft = FrameTracks.of(frame.camera_id, frame.seq, frame.pts, frame.capture_wall, det[ids >= 0], result.class_names)
        events = engine.process(ft)
        self._last = ft
        alerts = self._alerts(engine)
        self.activity.incident_open = bool(alerts)
        self.zone_counts = self._count_in_zones(engine, ft)
        self.activity.track_in_rule_zone = any(self.zone_counts.values())
        return FrameResult(frame, det, result.class_names, alerts, self.overlay), events

    @staticmethod
    def _count_in_zones(engine: RuleEngine, ft: FrameTracks) -> dict[str, int]:
        """Tracked objects in each zone that has a rule: those of any of its rules' classes."""
        inside: dict[str, np.ndarray] = {}
        for rule in engine.rules:
            if isinstance(rule, ZoneRule):
                mask = rule.in_zone(ft)
                name = rule.zone.name
                inside[name] = inside[name] | mask if name in inside else mask
        return {name: int(mask.sum()) for name, mask in inside.items()}

    @staticmethod
    def _alerts(engine: RuleEngine) -> tuple[str, ...]:
        return tuple(rule.name for rule in engine.rules if rule.debouncer.active)

    def finish(self) -> list[Event]:
        """Closes open incidents at the end of the stream (their `end` carries the last frame's time)."""
        if self.engine is None or self._last is None:
            return []
        return self.engine.finish(self._last)


class AnalyticsStage(Stage):
    """Runs one camera's CameraAnalytics on its results: frames go on to `frame_routes` with track
    ids and alerts, events to `event_routes`; at its end of stream, open incidents are closed.

    Args:
        analytics: the camera's tracker and rules.
        inp: results of the camera from postprocess.
        frame_routes: queues of the sinks that want frames (and evidence).
        event_routes: queues of the event sinks (or evidence, which publishes them on).
        events_to_evidence: `event_routes` is the evidence stage's queue.
    """

    def __init__(self, analytics: CameraAnalytics, inp: BoundedQueue, frame_routes: list[BoundedQueue],
                 event_routes: list[BoundedQueue], *, events_to_evidence: bool = False) -> None:
        super().__init__(f"analytics[{analytics.camera.id}]")
        self.analytics = analytics
        self.inp = inp
        self.frame_routes = frame_routes
        self.event_routes = event_routes  # evidence (which also wants frames) or the event sinks
        self.events_to_evidence = events_to_evidence  # the evidence stage publishes the events on

    def run(self, ctx: StageContext) -> None:
        stats = ctx.metrics.stage(self.name)
        cam = self.analytics.camera
        cam_stats = ctx.metrics.camera(cam.id)
        # A live camera that goes blind is an incident of its own (files cannot go blind).
        watch = CameraWatch(cam.id, cam.down_after_s, cam_stats) if cam.live else None
        last_seq = -1
        counts: dict[str, int] = {}
        # A queue may take both frames and events (the evidence stage): one sentinel each.
        all_routes = list({id(q): q for q in self.frame_routes + self.event_routes}.values())
        previews = ctx.previews
        previews.tracked(cam.id)

        def publish(event: Event) -> None:
            if not self.events_to_evidence:  # else the evidence stage shows it, with its snapshot
                previews.add_event(event)
            for q in self.event_routes:
                q.put(event, ctx.stop)

        def check_health() -> None:
            event = watch.check(last_seq) if watch is not None else None
            if event is not None:
                log.warning("event %s camera=%s (%s)", event.kind, event.camera, event.data)
                publish(event)

        for item in consume(self.inp, [cam.id], ctx, on_idle=check_health):
            if isinstance(item, EndOfStream):
                for event in self.analytics.finish():
                    publish(event)
                for q in all_routes:
                    q.put(item, ctx.stop)
                continue
            t0 = time.perf_counter()
            stats.ages.add(item.frame.age_ms())
            result, events = self.analytics.process(item)
            stats.add_work(time.perf_counter() - t0, 1)
            last_seq = item.frame.seq
            if self.analytics.zone_counts != counts:
                counts = self.analytics.zone_counts
                cam_stats.zone_counts = counts  # a new dict: readers see one table or the other
            check_health()
            previews.offer(result, from_analytics=True)
            for q in self.frame_routes:
                q.put(result, ctx.stop)
            for event in events:
                log.info("event %s %s camera=%s tracks=%s", event.kind, event.rule, event.camera, event.track_ids)
                publish(event)
