"""The types that cross queues: Frame, Batch, Detections, FrameResult, Event and EndOfStream.

Owns these small data types and nothing else: no stage, sink or rule logic lives here, and it
imports nothing from the pipeline at run time (the slot type only for annotations), so every
stage can depend on it without a cycle.

A frame is stamped once at capture (monotonic clock for ages, wall clock for records) and every
later stage measures its age against that stamp, so latency is visible wherever it grows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pipeline.slots import Slot


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
    """One frame from one camera. `image` is BGR, HxWx3, uint8, or None for a frame the model skips
    (detection rate, motion gating) that no sink needs the picture of: it was never decoded, and
    `size` says how large it is."""

    camera_id: str
    seq: int
    image: np.ndarray | None
    capture_mono: float
    capture_wall: float
    source_name: str
    # Stream time in seconds: frame index / fps for a file read as fast as possible, time since the
    # first frame for live sources. Durations in tracking and rules use it, so a file gives the
    # same events however fast it is processed.
    pts: float = 0.0
    # Set by preprocess; None until then.
    letterbox: Letterbox | None = None
    # Whether the model runs on this frame (False: skipped by the camera's rate or motion gate; it
    # still reaches the tracker and the sinks).
    detect: bool = True
    # (width, height) of a frame without an image; ignored when `image` is set.
    size: tuple[int, int] | None = None

    @property
    def width(self) -> int:
        return int(self.image.shape[1]) if self.image is not None else (self.size or (0, 0))[0]

    @property
    def height(self) -> int:
        return int(self.image.shape[0]) if self.image is not None else (self.size or (0, 0))[1]

    def age_ms(self, now_mono: float | None = None) -> float:
        return ((time.monotonic() if now_mono is None else now_mono) - self.capture_mono) * 1000.0


Index = np.ndarray | slice | list[int] | int


@dataclass(frozen=True, slots=True, eq=False)
class Detections:
    """Detections of one frame in original-frame pixels: a frozen container that validates its own
    shapes and is indexed like a numpy array (by a boolean mask, an index array or a slice), in the
    spirit of supervision's `Detections`.

    Args:
        xyxy: (N, 4) float32 boxes, x1 y1 x2 y2.
        confidence: (N,) float32 scores.
        class_id: (N,) int64 class ids.
        track_id: (N,) int64 track ids (-1: not on a track yet), or None when the camera is not
            tracked (it has no rules).
        data: extra per-detection arrays of length N (e.g. keypoints), kept aligned by indexing.

    Example:
        >>> det = Detections(np.zeros((2, 4), np.float32), np.array([0.9, 0.2], np.float32), np.array([0, 2]))
        >>> len(det[det.confidence > 0.5])
        1
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    track_id: np.ndarray | None = None
    data: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must be a 2D array of shape (N, 4), got {self.xyxy.shape}")
        n = self.xyxy.shape[0]
        if self.confidence.shape != (n,):
            raise ValueError(f"confidence must have shape ({n},), got {self.confidence.shape}")
        if self.class_id.shape != (n,):
            raise ValueError(f"class_id must have shape ({n},), got {self.class_id.shape}")
        if self.track_id is not None and self.track_id.shape != (n,):
            raise ValueError(f"track_id must have shape ({n},) or be None, got {self.track_id.shape}")
        for key, value in self.data.items():
            if len(value) != n:
                raise ValueError(f"data[{key!r}] must have {n} rows (one per detection), got {len(value)}")

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: Index) -> Detections:
        """The detections selected by a boolean mask, an index array, a slice or one index."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            self.xyxy[index],
            self.confidence[index],
            self.class_id[index],
            None if self.track_id is None else self.track_id[index],
            {k: v[index] for k, v in self.data.items()},
        )

    @property
    def tracked(self) -> bool:
        """Whether these detections went through a tracker (track_id is set, -1 for unmatched)."""
        return self.track_id is not None

    def with_track_ids(self, track_id: np.ndarray) -> Detections:
        """The same detections with (N,) track ids (-1: not on a track)."""
        return Detections(self.xyxy, self.confidence, self.class_id, np.asarray(track_id, np.int64), self.data)

    @classmethod
    def empty(cls) -> Detections:
        """No detections (untracked)."""
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))


@dataclass(slots=True)
class Batch:
    """Frames of a model's cameras in arrival order. Those with `detect` set have their letterboxed
    tensors in rows 0..rows-1 of `slot`'s input, in the same order; the others ride along so that
    each camera's frames stay in order. A batch of riding frames only has no slot.

    Args:
        model_id: the model.
        frames: every frame, detected or riding.
        slot: the ring slot holding the detected frames' tensors (None when no frame is detected).
    """

    model_id: str
    frames: list[Frame]
    slot: Slot | None

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def detected_frames(self) -> list[Frame]:
        """The frames the model runs on, in row order."""
        return [f for f in self.frames if f.detect]

    @property
    def rows(self) -> int:
        """How many frames are detected (the slot's rows in use), derived so it cannot disagree."""
        return sum(1 for f in self.frames if f.detect)


@dataclass(frozen=True, slots=True)
class Overlay:
    """A camera's zones and lines in frame pixels, for drawing (one object per camera, shared)."""

    zones: dict[str, np.ndarray]  # id -> (K, 2) polygon
    lines: dict[str, tuple[np.ndarray, np.ndarray]]  # id -> (a, b)


@dataclass(frozen=True, slots=True)
class FrameResult:
    """A frame with its detections, on its way to the sinks."""

    frame: Frame
    detections: Detections  # with track ids on cameras that have rules (see Detections.tracked)
    class_names: dict[int, str]
    alerts: tuple[str, ...] = ()  # rules with an incident open on this frame
    overlay: Overlay | None = None
    # False: the model did not run on this frame; `detections` are the tracker's predictions
    # (tracked cameras) or empty.
    detected: bool = True


@dataclass(frozen=True, slots=True)
class Event:
    """One incident transition. Field names are the published schema (README, "Events")."""

    event_id: str  # one id per incident: its start, updates and end share it
    kind: str  # start | update | end
    rule: str
    rule_type: str
    camera: str
    track_ids: list[int]
    classes: list[str]
    zone: str | None
    line: str | None
    ts: float  # wall clock of the frame that caused it
    started_ts: float  # wall clock of the incident's start
    seq: int
    boxes: list[list[float]]
    confidence: list[float]
    data: dict[str, Any] = field(default_factory=dict)  # rule-specific: counts, direction, distance
    snapshot: str | None = None
    clip: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The event as its published JSON object."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """Travels downstream after a camera's last frame so queued work drains before stages exit."""

    camera_id: str
