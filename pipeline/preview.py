"""What the status page shows: each camera's newest annotated frame, its current tracks, and the
recent events with their evidence files.

Costs nothing when nobody looks. The pipeline only stores a reference to each camera's newest
FrameResult (one attribute store per frame, no copy: a decoded frame is never written to again)
and appends each event to a bounded deque. Drawing and JPEG encoding happen on request, on the
HTTP server's threads, once per new frame whatever the number of viewers (the JPEG is cached by
the frame's sequence number).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.draw import annotate
from pipeline.frames import Event, FrameResult

RECENT_EVENTS = 100
JPEG_QUALITY = 80


@dataclass(frozen=True, slots=True)
class Jpeg:
    """One encoded picture of a camera.

    Args:
        seq: the frame's sequence number.
        data: the JPEG bytes.
        width, height: its size (the camera's frame size).
    """

    seq: int
    data: bytes
    width: int
    height: int


class Previews:
    """The newest frame of each camera and the recent events; safe to use from any thread."""

    def __init__(self, recent_events: int = RECENT_EVENTS) -> None:
        self._latest: dict[str, FrameResult] = {}
        self._tracked: set[str] = set()  # cameras whose analytics stage publishes (with track ids)
        self._jpegs: dict[str, Jpeg] = {}
        self._encode_lock = threading.Lock()
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=recent_events)
        self._evidence: collections.deque[str] = collections.deque(maxlen=4 * recent_events)

    # ------------------------------------------------------------------ the pipeline's side

    def tracked(self, camera_id: str) -> None:
        """Marks a camera whose analytics stage publishes its frames (with tracks and alerts), so the
        untracked results postprocess has for it are not shown."""
        self._tracked.add(camera_id)

    def offer(self, result: FrameResult, *, from_analytics: bool = False) -> None:
        """The camera's newest result; kept (by reference) when it has a picture."""
        camera_id = result.frame.camera_id
        if result.frame.image is None or (not from_analytics and camera_id in self._tracked):
            return
        self._latest[camera_id] = result

    def add_event(self, event: Event) -> None:
        """An event as the sinks get it (with its snapshot and clip paths)."""
        self.events.append(event.to_dict())
        for path in (event.snapshot, event.clip):
            if path:
                self._evidence.append(str(Path(path).resolve()))

    def forget(self, camera_id: str) -> None:
        """A removed camera: its last frame is no longer shown."""
        self._latest.pop(camera_id, None)
        self._jpegs.pop(camera_id, None)
        self._tracked.discard(camera_id)

    # ------------------------------------------------------------------- the viewers' side

    def latest(self, camera_id: str) -> FrameResult | None:
        return self._latest.get(camera_id)

    def jpeg(self, camera_id: str) -> Jpeg | None:
        """The newest frame of the camera, annotated and encoded (cached per frame), or None."""
        result = self._latest.get(camera_id)
        if result is None:
            return None
        cached = self._jpegs.get(camera_id)
        if cached is not None and cached.seq == result.frame.seq:
            return cached
        with self._encode_lock:  # many viewers of one new frame: one encode
            cached = self._jpegs.get(camera_id)
            if cached is not None and cached.seq == result.frame.seq:
                return cached
            canvas = annotate(result)
            ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                return cached
            jpeg = Jpeg(result.frame.seq, buf.tobytes(), int(canvas.shape[1]), int(canvas.shape[0]))
            self._jpegs[camera_id] = jpeg
            return jpeg

    def tracks(self, camera_id: str) -> dict[str, Any] | None:
        """The camera's current detections (boxes in frame pixels, track ids, class names) and the
        frame's size, for the zone helper; None before its first frame."""
        result = self._latest.get(camera_id)
        if result is None:
            return None
        det = result.detections
        track_ids = det.track_id.tolist() if det.track_id is not None else [-1] * len(det)
        boxes = np.round(det.xyxy.astype(np.float64), 1).tolist()
        return {
            "seq": result.frame.seq, "width": result.frame.width, "height": result.frame.height,
            "alerts": list(result.alerts),
            "tracks": [{"track_id": t, "class_name": result.class_names.get(c, str(c)), "box": b}
                       for t, c, b in zip(track_ids, det.class_id.tolist(), boxes, strict=True)],
        }

    def evidence_file(self, path: str) -> Path | None:
        """`path` when a recent event named it as its snapshot or clip and it exists; else None.
        Only those files are served: no other path on the box can be asked for."""
        try:
            wanted = str(Path(path).resolve())
        except (OSError, ValueError):
            return None
        if wanted not in self._evidence:
            return None
        file = Path(wanted)
        return file if file.is_file() else None
