"""JSON Lines sink: one record per frame, written per record so a stopped run leaves whole lines.

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
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from pipeline.frames import FrameResult
from pipeline.sinks.base import Sink, SinkContext

if TYPE_CHECKING:
    from pipeline.config import JsonlSinkConfig

log = logging.getLogger(__name__)

# The path that means standard output (`detect --jsonl -`, or `path: /dev/stdout` in a config).
STDOUT = Path("/dev/stdout")


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
    """An output file of one JSON object per line.

    - Each line goes out in one unbuffered write, so a stopped or killed run leaves whole lines.
    - A write that fails (a full disk: ENOSPC) cuts the file back to its last whole line and raises
      OSError naming the file and the cause.
    - The file is created by the first line (or by `finish`), not by `open`: a run that fails
      before its first record (a busy port, a bad camera) leaves the previous run's file as it was.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._ready = False
        self._file: BinaryIO | None = None
        self._size = 0  # bytes of whole lines written: where a failed write is cut back to

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ready = True

    def _create(self) -> BinaryIO:
        # Standard output through a duplicate of its descriptor: closing the sink leaves stdout open,
        # and nothing is truncated (opening /dev/stdout "wb" would truncate a redirected file).
        self._file = os.fdopen(os.dup(1), "wb", buffering=0) if self.path == STDOUT else self.path.open("wb", buffering=0)
        self._size = 0
        return self._file

    def write(self, record: dict[str, Any]) -> None:
        if not self._ready:
            raise RuntimeError(f"{self.path}: write before open")
        out = self._file or self._create()
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        data = memoryview(line)
        try:
            while data:  # a raw write may take only part (a disk filling up): the rest, or its error
                data = data[out.write(data) or 0:]
        except OSError as exc:
            self._cut_back(out)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        self._size += len(line)

    def _cut_back(self, out: BinaryIO) -> None:
        """Drops the part of a line a failed write left, so readers see whole lines only."""
        if not out.seekable():  # a pipe: what went out is gone
            return
        try:
            out.truncate(self._size)
            out.seek(self._size)
        except OSError as exc:  # the original error is the one to report; this one only adds to it
            log.error("%s: could not cut back a partly written line: %s", self.path, exc)

    def finish(self) -> None:
        """The run completed: creates the file if no line was written (an empty result)."""
        if self._ready and self._file is None:
            self._create()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._ready = False


class JsonlSink(Sink):
    """One JSON Lines record per frame (`type: jsonl`).

    Args:
        path: the output file (its folder is made at open; the file, replacing one that exists, at the
            first record or at the end of a run that wrote none).
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

    def finish(self) -> None:
        self._out.finish()

    def close(self) -> None:
        self._out.close()
