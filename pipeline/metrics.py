"""Per-stage and per-camera counters: items, busy time, frame age at pickup, drops by reason.

Each stage thread writes only its own StageMetrics (keyed by stage name) and its cameras' counters,
so writers need no lock; the registry itself is locked, and readers (progress bar, summary) tolerate
a value that is one frame old. Ages are kept in fixed-size numpy windows so recording never allocates.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

import numpy as np

AGE_WINDOW = 8192
_STAGE_ORDER = {"capture": 0, "preprocess": 1, "inference": 2, "postprocess": 3, "analytics": 4, "evidence": 5, "sink": 6}


class AgeWindow:
    """The last AGE_WINDOW frame ages (ms), preallocated."""

    def __init__(self, size: int = AGE_WINDOW) -> None:
        self._values = np.zeros(size, np.float64)
        self._count = 0

    def add(self, age_ms: float) -> None:
        self._values[self._count % self._values.shape[0]] = age_ms
        self._count += 1

    def percentiles(self, *qs: float) -> tuple[float, ...]:
        n = min(self._count, self._values.shape[0])
        if n == 0:
            return tuple(float("nan") for _ in qs)
        return tuple(float(v) for v in np.percentile(self._values[:n], qs))

    @property
    def count(self) -> int:
        return self._count


class StageMetrics:
    def __init__(self, name: str) -> None:
        self.name = name
        self.items = 0
        self.calls = 0
        self.busy_s = 0.0
        self.ages = AgeWindow()

    def add_work(self, seconds: float, items: int) -> None:
        self.busy_s += seconds
        self.items += items
        self.calls += 1


class CameraMetrics:
    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id
        self.frames_in = 0
        self.frames_out = 0
        self.drops: collections.Counter[str] = collections.Counter()
        self.total_frames: int | None = None  # known for files: drives the progress bar
        self.source_fps: float | None = None  # native rate once the source is open
        self.output_ages = AgeWindow()
        self.first_in_mono: float | None = None
        self.last_out_mono: float | None = None


@dataclass(frozen=True, slots=True)
class StageSummary:
    name: str
    items: int
    mean_ms_per_item: float
    mean_ms_per_call: float
    age_p50_ms: float
    age_p99_ms: float


@dataclass(frozen=True, slots=True)
class CameraSummary:
    camera_id: str
    frames_in: int
    frames_out: int
    drops: dict[str, int]
    fps_out: float
    age_p50_ms: float
    age_p99_ms: float


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stages: dict[str, StageMetrics] = {}
        self._cameras: dict[str, CameraMetrics] = {}
        self.started_mono = time.monotonic()

    def stage(self, name: str) -> StageMetrics:
        with self._lock:
            return self._stages.setdefault(name, StageMetrics(name))

    def camera(self, camera_id: str) -> CameraMetrics:
        with self._lock:
            return self._cameras.setdefault(camera_id, CameraMetrics(camera_id))

    def count_drop(self, camera_id: str, reason: str) -> None:
        cam = self.camera(camera_id)
        with self._lock:
            cam.drops[reason] += 1

    def stage_summaries(self) -> list[StageSummary]:
        """Per stage, in data-path order (capture, preprocess, inference, postprocess, sinks)."""
        with self._lock:
            # Stable sort: within a kind, the order stages were registered (the graph's order).
            stages = sorted(self._stages.values(), key=lambda s: _STAGE_ORDER.get(s.name.split("[")[0], 99))
        out = []
        for s in stages:
            p50, p99 = s.ages.percentiles(50, 99)
            out.append(
                StageSummary(
                    name=s.name,
                    items=s.items,
                    mean_ms_per_item=1000.0 * s.busy_s / s.items if s.items else float("nan"),
                    mean_ms_per_call=1000.0 * s.busy_s / s.calls if s.calls else float("nan"),
                    age_p50_ms=p50,
                    age_p99_ms=p99,
                )
            )
        return out

    def camera_summaries(self) -> list[CameraSummary]:
        with self._lock:
            cams = list(self._cameras.values())
        out = []
        for c in cams:
            p50, p99 = c.output_ages.percentiles(50, 99)
            span = (
                c.last_out_mono - c.first_in_mono
                if c.first_in_mono is not None and c.last_out_mono is not None
                else 0.0
            )
            out.append(
                CameraSummary(
                    camera_id=c.camera_id,
                    frames_in=c.frames_in,
                    frames_out=c.frames_out,
                    drops=dict(c.drops),
                    fps_out=c.frames_out / span if span > 0 else float("nan"),
                    age_p50_ms=p50,
                    age_p99_ms=p99,
                )
            )
        return out

    def frames_out_total(self) -> int:
        with self._lock:
            return sum(c.frames_out for c in self._cameras.values())

    def total_frames_known(self) -> int | None:
        """Sum of frame counts of all cameras when every camera knows its length, else None."""
        with self._lock:
            totals = [c.total_frames for c in self._cameras.values()]
        if not totals or any(t is None for t in totals):
            return None
        return int(sum(totals))  # type: ignore[arg-type]
