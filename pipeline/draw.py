"""Drawing detections, track ids, zones, lines and open alerts onto a frame.

One module for every picture Vigil makes (the annotated video sink, evidence snapshots and clips),
so they all look the same. It draws into a canvas it is given and never touches `frame.image`,
which other sinks may still be reading.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.frames import FrameResult

# Distinct BGR colours, picked by track id (or class id for untracked detections).
PALETTE: list[tuple[int, int, int]] = [
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
    (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
    (200, 149, 255), (199, 55, 255)]
ZONE_COLOR = (0, 215, 255)
ALERT_COLOR = (0, 0, 255)
LINE_COLOR = (255, 255, 0)


def fit_into(image: np.ndarray, canvas: np.ndarray) -> None:
    """Scales `image` to fit `canvas`, centred, keeping its aspect ratio; the rest is black.

    Args:
        image: HxWx3 uint8.
        canvas: the destination, written in place.
    """
    ch, cw = canvas.shape[:2]
    h, w = image.shape[:2]
    scale = min(cw / w, ch / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    x, y = (cw - nw) // 2, (ch - nh) // 2
    canvas.fill(0)
    cv2.resize(image, (nw, nh), dst=canvas[y : y + nh, x : x + nw], interpolation=cv2.INTER_AREA)


def draw_overlay(canvas: np.ndarray, result: FrameResult) -> None:
    """Zones (red while any alert is open, else yellow outlines) and lines, with their ids, and an
    ALERT banner naming the open rules.

    Args:
        canvas: BGR image of the frame's size, drawn on in place.
        result: the frame's result; nothing is drawn when it has no overlay (no rules).
    """
    overlay = result.overlay
    if overlay is None:
        return
    color = ALERT_COLOR if result.alerts else ZONE_COLOR
    for name, pts in overlay.zones.items():
        poly = pts.round().astype(np.int32)
        cv2.polylines(canvas, [poly], True, color, 2, cv2.LINE_AA)
        cv2.putText(canvas, name, tuple(poly[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    for name, (a, b) in overlay.lines.items():
        pa, pb = tuple(a.round().astype(int).tolist()), tuple(b.round().astype(int).tolist())
        cv2.line(canvas, pa, pb, LINE_COLOR, 2, cv2.LINE_AA)
        cv2.putText(canvas, name, pa, cv2.FONT_HERSHEY_SIMPLEX, 0.5, LINE_COLOR, 1, cv2.LINE_AA)
    if result.alerts:
        text = "ALERT: " + ", ".join(result.alerts)
        h = canvas.shape[0]
        cv2.rectangle(canvas, (0, h - 28), (min(canvas.shape[1], 14 + 11 * len(text)), h), (0, 0, 200), -1)
        cv2.putText(canvas, text, (8, h - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)


def draw_detections(canvas: np.ndarray, result: FrameResult) -> None:
    """Boxes with `#track class confidence` labels, coloured by track (or class when untracked).

    Args:
        canvas: BGR image of the frame's size, drawn on in place.
        result: the frame's detections (original-frame pixels).
    """
    det = result.detections
    thickness = max(1, round(min(canvas.shape[:2]) / 400))
    track_ids = det.track_id.tolist() if det.track_id is not None else [-1] * len(det)
    for (x1, y1, x2, y2), conf, cls, track in zip(det.xyxy.astype(int).tolist(), det.confidence.tolist(),
                                                   det.class_id.tolist(), track_ids, strict=True):
        color = PALETTE[(track if track >= 0 else cls) % len(PALETTE)]
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        label = f"#{track} " if track >= 0 else ""
        label += f"{result.class_names.get(cls, str(cls))} {conf:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(y1 - th - base - 2, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1)
        cv2.putText(canvas, label, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)


def draw_header(canvas: np.ndarray, text: str) -> None:
    """A black box in the top-left corner with `text` (e.g. the camera id and its fps)."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 2)
    cv2.rectangle(canvas, (0, 0), (tw + 16, th + base + 12), (0, 0, 0), -1)
    cv2.putText(canvas, text, (8, th + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 2, cv2.LINE_AA)


def annotate(result: FrameResult, out: np.ndarray | None = None) -> np.ndarray:
    """The frame with its overlay and detections drawn (the frame itself is untouched).

    Args:
        result: the frame and what to draw on it.
        out: a canvas of the frame's shape to draw into (reused per frame by writers of many
            frames); None: a new one.

    Returns:
        `out` (or a new HxWx3 uint8 image): a copy of `result.frame.image`, annotated.
    """
    if out is None:
        canvas = result.frame.image.copy()
    else:
        canvas = out
        np.copyto(canvas, result.frame.image)
    draw_overlay(canvas, result)
    draw_detections(canvas, result)
    return canvas
