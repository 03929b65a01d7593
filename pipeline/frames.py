"""The only types that cross queues: Frame, Batch, Detections, FrameResult and EndOfStream.

A frame is stamped once at capture (monotonic clock for ages, wall clock for records) and every
later stage measures its age against that stamp, so latency is visible wherever it grows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pipeline.preprocess import Slot


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How an original frame was placed into the model input: resized by (`scale_x`, `scale_y`)
    (equal up to the rounding of the resized size), then offset by (`pad_x`, `pad_y`) pixels.
    Inverse-mapping boxes needs nothing else."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int

    def to_original(self, xyxy: np.ndarray, width: int, height: int) -> None:
        """Maps (N, 4) boxes from model-input pixels back to original pixels, in place, clipped."""
        xyxy[:, 0::2] -= self.pad_x
        xyxy[:, 1::2] -= self.pad_y
        xyxy[:, 0::2] /= self.scale_x
        xyxy[:, 1::2] /= self.scale_y
        np.clip(xyxy[:, 0::2], 0, width, out=xyxy[:, 0::2])
        np.clip(xyxy[:, 1::2], 0, height, out=xyxy[:, 1::2])

    def to_input(self, xyxy: np.ndarray) -> np.ndarray:
        """Maps (N, 4) boxes from original pixels to model-input pixels (a new array)."""
        out = np.array(xyxy, dtype=np.float32)
        out[:, 0::2] = out[:, 0::2] * self.scale_x + self.pad_x
        out[:, 1::2] = out[:, 1::2] * self.scale_y + self.pad_y
        return out


@dataclass(slots=True)
class Frame:
    """One decoded image from one camera. `image` is BGR, HxWx3, uint8."""

    camera_id: str
    seq: int
    image: np.ndarray
    capture_mono: float
    capture_wall: float
    source_name: str
    # Stream time in seconds: frame index / fps for a file read as fast as possible, time since the
    # first frame for live sources. Durations in tracking and rules use it, so a file gives the
    # same events however fast it is processed.
    pts: float = 0.0
    # Set by preprocess; None until then.
    letterbox: Letterbox | None = None

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def age_ms(self, now_mono: float | None = None) -> float:
        return ((time.monotonic() if now_mono is None else now_mono) - self.capture_mono) * 1000.0


@dataclass(frozen=True, slots=True)
class Detections:
    """Detections of one frame in original-frame pixels. Validates its own shapes."""

    xyxy: np.ndarray  # (N, 4) float32
    confidence: np.ndarray  # (N,) float32
    class_id: np.ndarray  # (N,) int64

    def __post_init__(self) -> None:
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must be a 2D array of shape (N, 4), got {self.xyxy.shape}")
        n = self.xyxy.shape[0]
        if self.confidence.shape != (n,):
            raise ValueError(f"confidence must have shape ({n},), got {self.confidence.shape}")
        if self.class_id.shape != (n,):
            raise ValueError(f"class_id must have shape ({n},), got {self.class_id.shape}")

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))


@dataclass(slots=True)
class Batch:
    """Frames whose letterboxed tensors sit in rows 0..len(frames)-1 of `slot`'s input tensor."""

    model_id: str
    frames: list[Frame]
    slot: Slot

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True, slots=True)
class Overlay:
    """A camera's zones and lines in frame pixels, for drawing (one object per camera, shared)."""

    zones: dict[str, np.ndarray]  # id -> (K, 2) polygon
    lines: dict[str, tuple[np.ndarray, np.ndarray]]  # id -> (a, b)


@dataclass(frozen=True, slots=True)
class FrameResult:
    """A frame with its detections, on its way to the sinks."""

    frame: Frame
    detections: Detections
    class_names: dict[int, str]
    # With tracking (cameras that have rules): (N,) ids aligned with detections, -1 = untracked.
    track_ids: np.ndarray | None = None
    alerts: tuple[str, ...] = ()  # rules with an incident open on this frame
    overlay: Overlay | None = None


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """Travels downstream after a camera's last frame so queued work drains before stages exit."""

    camera_id: str
