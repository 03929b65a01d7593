"""Which frames of a camera the model runs on: a detection rate per camera, and motion gating.

Owns the per-frame decision only (detect, or skip with a reason); capture consults it before it
decodes a frame, so a frame nothing needs is never converted or copied. It runs no model, keeps no
tracks and writes no output: the analytics stage tells it, through `CameraActivity`, when an
incident is open or a tracked object stands in a rule's zone.

- **Rate** (`detect_fps`): at most N detections per second of the camera's *stream* time, spread
  evenly, so a file gives the same detections however fast it is read.
- **Motion** (`motion:`): as Frigate does, a running average of a small grey copy of the frame and
  the difference of each frame against it; changed areas above `min_area` are motion. No motion,
  no open incident and no tracked object in a rule zone: the frame is skipped. A heartbeat
  detection at least every `max_idle_s` keeps a still scene checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# With motion gating, a detection at least this often (seconds) even when nothing moves.
DEFAULT_MAX_IDLE_S = 3.0
# Below this many frames of history the background is still forming: every due frame is detected.
MOTION_WARMUP_FRAMES = 2


@dataclass(frozen=True, slots=True)
class MotionSettings:
    """Motion detection on a small grey copy of each frame (Frigate's approach).

    Args:
        threshold: grey-level difference (0-255) from the background that counts as changed.
        min_area: changed area, as a fraction of the frame, that counts as motion.
        frame_height: height of the grey copy in pixels (the width keeps the aspect ratio).
        alpha: weight of a new frame in the running background average (0-1).
        mask: polygons in normalized coordinates (0-1) where motion counts; empty: everywhere.
    """

    threshold: int = 25
    min_area: float = 0.001
    frame_height: int = 90
    alpha: float = 0.05
    mask: tuple[tuple[tuple[float, float], ...], ...] = ()


class MotionDetector:
    """Running-average background subtraction on a small blurred grey copy of each frame.

    Args:
        settings: thresholds, size and mask.

    Example:
        >>> detector = MotionDetector(MotionSettings())
        >>> detector.update(frame_bgr)   # True when something moved
    """

    def __init__(self, settings: MotionSettings) -> None:
        self.settings = settings
        self._size: tuple[int, int] | None = None  # (w, h) of the grey copy
        self._grey: np.ndarray | None = None
        self._blurred: np.ndarray | None = None
        self._background: np.ndarray | None = None  # float32 running average
        self._diff: np.ndarray | None = None
        self._changed: np.ndarray | None = None
        self._mask: np.ndarray | None = None  # uint8 255 where motion counts
        self._source_size: tuple[int, int] | None = None  # (w, h) of the frames the buffers are for
        self.frames = 0
        self.last_area = 0.0  # changed fraction of the (masked) frame at the last update

    def _allocate(self, width: int, height: int) -> None:
        h = self.settings.frame_height
        w = max(16, round(width * h / height))
        self._size = (w, h)
        self._grey = np.empty((h, w), np.uint8)
        self._blurred = np.empty((h, w), np.uint8)
        self._background = np.zeros((h, w), np.float32)
        self._diff = np.empty((h, w), np.uint8)
        self._changed = np.empty((h, w), np.uint8)
        if self.settings.mask:
            mask = np.zeros((h, w), np.uint8)
            for polygon in self.settings.mask:
                pts = np.round(np.array(polygon, np.float64) * (w, h)).astype(np.int32)
                cv2.fillPoly(mask, [pts], 255)
            self._mask = mask
        self.frames = 0

    def update(self, image: np.ndarray) -> bool:
        """Folds a BGR frame into the background; True when it differs from the background by more
        than `min_area` of the frame. Allocates only when the frame size changes."""
        height, width = image.shape[:2]
        if self._source_size != (width, height):
            self._allocate(width, height)
            self._source_size = (width, height)
        grey, blurred, background, diff, changed = self._grey, self._blurred, self._background, self._diff, self._changed
        small = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        cv2.cvtColor(small, cv2.COLOR_BGR2GRAY, dst=grey)
        cv2.GaussianBlur(grey, (3, 3), 0, dst=blurred)
        if self.frames == 0:
            background[...] = blurred
        cv2.absdiff(blurred, cv2.convertScaleAbs(background), dst=diff)
        cv2.threshold(diff, self.settings.threshold, 255, cv2.THRESH_BINARY, dst=changed)
        if self._mask is not None:
            cv2.bitwise_and(changed, self._mask, dst=changed)
            area = float(np.count_nonzero(self._mask))
        else:
            area = float(changed.size)
        cv2.accumulateWeighted(blurred, background, self.settings.alpha)
        self.frames += 1
        self.last_area = cv2.countNonZero(changed) / area if area else 0.0
        return self.last_area >= self.settings.min_area


@dataclass(slots=True)
class CameraActivity:
    """What the analytics stage knows that the gate needs: whether an incident is open and whether
    a tracked object stands in the zone of a rule. Written by the analytics thread, read by capture
    (single assignments of bools: no lock needed)."""

    incident_open: bool = False
    track_in_rule_zone: bool = False

    @property
    def busy(self) -> bool:
        return self.incident_open or self.track_in_rule_zone


@dataclass(frozen=True, slots=True)
class GateSettings:
    """A camera's detection rate and motion gating.

    Args:
        detect_fps: at most this many detections per second of stream time; None: every frame.
        motion: motion gating settings; None: off.
        max_idle_s: with motion gating, a detection at least this often even without motion.
    """

    detect_fps: float | None = None
    motion: MotionSettings | None = None
    max_idle_s: float = DEFAULT_MAX_IDLE_S


@dataclass(frozen=True, slots=True)
class GateDecision:
    """Whether the model runs on a frame, and if not, why (`rate` or `motion`)."""

    detect: bool
    skipped_by: str | None = None


DETECT = GateDecision(True)
SKIP_RATE = GateDecision(False, "rate")
SKIP_MOTION = GateDecision(False, "motion")


class FrameGate:
    """Decides per frame whether the model runs on it. Used by one capture thread.

    Call `due(pts)` before reading a frame (False: the frame is skipped for rate and need not be
    decoded), then `decide(pts, image)` with the decoded frame.

    Args:
        settings: the camera's rate and motion settings.
        activity: shared with the camera's analytics stage (None: no rules, never busy).
    """

    def __init__(self, settings: GateSettings, activity: CameraActivity | None = None) -> None:
        self.settings = settings
        self.activity = activity or CameraActivity()
        self.motion = MotionDetector(settings.motion) if settings.motion is not None else None
        self._interval = 1.0 / settings.detect_fps if settings.detect_fps else 0.0
        self._next_due = -np.inf
        self._last_detect_pts = -np.inf

    @property
    def active(self) -> bool:
        """Whether it can skip anything at all (a rate or motion gating is set)."""
        return bool(self._interval) or self.motion is not None

    def due(self, pts: float) -> bool:
        """Whether a detection is due at stream time `pts` by the rate alone (does not consume it)."""
        # A microsecond of slack absorbs float error in pts = seq / fps against multiples of the interval.
        return pts + 1e-6 >= self._next_due

    def decide(self, pts: float, image: np.ndarray | None) -> GateDecision:
        """The decision for the frame at `pts` (its decoded picture, or None when it was not decoded)."""
        if not self.due(pts) or image is None:
            return SKIP_RATE  # (a frame read without its picture cannot be detected: the slot stays due)
        # Spread evenly: the next slot is one interval on, or one interval after this frame when
        # the stream had a gap (no burst of detections to catch up).
        self._next_due = self._next_due + self._interval if pts - self._next_due < self._interval else pts + self._interval
        if self.motion is not None:
            moved = self.motion.update(image)
            idle = pts - self._last_detect_pts >= self.settings.max_idle_s
            if not (moved or self.activity.busy or idle or self.motion.frames <= MOTION_WARMUP_FRAMES):
                return SKIP_MOTION
        self._last_detect_pts = pts
        return DETECT

    def reset(self) -> None:
        """A new stream (reconnect): the next frame is due and the motion background starts again."""
        self._next_due = -np.inf
        self._last_detect_pts = -np.inf
        if self.motion is not None:
            self.motion = MotionDetector(self.motion.settings)
