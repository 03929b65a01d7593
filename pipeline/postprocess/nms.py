"""Greedy, class-aware non-maximum suppression in numpy, over a whole batch at once.

`groups` (image × class) keeps boxes of different images and classes from suppressing each other,
as torchvision's batched_nms and Ultralytics do. Suppression is IoU > threshold, as in torchvision.

Up to MATRIX_LIMIT candidates, which pair suppresses which is computed in one vectorised step and
the greedy result is found as a fixpoint over that matrix (see _greedy_matrix): no Python loop per
box. Beyond that the K x K matrix would be too large, and each kept box is compared against the
remaining candidates instead.
"""

from __future__ import annotations

import numpy as np

MATRIX_LIMIT = 2048


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes, in float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape[1] != 4 or b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) xyxy arrays, got {a.shape} and {b.shape}")
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
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
    order = np.argsort(-scores, kind="stable")
    if n <= MATRIX_LIMIT:
        kept = _greedy_matrix(boxes[order], groups[order], iou_threshold)
        if kept is not None:
            return order[kept]
    return _greedy_loop(boxes, groups, order, iou_threshold)


def _suppression_matrix(boxes: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray:
    """S[i, j] = box i (higher score, i < j) suppresses box j: same group and IoU > threshold.
    IoU > t is tested as inter > t * union, which needs no division and treats empty unions as 0.
    float32, as torchvision computes it for float32 boxes."""
    b = boxes.astype(np.float32, copy=False)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    inter = np.minimum.outer(x2, x2)
    inter -= np.maximum.outer(x1, x1)
    np.maximum(inter, np.float32(0), out=inter)
    h = np.minimum.outer(y2, y2)
    h -= np.maximum.outer(y1, y1)
    np.maximum(h, np.float32(0), out=h)
    inter *= h
    area = (x2 - x1) * (y2 - y1)
    union = np.add.outer(area, area)
    union -= inter
    union *= np.float32(iou_threshold)
    suppress = inter > union
    suppress &= groups[:, None] == groups[None, :]
    return np.triu(suppress, 1)


# Rounds of the fixpoint below before falling back to the one-box-at-a-time loop. Each round fixes
# at least one more level of "a suppresses b suppresses c" chains; real detections need 2-5.
MAX_ROUNDS = 32


def _greedy_matrix(boxes: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray | None:
    """Kept positions of score-sorted boxes, or None if the chains are too deep (use the loop).

    Greedy NMS keeps box j iff no *kept* higher-score box suppresses it. That rule has exactly one
    solution; iterating keep = not any(keep[i] and S[i, j]) from all-True reaches it in (longest
    suppression chain + 1) rounds, each one vectorised over all pairs."""
    suppress = _suppression_matrix(boxes, groups, iou_threshold)
    keep = np.ones(boxes.shape[0], bool)
    for _ in range(MAX_ROUNDS):
        new_keep = ~(suppress[keep].any(axis=0))
        if np.array_equal(new_keep, keep):
            return np.flatnonzero(keep)
        keep = new_keep
    return None


def _greedy_loop(boxes: np.ndarray, groups: np.ndarray, order: np.ndarray, iou_threshold: float) -> np.ndarray:
    """The same result for many candidates: each kept box against the remaining ones."""
    b = boxes.astype(np.float64)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep = np.empty(order.shape[0], np.int64)
    kept = 0
    while order.size:
        i = order[0]
        keep[kept] = i
        kept += 1
        rest = order[1:]
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
        union = areas[i] + areas[rest] - inter
        order = rest[(inter <= iou_threshold * union) | (groups[rest] != groups[i])]
    return keep[:kept]
