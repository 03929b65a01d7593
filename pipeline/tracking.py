"""Multi-object tracking per camera: a ByteTrack-class tracker with time-based motion and lifetime.

ByteTrack (Zhang et al., 2022) in short: a Kalman filter predicts every track; high-confidence
detections are matched to all tracks first, then low-confidence detections to the tracks still
unmatched (this keeps a partly occluded person, whose score dips, on its track); new tracks start
only from unmatched high-confidence detections and are confirmed by a second match.

What differs from the reference implementation, on purpose:
- **Time, not frames.** Live sources drop frames by design, so the filter steps by the seconds
  between frames and a lost track lives `lost_timeout_s`, not N frames. A tracker fed every other
  frame behaves like one fed every frame.
- **Classes never mix.** A detection can only continue a track of its own class.
- Assignment uses scipy's `linear_sum_assignment` on IoU cost; everything per frame is vectorised
  over tracks and detections (no Python loop per pair).

It only assigns track ids to detections: what a track means (zones, rules) is pipeline.rules' job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.frames import Detections
from pipeline.postprocess.nms import box_iou


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """ByteTracker's thresholds and track lifetime; checked on creation (raises ValueError)."""

    high_score: float = 0.5  # first association and new tracks
    low_score: float = 0.1  # below this a detection is ignored
    new_track_score: float = 0.6  # an unmatched detection must score this to start a track
    match_iou: float = 0.2  # minimum IoU for the first (high) association
    low_match_iou: float = 0.5  # minimum IoU for the second (low) association
    unconfirmed_match_iou: float = 0.3  # minimum IoU to confirm a new track
    lost_timeout_s: float = 1.0  # a track unseen for longer is removed

    def __post_init__(self) -> None:
        if not 0 <= self.low_score <= self.high_score <= 1:
            raise ValueError(f"need 0 <= low_score <= high_score <= 1, got {self.low_score} and {self.high_score}")
        if self.lost_timeout_s <= 0:
            raise ValueError(f"lost_timeout_s must be > 0, got {self.lost_timeout_s}")


class KalmanBoxes:
    """Constant-velocity Kalman filter for many boxes at once.

    State per box: (cx, cy, a, h, vcx, vcy, va, vh), a = w / h, velocities per second. Noise scales
    with box height as in ByteTrack/DeepSORT, and with the time step, so that dropped frames only
    widen the prediction instead of breaking it."""

    # Standard deviations relative to box height: per second for velocities.
    STD_POS = 1.0 / 20
    STD_VEL = 1.0 / 160 * 25  # ByteTrack's per-frame value at 25 fps, per second

    @staticmethod
    def initiate(xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = xyah.shape[0]
        mean = np.zeros((n, 8))
        mean[:, :4] = xyah
        # A new box: position as measured, velocity unknown (wide).
        return mean, _diagonal(_state_std(xyah[:, 3], pos=2.0, vel=10.0) ** 2)

    @staticmethod
    def predict(mean: np.ndarray, cov: np.ndarray, dt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Steps each box by its own dt (seconds)."""
        n = mean.shape[0]
        if n == 0:
            return mean, cov
        f = np.tile(np.eye(8), (n, 1, 1))
        f[:, np.arange(4), np.arange(4) + 4] = dt[:, None]
        # Process noise per frame at 25 fps, scaled by the time actually elapsed.
        q = _diagonal(_state_std(mean[:, 3], pos=1.0, vel=1.0) ** 2 * np.maximum(dt, 1e-3)[:, None] * 25)
        mean = np.einsum("nij,nj->ni", f, mean)
        cov = f @ cov @ np.transpose(f, (0, 2, 1)) + q
        return mean, cov

    @staticmethod
    def update(mean: np.ndarray, cov: np.ndarray, xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = mean.shape[0]
        if n == 0:
            return mean, cov
        h = mean[:, 3]
        r = _diagonal(np.stack([KalmanBoxes.STD_POS * h, KalmanBoxes.STD_POS * h, np.full(n, 1e-1), KalmanBoxes.STD_POS * h], 1) ** 2)
        proj_mean = mean[:, :4]
        proj_cov = cov[:, :4, :4] + r
        gain = np.linalg.solve(proj_cov, cov[:, :4, :]).transpose(0, 2, 1)  # (n, 8, 4); proj_cov is symmetric
        innovation = xyah - proj_mean
        mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        cov = cov - gain @ proj_cov @ gain.transpose(0, 2, 1)
        return mean, cov


def _state_std(h: np.ndarray, *, pos: float, vel: float) -> np.ndarray:
    """(N, 8) standard deviations of (cx, cy, a, h, and their velocities), relative to box height."""
    p, v = pos * KalmanBoxes.STD_POS * h, vel * KalmanBoxes.STD_VEL * h
    return np.stack([p, p, np.full_like(h, 1e-2), p, v, v, np.full_like(h, 1e-5), v], 1)


def _diagonal(values: np.ndarray) -> np.ndarray:
    """(N, K) -> (N, K, K) diagonal matrices."""
    n, k = values.shape
    out = np.zeros((n, k, k))
    out[:, np.arange(k), np.arange(k)] = values
    return out


def xyxy_to_xyah(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) corner boxes -> (N, 4) centre x, centre y, aspect w / h, height (h at least 1e-6)."""
    w = xyxy[:, 2] - xyxy[:, 0]
    h = np.maximum(xyxy[:, 3] - xyxy[:, 1], 1e-6)
    return np.stack([xyxy[:, 0] + w / 2, xyxy[:, 1] + h / 2, w / h, h], 1)


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """(N, 4) centre x, centre y, aspect w / h, height -> (N, 4) corner boxes x1, y1, x2, y2."""
    w = xyah[:, 2] * xyah[:, 3]
    return np.stack([xyah[:, 0] - w / 2, xyah[:, 1] - xyah[:, 3] / 2, xyah[:, 0] + w / 2, xyah[:, 1] + xyah[:, 3] / 2], 1)


def _without(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """`values` minus the entries at `positions` (order kept)."""
    keep = np.ones(values.shape[0], bool)
    keep[positions] = False
    return values[keep]


def _match(cost: np.ndarray, max_cost: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the optimal assignment, keeping pairs with cost <= max_cost."""
    if cost.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] <= max_cost
    return rows[ok], cols[ok]


class ByteTracker:
    """Tracks one camera's detections. Not thread-safe: one tracker per camera, one thread."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 8, 8))
        self._ids = np.zeros(0, np.int64)
        self._class = np.zeros(0, np.int64)
        self._last_seen = np.zeros(0)  # seconds (the caller's clock)
        self._last_step = np.zeros(0)  # when the filter state was last advanced
        self._confirmed = np.zeros(0, bool)
        self._score = np.zeros(0, np.float32)  # confidence of each track's last detection
        self._next_id = 1
        self._previous_time = -np.inf  # timestamp of the previous update()

    @property
    def active_ids(self) -> np.ndarray:
        return self._ids[self._confirmed].copy()

    def update(self, detections: Detections, timestamp: float) -> np.ndarray:
        """Advances all tracks to `timestamp` (seconds, e.g. the frame's capture time) and assigns
        detections to them. Returns (N,) track ids aligned with `detections`: -1 where a detection
        belongs to no confirmed track (too weak, or a new object seen once so far)."""
        cfg = self.config
        self._drop_stale(timestamp)
        self._mean, self._cov = KalmanBoxes.predict(self._mean, self._cov, np.maximum(timestamp - self._last_step, 0.0))
        self._last_step[:] = timestamp

        scores = detections.confidence
        usable = scores >= cfg.low_score
        high = np.flatnonzero(usable & (scores >= cfg.high_score))
        low = np.flatnonzero(usable & (scores < cfg.high_score))
        boxes = detections.xyxy.astype(np.float64)
        det_track = np.full(len(detections), -1, np.int64)  # index into the track arrays

        predicted = xyah_to_xyxy(self._mean[:, :4])
        confirmed = np.flatnonzero(self._confirmed)
        unconfirmed = np.flatnonzero(~self._confirmed)

        # 1. High detections against confirmed tracks (recently seen or lost).
        rows, cols = self._associate(confirmed, high, predicted, boxes, detections.class_id, cfg.match_iou)
        det_track[high[cols]] = confirmed[rows]
        left_tracks = _without(confirmed, rows)
        left_high = _without(high, cols)
        # 2. Low detections against the confirmed tracks still unmatched that were seen last step.
        recent = left_tracks[self._last_seen[left_tracks] >= self._previous_time]
        rows, cols = self._associate(recent, low, predicted, boxes, detections.class_id, cfg.low_match_iou)
        det_track[low[cols]] = recent[rows]
        # 3. Remaining high detections confirm new tracks.
        rows, cols = self._associate(unconfirmed, left_high, predicted, boxes, detections.class_id, cfg.unconfirmed_match_iou)
        det_track[left_high[cols]] = unconfirmed[rows]
        self._confirmed[unconfirmed[rows]] = True
        left_high = _without(left_high, cols)
        # A new track that found no partner on its second frame is dropped at once.
        unconfirmed_unmatched = _without(unconfirmed, rows)

        matched = det_track >= 0
        tracks = det_track[matched]
        self._mean[tracks], self._cov[tracks] = KalmanBoxes.update(self._mean[tracks], self._cov[tracks],
                                                                     xyxy_to_xyah(boxes[matched]))
        self._last_seen[tracks] = timestamp
        self._score[tracks] = scores[matched]

        keep = np.ones(self._ids.shape[0], bool)
        keep[unconfirmed_unmatched] = False
        self._keep(keep)
        # Indices shifted by the removal: map matched detections to their ids before adding tracks.
        det_ids = np.full(len(detections), -1, np.int64)
        remap = np.cumsum(keep) - 1
        det_ids[matched] = self._ids[remap[tracks]]
        is_confirmed = np.zeros(len(detections), bool)
        is_confirmed[matched] = self._confirmed[remap[tracks]]

        starters = left_high[scores[left_high] >= cfg.new_track_score]
        first_frame = self._previous_time == -np.inf
        det_ids[starters] = self._start(boxes[starters], detections.class_id[starters], timestamp, confirmed=first_frame)
        if starters.size:
            self._score[-starters.size:] = scores[starters]
        is_confirmed[starters] = first_frame
        self._previous_time = timestamp

        return np.where(is_confirmed, det_ids, -1)

    def predict(self, timestamp: float) -> Detections:
        """Where the confirmed tracks are expected at `timestamp`, for a frame the model skipped.
        Changes nothing: the next `update` starts from the same state.

        Returns:
            Detections of the confirmed tracks not yet lost at `timestamp` (their last class and
            score, the Kalman prediction as box), with their track ids.
        """
        alive = self._confirmed & (timestamp - self._last_seen <= self.config.lost_timeout_s)
        mean = self._mean[alive]
        dt = np.maximum(timestamp - self._last_step[alive], 0.0)
        xyah = mean[:, :4] + mean[:, 4:] * dt[:, None]  # the filter's constant-velocity step
        xyah[:, 3] = np.maximum(xyah[:, 3], 1e-3)
        return Detections(xyah_to_xyxy(xyah).astype(np.float32), self._score[alive].copy(), self._class[alive].copy(),
                          self._ids[alive].copy())

    def _associate(self, tracks: np.ndarray, dets: np.ndarray, predicted: np.ndarray, boxes: np.ndarray,
                   classes: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
        if tracks.size == 0 or dets.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        iou = box_iou(predicted[tracks], boxes[dets])
        iou[self._class[tracks][:, None] != classes[dets][None, :]] = 0.0
        return _match(1.0 - iou, 1.0 - min_iou)

    def _drop_stale(self, now: float) -> None:
        stale = now - self._last_seen > self.config.lost_timeout_s
        if stale.any():
            self._keep(~stale)

    def _keep(self, keep: np.ndarray) -> None:
        self._mean, self._cov = self._mean[keep], self._cov[keep]
        self._ids, self._class = self._ids[keep], self._class[keep]
        self._last_seen, self._last_step = self._last_seen[keep], self._last_step[keep]
        self._confirmed = self._confirmed[keep]
        self._score = self._score[keep]

    def _start(self, boxes: np.ndarray, classes: np.ndarray, now: float, *, confirmed: bool) -> np.ndarray:
        """Adds tracks for `boxes`; returns their ids. A stream's very first frame confirms its
        tracks at once (as ByteTrack does on frame 1); later ones need a second match."""
        n = boxes.shape[0]
        ids = np.arange(self._next_id, self._next_id + n)
        if n == 0:
            return ids
        mean, cov = KalmanBoxes.initiate(xyxy_to_xyah(boxes))
        self._next_id += n
        self._mean = np.concatenate([self._mean, mean])
        self._cov = np.concatenate([self._cov, cov])
        self._ids = np.concatenate([self._ids, ids])
        self._class = np.concatenate([self._class, classes.astype(np.int64)])
        self._last_seen = np.concatenate([self._last_seen, np.full(n, now)])
        self._last_step = np.concatenate([self._last_step, np.full(n, now)])
        self._confirmed = np.concatenate([self._confirmed, np.full(n, confirmed)])
        self._score = np.concatenate([self._score, np.full(n, 0.0, np.float32)])
        return ids
