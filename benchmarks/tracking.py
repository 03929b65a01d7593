#!/usr/bin/env python3
"""Per-frame cost of the tracker at 30 and 100 detections per frame (synthetic moving boxes).

    .venv/bin/python benchmarks/tracking.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.frames import Detections  # noqa: E402
from pipeline.tracking import ByteTracker  # noqa: E402

FPS = 25.0


def moving_boxes(n: int, frames: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    start = rng.uniform([50, 50], [1800, 1000], (n, 2))
    velocity = rng.uniform(-120, 120, (n, 2))
    size = rng.uniform([30, 60], [60, 140], (n, 2))
    t = np.arange(frames)[:, None, None] / FPS
    centre = start[None] + velocity[None] * t + rng.normal(0, 1.5, (frames, n, 2))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=2).astype(np.float32)


def main() -> None:
    frames = 300
    for n in (30, 100):
        boxes = moving_boxes(n, frames)
        tracker = ByteTracker()
        times = []
        for f in range(frames):
            det = Detections(boxes[f], np.full(n, 0.9, np.float32), np.zeros(n, np.int64))
            t0 = time.perf_counter()
            tracker.update(det, f / FPS)
            times.append(time.perf_counter() - t0)
        ms = np.array(times[10:]) * 1000
        print(f"tracker, {n:3d} detections/frame: median {np.median(ms):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms")


if __name__ == "__main__":
    main()
