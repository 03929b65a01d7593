"""Tracking + rules + events end to end: real video, real model, real ZeroMQ sockets."""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from pipeline.config import load_config
from pipeline.graph import build_graph
from pipeline.rules.geometry import Polygon, anchor_points
from pipeline.runner import execute
from pipeline.stage import GraphFailed
from tests.helpers import free_port
from tests.helpers import read_jsonl as read

from conftest import run_cli

ZONE = [[0.30, 0.45], [0.70, 0.45], [0.70, 0.95], [0.30, 0.95]]


def config(tmp_path: Path, media: Path, model_path: Path, *, port: int | None = None, frames: int = 341,
           zone=ZONE, extra_sinks: str = "", min_seconds: float = 0, update_seconds: float | None = None) -> Path:
    zmq_sink = f"  - {{type: zmq, endpoint: 'tcp://127.0.0.1:{port}', hwm: 10}}\n" if port else ""
    text = f"""
cameras:
  - id: floor
    source: {{type: file, path: {media / 'crowd_overhead.mp4'}, max_frames: {frames}}}
    model: yolo
    zones:
      - {{id: danger, units: normalized, points: {zone}}}
    rules:
      - {{id: intrusion, type: zone_intrusion, zone: danger, classes: [person], min_seconds: {min_seconds},
          clear_seconds: 1.0, cooldown_seconds: 1000{f", update_seconds: {update_seconds}" if update_seconds else ""}}}
models:
  - {{id: yolo, path: {model_path}, classes: [person]}}
sinks:
  - {{type: jsonl, path: out/frames.jsonl}}
  - {{type: events, path: out/events.jsonl}}
{zmq_sink}{extra_sinks}"""
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def test_one_start_event_per_track_that_entered_the_zone(tmp_path, media, model_path):
    execute(build_graph(load_config(config(tmp_path, media, model_path))), handle_signals=False)
    frames, events = read(tmp_path / "out" / "frames.jsonl"), read(tmp_path / "out" / "events.jsonl")
    w, h = frames[0]["width"], frames[0]["height"]
    zone = Polygon("danger", np.array(ZONE) * [w, h])
    entered = set()
    for record in frames:
        tracked = [d for d in record["detections"] if d["track_id"] >= 0]
        if tracked:
            inside = zone.contains(anchor_points(np.array([d["box"] for d in tracked], np.float64), "bottom_center"))
            entered |= {d["track_id"] for d, ok in zip(tracked, inside, strict=True) if ok}
    starts = [e for e in events if e["kind"] == "start"]
    assert len(entered) > 5, "the crowd video has people walking through the zone"
    assert sorted(t for e in starts for t in e["track_ids"]) == sorted(entered)
    assert len([e for e in events if e["kind"] == "end"]) == len(starts), "every incident ends"
    for e in starts:
        assert set(e) >= {"event_id", "kind", "rule", "camera", "track_ids", "classes", "zone", "ts", "seq", "boxes",
                          "snapshot", "clip"}
        assert e["rule"] == "intrusion" and e["camera"] == "floor" and e["zone"] == "danger" and e["classes"] == ["person"]


def test_events_arrive_on_a_real_zmq_subscriber_and_listen_prints_them(tmp_path, media, model_path):
    port = free_port()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.connect(f"tcp://127.0.0.1:{port}")
    sub.setsockopt(zmq.SUBSCRIBE, b"floor/")
    got: list[tuple[bytes, dict]] = []

    def receive() -> None:
        while sub.poll(15000):
            topic, payload = sub.recv_multipart()
            got.append((topic, json.loads(payload)))

    listener = threading.Thread(target=receive)
    listener.start()
    # PUB/SUB drops what is published before a subscription arrives ("slow joiner"): the first
    # event comes only after 1 s of stream time (~2 s of processing here), long after the connect.
    graph = build_graph(load_config(config(tmp_path, media, model_path, port=port, frames=120, min_seconds=1.0)))
    execute(graph, handle_signals=False)
    listener.join(20)
    sub.close(linger=0)
    ctx.term()
    written = read(tmp_path / "out" / "events.jsonl")
    assert written and [e for _, e in got] == written
    assert all(topic == b"floor/intrusion" for topic, _ in got)


def _timed_run(graph, limit_s: float):
    """Runs the graph on a thread; returns (seconds, summary), or fails the test if it is still
    running after `limit_s` (then stops it, so a blocked sink cannot hang the test)."""
    done: dict[str, object] = {}

    def target() -> None:
        t0 = time.monotonic()
        done["summary"] = execute(graph, handle_signals=False)
        done["seconds"] = time.monotonic() - t0

    runner = threading.Thread(target=target, daemon=True)
    runner.start()
    runner.join(limit_s)
    if runner.is_alive():
        graph.runner.stop()
        runner.join(10)
        pytest.fail(f"the run did not finish within {limit_s:.0f} s")
    return done["seconds"], done["summary"]


def test_a_subscriber_that_never_reads_does_not_slow_the_pipeline(tmp_path, media, model_path):
    frames = 60
    # The same run without the slow subscriber is the yardstick (speed on a shared machine varies
    # run to run; a fixed limit loose enough for that would let any slowdown pass).
    # `update` events every 0.1 s of stream time per open incident: hundreds of events, so a cost
    # per event that the subscriber causes adds up to seconds.
    settings = {"frames": frames, "update_seconds": 0.1}
    baseline_s, _ = _timed_run(build_graph(load_config(config(tmp_path, media, model_path, port=free_port(),
                                                              **settings))), 300)
    port = free_port()
    ctx = zmq.Context()
    lazy = ctx.socket(zmq.SUB)
    lazy.setsockopt(zmq.RCVHWM, 1)
    lazy.connect(f"tcp://127.0.0.1:{port}")
    lazy.setsockopt(zmq.SUBSCRIBE, b"")  # subscribed, never reads
    try:
        graph = build_graph(load_config(config(tmp_path, media, model_path, port=port, **settings)))
        lazy_s, summary = _timed_run(graph, 3 * baseline_s + 30)
    finally:
        lazy.close(linger=0)
        ctx.term()
    assert summary.frames_out == frames
    zmq_sink = next(s for s in graph.sinks if s.name.startswith("zmq:"))
    published = len(read(tmp_path / "out" / "events.jsonl"))
    assert zmq_sink.published == published > 40
    assert lazy_s < 1.5 * baseline_s + 3, f"{lazy_s:.1f} s with a subscriber that never reads, {baseline_s:.1f} s without"


def test_zone_outside_the_frame_names_camera_and_zone(tmp_path, media, model_path):
    cfg = config(tmp_path, media, model_path, frames=5, zone=[[0.5, 0.5], [1.5, 0.5], [1.5, 0.9]])
    with pytest.raises(GraphFailed, match=r"camera 'floor': zone 'danger' lies outside the 854x480 frame"):
        execute(build_graph(load_config(cfg)), handle_signals=False)


def test_rule_config_errors(tmp_path, media, model_path):
    cfg = config(tmp_path, media, model_path)
    text = cfg.read_text().replace("zone: danger, classes: [person]", "zone: dangr, classes: [persn]")
    cfg.write_text(text)
    result = run_cli("validate", str(cfg))
    assert result.returncode == 2
    assert ("cameras[0].rules[0].zone: rule 'intrusion' of camera 'floor' refers to unknown zone 'dangr' "
            "(did you mean 'danger'?)") in result.stderr


def test_rule_class_names_are_checked_against_the_model(tmp_path, media, model_path):
    cfg = config(tmp_path, media, model_path)
    cfg.write_text(cfg.read_text().replace("classes: [person], min_seconds", "classes: [persn], min_seconds"))
    result = run_cli("validate", str(cfg))
    assert result.returncode == 2
    assert "cameras[0].rules[0].classes[0]: unknown class name 'persn' (did you mean 'person'?)" in result.stderr


def test_snapshots_and_clips_cover_the_asked_span(tmp_path, media, model_path):
    evidence = tmp_path / "evidence"
    cfg = config(tmp_path, media, model_path, frames=150)
    cfg.write_text(cfg.read_text() + f"evidence: {{dir: {evidence}, pre_seconds: 1.0, post_seconds: 1.0}}\n")
    execute(build_graph(load_config(cfg)), handle_signals=False)
    events = read(tmp_path / "out" / "events.jsonl")
    starts = [e for e in events if e["kind"] == "start"]
    clips = {e["event_id"]: e for e in events if e["kind"] == "update" and e["clip"]}
    assert starts and len(clips) == len(starts)
    last_pts = 149 / 25
    for start in starts:
        import cv2

        snapshot = cv2.imread(start["snapshot"])
        assert snapshot is not None and snapshot.shape == (480, 854, 3)
        clip = clips[start["event_id"]]
        cap = cv2.VideoCapture(clip["clip"])
        n = 0
        while cap.read()[0]:
            n += 1
        assert n >= 2, f"{clip['clip']} decodes"
        at = start["seq"] / 25
        assert clip["data"]["clip_start_pts"] <= max(0.0, at - 1.0) + 0.05
        assert clip["data"]["clip_end_pts"] >= min(last_pts, at + 1.0) - 0.05


def test_evidence_disk_cap_deletes_oldest_first(tmp_path, media, model_path):
    evidence = tmp_path / "evidence"
    cfg = config(tmp_path, media, model_path, frames=100)
    cfg.write_text(cfg.read_text() + f"evidence: {{dir: {evidence}, clips: false, max_disk_mb: 0.3}}\n")
    execute(build_graph(load_config(cfg)), handle_signals=False)
    files = sorted((evidence / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime)
    starts = [e for e in read(tmp_path / "out" / "events.jsonl") if e["kind"] == "start"]
    assert sum(p.stat().st_size for p in files) <= 0.3 * 1024 * 1024
    assert len(files) < len(starts), "older snapshots were deleted"
    assert Path(starts[-1]["snapshot"]).exists(), "the newest is kept"


def test_listen_command_prints_each_event_as_a_json_line(tmp_path, media, model_path):
    import subprocess
    import sys

    from conftest import REPO

    port = free_port()
    listener = subprocess.Popen([sys.executable, str(REPO / "run.py"), "listen", f"tcp://127.0.0.1:{port}",
                                 "--topic", "floor/", "--count", "2", "--timeout", "60"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the listener is up; the first event needs 1 s of stream time (slow joiner, see above)
    execute(build_graph(load_config(config(tmp_path, media, model_path, port=port, frames=90, min_seconds=1.0))),
            handle_signals=False)
    out, err = listener.communicate(timeout=60)
    assert listener.returncode == 0, err
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert len(lines) == 2 and all(e["camera"] == "floor" and e["rule"] == "intrusion" for e in lines)
    assert lines == read(tmp_path / "out" / "events.jsonl")[:2]


def test_incident_events_keep_their_order_and_ids(tmp_path, media, model_path):
    evidence = tmp_path / "evidence"
    cfg = config(tmp_path, media, model_path, frames=150)
    cfg.write_text(cfg.read_text() + f"evidence: {{dir: {evidence}, pre_seconds: 0.5, post_seconds: 3.0}}\n")
    execute(build_graph(load_config(cfg)), handle_signals=False)
    by_incident: dict[str, list[dict]] = {}
    for e in read(tmp_path / "out" / "events.jsonl"):
        by_incident.setdefault(e["event_id"], []).append(e)
    assert by_incident
    for events in by_incident.values():
        kinds = [e["kind"] for e in events]
        assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("end") == 1, kinds
        assert all(e["track_ids"] == events[0]["track_ids"] for e in events), "an end names its tracks too"
