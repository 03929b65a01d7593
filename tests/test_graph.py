"""The whole graph with real parts: real video decode, real ONNX Runtime, real files written."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from pipeline.config import load_config
from pipeline.graph import Graph, build_graph, load_models
from pipeline.metrics import CameraState
from pipeline.runner import execute
from pipeline.stage import GraphFailed, Stage, StageContext
from tests.helpers import count_video_frames, free_port, read_jsonl


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "graph.yaml"
    path.write_text(text)
    return path


def test_block_policy_loses_nothing_on_a_whole_video(tmp_path, model_path, media):
    cfg = write_config(tmp_path, f"""
cameras:
  - id: yard
    source: {{type: file, path: {media / 'people_small.mp4'}}}
    model: yolo
models:
  - {{id: yolo, path: {model_path}}}
sinks:
  - {{type: jsonl, path: out/yard.jsonl}}
  - {{type: video, path: out/yard.mp4}}
""")
    graph = build_graph(load_config(cfg))
    summary = execute(graph, handle_signals=False)
    records = read_jsonl(tmp_path / "out" / "yard.jsonl")
    [cam] = summary.cameras
    assert cam.frames_in == 50 and cam.frames_out == 50 and cam.drops == {}
    assert [r["seq"] for r in records] == list(range(50))
    assert all(r["camera"] == "yard" and r["source"] == "people_small.mp4" for r in records)
    assert all((r["width"], r["height"]) == (320, 240) and r["age_ms"] >= 0 for r in records)
    for r in records:
        for d in r["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= 320 and 0 <= y1 <= y2 <= 240
            assert d["class_name"] and 0.25 < d["confidence"] <= 1
    assert count_video_frames(tmp_path / "out" / "yard.mp4") == 50
    assert not [t for t in threading.enumerate() if t.name.startswith(("capture[", "preprocess[", "inference[", "sink["))]


def test_drop_oldest_bounds_frame_age_when_the_model_is_slower_than_the_camera(tmp_path, model_path):
    # A 60 fps live camera into a ~10-15 fps model for 4 s: most frames must be dropped, counted,
    # and the frames that do come out must stay fresh (no queue of stale frames building up).
    cfg = write_config(tmp_path, f"""
cameras:
  - id: fast
    source: {{type: synthetic, width: 640, height: 480, fps: 60, frames: 240, live: true}}
    model: yolo
    queue: {{size: 2}}
models:
  - {{id: yolo, path: {model_path}}}
sinks:
  - {{type: jsonl, path: out/fast.jsonl}}
pipeline: {{slots: 2, queue_size: 2}}
""")
    loaded = load_config(cfg)
    assert loaded.config.cameras[0].policy == "drop_oldest"
    graph = build_graph(loaded)
    summary = execute(graph, handle_signals=False)
    [cam] = summary.cameras
    records = read_jsonl(tmp_path / "out" / "fast.jsonl")
    assert cam.frames_in == 240
    assert cam.drops.get("queue_full", 0) > 100
    assert cam.frames_out + cam.drops["queue_full"] == cam.frames_in, "every frame is either output or counted"
    assert len(records) == cam.frames_out
    ages = np.array([r["age_ms"] for r in records])
    assert np.percentile(ages, 99) < 2000, f"p99 frame age {np.percentile(ages, 99):.0f} ms"
    quarter = len(ages) // 4
    assert ages[-quarter:].mean() < 2 * ages[:quarter].mean() + 200, "frame age must not trend upward"
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(seqs)


class Boom(Stage):
    def __init__(self) -> None:
        super().__init__("boom")
        self.raised_at = 0.0

    def run(self, ctx: StageContext) -> None:
        ctx.stop.wait(0.5)
        self.raised_at = time.monotonic()
        raise RuntimeError("boom: injected failure")


def test_a_stage_that_raises_stops_the_graph_within_2s_and_surfaces_the_error(tmp_path, model_path):
    cfg = write_config(tmp_path, f"""
cameras:
  - id: endless
    source: {{type: synthetic, fps: 30, live: true}}
    model: yolo
models:
  - {{id: yolo, path: {model_path}}}
sinks:
  - {{type: jsonl, path: out/endless.jsonl}}
""")
    boom = Boom()
    graph = build_graph(load_config(cfg), extra_stages=lambda ctx: [boom])
    with pytest.raises(GraphFailed) as info:
        execute(graph, handle_signals=False)
    assert time.monotonic() - boom.raised_at < 2.0
    assert info.value.stage == "boom"
    assert isinstance(info.value.__cause__, RuntimeError) and "injected failure" in str(info.value.__cause__)
    assert graph.runner.alive() == []
    # The sink closed its file on the way down: every line is whole.
    read_jsonl(tmp_path / "out" / "endless.jsonl")


def test_multi_camera_shared_model_with_batching(tmp_path, model_path, media):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("bus.jpg", "dog.jpg", "person.jpg"):
        (images / name).symlink_to(media / name)
    cfg = write_config(tmp_path, f"""
cameras:
  - {{id: yard, source: {{type: file, path: {media / 'people_small.mp4'}, max_frames: 20}}, model: yolo}}
  - {{id: stills, source: {{type: images, path: {images}}}, model: yolo}}
models:
  - {{id: yolo, path: {model_path}, batch: 4, max_wait_ms: 20}}
sinks:
  - {{type: jsonl, path: out/all.jsonl}}
  - {{type: jsonl, path: out/stills.jsonl, cameras: [stills]}}
""")
    graph = build_graph(load_config(cfg))
    execute(graph, handle_signals=False)
    records = read_jsonl(tmp_path / "out" / "all.jsonl")
    by_cam = {c: [r for r in records if r["camera"] == c] for c in ("yard", "stills")}
    assert [r["seq"] for r in by_cam["yard"]] == list(range(20))
    assert [r["source"] for r in by_cam["stills"]] == ["bus.jpg", "dog.jpg", "person.jpg"]
    assert [r["source"] for r in read_jsonl(tmp_path / "out" / "stills.jsonl")] == ["bus.jpg", "dog.jpg", "person.jpg"]
    bus = by_cam["stills"][0]["detections"]
    assert [d["class_name"] for d in bus].count("person") == 4
    inference = next(s for s in graph.ctx.metrics.stage_summaries() if s.name == "inference[yolo]")
    assert inference.items == 23 and inference.mean_ms_per_call > inference.mean_ms_per_item


def test_a_camera_whose_file_cannot_be_read_fails_alone_and_the_others_finish(tmp_path, model_path, media):
    # A text file named .mp4 among good videos: that camera is failed and named (the command exits
    # 1 at the end, see runner.RunSummary.failed_cameras); the others write every frame.
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 50)
    cfg = write_config(tmp_path, f"""
cameras:
  - {{id: yard, source: {{type: file, path: {media / 'people_small.mp4'}}}, model: yolo}}
  - {{id: notes, source: {{type: file, path: {notes}}}, model: yolo}}
  - {{id: dock, source: {{type: file, path: {media / 'people_small.mp4'}, max_frames: 10}}, model: yolo}}
models:
  - {{id: yolo, path: {model_path}, batch: 2}}
sinks:
  - {{type: jsonl, path: out/all.jsonl}}
""")
    loaded = load_config(cfg)
    # Built without build_graph's up-front file checks, which may refuse such a file before the
    # run: a file can also turn unreadable between those checks and its camera's start.
    graph = Graph(loaded, load_models(loaded), reloadable=False)
    summary = execute(graph, handle_signals=False)
    assert summary.failed_cameras == ["notes"]
    records = read_jsonl(tmp_path / "out" / "all.jsonl")
    assert [r["seq"] for r in records if r["camera"] == "yard"] == list(range(50))
    assert [r["seq"] for r in records if r["camera"] == "dock"] == list(range(10))
    state = graph.ctx.metrics.camera("notes")
    assert state.state is CameraState.FAILED and "cannot open video" in state.state_reason


def test_a_busy_zeromq_endpoint_fails_the_run_with_a_clear_error_and_closes_the_other_outputs(tmp_path, model_path, media):
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    context = zmq.Context()
    busy = context.socket(zmq.PUB)
    busy.bind(endpoint)  # someone else's publisher holds the port
    try:
        cfg = write_config(tmp_path, f"""
cameras:
  - id: yard
    source: {{type: file, path: {media / 'people_small.mp4'}}}
    model: yolo
    zones: [{{id: all, units: normalized, points: [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]}}]
    rules: [{{id: in, type: zone_intrusion, zone: all}}]
models:
  - {{id: yolo, path: {model_path}}}
sinks:
  - {{type: jsonl, path: out/yard.jsonl}}
  - {{type: zmq, endpoint: '{endpoint}'}}
""")
        graph = build_graph(load_config(cfg))
        t0 = time.monotonic()
        with pytest.raises(GraphFailed) as info:
            execute(graph, handle_signals=False)
        assert time.monotonic() - t0 < 10
    finally:
        busy.close()
        context.term()
    assert f"cannot bind ZeroMQ PUB socket on {endpoint}" in str(info.value), info.value
    assert "Address already in use" in str(info.value)
    assert graph.runner.alive() == []
    frames = tmp_path / "out" / "yard.jsonl"
    if frames.exists():  # (a sink may create its file only with its first record)
        read_jsonl(frames)  # closed in whole lines
