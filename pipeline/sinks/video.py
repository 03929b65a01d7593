"""Annotated video sink: boxes, labels and the camera's measured fps, one MP4 per camera.

Draws into a canvas owned by the sink (copied from the frame), so the frame itself stays untouched
for any other sink; the writer is released on close so the file is valid after SIGINT/SIGTERM."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.frames import FrameResult
from pipeline.sinks.base import Sink

log = logging.getLogger(__name__)

# Distinct BGR colours, picked by class id.
PALETTE: list[tuple[int, int, int]] = [
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
     (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
     (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
     (200, 149, 255), (199, 55, 255)]


@dataclass(slots=True)
class _CameraWriter:
    writer: cv2.VideoWriter
    canvas: np.ndarray
    path: Path
    last_mono: float | None = None
    fps: float = 0.0


def _fit_into(image: np.ndarray, canvas: np.ndarray) -> None:
    """Scales `image` to fit `canvas`, centred, keeping its aspect ratio; the rest is black."""
    ch, cw = canvas.shape[:2]
    h, w = image.shape[:2]
    scale = min(cw / w, ch / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    x, y = (cw - nw) // 2, (ch - nh) // 2
    canvas.fill(0)
    cv2.resize(image, (nw, nh), dst=canvas[y : y + nh, x : x + nw], interpolation=cv2.INTER_AREA)


def draw_overlay(canvas: np.ndarray, result: FrameResult) -> None:
    """Zones (filled red while any alert is open, else yellow outlines) and lines, with their ids."""
    overlay = result.overlay
    if overlay is None:
        return
    color = (0, 0, 255) if result.alerts else (0, 215, 255)
    for name, pts in overlay.zones.items():
        poly = pts.round().astype(np.int32)
        cv2.polylines(canvas, [poly], True, color, 2, cv2.LINE_AA)
        cv2.putText(canvas, name, tuple(poly[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    for name, (a, b) in overlay.lines.items():
        pa, pb = tuple(a.round().astype(int).tolist()), tuple(b.round().astype(int).tolist())
        cv2.line(canvas, pa, pb, (255, 255, 0), 2, cv2.LINE_AA)
        cv2.putText(canvas, name, pa, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    if result.alerts:
        text = "ALERT: " + ", ".join(result.alerts)
        h = canvas.shape[0]
        cv2.rectangle(canvas, (0, h - 28), (min(canvas.shape[1], 14 + 11 * len(text)), h), (0, 0, 200), -1)
        cv2.putText(canvas, text, (8, h - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)


def draw_detections(canvas: np.ndarray, result: FrameResult) -> None:
    det = result.detections
    thickness = max(1, round(min(canvas.shape[:2]) / 400))
    track_ids = result.track_ids.tolist() if result.track_ids is not None else [-1] * len(det)
    for (x1, y1, x2, y2), conf, cls, track in zip(det.xyxy.astype(int).tolist(), det.confidence.tolist(),
                                                   det.class_id.tolist(), track_ids, strict=True):
        color = PALETTE[(track if track >= 0 else cls) % len(PALETTE)]
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        label = f"#{track} " if track >= 0 else ""
        label += f"{result.class_names.get(cls, str(cls))} {conf:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(y1 - th - base - 2, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1)
        cv2.putText(canvas, label, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)


class VideoSink(Sink):
    def __init__(self, path_template: Path, *, fps: float | None, codec: str = "mp4v", source_fps: Callable[[str], float | None]) -> None:
        self.path_template = str(path_template)
        self.name = f"video:{Path(self.path_template).name}"
        self.fps = fps
        self.codec = codec
        self.source_fps = source_fps
        self._writers: dict[str, _CameraWriter] = {}
        self.paths: list[Path] = []

    def path_for(self, camera_id: str) -> Path:
        return Path(self.path_template.replace("{camera}", camera_id))

    def open(self) -> None:
        pass  # writers open on each camera's first frame, when its size is known

    def _open_camera(self, result: FrameResult) -> _CameraWriter:
        frame = result.frame
        path = self.path_for(frame.camera_id)
        # A camera removed and added again in this run (config reload) gets a new file instead of
        # overwriting the video it already wrote: cam.mp4, cam-2.mp4, ...
        part = 2
        while path in self.paths:
            path = self.path_for(frame.camera_id).with_stem(f"{self.path_for(frame.camera_id).stem}-{part}")
            part += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        fps = self.fps or self.source_fps(frame.camera_id) or 25.0
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*self.codec), fps, (frame.width, frame.height))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write video {path} with codec {self.codec!r} at {frame.width}x{frame.height}")
        cam = _CameraWriter(writer, np.empty_like(frame.image), path)
        self._writers[frame.camera_id] = cam
        self.paths.append(path)
        log.info("writing annotated video %s (%dx%d @ %.1f fps)", path, frame.width, frame.height, fps)
        return cam

    def write(self, result: FrameResult) -> None:
        frame = result.frame
        cam = self._writers.get(frame.camera_id) or self._open_camera(result)
        if cam.last_mono is not None:
            dt = frame.capture_mono - cam.last_mono
            if dt > 0:
                cam.fps = 1.0 / dt if cam.fps == 0 else 0.9 * cam.fps + 0.1 / dt
        cam.last_mono = frame.capture_mono
        if frame.image.shape == cam.canvas.shape:
            np.copyto(cam.canvas, frame.image)
            draw_overlay(cam.canvas, result)
            draw_detections(cam.canvas, result)
        else:
            # A directory of images of mixed sizes: one video file has one size, so this frame is
            # drawn at its own size and fitted (letterboxed, black bars) into the file's.
            drawn = frame.image.copy()
            draw_overlay(drawn, result)
            draw_detections(drawn, result)
            _fit_into(drawn, cam.canvas)
        header = f"{frame.camera_id}  {cam.fps:.1f} fps"
        (tw, th), base = cv2.getTextSize(header, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 2)
        cv2.rectangle(cam.canvas, (0, 0), (tw + 16, th + base + 12), (0, 0, 0), -1)
        cv2.putText(cam.canvas, header, (8, th + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 2, cv2.LINE_AA)
        cam.writer.write(cam.canvas)

    def end_camera(self, camera_id: str) -> None:
        cam = self._writers.pop(camera_id, None)
        if cam is not None:
            cam.writer.release()

    def close(self) -> None:
        for cam in self._writers.values():
            cam.writer.release()
        self._writers.clear()
