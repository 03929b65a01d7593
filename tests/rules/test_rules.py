"""Rules on synthetic trajectories with known answers: one incident = one start and one end."""

import numpy as np
import pytest

from pipeline.rules.debounce import Debouncer
from pipeline.rules.engine import Count, Dwell, FrameTracks, LineCrossing, Proximity, RuleEngine, ZoneIntrusion
from pipeline.rules.geometry import Line, Polygon, anchor_points

FPS = 10.0
NAMES = {0: "person", 7: "truck"}
ZONE = Polygon("danger", np.array([[100, 100], [300, 100], [300, 300], [100, 300]], np.float64))


def box_at(x, y, w=20, h=60):
    """A box whose bottom-centre (the default anchor) is at (x, y)."""
    return [x - w / 2, y - h, x + w / 2, y]


def frame(i, tracks):
    """tracks: list of (track_id, class_id, (x, y)) for frame i."""
    xyxy = np.array([box_at(*p) for _, _, p in tracks], np.float64).reshape(-1, 4)
    return FrameTracks("cam", i, i / FPS, 1_700_000_000 + i / FPS, xyxy,
                       np.array([t for t, _, _ in tracks], np.int64), np.array([c for _, c, _ in tracks], np.int64),
                       np.full(len(tracks), 0.9), NAMES)


def run(rule, positions):
    """positions[i] = list of (track, class, (x, y)) -> (kind, frame index) of every event."""
    engine = RuleEngine("cam", [rule])
    events = []
    for i, tracks in enumerate(positions):
        events += [(e.kind, i, e) for e in engine.process(frame(i, tracks))]
    return events


def assert_at(events, expected):
    """(kind, frame) pairs, each frame within one of the expected (durations meet float steps)."""
    got = [(k, i) for k, i, _ in events]
    assert [k for k, _ in got] == [k for k, _ in expected], got
    assert all(abs(i - j) <= 1 for (_, i), (_, j) in zip(got, expected, strict=True)), got


def debouncer(min_s=0.5, clear_s=1.0, cooldown_s=5.0):
    return Debouncer(min_seconds=min_s, clear_seconds=clear_s, cooldown_seconds=cooldown_s)


def inside_between(start, stop, frames=80, track=1, cls=0):
    return [[(track, cls, (200, 200) if start <= i < stop else (500, 500))] for i in range(frames)]


def test_zone_intrusion_starts_after_min_seconds_and_ends_after_clear():
    events = run(ZoneIntrusion("keep_out", ZONE, frozenset({0}), "bottom_center", debouncer()), inside_between(10, 30))
    assert_at(events, [("start", 15), ("end", 40)])
    start, end = events[0][2], events[1][2]
    assert start.event_id == end.event_id and start.track_ids == [1] and start.classes == ["person"]
    assert start.zone == "danger" and start.boxes == [box_at(200, 200)]
    assert end.started_ts == start.ts


def test_flicker_at_the_zone_edge_gives_one_incident():
    positions = [[(1, 0, (200, 200) if i % 2 else (500, 500))] for i in range(10, 60)]  # in, out, in, out...
    events = run(ZoneIntrusion("keep_out", ZONE, None, "bottom_center", debouncer()), [[]] * 10 + positions + [[]] * 30)
    assert [k for k, _, _ in events] == ["start", "end"]


def test_too_short_a_visit_starts_nothing():
    assert run(ZoneIntrusion("keep_out", ZONE, None, "bottom_center", debouncer()), inside_between(10, 14)) == []


def test_cooldown_suppresses_a_quick_return():
    positions = inside_between(5, 20, frames=200)
    for i in range(40, 60):  # back 2 s after the end (end at 30): inside the 5 s cooldown
        positions[i] = [(1, 0, (200, 200))]
    for i in range(120, 140):  # back well after the cooldown
        positions[i] = [(1, 0, (200, 200))]
    events = run(ZoneIntrusion("z", ZONE, None, "bottom_center", debouncer()), positions)
    assert_at(events, [("start", 10), ("end", 30), ("start", 125), ("end", 150)])


def test_other_classes_are_ignored():
    events = run(ZoneIntrusion("z", ZONE, frozenset({0}), "bottom_center", debouncer()), inside_between(10, 30, cls=7))
    assert events == []


def test_dwell_starts_only_after_max_seconds():
    events = run(Dwell("loiter", ZONE, None, "bottom_center", debouncer(min_s=2.0)), inside_between(10, 50))
    assert_at(events, [("start", 30), ("end", 60)])


def test_count_over_the_limit():
    positions = [[(t, 0, (150 + 20 * t, 200)) for t in range(4 if 10 <= i < 40 else 2)] for i in range(70)]
    events = run(Count("crowd", ZONE, frozenset({0}), "bottom_center", debouncer(), max_count=3), positions)
    assert_at(events, [("start", 15), ("end", 50)])
    assert events[0][2].data == {"count": 4, "max_count": 3} and sorted(events[0][2].track_ids) == [0, 1, 2, 3]


def test_proximity_in_box_heights():
    # A person walks towards a parked truck and away again; 1 box height (60 px) is the limit.
    positions = [[(1, 0, (100 + 10 * i if i < 30 else 400 - 10 * (i - 30), 200)), (9, 7, (420, 200))] for i in range(60)]
    rule = Proximity("near_truck", frozenset({0}), frozenset({7}), "bottom_center", debouncer(min_s=0.2, clear_s=0.3),
                     max_distance=1.0, relative=True)
    events = run(rule, positions)
    assert [k for k, _, _ in events] == ["start", "end"]
    start = events[0][2]
    assert sorted(start.track_ids) == [1, 9] and sorted(start.classes) == ["person", "truck"]
    assert start.data["distance_px"] < 60


def test_line_crossing_counts_each_direction_once():
    line = Line("door", np.array([300.0, 0.0]), np.array([300.0, 400.0]))  # vertical, a→b downwards
    # track 1 walks left→right (crosses once), track 2 right→left, track 3 stands on the line, jittering.
    positions = []
    for i in range(40):
        positions.append([(1, 0, (200 + 5 * i, 200)), (2, 0, (400 - 5 * i, 250)), (3, 0, (299 + (i % 2) * 2, 150))])
    rule = LineCrossing("door_count", line, frozenset({0}), "bottom_center", "both", cooldown_seconds=10.0)
    events = run(rule, positions)
    by_track = {}
    for _, _, e in events:
        by_track.setdefault(e.track_ids[0], []).append(e.data["direction"])
    # Seen walking down the line a→b, track 1 goes from its left side to its right: "out".
    assert by_track[1] == ["out"] and by_track[2] == ["in"]
    assert 3 not in by_track, "jitter of 1 px either side of the line is no crossing"
    assert rule.counts == {"in": 1, "out": 1}


def test_line_direction_as_drawn_on_the_image():
    # A line drawn left to right on the image; walking a→b, "below" is the right-hand side.
    line = Line("l", np.array([0.0, 100.0]), np.array([200.0, 100.0]))
    assert line.side(np.array([[50.0, 150.0], [50.0, 50.0]])).tolist() == [1, -1]
    assert line.crossed(np.array([[50.0, 50.0]]), np.array([[50.0, 150.0]])).tolist() == [1]  # down: in


def test_proximity_pair_is_one_incident_when_class_sets_overlap():
    positions = [[(1, 0, (100, 200)), (2, 0, (110, 200))] for _ in range(20)]
    rule = Proximity("distancing", None, None, "bottom_center", debouncer(min_s=0.2), max_distance=50, relative=False)
    assert [k for k, _, _ in run(rule, positions)] == ["start"]


def test_line_crossing_outside_the_segment_does_not_count():
    line = Line("gate", np.array([300.0, 0.0]), np.array([300.0, 100.0]))
    positions = [[(1, 0, (200 + 10 * i, 300))] for i in range(20)]  # passes below the segment's end
    assert run(LineCrossing("gate", line, None, "bottom_center", "both", 1.0), positions) == []


def test_polygon_contains_is_vectorised_and_exact_on_simple_cases():
    pts = np.array([[150, 150], [99, 200], [300.5, 200], [200, 299]], np.float64)
    assert ZONE.contains(pts).tolist() == [True, False, False, True]
    concave = Polygon("l", np.array([[0, 0], [100, 0], [100, 50], [50, 50], [50, 100], [0, 100]], np.float64))
    assert concave.contains(np.array([[25, 75], [75, 75], [75, 25]], np.float64)).tolist() == [True, False, True]


def test_anchor_points():
    xyxy = np.array([[10, 20, 30, 80]], np.float64)
    assert anchor_points(xyxy, "bottom_center").tolist() == [[20, 80]]
    assert anchor_points(xyxy, "center").tolist() == [[20, 50]]


def test_debouncer_rejects_negative_durations():
    with pytest.raises(ValueError, match="durations must be >= 0"):
        Debouncer(min_seconds=-1, clear_seconds=0, cooldown_seconds=0)


def test_proximity_pair_is_one_incident_when_detection_order_flips():
    # The detector ranks by confidence, so two people's rows swap from frame to frame: the pair
    # is the same subject whichever of them comes first.
    positions = [[(1, 0, (100, 200)), (2, 0, (110, 200))][:: 1 if i % 2 else -1] for i in range(20)]
    rule = Proximity("distancing", None, None, "bottom_center", debouncer(min_s=0.2), max_distance=50, relative=False)
    events = run(rule, positions)
    assert [k for k, _, _ in events] == ["start"], [(k, e.track_ids) for k, _, e in events]
    assert events[0][2].track_ids == [1, 2]


def test_line_crossing_ignores_jitter_of_someone_standing_on_the_line():
    line = Line("door", np.array([300.0, 0.0]), np.array([300.0, 400.0]))
    # Feet on the line, the box's bottom centre jittering 1 px either side of it for 4 s.
    positions = [[(3, 0, (299 + (i % 2) * 2, 150))] for i in range(40)]
    rule = LineCrossing("door_count", line, frozenset({0}), "bottom_center", "both", cooldown_seconds=0.0)
    assert run(rule, positions) == []
    assert rule.counts == {"in": 0, "out": 0}


def test_line_crossing_counts_a_slow_walk_through_the_jitter_band_once():
    line = Line("door", np.array([300.0, 0.0]), np.array([300.0, 400.0]))
    # 1 px per frame from 280 to 320, with 2 px of jitter: it crosses once, left to right.
    positions = [[(1, 0, (280 + i + (2 if i % 2 else -2), 200))] for i in range(41)]
    rule = LineCrossing("door_count", line, frozenset({0}), "bottom_center", "both", cooldown_seconds=0.0)
    events = run(rule, positions)
    assert [e.data["direction"] for _, _, e in events] == ["out"]
