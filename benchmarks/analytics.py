#!/usr/bin/env python3
"""Cost of tracking + rules per frame, and end-to-end event latency.

    .venv/bin/python benchmarks/analytics.py [--seconds 30]

1. Tracker + all five rule types on synthetic moving boxes at 30 and 100 detections per frame
   (the per-frame work the analytics stage adds; target < 2 ms).
2. Event latency on the real pipeline: the crowd video replayed as a live camera (realtime: true)
   through YOLOv8n with a zone-intrusion rule; latency = capture of the frame that caused an event
   → the event handed to the ZeroMQ sink (p50 / p99).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_config
from pipeline.frames import Detections
from pipeline.graph import build_graph
from pipeline.paths import shared_dir
from pipeline.rules.debounce import Debouncer
from pipeline.rules.engine import Count, Dwell, FrameTracks, LineCrossing, Proximity, RuleEngine, ZoneIntrusion
from pipeline.rules.geometry import Line, Polygon
from pipeline.runner import execute
from pipeline.tracking import ByteTracker

FPS = 25.0


def moving_boxes(n: int, frames: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    start = rng.uniform([50, 50], [1800, 1000], (n, 2))
    velocity = rng.uniform(-120, 120, (n, 2))
    size = rng.uniform([30, 60], [60, 140], (n, 2))
    t = np.arange(frames)[:, None, None] / FPS
    centre = start[None] + velocity[None] * t + rng.normal(0, 1.5, (frames, n, 2))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=2).astype(np.float32)


def engine() -> RuleEngine:
    zone = Polygon("zone", np.array([[400, 300], [1400, 300], [1400, 900], [400, 900]], np.float64))
    line = Line("line", np.array([960.0, 0.0]), np.array([960.0, 1080.0]))

    def d(min_s: float) -> Debouncer:
        return Debouncer(min_seconds=min_s, clear_seconds=1.0, cooldown_seconds=10.0)

    return RuleEngine("bench", [
        ZoneIntrusion("intrusion", zone, frozenset({0}), "bottom_center", d(0.5)),
        Dwell("dwell", zone, frozenset({0}), "bottom_center", d(5.0)),
        Count("count", zone, frozenset({0}), "bottom_center", d(1.0), max_count=10),
        Proximity("near", frozenset({0}), frozenset({7}), "bottom_center", d(0.3), 1.0, True),
        LineCrossing("door", line, frozenset({0}), "bottom_center", "both", 2.0),
    ])


def rules_cost() -> None:
    frames = 300
    for n in (30, 100):
        boxes = moving_boxes(n, frames)
        classes = np.where(np.arange(n) % 10 == 0, 7, 0)  # a tenth are "trucks"
        tracker, rules = ByteTracker(), engine()
        track_ms, rules_ms = [], []
        for f in range(frames):
            det = Detections(boxes[f], np.full(n, 0.9, np.float32), classes)
            t0 = time.perf_counter()
            ids = tracker.update(det, f / FPS)
            t1 = time.perf_counter()
            ok = ids >= 0
            rules.process(FrameTracks("bench", f, f / FPS, 0.0, det.xyxy[ok], ids[ok], classes[ok], det.confidence[ok],
                                      {0: "person", 7: "truck"}))
            t2 = time.perf_counter()
            track_ms.append((t1 - t0) * 1000)
            rules_ms.append((t2 - t1) * 1000)
        total = np.array(track_ms[10:]) + np.array(rules_ms[10:])
        print(f"{n:3d} detections/frame: tracking {np.median(track_ms[10:]):.2f} ms + 5 rules {np.median(rules_ms[10:]):.2f} ms"
              f" = {np.median(total):.2f} ms median, {np.percentile(total, 99):.2f} ms p99")


def event_latency(seconds: float, slots: int) -> None:
    import zmq

    probe = zmq.Context.instance().socket(zmq.PUB)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(linger=0)
    shared = shared_dir()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        cfg = Path(tmp) / "latency.yaml"
        cfg.write_text(f"""
cameras:
  - id: floor
    source: {{type: file, path: {shared / 'media' / 'crowd_overhead.mp4'}, realtime: true, loop: true}}
    model: yolo
    queue: {{size: 1}}
    zones: [{{id: danger, units: normalized, points: [[0.3, 0.45], [0.7, 0.45], [0.7, 0.95], [0.3, 0.95]]}}]
    rules: [{{id: intrusion, type: zone_intrusion, zone: danger, classes: [person], min_seconds: 0,
             clear_seconds: 0.5, cooldown_seconds: 0}}]
models:
  - {{id: yolo, path: {shared / 'models' / 'yolov8n.onnx'}, classes: [person]}}
sinks:
  - {{type: zmq, endpoint: 'tcp://127.0.0.1:{port}'}}
pipeline: {{slots: {slots}}}
""")
        graph = build_graph(load_config(cfg))
        import threading

        threading.Timer(seconds, graph.runner.drain).start()
        summary = execute(graph, handle_signals=False)
        zmq_stage = next(s for s in summary.stages if s.name.startswith("sink["))
        cam = summary.cameras[0]
        print(f"event latency (capture → published), live 25 fps camera, slots {slots}, {seconds:.0f} s: {zmq_stage.items} events, "
              f"p50 {zmq_stage.age_p50_ms:.0f} ms, p99 {zmq_stage.age_p99_ms:.0f} ms "
              f"(frames out {cam.frames_out}, dropped {sum(cam.drops.values())}, frame age p50 {cam.age_p50_ms:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the event-latency run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rules_cost()
    for slots in (3, 2):  # the default ring, and the smallest (least buffering for live cameras)
        event_latency(args.seconds, slots)


if __name__ == "__main__":
    main()
