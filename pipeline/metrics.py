"""Per-stage and per-camera counters: items, busy time, frame age at pickup, drops by reason.

Each stage thread writes only its own StageMetrics (keyed by stage name) and its cameras' counters,
so writers need no lock; the registry itself is locked, and readers (progress bar, summary) tolerate
a value that is one frame old. Ages are kept in fixed-size numpy windows so recording never allocates.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from pipeline.delivery import DeliveryMetrics
from pipeline.model_lane import ModelLaneMetrics
from pipeline.redact import mask_url

log = logging.getLogger(__name__)

AGE_WINDOW = 8192
RATE_WINDOW_S = 5.0  # fps_in / fps_out are averaged over the last few seconds


class CameraState(str, enum.Enum):
    STARTING = "starting"  # opening the source for the first time
    STREAMING = "streaming"
    STALLED = "stalled"  # connected, but no frame for stall_timeout_s
    FROZEN = "frozen"  # frames arrive, but the picture or its timestamps stopped changing
    RECONNECTING = "reconnecting"  # waiting out the backoff or opening again
    FAILED = "failed"  # gave up (reconnect.max_attempts) or cannot be read at all
    ENDED = "ended"  # a file came to its end, or the camera was removed
_STAGE_ORDER = {"capture": 0, "preprocess": 1, "inference": 2, "postprocess": 3, "analytics": 4, "evidence": 5, "sink": 6}


class AgeWindow:
    """The last AGE_WINDOW frame ages (ms), preallocated."""

    def __init__(self, size: int = AGE_WINDOW) -> None:
        self._values = np.zeros(size, np.float64)
        self._count = 0

    def add(self, age_ms: float) -> None:
        self._values[self._count % self._values.shape[0]] = age_ms
        self._count += 1

    def recent(self) -> np.ndarray:
        """The ages held (a view, not in arrival order once the window has wrapped)."""
        return self._values[: min(self._count, self._values.shape[0])]

    def percentiles(self, *qs: float) -> tuple[float, ...]:
        values = self.recent()
        if values.size == 0:
            return tuple(float("nan") for _ in qs)
        return tuple(float(v) for v in np.percentile(values, qs))

    @property
    def count(self) -> int:
        return self._count


class RateMeter:
    """Events per second over the last RATE_WINDOW_S, counted in preallocated time buckets.

    Counts, not timestamps: a ring of timestamps caps the rate it can see at its size over the
    window (1024 over 5 s read 204.8 for anything faster); buckets have no cap and never allocate.

    Args:
        bucket_s: the width of one bucket; the window is counted in whole buckets, and the rate is
            divided by the time those buckets actually cover.
    """

    def __init__(self, bucket_s: float = 0.05) -> None:
        self._bucket_s = bucket_s
        n = int(round(RATE_WINDOW_S / bucket_s))
        self._counts = np.zeros(n, np.int64)
        self._ids = np.full(n, -1, np.int64)  # which bucket (monotonic time // bucket_s) each slot counts
        self._first: float | None = None

    def add(self, now_mono: float) -> None:
        """Counts one event at `now_mono`."""
        if self._first is None:
            self._first = now_mono
        bucket = int(now_mono // self._bucket_s)
        slot = bucket % self._counts.shape[0]
        if self._ids[slot] != bucket:  # the slot last counted a bucket that has left the window
            self._ids[slot] = bucket
            self._counts[slot] = 0
        self._counts[slot] += 1

    def rate(self, now_mono: float) -> float:
        """Events per second over the last RATE_WINDOW_S (or since the first event, if sooner)."""
        if self._first is None:
            return 0.0
        bucket = int(now_mono // self._bucket_s)
        oldest = bucket - self._counts.shape[0] + 1
        covered = now_mono - oldest * self._bucket_s  # from the oldest bucket's start to now
        span = min(covered, now_mono - self._first)
        if span <= 0:
            return 0.0
        inside = (self._ids >= oldest) & (self._ids <= bucket)
        return float(self._counts[inside].sum()) / span


# A camera is `behind` when the model runs on fewer than this share of the frames its gate chose,
# judged once it has this many seconds of history.
BEHIND_RATIO = 0.8
BEHIND_AFTER_S = 5.0


class StageMetrics:
    """One stage's counters: items, calls and busy time (from `add_work`), and the age of frames
    when the stage picked them up.

    Args:
        name: the stage's name (e.g. `inference[model]`).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.items = 0
        self.calls = 0
        self.busy_s = 0.0
        self.ages = AgeWindow()

    def add_work(self, seconds: float, items: int) -> None:
        self.busy_s += seconds
        self.items += items
        self.calls += 1


class CameraMetrics:
    """One camera's counters and state: frames in and out, drops by reason, rates, output ages,
    reconnects, and its state with the reason and recent history (for /healthz and the summary).

    Args:
        camera_id: the camera's id.
    """

    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id
        self.frames_in = 0
        self.frames_out = 0
        self.drops: collections.Counter[str] = collections.Counter()
        self.total_frames: int | None = None  # known for files: drives the progress bar
        self.source_fps: float | None = None  # native rate once the source is open
        self.output_ages = AgeWindow()
        self.first_in_mono: float | None = None
        self.last_out_mono: float | None = None
        self.last_in_mono: float | None = None  # capture time of the newest frame
        self.in_rate = RateMeter()
        self.out_rate = RateMeter()
        self.reconnects = 0
        # Capacity: what the camera asks of the model and what it gets.
        self.detect_fps: float | None = None  # asked (detect_fps); None: every frame
        self.detections = 0  # frames the model ran on
        self.detect_rate = RateMeter()
        self.wanted_rate = RateMeter()  # frames its gate chose for the model (some may be dropped later)
        self.skipped: collections.Counter[str] = collections.Counter()  # frames the gate skipped, by reason
        self.behind = False  # the model runs on fewer frames than the gate chose (the box cannot keep up)
        self._capacity_checked_mono = 0.0
        self.state = CameraState.STARTING
        self.state_since_mono = time.monotonic()
        # Since when the camera has been without a picture (not streaming, not ended); None while
        # it streams. Survives reason-only changes and stall → reconnect → stall cycles.
        self.blind_since_mono: float | None = self.state_since_mono
        self.state_reason = ""  # why it is in this state (masked: never a credential)
        # The last state changes, (monotonic time, state, reason): a stall that lasted a moment
        # before the reconnect is still on record.
        self.history: collections.deque[tuple[float, CameraState, str]] = collections.deque(maxlen=32)
        # Objects in each zone that has a rule (the rules' classes), from the last detected frame;
        # replaced, never changed in place, so readers on other threads see whole tables.
        self.zone_counts: dict[str, int] = {}

    def reset_for_restart(self) -> None:
        """A camera (re)added at run time: its counters go on, its source's properties do not."""
        self.source_fps = None
        self.total_frames = None

    def set_state(self, state: CameraState, reason: str = "") -> None:
        """Records a state change and logs it (a warning when leaving `streaming` for a fault)."""
        reason = mask_url(reason)  # reasons quote source errors, which quote URLs
        if state is self.state and reason == self.state_reason:
            return
        previous, self.state, self.state_reason = self.state, state, reason
        self.state_since_mono = time.monotonic()
        if state is previous:
            return
        if state in (CameraState.STREAMING, CameraState.ENDED):
            self.blind_since_mono = None
        elif self.blind_since_mono is None:
            self.blind_since_mono = self.state_since_mono
        self.history.append((self.state_since_mono, state, reason))
        level = logging.WARNING if state in (CameraState.STALLED, CameraState.FROZEN, CameraState.FAILED) or (
            previous is CameraState.STREAMING and state is CameraState.RECONNECTING) else logging.INFO
        log.log(level, "camera %s: %s -> %s%s", self.camera_id, previous.value, state.value, f" ({reason})" if reason else "")

    def record_in(self, capture_mono: float) -> None:
        if self.first_in_mono is None:
            self.first_in_mono = capture_mono
        self.last_in_mono = capture_mono
        self.frames_in += 1
        self.in_rate.add(capture_mono)

    def record_out(self, now_mono: float, age_ms: float, *, detected: bool = True) -> None:
        """A frame left postprocess (`detected`: the model ran on it)."""
        self.frames_out += 1
        self.last_out_mono = now_mono
        self.output_ages.add(age_ms)
        self.out_rate.add(now_mono)
        if detected:
            self.detections += 1
            self.detect_rate.add(now_mono)

    def record_gate(self, now_mono: float, skipped_by: str | None) -> None:
        """The camera's gate decided on a frame: chosen for the model (None) or skipped by `skipped_by`."""
        if skipped_by is None:
            self.wanted_rate.add(now_mono)
        else:
            self.skipped[skipped_by] += 1

    def check_capacity_now_and_then(self, now_mono: float) -> None:
        """`update_capacity` at most once a second (called per output frame, so a warning is logged
        whether or not anyone reads /healthz)."""
        if now_mono - self._capacity_checked_mono >= 1.0:
            self._capacity_checked_mono = now_mono
            self.update_capacity(now_mono)

    def update_capacity(self, now_mono: float) -> bool:
        """Re-evaluates `behind` (after BEHIND_AFTER_S of history): the model ran on under
        BEHIND_RATIO of the frames the gate chose over the rate window. Logs a change; returns it."""
        if self.first_in_mono is None or now_mono - self.first_in_mono < BEHIND_AFTER_S:
            return self.behind
        wanted, got = self.wanted_rate.rate(now_mono), self.detect_rate.rate(now_mono)
        behind = wanted > 0 and got < BEHIND_RATIO * wanted
        if behind != self.behind:
            self.behind = behind
            if behind:
                log.warning("camera %s: the model keeps up with %.1f of the %.1f frames/s it should look at (detect_fps "
                            "%s): lower detect_fps, enable motion gating, or add capacity", self.camera_id, got, wanted,
                            self.detect_fps or "every frame")
            else:
                log.info("camera %s: the model keeps up again (%.1f detections/s)", self.camera_id, got)
        return behind


@dataclass(frozen=True, slots=True)
class StageSummary:
    """One stage at the end of a run: items, mean busy time per item and per call, pickup age percentiles."""

    name: str
    items: int
    mean_ms_per_item: float
    mean_ms_per_call: float
    age_p50_ms: float
    age_p99_ms: float


@dataclass(frozen=True, slots=True)
class CameraSummary:
    """One camera at the end of a run: frames in and out, drops by reason, output fps and age percentiles."""

    camera_id: str
    frames_in: int
    frames_out: int
    drops: dict[str, int]
    fps_out: float
    age_p50_ms: float
    age_p99_ms: float
    detections: int = 0
    detections_per_s: float = float("nan")  # over the run
    detect_fps: float | None = None  # asked; None: every frame
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)  # by the gate, by reason


class Metrics:
    """The registry of a run's StageMetrics, CameraMetrics and DeliveryMetrics, created on first
    use by name or id, and the summaries made from them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stages: dict[str, StageMetrics] = {}
        self._cameras: dict[str, CameraMetrics] = {}
        self._deliveries: dict[str, DeliveryMetrics] = {}
        self._models: dict[str, ModelLaneMetrics] = {}
        self.started_mono = time.monotonic()
        self.shard: str | None = None  # "I/N" when this instance runs one shard of the cameras

    def delivery(self, sink: str) -> DeliveryMetrics:
        with self._lock:
            return self._deliveries.setdefault(sink, DeliveryMetrics(sink))

    def deliveries(self) -> list[DeliveryMetrics]:
        with self._lock:
            return list(self._deliveries.values())

    def model(self, model_id: str) -> ModelLaneMetrics:
        with self._lock:
            return self._models.setdefault(model_id, ModelLaneMetrics(model_id))

    def models(self) -> list[ModelLaneMetrics]:
        with self._lock:
            return list(self._models.values())

    def stage(self, name: str) -> StageMetrics:
        with self._lock:
            return self._stages.setdefault(name, StageMetrics(name))

    def camera(self, camera_id: str) -> CameraMetrics:
        with self._lock:
            return self._cameras.setdefault(camera_id, CameraMetrics(camera_id))

    def cameras(self) -> list[CameraMetrics]:
        with self._lock:
            return list(self._cameras.values())

    def stages(self) -> list[StageMetrics]:
        with self._lock:
            return list(self._stages.values())

    def count_drop(self, camera_id: str, reason: str, count: int = 1) -> None:
        """Counts `count` frames of the camera dropped for `reason` (queue_full, too_old, unreadable, ...)."""
        cam = self.camera(camera_id)
        with self._lock:
            cam.drops[reason] += count

    def stage_summaries(self) -> list[StageSummary]:
        """Per stage, in data-path order (capture, preprocess, inference, postprocess, sinks)."""
        with self._lock:
            # Stable sort: within a kind, the order stages were registered (the graph's order).
            stages = sorted(self._stages.values(), key=lambda s: _STAGE_ORDER.get(s.name.split("[")[0], 99))
        out = []
        for s in stages:
            p50, p99 = s.ages.percentiles(50, 99)
            out.append(
                StageSummary(
                    name=s.name,
                    items=s.items,
                    mean_ms_per_item=1000.0 * s.busy_s / s.items if s.items else float("nan"),
                    mean_ms_per_call=1000.0 * s.busy_s / s.calls if s.calls else float("nan"),
                    age_p50_ms=p50,
                    age_p99_ms=p99,
                )
            )
        return out

    def camera_summaries(self) -> list[CameraSummary]:
        with self._lock:
            cams = list(self._cameras.values())
        out = []
        for c in cams:
            p50, p99 = c.output_ages.percentiles(50, 99)
            span = (
                c.last_out_mono - c.first_in_mono
                if c.first_in_mono is not None and c.last_out_mono is not None
                else 0.0
            )
            out.append(
                CameraSummary(
                    camera_id=c.camera_id,
                    frames_in=c.frames_in,
                    frames_out=c.frames_out,
                    drops=dict(c.drops),
                    fps_out=c.frames_out / span if span > 0 else float("nan"),
                    age_p50_ms=p50,
                    age_p99_ms=p99,
                    detections=c.detections,
                    detections_per_s=c.detections / span if span > 0 else float("nan"),
                    detect_fps=c.detect_fps,
                    skipped=dict(c.skipped),
                )
            )
        return out

    def frames_out_total(self) -> int:
        with self._lock:
            return sum(c.frames_out for c in self._cameras.values())

    def total_frames_known(self) -> int | None:
        """Sum of frame counts of all cameras when every camera knows its length, else None."""
        with self._lock:
            totals = [c.total_frames for c in self._cameras.values()]
        if not totals or any(t is None for t in totals):
            return None
        return int(sum(totals))  # type: ignore[arg-type]
