"""Analytics stage: tracking and rules for one camera, between postprocess and the sinks.

Frames go on to the frame sinks with their track ids and open alerts; events go to the event
route (evidence, then ZeroMQ / events JSONL). Zones and lines become pixels on the camera's first
frame, when its size is known; a shape outside the frame stops the graph with a message naming
the camera and the zone."""

from __future__ import annotations

import logging
import time


from pipeline.config import (
    CameraConfig,
    CountRule,
    DwellRule,
    LineCrossingRule,
    ProximityRule,
    ZoneIntrusionRule,
    did_you_mean,
)
from pipeline.frames import EndOfStream, FrameResult, Overlay
from pipeline.queues import BoundedQueue
from pipeline.rules.debounce import Debouncer
from pipeline.rules.engine import Count, Dwell, Event, FrameTracks, LineCrossing, Proximity, Rule, RuleEngine, ZoneIntrusion
from pipeline.rules.geometry import Line, Polygon, outside_frame, to_pixels
from pipeline.stage import Stage, StageContext, consume
from pipeline.tracking import ByteTracker, TrackerConfig

log = logging.getLogger(__name__)


class GeometryError(ValueError):
    """A zone or line does not fit the camera's frame."""


def class_ids(names: dict[int, str], wanted: list[int | str] | None) -> tuple[frozenset[int] | None, list[tuple[int, str]]]:
    """Config class names or ids as ids of the model's classes (None: every class), and the
    problems found as (position in `wanted`, message)."""
    if wanted is None:
        return None, []
    by_name = {v: k for k, v in names.items()}
    ids: set[int] = set()
    problems = []
    for j, entry in enumerate(wanted):
        if isinstance(entry, int):
            if names and entry not in names:
                problems.append((j, f"class id {entry} is not in the model (0..{max(names)})"))
            ids.add(entry)
        elif entry in by_name:
            ids.add(by_name[entry])
        else:
            problems.append((j, f"unknown class name {entry!r}{did_you_mean(entry, list(by_name))}"))
    return frozenset(ids), problems


def resolve_classes(names: dict[int, str], wanted: list[int | str] | None) -> frozenset[int] | None:
    """class_ids for a config that load_models has already checked."""
    ids, problems = class_ids(names, wanted)
    if problems:
        raise ValueError(f"class list {wanted}: {problems[0][1]}")
    return ids


class CameraAnalytics:
    """Tracker + rules of one camera."""

    def __init__(self, camera: CameraConfig, class_names: dict[int, str]) -> None:
        self.camera = camera
        self.class_names = class_names
        t = camera.tracker
        self.tracker = ByteTracker(TrackerConfig(high_score=t.high_score, low_score=t.low_score,
                                                 new_track_score=t.new_track_score, lost_timeout_s=t.lost_timeout_s))
        self.engine: RuleEngine | None = None
        self.overlay: Overlay | None = None
        self._last: FrameTracks | None = None

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
        rules: list[Rule] = []
        for r in cam.rules:
            classes = resolve_classes(self.class_names, r.classes)

            def debounce(min_seconds: float, r=r) -> Debouncer:  # noqa: ANN001 - binds the loop variable
                return Debouncer(min_seconds=min_seconds, clear_seconds=r.clear_seconds,
                                 cooldown_seconds=r.cooldown_seconds, update_seconds=r.update_seconds)

            if isinstance(r, ZoneIntrusionRule):
                rules.append(ZoneIntrusion(r.id, zones[r.zone], classes, r.anchor, debounce(r.min_seconds)))
            elif isinstance(r, DwellRule):
                rules.append(Dwell(r.id, zones[r.zone], classes, r.anchor, debounce(r.max_seconds)))
            elif isinstance(r, CountRule):
                rules.append(Count(r.id, zones[r.zone], classes, r.anchor, debounce(r.min_seconds), r.max_count))
            elif isinstance(r, ProximityRule):
                rules.append(Proximity(r.id, classes, resolve_classes(self.class_names, r.classes_b), r.anchor,
                                       debounce(r.min_seconds), r.max_distance, r.units == "box_height"))
            elif isinstance(r, LineCrossingRule):
                rules.append(LineCrossing(r.id, lines[r.line], classes, r.anchor, r.direction, r.cooldown_seconds,
                                          forget_after_s=max(5.0, 2 * cam.tracker.lost_timeout_s)))
            else:
                raise TypeError(f"camera {cam.id!r}: no rule class for {type(r).__name__}")
        self.engine = RuleEngine(cam.id, rules)
        self.overlay = Overlay({k: z.points for k, z in zones.items()}, {k: (ln.a, ln.b) for k, ln in lines.items()})

    def process(self, result: FrameResult) -> tuple[FrameResult, list[Event]]:
        frame, det = result.frame, result.detections
        if self.engine is None:
            self._build(frame.width, frame.height)
        engine = self.engine
        if engine is None:
            raise RuntimeError(f"camera {self.camera.id!r}: rules were not built")
        ids = self.tracker.update(det, frame.pts)
        tracked = ids >= 0
        ft = FrameTracks(frame.camera_id, frame.seq, frame.pts, frame.capture_wall, det.xyxy[tracked],
                         ids[tracked], det.class_id[tracked], det.confidence[tracked], result.class_names)
        events = engine.process(ft)
        self._last = ft
        alerts = tuple(rule.name for rule in engine.rules if rule.debouncer.active)
        return FrameResult(frame, det, result.class_names, ids, alerts, self.overlay), events

    def finish(self) -> list[Event]:
        """Closes open incidents at the end of the stream (their `end` carries the last frame's time)."""
        if self.engine is None or self._last is None:
            return []
        return self.engine.finish(self._last)


class AnalyticsStage(Stage):
    def __init__(self, analytics: CameraAnalytics, inp: BoundedQueue, frame_routes: list[BoundedQueue],
                 event_routes: list[BoundedQueue]) -> None:
        super().__init__(f"analytics[{analytics.camera.id}]")
        self.analytics = analytics
        self.inp = inp
        self.frame_routes = frame_routes
        self.event_routes = event_routes  # evidence (which also wants frames) or the event sinks

    def run(self, ctx: StageContext) -> None:
        stats = ctx.metrics.stage(self.name)
        # A queue may take both frames and events (the evidence stage): one sentinel each.
        all_routes = list({id(q): q for q in self.frame_routes + self.event_routes}.values())
        for item in consume(self.inp, [self.analytics.camera.id], ctx):
            if isinstance(item, EndOfStream):
                for event in self.analytics.finish():
                    for q in self.event_routes:
                        q.put(event, ctx.stop)
                for q in all_routes:
                    q.put(item, ctx.stop)
                continue
            t0 = time.perf_counter()
            stats.ages.add(item.frame.age_ms())
            result, events = self.analytics.process(item)
            stats.add_work(time.perf_counter() - t0, 1)
            for q in self.frame_routes:
                q.put(result, ctx.stop)
            for event in events:
                log.info("event %s %s camera=%s tracks=%s", event.kind, event.rule, event.camera, event.track_ids)
                for q in self.event_routes:
                    q.put(event, ctx.stop)
