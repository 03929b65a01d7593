"""A camera's lifecycle in a running graph with the real model: a rule camera restarted while the
evidence stage still finishes its clip, and a drain that arrives while a camera joins."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from pipeline.config import load_config
from pipeline.graph import build_graph
from pipeline.stage import CameraSet
from tests.helpers import Running, count_video_frames, read_jsonl, wait_for


def rule_camera_config(path: Path, media: Path, model_path: Path, evidence: Path, clear_seconds: float) -> Path:
    path.write_text(f"""
cameras:
  - id: floor
    source: {{type: file, path: {media / 'crowd_overhead.mp4'}, loop: true}}
    model: yolo
    zones:
      - {{id: all, units: normalized, points: [[0.01, 0.01], [0.99, 0.01], [0.99, 0.99], [0.01, 0.99]]}}
    rules:
      - {{id: intrusion, type: zone_intrusion, zone: all, classes: [person], min_seconds: 0,
          clear_seconds: {clear_seconds}, cooldown_seconds: 1000}}
models:
  - {{id: yolo, path: {model_path}, classes: [person]}}
sinks:
  - {{type: jsonl, path: {path.parent / 'frames.jsonl'}}}
evidence: {{dir: {evidence}, pre_seconds: 2.0, post_seconds: 60.0}}
""")
    return path


def test_a_rule_camera_restarted_while_its_clip_is_written_keeps_running(tmp_path, media, model_path):
    # The restart (a reload that changes the camera) removes the old camera while its clip is still
    # open: its end of stream makes the evidence stage write the clip. The removal must wait for
    # that, and the new camera's first frames must find their own ring (no KeyError, no exit 1).
    evidence = tmp_path / "evidence"
    cfg = rule_camera_config(tmp_path / "site.yaml", media, model_path, evidence, clear_seconds=1.0)
    graph = build_graph(load_config(cfg), reloadable=True)
    run = Running(graph)
    try:
        assert wait_for(lambda: list((evidence / "snapshots").glob("*.jpg")), 90), "no incident started"
        cam = graph.ctx.metrics.camera("floor")
        seen = cam.frames_out
        assert wait_for(lambda: cam.frames_out >= seen + 20, 60)  # the open clip gathers frames
        stages = sorted(s.name for s in graph.runner.stages)
        counters = (len(graph.ctx.metrics.stages()), len(graph.ctx.metrics.cameras()))
        rule_camera_config(cfg, media, model_path, evidence, clear_seconds=2.0)
        report = graph.apply(load_config(cfg))
        assert report.restarted == ["floor"] and report.failed == {}
        # The removal returned: the old camera's clip is written and closed.
        clips = sorted((evidence / "clips").glob("*.mp4"))
        assert clips and all(count_video_frames(clip) >= 2 for clip in clips)
        out = cam.frames_out
        assert wait_for(lambda: graph.runner.errors or cam.frames_out >= out + 10, 60)
        assert not graph.runner.errors, graph.runner.errors[0].error
        assert sorted(s.name for s in graph.runner.stages) == stages, "the old camera's stages are kept"
        assert (len(graph.ctx.metrics.stages()), len(graph.ctx.metrics.cameras())) == counters  # reused by name
    finally:
        run.finish()
    seqs = [r["seq"] for r in read_jsonl(tmp_path / "frames.jsonl")]
    assert seqs.count(0) == 2, "the restarted camera starts a new stream"


def drain_while_joining(cameras: CameraSet, drain: Callable[[], None]) -> list[bool]:
    """Makes `cameras.add` start a drain on another thread, and give it time to seal the graph,
    before the camera joins (a drain arriving mid-join). Returns the list of join results."""
    joins: list[bool] = []
    add = cameras.add

    def add_during_drain(camera_id: str) -> bool:
        draining = threading.Thread(target=drain, daemon=True)
        draining.start()
        draining.join(0.5)
        joins.append(add(camera_id))
        return joins[-1]

    cameras.add = add_during_drain  # type: ignore[method-assign]
    return joins


def test_a_drain_during_a_camera_join_lets_the_join_finish_and_drains_the_camera(tmp_path, model_path):
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"""
cameras:
  - {{id: a, source: {{type: synthetic, live: true, fps: 4, width: 320, height: 240}}, model: yolo}}
  - {{id: b, source: {{type: synthetic, live: true, fps: 4, width: 320, height: 240}}, model: yolo}}
models:
  - {{id: yolo, path: {model_path}}}
sinks:
  - {{type: jsonl, path: {tmp_path / 'all.jsonl'}}}
  - {{type: jsonl, path: {tmp_path / 'b.jsonl'}, cameras: [b]}}
""")
    loaded = load_config(cfg)
    graph = build_graph(loaded)
    b_config = loaded.config.cameras[1]
    run = Running(graph)
    try:
        assert wait_for(lambda: graph.ctx.metrics.camera("b").frames_out > 2, 60)
        graph.remove_camera("b")
        # Camera b's sink now serves no camera; the next join of b is interrupted by a drain.
        sink_cameras = graph.wiring.sinks[1].cameras
        joins = drain_while_joining(sink_cameras, graph.runner.drain)
        graph.add_camera(b_config)
        # All or nothing: b is in every stage it feeds (the drain waited for the join), so its
        # end of stream reaches its sink; never in the model lane but refused by its sink.
        assert joins == [True], "the drain sealed the graph halfway through the camera's join"
        assert wait_for(lambda: not graph.runner.alive(), 30), f"the drain hangs: {graph.runner.alive()}"
        assert "b" not in sink_cameras and sink_cameras.finished()
    finally:
        run.finish()
