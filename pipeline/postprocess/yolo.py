"""Decoders for YOLO output layouts, vectorised over the batch.

- `yolov8` (also YOLO11, Ultralytics' current head): output [B, 4 + nc, N]; rows are cx, cy, w, h in
  input pixels, then nc class scores (already sigmoid). Confidence = best class score.
- `yolov5` (also YOLOv7 and other anchor-based heads): output [B, N, 5 + nc]; cx, cy, w, h,
  objectness, nc class scores. Confidence = objectness × class score.

Matches Ultralytics' non_max_suppression for these layouts: candidates above `conf` on the best
class, class filter applied to the best class, class-aware greedy NMS (IoU > iou suppresses), at
most `max_det` per image, boxes mapped back through the letterbox and clipped to the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.frames import Detections, Frame
from pipeline.postprocess.nms import nms

Family = Literal["yolov8", "yolo11", "yolov5"]
FAMILIES: tuple[str, ...] = ("yolov8", "yolo11", "yolov5")


class LayoutError(ValueError):
    """The model's output shape does not fit the configured family."""


@dataclass(frozen=True, slots=True)
class DecodeParams:
    """The decoder's thresholds: confidence, NMS IoU, detections per image, and a class filter."""

    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 300
    classes: frozenset[int] | None = None  # None: every class


class YoloDecoder:
    """Turns a batch of one YOLO output layout into Detections per frame (see the module docstring).

    Args:
        family: yolov8, yolo11 or yolov5 (yolo11 decodes as yolov8).
        output_shape: one batch row of the model's output (without the batch axis).
        num_classes: the model's class count when known; it must then match the layout.
        params: thresholds and class filter.

    Raises:
        LayoutError: an unknown family, or an output shape that does not fit it (the message says
            when it fits the other family).
    """

    def __init__(self, family: str, output_shape: tuple[int, ...], num_classes: int | None, params: DecodeParams) -> None:
        if family not in FAMILIES:
            raise LayoutError(f"unknown family {family!r}: expected one of {', '.join(FAMILIES)}")
        self.family_name = family  # as configured, for messages
        self.family = "yolov5" if family == "yolov5" else "yolov8"  # the layout it decodes
        self.params = params
        self.num_classes = self._check_layout(tuple(output_shape), num_classes)
        self._class_filter = (
            np.array(sorted(params.classes), np.int64) if params.classes is not None else None
        )

    def _check_layout(self, shape: tuple[int, ...], nc: int | None) -> int:
        """The number of classes the output holds; LayoutError if it does not fit the family."""
        if len(shape) != 2:
            raise LayoutError(
                f"family {self.family_name!r} expects a 3D output [batch, ...], got one row of shape {list(shape)}"
            )
        v8 = self.family == "yolov8"
        if _fits(shape, v8, nc):
            return (shape[0] - 4) if v8 else (shape[1] - 5)
        expected = "[batch, 4+nc, anchors]" if v8 else "[batch, anchors, 5+nc]"
        if nc:
            expected += f" = [batch, {4 + nc}, N]" if v8 else f" = [batch, N, {5 + nc}]"
        hint = ""
        if _fits(shape, not v8, nc):
            hint = (" This looks like the YOLOv5 layout [batch, anchors, 5+nc]: set family: yolov5." if v8 else
                    " This looks like the YOLOv8/YOLO11 layout [batch, 4+nc, anchors]: set family: yolov8.")
        raise LayoutError(f"family {self.family_name!r} expects output {expected}, got [batch, {shape[0]}, {shape[1]}].{hint}")

    def decode(self, output: np.ndarray, frames: Sequence[Frame]) -> list[Detections]:
        """`output`: rows 0..len(frames)-1 of the model output. Frames carry their letterbox."""
        n = len(frames)
        x = output[:n]
        p = self.params
        if self.family == "yolov8":
            scores = x[:, 4:, :]
            best = scores.max(axis=1)  # (n, N)
            b, a = np.nonzero(best > p.conf)
            class_id = scores[b, :, a].argmax(axis=1)
            confidence = best[b, a]
            cxcywh = x[b, :4, a]
        else:
            objectness = x[:, :, 4]
            b, a = np.nonzero(objectness > p.conf)
            class_scores = x[b, a, 5:] * objectness[b, a, None]
            class_id = class_scores.argmax(axis=1)
            confidence = class_scores[np.arange(class_id.shape[0]), class_id]
            cxcywh = x[b, a, :4]
            passed = confidence > p.conf
            b, class_id, confidence, cxcywh = b[passed], class_id[passed], confidence[passed], cxcywh[passed]
        if self._class_filter is not None:
            wanted = np.isin(class_id, self._class_filter)
            b, class_id, confidence, cxcywh = b[wanted], class_id[wanted], confidence[wanted], cxcywh[wanted]
        cxcywh = cxcywh.astype(np.float32, copy=False)  # fp16 models: box arithmetic in fp32
        xyxy = np.empty_like(cxcywh)
        half = cxcywh[:, 2:] / 2
        xyxy[:, :2] = cxcywh[:, :2] - half
        xyxy[:, 2:] = cxcywh[:, :2] + half
        # Candidates are grouped by image (np.nonzero returns them in row order), so each image's
        # NMS sees only its own boxes: the pairwise work grows with one image's candidates, not
        # with the batch's. The loop is over images in the batch, not over detections.
        bounds = np.searchsorted(b, np.arange(n + 1))
        results = []
        for i, frame in enumerate(frames):
            lo, hi = bounds[i], bounds[i + 1]
            keep = lo + nms(xyxy[lo:hi], confidence[lo:hi], class_id[lo:hi], p.iou)[: p.max_det]
            boxes = xyxy[keep]
            if frame.letterbox is None:
                raise ValueError(f"frame {frame.camera_id}#{frame.seq} reached decode without a letterbox")
            frame.letterbox.to_original(boxes, frame.width, frame.height)
            results.append(Detections(boxes, confidence[keep].astype(np.float32), class_id[keep].astype(np.int64)))
        return results


def _fits(shape: tuple[int, ...], v8: bool, nc: int | None) -> bool:
    """Whether one output row fits the v8 layout (4+nc, anchors) or the v5 layout (anchors, 5+nc)."""
    channels, anchors = shape if v8 else shape[::-1]
    fixed = 4 if v8 else 5
    return channels > fixed and (nc is None or channels == fixed + nc) and anchors > channels
