"""Annotated video sink: boxes, labels and the camera's measured fps, one MP4 per camera.

Draws into a canvas owned by the sink (copied from the frame), so the frame itself stays untouched
for any other sink. Files are written by `VideoFile` (pipeline/sinks/mp4.py): fragmented MP4, so a
killed run keeps all but its last second, and every write error (a full disk) fails the sink with
an OSError naming the file instead of passing for success."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.draw import annotate, draw_header, fit_into
from pipeline.frames import FrameResult
from pipeline.sinks.base import Sink, SinkContext
from pipeline.sinks.mp4 import VideoFile

if TYPE_CHECKING:
    from pipeline.config import VideoSinkConfig

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _CameraWriter:
    writer: VideoFile
    canvas: np.ndarray
    path: Path
    last_mono: float | None = None
    fps: float = 0.0


class VideoSink(Sink):
    """Annotated MP4 per camera (`type: video`).

    Args:
        path_template: the output path; `{camera}` is replaced by the camera id.
        fps: the file's rate; None: the source's rate (`source_fps`), else 25.
        codec: FourCC code (see `pipeline.sinks.mp4.FOURCC_ENCODERS`).
        source_fps: camera id -> its source's native rate, if known.
    """

    needs_images = True

    @classmethod
    def from_config(cls, config: VideoSinkConfig, context: SinkContext) -> VideoSink:
        metrics = context.metrics
        return cls(config.path, fps=config.fps, codec=config.codec,
                   source_fps=lambda camera_id: metrics.camera(camera_id).source_fps)

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
        writer = VideoFile(path, fps=fps, width=frame.width, height=frame.height, codec=self.codec)
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
            annotate(result, out=cam.canvas)
        else:
            # A directory of images of mixed sizes: one video file has one size, so this frame is
            # drawn at its own size and fitted (letterboxed, black bars) into the file's.
            fit_into(annotate(result), cam.canvas)
        draw_header(cam.canvas, f"{frame.camera_id}  {cam.fps:.1f} fps")
        cam.writer.write(cam.canvas)

    def end_camera(self, camera_id: str) -> None:
        cam = self._writers.pop(camera_id, None)
        if cam is not None:
            cam.writer.close()

    def close(self) -> None:
        """Closes every file; the first that cannot be finished is raised once all are closed."""
        errors = []
        for cam in self._writers.values():
            try:
                cam.writer.close()
            except OSError as exc:
                errors.append(exc)
        self._writers.clear()
        if errors:
            raise errors[0]
