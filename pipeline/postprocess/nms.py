"""Greedy, class-aware non-maximum suppression in numpy, over a whole batch at once.

Boxes of different groups (image × class) are shifted apart by a per-group offset larger than any
coordinate, so one pass of ordinary NMS never lets one group suppress another (the same trick as
torchvision's batched_nms and Ultralytics). Each loop iteration keeps one box and removes every
remaining box that overlaps it, vectorised; the loop runs once per *kept* box, not per candidate.
Suppression is IoU > threshold, as in torchvision.
"""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape[1] != 4 or b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) xyxy arrays, got {a.shape} and {b.shape}")
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the kept boxes, highest score first.

    boxes: (N, 4) xyxy; scores: (N,); groups: (N,) ints; boxes only suppress boxes of their group."""
    n = boxes.shape[0]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a 2D array of shape (N, 4), got {boxes.shape}")
    if scores.shape != (n,) or groups.shape != (n,):
        raise ValueError(f"scores and groups must have shape ({n},), got {scores.shape} and {groups.shape}")
    if n == 0:
        return np.zeros((0,), np.int64)
    b = boxes.astype(np.float64)
    span = float(np.abs(b).max()) + 1.0
    b += (groups.astype(np.float64) * (2.0 * span))[:, None]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = np.empty(n, np.int64)
    kept = 0
    while order.size:
        i = order[0]
        keep[kept] = i
        kept += 1
        rest = order[1:]
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return keep[:kept]
