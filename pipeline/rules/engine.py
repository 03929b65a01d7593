"""Rules over one camera's tracked objects: zone_intrusion, dwell, line_crossing, proximity, count.

`RuleEngine.process()` takes a frame's tracked detections and returns the events it causes. Every
per-frame test is vectorised over tracks (points in polygons, pairwise distances, line sides);
the only Python loops are over rules and over the few transitions a frame produces.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.frames import Detections, Event
from pipeline.rules.debounce import Debouncer, Transition
from pipeline.rules.geometry import Anchor, Line, Polygon, anchor_points


@dataclass(frozen=True, slots=True)
class FrameTracks:
    """What the rules see of one frame: confirmed tracks and the frame's timing."""

    camera: str
    seq: int
    t: float  # seconds of stream time (Frame.pts): drives durations
    wall: float  # wall-clock capture time (goes into events)
    xyxy: np.ndarray  # (N, 4)
    track_id: np.ndarray  # (N,)
    class_id: np.ndarray  # (N,)
    confidence: np.ndarray  # (N,)
    class_names: dict[int, str]
    # Work shared by the rules of one frame (anchor points, zone membership), filled on first use.
    cache: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, camera: str, seq: int, t: float, wall: float, tracked: Detections,
           class_names: dict[int, str]) -> FrameTracks:
        """The rules' view of `tracked`, whose rows the caller has cut to those on a track (track_id >= 0)."""
        if tracked.track_id is None:
            raise ValueError(f"camera {camera!r}: rules need tracked detections (track_id set), got untracked ones")
        return cls(camera, seq, t, wall, tracked.xyxy, tracked.track_id, tracked.class_id, tracked.confidence,
                   class_names)

    def anchors(self, anchor: Anchor) -> np.ndarray:
        key = ("anchor", anchor)
        if key not in self.cache:
            self.cache[key] = anchor_points(self.xyxy, anchor)
        return self.cache[key]

    def inside(self, zone: Polygon, anchor: Anchor) -> np.ndarray:
        key = ("zone", zone.name, anchor)
        if key not in self.cache:
            self.cache[key] = zone.contains(self.anchors(anchor))
        return self.cache[key]


def class_table(classes: frozenset[int] | None) -> np.ndarray | None:
    """A lookup table for `np.isin(class_id, classes)` as one indexing operation per frame."""
    if classes is None:
        return None
    table = np.zeros(max(classes, default=-1) + 2, bool)  # the last entry stands for "any larger id"
    table[list(classes)] = True
    return table


def class_mask(table: np.ndarray | None, class_id: np.ndarray) -> np.ndarray:
    """(N,) bool: which `class_id`s are in the table from `class_table` (all of them for None)."""
    if table is None:
        return np.ones(class_id.shape[0], bool)
    return table[np.minimum(class_id, table.shape[0] - 1)]


class Rule(ABC):
    """Base: a debouncer over subjects; subclasses say which subjects are true this frame."""

    rule_type = ""

    def __init__(self, name: str, classes: frozenset[int] | None, anchor: Anchor, debouncer: Debouncer) -> None:
        self.name = name
        self.classes = classes
        self._classes = class_table(classes)
        self.anchor = anchor
        self.debouncer = debouncer
        self._incidents: dict[Hashable, tuple[str, float]] = {}  # subject -> (event id, start wall time)

    def wanted(self, f: FrameTracks) -> np.ndarray:
        return class_mask(self._classes, f.class_id)

    @abstractmethod
    def true_subjects(self, f: FrameTracks) -> dict[Hashable, dict[str, Any]]:
        """Subjects whose condition holds now, with rule-specific data for their events."""

    def tracks_of(self, subject: Hashable) -> list[int]:
        return [int(subject)] if isinstance(subject, (int, np.integer)) else [int(t) for t in subject]  # type: ignore[union-attr]

    def zone_name(self) -> str | None:
        return None

    def occupied(self, f: FrameTracks) -> bool:
        """Whether a tracked object this rule watches stands in its zone (False for rules without
        one): the camera's motion gate keeps detecting while it does, moving or not."""
        return False

    def line_name(self) -> str | None:
        return None

    def process(self, f: FrameTracks) -> list[Event]:
        subjects = self.true_subjects(f)
        return [self._event(t, f, subjects.get(t.subject, {})) for t in self.debouncer.step(subjects, f.t)]

    def finish(self, f: FrameTracks) -> list[Event]:
        return [self._event(t, f, {}) for t in self.debouncer.finish()]

    def _event(self, t: Transition, f: FrameTracks, data: dict[str, Any]) -> Event:
        if t.kind == "start":
            self._incidents[t.subject] = (uuid.uuid4().hex, f.wall)
        event_id, started = self._incidents.get(t.subject, (uuid.uuid4().hex, f.wall))
        if t.kind == "end":
            self._incidents.pop(t.subject, None)
        track_ids = self.tracks_of(t.subject)
        # Rows of the subject's tracks still on this frame (none, often, for an `end`).
        rows = np.flatnonzero(np.isin(f.track_id, track_ids)) if track_ids else np.zeros(0, np.int64)
        return Event(
            event_id=event_id, kind=t.kind, rule=self.name, rule_type=self.rule_type, camera=f.camera,
            track_ids=sorted(track_ids),
            classes=[f.class_names.get(int(c), str(int(c))) for c in f.class_id[rows]],
            zone=self.zone_name(), line=self.line_name(), ts=f.wall, started_ts=started, seq=f.seq,
            boxes=np.round(f.xyxy[rows].astype(np.float64), 2).tolist(),
            confidence=np.round(f.confidence[rows].astype(np.float64), 4).tolist(), data=data,
        )


class ZoneRule(Rule):
    """Base of the rules about one zone: which wanted tracks stand in it."""

    def __init__(self, name: str, zone: Polygon, classes: frozenset[int] | None, anchor: Anchor, debouncer: Debouncer) -> None:
        super().__init__(name, classes, anchor, debouncer)
        self.zone = zone

    def zone_name(self) -> str | None:
        return self.zone.name

    def in_zone(self, f: FrameTracks) -> np.ndarray:
        """(N,) bool: the rows of tracks this rule watches whose anchor is inside the zone."""
        return self.wanted(f) & f.inside(self.zone, self.anchor)

    def occupied(self, f: FrameTracks) -> bool:
        return bool(self.in_zone(f).any())


class ZoneIntrusion(ZoneRule):
    """A tracked object of `classes` inside the zone for at least `min_seconds`."""

    rule_type = "zone_intrusion"

    def true_subjects(self, f: FrameTracks) -> dict[Hashable, dict[str, Any]]:
        return {int(t): {} for t in f.track_id[self.in_zone(f)]}


class Dwell(ZoneIntrusion):
    """Inside the zone longer than `max_seconds` (its debouncer's min_seconds)."""

    rule_type = "dwell"


class Count(ZoneRule):
    """More than `max_count` objects of `classes` inside the zone (one subject: the zone)."""

    rule_type = "count"

    def __init__(self, name: str, zone: Polygon, classes: frozenset[int] | None, anchor: Anchor, debouncer: Debouncer,
                 max_count: int) -> None:
        super().__init__(name, zone, classes, anchor, debouncer)
        self.max_count = max_count
        self._inside: list[int] = []

    def tracks_of(self, subject: Hashable) -> list[int]:
        return list(self._inside)

    def true_subjects(self, f: FrameTracks) -> dict[Hashable, dict[str, Any]]:
        self._inside = [int(t) for t in f.track_id[self.in_zone(f)]]
        count = len(self._inside)
        return {self.zone.name: {"count": count, "max_count": self.max_count}} if count > self.max_count else {}


class Proximity(Rule):
    """An object of `classes` (A) closer than `max_distance` to an object of `classes_b` (B):
    in pixels, or in multiples of the A box's height (`units: box_height`), between anchor points."""

    rule_type = "proximity"

    def __init__(self, name: str, classes: frozenset[int] | None, classes_b: frozenset[int] | None, anchor: Anchor,
                 debouncer: Debouncer, max_distance: float, relative: bool) -> None:
        super().__init__(name, classes, anchor, debouncer)
        self.classes_b = classes_b
        self._classes_b = class_table(classes_b)
        self.max_distance = max_distance
        self.relative = relative

    def true_subjects(self, f: FrameTracks) -> dict[Hashable, dict[str, Any]]:
        a = np.flatnonzero(self.wanted(f))
        b = np.flatnonzero(class_mask(self._classes_b, f.class_id))
        if a.size == 0 or b.size == 0:
            return {}
        points = f.anchors(self.anchor)
        pa, pb = points[a], points[b]
        dist = np.linalg.norm(pa[:, None, :] - pb[None, :, :], axis=2)  # (A, B)
        limit = self.max_distance * (f.xyxy[a, 3] - f.xyxy[a, 1])[:, None] if self.relative else self.max_distance
        close = (dist < limit) & (f.track_id[a][:, None] != f.track_id[b][None, :])
        ia, ib = np.nonzero(close)
        pairs: dict[Hashable, dict[str, Any]] = {}
        for i, j in zip(ia.tolist(), ib.tolist(), strict=True):
            ta, tb = int(f.track_id[a[i]]), int(f.track_id[b[j]])
            # The subject is the pair whatever the rows' order: with overlapping class sets (person
            # near person) both orders occur, and the detector's confidence ranking swaps the rows
            # from frame to frame, so an ordered key would split one incident into two.
            pairs.setdefault((min(ta, tb), max(ta, tb)), {"distance_px": round(float(dist[i, j]), 1)})
        return pairs


FORGET_AFTER_S = 5.0  # a track's last position is kept at least this long for line crossings
# How far beyond a line, in heights of the object's box, its anchor must be to be on a side: a
# person standing on the line jitters a few pixels across it with every detection, which without
# this band would count as crossing in and out again (supervision's LineZone has a crossing
# threshold for the same reason). 0.1 of a standing person is a fraction of a step.
LINE_BAND = 0.1


class LineCrossing(Rule):
    """A track's anchor crosses the line in `direction` (`in`: from the left-hand to the right-hand
    side of someone walking a→b on the image; `out`; or `both`).
    A crossing is an instant: it gives one `start` event carrying running in/out counts. A point
    counts as on a side only `band` box heights beyond the line, so jitter on the line is no
    crossing; the same track cannot count again in the same direction within `cooldown_seconds`.

    Args:
        band: the dead band either side of the line, in heights of each object's own box (scales
            with the object, so near and far cameras need no tuning).
    """

    rule_type = "line_crossing"

    def __init__(self, name: str, line: Line, classes: frozenset[int] | None, anchor: Anchor, direction: str,
                 cooldown_seconds: float, forget_after_s: float = FORGET_AFTER_S, band: float = LINE_BAND) -> None:
        super().__init__(name, classes, anchor, Debouncer(min_seconds=0, clear_seconds=0, cooldown_seconds=0))
        self.line = line
        self.direction = direction
        self.cooldown_seconds = cooldown_seconds
        self.counts = {"in": 0, "out": 0}
        self.forget_after_s = forget_after_s  # at least the tracker's lost timeout: ids can come back
        if band < 0:
            raise ValueError(f"line {line.name!r}: band must be >= 0 box heights, got {band}")
        self.band = band
        # Last off-line anchor of each track, as arrays sorted by track id (looked up per frame
        # with one searchsorted, not a loop over tracks).
        self._ids = np.zeros(0, np.int64)
        self._points = np.zeros((0, 2))
        self._seen = np.zeros(0)
        self._last_counted: dict[tuple[int, int], float] = {}

    def line_name(self) -> str | None:
        return self.line.name

    def true_subjects(self, f: FrameTracks) -> dict[Hashable, dict[str, Any]]:
        return {}  # crossings are instants with no duration to debounce: see process()

    def process(self, f: FrameTracks) -> list[Event]:
        rows = np.flatnonzero(self.wanted(f))
        points = f.anchors(self.anchor)[rows]
        ids = f.track_id[rows]
        # Points inside the band (or exactly on the line) belong to no side: they are neither
        # compared nor remembered, so a crossing is seen from the last point clearly on one side
        # to the next one clearly on the other.
        heights = f.xyxy[rows, 3] - f.xyxy[rows, 1]
        settled = np.abs(self.line.distance(points)) >= np.maximum(self.band * heights, 1e-9)
        at = np.minimum(np.searchsorted(self._ids, ids), max(self._ids.shape[0] - 1, 0))
        known = ((self._ids[at] == ids) if self._ids.shape[0] else np.zeros(ids.shape[0], bool)) & settled
        events = []
        if known.any():
            before = self._points[at[known]]
            crossed = self.line.crossed(before, points[known])
            for track, sign in zip(ids[known][crossed != 0].tolist(), crossed[crossed != 0].tolist(), strict=True):
                direction = "in" if sign > 0 else "out"
                if self.direction not in ("both", direction):
                    continue
                last = self._last_counted.get((track, sign))
                if last is not None and f.t - last < self.cooldown_seconds:
                    continue
                self._last_counted[(track, sign)] = f.t
                self.counts[direction] += 1
                transition = Transition("start", track, f.t)
                events.append(self._event(transition, f, {"direction": direction, **self.counts}))
                self._incidents.pop(track, None)  # an instant: nothing stays open
        # Keep the older entries of tracks not seen clear of the line now and not forgotten (tracks
        # unseen longer than forget_after_s are dropped: bounded memory), then add this frame's.
        old = ~np.isin(self._ids, ids[settled]) & (f.t - self._seen <= self.forget_after_s)
        merged_ids = np.concatenate([self._ids[old], ids[settled]])
        order = np.argsort(merged_ids, kind="stable")
        self._ids = merged_ids[order]
        self._points = np.concatenate([self._points[old], points[settled]])[order]
        self._seen = np.concatenate([self._seen[old], np.full(int(settled.sum()), f.t)])[order]
        self._last_counted = {k: t for k, t in self._last_counted.items() if f.t - t < self.cooldown_seconds}
        return events

    def finish(self, f: FrameTracks) -> list[Event]:
        return []


class RuleEngine:
    """All rules of one camera."""

    def __init__(self, camera: str, rules: list[Rule]) -> None:
        self.camera = camera
        self.rules = rules

    def process(self, f: FrameTracks) -> list[Event]:
        return [event for rule in self.rules for event in rule.process(f)]

    def finish(self, f: FrameTracks) -> list[Event]:
        """Ends every open incident (end of stream)."""
        return [event for rule in self.rules for event in rule.finish(f)]
