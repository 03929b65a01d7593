"""Output files as a user meets them through the CLI: a killed run, a full disk, a run that fails at
start. Real model, real video, real processes and signals."""

from __future__ import annotations

import signal
import time

import pytest
import zmq

from pipeline.config import load_config
from pipeline.graph import build_graph
from pipeline.runner import execute
from pipeline.stage import GraphFailed
from tests.helpers import count_video_frames, free_port, wait_for

from conftest import run_cli, start_cli


def test_sigkill_keeps_the_video_written_so_far(tmp_path, model_path, media):
    """A crash or power loss (SIGKILL: no handler runs) keeps all but the last fragment (<= 1 s)."""
    out, video = tmp_path / "crowd.jsonl", tmp_path / "crowd.mp4"
    proc = start_cli("detect", str(media / "crowd_overhead.mp4"), "--model", str(model_path), "--jsonl", str(out),
                     "--video", str(video), "--no-progress")
    try:
        assert wait_for(lambda: out.exists() and len(out.read_bytes().splitlines()) >= 80, 90), "no records in 90 s"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    records = len(out.read_bytes().splitlines())
    frames = count_video_frames(video)
    # The video sink runs beside the JSONL sink, so it may be a little behind or ahead of it; the
    # fragment being written when the process died (up to 1 s = 25 frames) is lost.
    assert frames >= 80 - 25 - 10, f"{frames} readable frames after SIGKILL at {records} records"
    assert frames <= records + 10


def test_detect_video_on_a_full_disk_exits_1_naming_the_cause(tmp_path, full_disk, model_path, media):
    video = full_disk / "v.mp4"
    result = run_cli("detect", str(media / "crowd_overhead.mp4"), "--model", str(model_path),
                     "--jsonl", str(tmp_path / "v.jsonl"), "--video", str(video), "--no-progress")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "No space left on device" in result.stderr and "v.mp4" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert f"wrote {video}" not in result.stdout


def test_a_run_that_fails_at_start_keeps_the_previous_runs_outputs(tmp_path, model_path, media):
    """A busy ZeroMQ port stops the run at start: the JSONL, events and video files of the run
    before stay as they were instead of being truncated."""
    port = free_port()
    ctx = zmq.Context()
    squatter = ctx.socket(zmq.PUB)
    squatter.bind(f"tcp://127.0.0.1:{port}")
    out = tmp_path / "out"
    out.mkdir()
    previous = {out / "frames.jsonl": b'{"seq": 0}\n', out / "events.jsonl": b'{"kind": "start"}\n',
                out / "floor.mp4": b"the previous run's video"}
    for path, content in previous.items():
        path.write_bytes(content)
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"""
cameras:
  - id: floor
    source: {{type: file, path: {media / 'crowd_overhead.mp4'}, max_frames: 50}}
    model: yolo
    zones: [{{id: danger, units: normalized, points: [[0.3, 0.45], [0.7, 0.45], [0.7, 0.95]]}}]
    rules: [{{id: intrusion, type: zone_intrusion, zone: danger, classes: [person], min_seconds: 0}}]
models:
  - {{id: yolo, path: {model_path}, classes: [person]}}
sinks:
  - {{type: jsonl, path: out/frames.jsonl}}
  - {{type: events, path: out/events.jsonl}}
  - {{type: video, path: out/floor.mp4}}
  - {{type: zmq, endpoint: 'tcp://127.0.0.1:{port}'}}
""")
    try:
        with pytest.raises(GraphFailed, match=f"cannot bind ZeroMQ PUB socket on tcp://127.0.0.1:{port}"):
            execute(build_graph(load_config(cfg)), handle_signals=False)
    finally:
        squatter.close(linger=0)
        ctx.term()
    assert {path: path.read_bytes() for path in previous} == previous


def test_a_completed_run_without_events_still_writes_an_empty_events_file(tmp_path, model_path, media):
    events = tmp_path / "events.jsonl"
    events.write_text('{"kind": "start", "from": "the previous run"}\n')
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"""
cameras:
  - id: floor
    source: {{type: file, path: {media / 'crowd_overhead.mp4'}, max_frames: 3}}
    model: yolo
    zones: [{{id: nowhere, points: [[0, 0], [2, 0], [2, 2]]}}]
    rules: [{{id: intrusion, type: zone_intrusion, zone: nowhere, min_seconds: 0}}]
models:
  - {{id: yolo, path: {model_path}}}
sinks:
  - {{type: events, path: {events}}}
""")
    t0 = time.monotonic()
    execute(build_graph(load_config(cfg)), handle_signals=False)
    assert events.read_text() == "", "this run's (empty) result replaces the previous run's"
    assert time.monotonic() - t0 < 60
