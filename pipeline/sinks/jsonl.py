"""JSON Lines sink: one record per frame, flushed per record so a stopped run leaves whole lines.

Record (documented in the README):
{"camera": str, "seq": int, "source": str, "capture_ts": float (wall clock, s),
 "age_ms": float (capture → written), "width": int, "height": int,
 "detected": bool (the model ran on this frame; false: skipped by detect_fps or motion gating, and
             its detections are the tracker's predictions on tracked cameras, else none),
 "detections": [{"class_id": int, "class_name": str, "confidence": float, "box": [x1, y1, x2, y2]}]}
Cameras with rules add "track_id" to each detection and "alerts" (rules with an open incident).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from pipeline.frames import FrameResult
from pipeline.sinks.base import Sink, SinkContext

if TYPE_CHECKING:
    from pipeline.config import JsonlSinkConfig


def frame_record(result: FrameResult, now_mono: float) -> dict[str, Any]:
    """The JSON Lines record of one frame (format in the module docstring).

    Args:
        result: the frame and its detections.
        now_mono: monotonic time of writing, for `age_ms`.
    """
    frame, det = result.frame, result.detections
    names = result.class_names
    boxes = det.xyxy.astype(np.float64).round(2).tolist()
    confidences = det.confidence.astype(np.float64).round(5).tolist()
    class_ids = det.class_id.tolist()
    detections = [
        {"class_id": c, "class_name": names.get(c, str(c)), "confidence": s, "box": b}
        for c, s, b in zip(class_ids, confidences, boxes, strict=True)
    ]
    if det.track_id is not None:  # cameras with rules are tracked: -1 = not (yet) on a track
        for d, track_id in zip(detections, det.track_id.tolist(), strict=True):
            d["track_id"] = track_id
    record = {
        "camera": frame.camera_id,
        "seq": frame.seq,
        "source": frame.source_name,
        "capture_ts": round(frame.capture_wall, 6),
        "age_ms": round((now_mono - frame.capture_mono) * 1000.0, 3),
        "width": frame.width,
        "height": frame.height,
        "detected": result.detected,
        "detections": detections,
    }
    if det.track_id is not None:
        record["alerts"] = list(result.alerts)
    return record


class JsonLinesFile:
    """An output file of one JSON object per line, flushed per line so a stopped run leaves whole lines."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError(f"{self.path}: write before open")
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class JsonlSink(Sink):
    """One JSON Lines record per frame (`type: jsonl`).

    Args:
        path: the output file (created with its folder; replaced if it exists).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = f"jsonl:{self.path.name}"
        self._out = JsonLinesFile(self.path)

    @classmethod
    def from_config(cls, config: JsonlSinkConfig, context: SinkContext) -> JsonlSink:
        return cls(config.path)

    def open(self) -> None:
        self._out.open()

    def write(self, result: FrameResult) -> None:
        self._out.write(frame_record(result, time.monotonic()))

    def close(self) -> None:
        self._out.close()
