"""Zones (polygons) and lines in frame pixels, with vectorised tests over many points.

Coordinates in the config are pixels, or fractions of the frame (0..1) with `units: normalized`;
`to_pixels()` turns them into pixels once the camera's frame size is known, and `outside_frame()`
lets the caller reject shapes that fall outside the frame. Nothing here reads the config or knows
about tracks: it is geometry on arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Anchor = Literal["bottom_center", "center", "top_center"]


def anchor_points(xyxy: np.ndarray, anchor: Anchor) -> np.ndarray:
    """(N, 2) points of (N, 4) boxes: bottom-centre for people standing on a floor."""
    x = (xyxy[:, 0] + xyxy[:, 2]) / 2
    if anchor == "bottom_center":
        y = xyxy[:, 3]
    elif anchor == "top_center":
        y = xyxy[:, 1]
    else:
        y = (xyxy[:, 1] + xyxy[:, 3]) / 2
    return np.stack([x, y], axis=1)


@dataclass(frozen=True, slots=True)
class Polygon:
    """A named zone: a polygon of K corners in frame pixels, with its edges precomputed for `contains`."""

    name: str
    points: np.ndarray  # (K, 2) pixels
    _edges: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        x1, y1 = self.points[:, 0].astype(np.float64), self.points[:, 1].astype(np.float64)
        x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (x2 - x1) / (y2 - y1)  # inf on horizontal edges, which never span a height
        object.__setattr__(self, "_edges", (x1, y1, y2, slope))

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """(N,) bool: points inside (even-odd ray casting, vectorised over points and edges)."""
        if xy.shape[0] == 0:
            return np.zeros(0, bool)
        px, py = xy[:, 0:1], xy[:, 1:2]  # (N, 1)
        x1, y1, y2, slope = self._edges
        crosses = (y1 > py) != (y2 > py)  # (N, K): edge spans the point's height
        with np.errstate(invalid="ignore"):
            x_at = x1 + (py - y1) * slope
        return np.count_nonzero(crosses & (px < x_at), axis=1) % 2 == 1


@dataclass(frozen=True, slots=True)
class Line:
    """A named segment a → b in frame pixels; its direction defines `in` and `out`."""

    name: str
    a: np.ndarray  # (2,) pixels
    b: np.ndarray

    def side(self, xy: np.ndarray) -> np.ndarray:
        """(N,) sign of each point against the line a→b, in image coordinates (y down): +1 on the
        right-hand side of someone walking from a to b on the image, -1 on the left, 0 on it."""
        return np.sign(self._cross(xy))

    def distance(self, xy: np.ndarray) -> np.ndarray:
        """(N,) signed distance in pixels of each point from the line through a and b: positive on
        the right-hand side (as `side`), negative on the left."""
        return self._cross(xy) / max(float(np.hypot(*(self.b - self.a))), 1e-9)

    def _cross(self, xy: np.ndarray) -> np.ndarray:
        """(N,) cross product of a→b with a→point: its sign is the side, over |a→b| the distance."""
        d = self.b - self.a
        return d[0] * (xy[:, 1] - self.a[1]) - d[1] * (xy[:, 0] - self.a[0])

    def crossed(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """(N,) +1 where a point moved from the left-hand side of a→b to its right-hand side
        (`in`), -1 the other way (`out`), 0 otherwise. Only crossings within the segment count."""
        s0, s1 = self.side(before), self.side(after)
        changed = (s0 != 0) & (s1 != 0) & (s0 != s1)
        # The path before→after must also cut the segment itself.
        p, r = before, after - before
        q, s = self.a, self.b - self.a
        denom = r[:, 0] * s[1] - r[:, 1] * s[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = ((q[0] - p[:, 0]) * r[:, 1] - (q[1] - p[:, 1]) * r[:, 0]) / denom
        within = (u >= 0) & (u <= 1)
        return np.where(changed & within, s1, 0).astype(np.int64)


def to_pixels(points: list[tuple[float, float]], units: Literal["pixels", "normalized"], width: int, height: int) -> np.ndarray:
    """(K, 2) float64 pixels of config points: normalized ones are scaled by the frame's width and height."""
    arr = np.asarray(points, np.float64)
    if units == "normalized":
        arr = arr * np.array([width, height], np.float64)
    return arr


def outside_frame(points_px: np.ndarray, width: int, height: int) -> bool:
    """True when any point lies outside the frame (a 1 px tolerance for edges written as w or h)."""
    return bool(((points_px < -1) | (points_px > np.array([width, height]) + 1)).any())
