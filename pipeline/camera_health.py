"""Camera-down alarms: a live camera that has not been streaming for `down_after_s` is an
incident of its own (a blind safety camera), reported as a `camera_down` event, and as
`camera_restored` (with the same `event_id`) once it streams again.

Owns the decision only; the camera's analytics stage asks it (on every frame and while no frame
comes) and routes the events like rule events, so every event sink gets them. A live camera
without rules that feeds an event sink gets an analytics stage for this alone.
"""

from __future__ import annotations

import time
import uuid

from pipeline.frames import Event
from pipeline.metrics import CameraMetrics, CameraState

RULE = "camera_health"  # the `rule` and `rule_type` of these events
CHECK_EVERY_S = 0.25
_NOT_WATCHING = (CameraState.STREAMING, CameraState.ENDED)  # streaming, or gone on purpose (removed, file end)


class CameraWatch:
    """Watches one camera's state (as its capture records it in the metrics).

    Args:
        camera_id: the camera.
        down_after_s: how long it may be without a picture before it counts as down.
        stats: the camera's metrics (its state and since when).
    """

    def __init__(self, camera_id: str, down_after_s: float, stats: CameraMetrics) -> None:
        self.camera_id = camera_id
        self.down_after_s = down_after_s
        self.stats = stats
        self._down: Event | None = None  # the open camera_down incident
        self._next_check = 0.0

    @property
    def down(self) -> bool:
        return self._down is not None

    def check(self, seq: int, now_mono: float | None = None) -> Event | None:
        """The event due now, if any: `camera_down` once the camera has been blind `down_after_s`,
        `camera_restored` when it streams again after that. `seq` is the camera's last frame."""
        now = time.monotonic() if now_mono is None else now_mono
        if now < self._next_check:
            return None
        self._next_check = now + CHECK_EVERY_S
        state = self.stats.state
        blind_since = self.stats.blind_since_mono
        if state in _NOT_WATCHING or blind_since is None:
            if self._down is not None and state is CameraState.STREAMING:
                return self._restored(seq, now)
            return None
        blind_s = now - blind_since
        if self._down is None and blind_s >= self.down_after_s:
            wall = time.time()
            self._down = Event(
                event_id=uuid.uuid4().hex, kind="camera_down", rule=RULE, rule_type=RULE, camera=self.camera_id,
                track_ids=[], classes=[], zone=None, line=None, ts=wall, started_ts=wall - blind_s, seq=seq,
                boxes=[], confidence=[],
                data={"state": state.value, "reason": self.stats.state_reason, "down_s": round(blind_s, 3)})
            return self._down
        return None

    def _restored(self, seq: int, now: float) -> Event:
        down = self._down
        assert down is not None
        self._down = None
        wall = time.time()
        return Event(event_id=down.event_id, kind="camera_restored", rule=RULE, rule_type=RULE, camera=self.camera_id,
                     track_ids=[], classes=[], zone=None, line=None, ts=wall, started_ts=down.started_ts, seq=seq,
                     boxes=[], confidence=[], data={"down_s": round(wall - down.started_ts, 3)})
