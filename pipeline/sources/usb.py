"""USB / V4L2 camera source (OpenCV's V4L2 backend).

Like every source it only opens, reads and closes: pacing, stamping, queueing and reconnecting are
the capture stage's job (sources/base.py, sources/live.py).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import cv2

from pipeline.sources.base import Source, SourceError, SourceFrame, SourceInfo, read_or_grab

if TYPE_CHECKING:
    from pipeline.config import UsbSourceConfig


class UsbSource(Source):
    """A V4L2 camera, /dev/videoN or an index (`type: usb`); one object per connection."""

    @classmethod
    def from_config(cls, config: UsbSourceConfig, *, camera_id: str, read_timeout_s: float) -> UsbSource:
        return cls(config.device, width=config.width, height=config.height, fps=config.fps, fourcc=config.fourcc,
                   open_timeout_s=config.open_timeout_s, read_timeout_s=read_timeout_s)

    def __init__(self, device: str | int, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, fourcc: str | None = None, open_timeout_s: float = 5.0,
                 read_timeout_s: float = 3.0) -> None:
        self.device = device
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self._cap: cv2.VideoCapture | None = None

    @property
    def name(self) -> str:
        return str(self.device) if isinstance(self.device, str) else f"/dev/video{self.device}"

    def open(self) -> SourceInfo:
        if not os.path.exists(self.name):
            raise SourceError(f"no camera device {self.name} (is it plugged in? `ls /dev/video*` lists the devices)")
        if not os.access(self.name, os.R_OK | os.W_OK):
            raise SourceError(f"no permission to open {self.name} (add the user to the 'video' group)")
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000)]
        cap = cv2.VideoCapture(self.name, cv2.CAP_V4L2, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"OpenCV/V4L2 cannot open {self.name}: busy (used by another program?) or not a capture device")
        if self.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not one queued in the driver
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        return SourceInfo(fps=fps if fps > 0 else None, total_frames=None)

    def read(self, decode: bool = True) -> SourceFrame:
        if self._cap is None:
            raise SourceError(f"{self.name} read before open()")
        ok, image = read_or_grab(self._cap, decode)
        if not ok or (decode and image is None):
            raise SourceError(f"{self.name}: no frame within {self.read_timeout_s:g} s (unplugged?)")
        return SourceFrame(image, self.name)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
