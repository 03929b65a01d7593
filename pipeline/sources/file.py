"""Video file source (OpenCV/FFmpeg decoding), optionally looped or cut at `max_frames`.

Like every source it only opens, reads and closes: pacing, stamping, queueing and reconnecting are
the capture stage's job (sources/base.py, sources/live.py).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from pipeline.sources.base import Source, SourceError, SourceFrame, SourceInfo, read_or_grab

if TYPE_CHECKING:
    from pipeline.config import FileSourceConfig

log = logging.getLogger(__name__)

# Container rates above this are taken for a time base, not a frame rate (slow-motion phone video
# goes up to 240-480 frames/s).
MAX_PLAUSIBLE_FPS = 480.0
FALLBACK_FPS = 25.0  # the commonest camera rate, used when the container's is not plausible


class VideoFileSource(Source):
    """A video file decoded by OpenCV/FFmpeg (`type: file`), optionally looped or cut at max_frames."""

    @classmethod
    def from_config(cls, config: FileSourceConfig, *, camera_id: str, read_timeout_s: float) -> VideoFileSource:
        return cls(config.path, loop=config.loop, max_frames=config.max_frames)

    def __init__(self, path: Path, *, loop: bool = False, max_frames: int | None = None) -> None:
        self.path = Path(path)
        self.loop = loop
        self.max_frames = max_frames
        self._frames_total = 0
        self._cap: cv2.VideoCapture | None = None
        self._frames_read = 0

    @property
    def name(self) -> str:
        return self.path.name

    def open(self) -> SourceInfo:
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path} (check the camera's source path)")
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise SourceError(f"OpenCV/FFmpeg cannot open video {self.path}: not a video or unsupported codec")
        self._cap = cap
        fps = checked_fps(cap.get(cv2.CAP_PROP_FPS), self.path)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        total = None if self.loop or count <= 0 else count
        if self.max_frames is not None:
            total = min(total, self.max_frames) if total is not None else self.max_frames
        self._frames_total = 0
        return SourceInfo(fps=fps, total_frames=total)

    def read(self, decode: bool = True) -> SourceFrame | None:
        if self._cap is None:
            raise SourceError(f"video {self.path} read before open()")
        if self.max_frames is not None and self._frames_total >= self.max_frames:
            return None
        ok, image = read_or_grab(self._cap, decode)
        if not ok and self.loop and self._frames_read > 0:
            log.debug("looping %s after %d frames", self.path, self._frames_read)
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._frames_read = 0
            ok, image = read_or_grab(self._cap, decode)
        if not ok:
            expected = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
            # FFmpeg's count can be off by a frame or two; more than that means the file is cut
            # short or damaged. Report it rather than end as if all was well.
            if not self.loop and expected > 0 and self._frames_total < expected - 2:
                log.warning("video %s ended after %d of %d frames: truncated or corrupt?", self.path,
                            self._frames_total, expected)
            return None
        self._frames_read += 1
        self._frames_total += 1
        return SourceFrame(image, self.path.name, self._cap.get(cv2.CAP_PROP_POS_MSEC))

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def checked_fps(fps: float, path: Path) -> float:
    """The container's frame rate if it is plausible, else FALLBACK_FPS with a warning.

    A file's stream time (pts = frame index / rate), its pacing when replayed and the rate of the
    videos written from it all come from this number, so a bogus one (0, NaN, or a time base such
    as 1000 or 90000 reported as the rate) would make rule durations and clips wrong.

    Args:
        fps: what OpenCV reports as CAP_PROP_FPS.
        path: the video, for the warning.
    """
    if math.isfinite(fps) and 0 < fps <= MAX_PLAUSIBLE_FPS:
        return float(fps)
    log.warning("video %s reports %r frames/s, not a plausible rate: timing it at %g frames/s", path, fps, FALLBACK_FPS)
    return FALLBACK_FPS
