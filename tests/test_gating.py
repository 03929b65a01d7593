"""Detection rate per camera and motion gating: unit behaviour of the gate, and whole graphs on the
shared videos (the same events at a lower rate; motion-gated static scenes; a still person kept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import config_from_data
from pipeline.gating import CameraActivity, FrameGate, GateSettings, MotionDetector, MotionSettings
from pipeline.graph import build_graph
from pipeline.runner import execute
from tests.helpers import read_jsonl, write_still_then_video

# A zone in the middle of office_walk.mp4's floor: the walker's feet cross it from about frame 60 to 125.
WALK_ZONE = [[0.45, 0.55], [0.72, 0.55], [0.72, 0.88], [0.45, 0.88]]


def grey_frame(value: int = 90, size: tuple[int, int] = (320, 180)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, np.uint8)


def test_the_rate_spreads_detections_evenly_over_stream_time():
    gate = FrameGate(GateSettings(detect_fps=5))
    image = grey_frame()
    detected = [seq for seq in range(300) if gate.decide(seq / 30.0, image).detect]  # 10 s at 30 fps
    assert len(detected) == 50
    assert set(np.diff(detected).tolist()) == {6}  # every 6th frame: evenly spread
    gate = FrameGate(GateSettings(detect_fps=3))
    assert sum(gate.decide(seq / 25.0, image).detect for seq in range(250)) in (30, 31)  # 25 fps does not divide


def test_the_rate_does_not_burst_after_a_gap_and_a_frame_without_picture_keeps_its_slot():
    gate = FrameGate(GateSettings(detect_fps=2))
    image = grey_frame()
    assert gate.decide(0.0, image).detect
    assert gate.decide(5.0, image).detect  # 5 s without frames (a reconnect): one, not ten
    assert not gate.decide(5.2, image).detect and gate.decide(5.2, image).skipped_by == "rate"
    assert not gate.decide(5.6, None).detect  # due, but not decoded: cannot be detected ...
    assert gate.decide(5.64, image).detect  # ... so the next decoded frame is


def test_motion_detector_sees_change_and_ignores_noise_and_masked_areas():
    detector = MotionDetector(MotionSettings(threshold=25, min_area=0.002))
    still = grey_frame()
    rng = np.random.default_rng(0)
    assert not detector.update(still)
    for _ in range(10):  # sensor noise of a few levels is not motion
        noisy = np.clip(still.astype(np.int16) + rng.integers(-5, 6, still.shape), 0, 255).astype(np.uint8)
        assert not detector.update(noisy)
    moved = still.copy()
    moved[60:120, 200:240] = 220  # a bright object appears on the right
    assert detector.update(moved) and detector.last_area > 0.02
    masked = MotionDetector(MotionSettings(min_area=0.002, mask=(((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)),)))
    masked.update(still)
    assert not masked.update(moved)  # the change is outside the left-half mask
    left = still.copy()
    left[60:120, 40:80] = 220
    assert masked.update(left)


def test_motion_gate_skips_a_still_scene_but_keeps_a_heartbeat_and_busy_cameras():
    activity = CameraActivity()
    gate = FrameGate(GateSettings(detect_fps=None, motion=MotionSettings(), max_idle_s=2.0), activity)
    still = grey_frame()
    decisions = [gate.decide(i / 10.0, still) for i in range(100)]  # 10 s of a still scene at 10 fps
    detected = [i for i, d in enumerate(decisions) if d.detect]
    assert detected[:2] == [0, 1] and len(detected) <= 2 + 10 / 2.0 + 1  # warm-up, then a heartbeat every 2 s
    assert {d.skipped_by for d in decisions if not d.detect} == {"motion"}
    activity.track_in_rule_zone = True  # a person standing still in a danger zone
    assert all(gate.decide(10 + i / 10.0, still).detect for i in range(20))


def _run(tmp_path: Path, model_path: Path, video: Path, *, detect_fps: float | None = None, motion: bool = False,
         zone: list | None = None, name: str = "out", extra_sinks: list | None = None) -> tuple[list[dict], list[dict], object]:
    camera: dict = {"id": "walk", "model": "m", "source": {"type": "file", "path": str(video)}}
    if detect_fps is not None:
        camera["detect_fps"] = detect_fps
    if motion:
        camera["motion"] = {"enabled": True}
    if zone is not None:
        camera["zones"] = [{"id": "floor", "units": "normalized", "points": zone}]
        camera["rules"] = [{"id": "on_floor", "type": "zone_intrusion", "zone": "floor", "classes": ["person"],
                            "min_seconds": 0.5, "clear_seconds": 1.0}]
    data = {"cameras": [camera], "models": [{"id": "m", "path": str(model_path), "backend": "onnxruntime"}],
            "sinks": [{"type": "jsonl", "path": f"{name}.jsonl"}, {"type": "events", "path": f"{name}.events.jsonl"},
                      *(extra_sinks or [])]}
    graph = build_graph(config_from_data(data, origin="test", base_dir=tmp_path))
    summary = execute(graph, handle_signals=False)
    events = read_jsonl(tmp_path / f"{name}.events.jsonl") if (tmp_path / f"{name}.events.jsonl").exists() else []
    return read_jsonl(tmp_path / f"{name}.jsonl"), events, summary


def test_detect_fps_on_a_file_detects_n_per_second_and_gives_the_same_zone_events(tmp_path, model_path, media):
    video = media / "office_walk.mp4"
    full, full_events, _ = _run(tmp_path, model_path, video, zone=WALK_ZONE, name="full")
    rated, rated_events, summary = _run(tmp_path, model_path, video, zone=WALK_ZONE, detect_fps=5, name="rated")
    fps = 29.5
    assert len(rated) == len(full) == 182  # every frame has its record
    detected = [r for r in rated if r["detected"]]
    assert abs(len(detected) - 5 * len(rated) / fps) <= 1
    [cam] = summary.cameras
    assert cam.detections == len(detected) and cam.skipped == {"rate": len(rated) - len(detected)}
    # Frames between detections carry the tracker's predictions, with track ids.
    predicted = [r for r in rated if not r["detected"] and r["detections"]]
    assert predicted and all(d["track_id"] > 0 for r in predicted for d in r["detections"])
    # The same incident at 5 detections/s as at every frame, within one detection interval.
    def starts_ends(events: list[dict]) -> list[tuple[str, float]]:
        return [(e["kind"], e["ts"] - full[0]["capture_ts"]) for e in events if e["kind"] in ("start", "end")]

    assert [k for k, _ in starts_ends(full_events)] == ["start", "end"]
    assert [k for k, _ in starts_ends(rated_events)] == ["start", "end"]
    full_seq = [e["seq"] for e in full_events if e["kind"] in ("start", "end")]
    rated_seq = [e["seq"] for e in rated_events if e["kind"] in ("start", "end")]
    assert all(abs(a - b) <= fps / 5 + 1 for a, b in zip(full_seq, rated_seq, strict=True)), (full_seq, rated_seq)


def test_motion_gating_skips_the_static_scene_and_detects_the_walker_within_one_interval(tmp_path, model_path, media):
    video = tmp_path / "still_then_walk.mp4"
    fps, still = write_still_then_video(media / "office_walk.mp4", video, still_s=6.0, max_frames=120)
    ungated, _, _ = _run(tmp_path, model_path, video, detect_fps=10, name="ungated")
    gated, _, summary = _run(tmp_path, model_path, video, detect_fps=10, motion=True, name="gated")
    static_ungated = sum(r["detected"] for r in ungated[:still])
    static_gated = sum(r["detected"] for r in gated[:still])
    assert static_gated * 5 <= static_ungated, (static_gated, static_ungated)
    [cam] = summary.cameras
    assert cam.skipped.get("motion", 0) > 0
    first_person = next(r["seq"] for r in ungated if r["detected"] and any(d["class_name"] == "person" for d in r["detections"]))
    first_gated = next(r["seq"] for r in gated if r["detected"] and any(d["class_name"] == "person" for d in r["detections"]))
    assert first_gated <= first_person + fps / 10 + 1, (first_gated, first_person)


def test_a_person_who_stops_in_a_rule_zone_keeps_the_incident_open(tmp_path, model_path, media):
    # The walker stops in the zone (frame 95 held for 8 s): no motion, but the track in the zone keeps
    # the model looking, so the incident neither ends nor restarts while they stand there.
    video = tmp_path / "walk_and_stop.mp4"
    fps, _ = write_still_then_video(media / "office_walk.mp4", video, still_s=0.0, freeze_at=95, freeze_s=8.0,
                                    max_frames=110)
    records, events, summary = _run(tmp_path, model_path, video, detect_fps=5, motion=True, zone=WALK_ZONE, name="stop")
    kinds = [e["kind"] for e in events if e["kind"] in ("start", "end")]
    assert kinds[0] == "start" and kinds.count("start") == 1, kinds
    frozen = records[96: 96 + round(8.0 * fps)]
    assert sum(r["detected"] for r in frozen) >= 0.8 * 5 * 8.0  # detections went on at the camera's rate
    assert all(r["alerts"] == ["on_floor"] for r in frozen[round(fps):])  # open the whole time
    end = next((e for e in events if e["kind"] == "end"), None)
    assert end is None or end["seq"] >= 96 + round(8.0 * fps)


@pytest.mark.parametrize("motion", [False, True])
def test_skipped_frames_still_reach_a_video_sink(tmp_path, model_path, media, motion):
    from tests.helpers import count_video_frames

    records, _, summary = _run(tmp_path, model_path, media / "people_small.mp4", detect_fps=1, motion=motion, name="v",
                               extra_sinks=[{"type": "video", "path": "v.mp4"}])
    assert count_video_frames(tmp_path / "v.mp4") == len(records) == 50
    assert sum(r["detected"] for r in records) <= 50 / 3 + 1  # 3 fps video at 1 detection/s


def test_detect_cli_takes_detect_fps_and_motion(tmp_path, model_path, media):
    from conftest import run_cli

    out = tmp_path / "walk.jsonl"
    result = run_cli("detect", str(media / "office_walk.mp4"), "--model", str(model_path), "--backend", "onnxruntime",
                     "--precision", "f32", "--detect-fps", "5", "--motion", "--jsonl", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out)
    assert len(records) == 182 and all(isinstance(r["detected"], bool) for r in records)
    assert 0 < sum(r["detected"] for r in records) <= 5 * 182 / 29.5 + 1
