"""Letterbox + normalise into a ring of reusable input slots, and the preprocess stage.

Double buffering: the stage fills slot k while inference runs slot k-1 and postprocess decodes
slot k-2. A slot holds its batch's input tensor *and* the backend's output tensors, so it goes back
to the ring only when postprocess has read the outputs; nothing is allocated per frame.

Letterbox arithmetic follows Ultralytics (LetterBox, scale_boxes) exactly, so that boxes and scores
agree with Ultralytics' own pipeline on the same model:
  r = min(H / h, W / w); new = (round(w r), round(h r)); pad = (W - new_w) / 2, (H - new_h) / 2;
  left = round(pad_x - 0.1), top = round(pad_y - 0.1); INTER_LINEAR resize; pad value 114;
  boxes map back with per-axis gains new_w / w and new_h / h (scale_boxes in Ultralytics 8.4).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.frames import Batch, EndOfStream, Frame, Letterbox
from pipeline.queues import POLL_S, BoundedQueue, FanIn, Stopped
from pipeline.stage import Stage, StageContext

log = logging.getLogger(__name__)

PAD_VALUE = 114


def letterbox_geometry(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[Letterbox, int, int]:
    """The transform and the resized size (w, h) that fit a src_w x src_h image into dst_w x dst_h."""
    r = min(dst_h / src_h, dst_w / src_w)
    new_w, new_h = max(round(src_w * r), 1), max(round(src_h * r), 1)
    pad_x, pad_y = (dst_w - new_w) / 2, (dst_h - new_h) / 2
    lb = Letterbox(scale_x=new_w / src_w, scale_y=new_h / src_h, pad_x=round(pad_x - 0.1), pad_y=round(pad_y - 0.1))
    return lb, new_w, new_h


def letterbox_into(image: np.ndarray, dst: np.ndarray, canvas: np.ndarray) -> Letterbox:
    """Letterboxes BGR uint8 `image` into `dst` (3, H, W) as RGB float in 0..1.

    `canvas` is an (H, W, 3) uint8 scratch buffer the caller owns; the resize writes straight into
    its centre, so the only full-size passes are the fill, the resize and one convert."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8 BGR, got shape {image.shape} dtype {image.dtype}")
    dst_h, dst_w = dst.shape[1], dst.shape[2]
    if canvas.shape != (dst_h, dst_w, 3):
        raise ValueError(f"canvas must have shape {(dst_h, dst_w, 3)}, got {canvas.shape}")
    src_h, src_w = image.shape[:2]
    lb, new_w, new_h = letterbox_geometry(src_w, src_h, dst_w, dst_h)
    if (new_w, new_h) == (dst_w, dst_h):
        np.copyto(canvas, image)
    else:
        canvas.fill(PAD_VALUE)
        roi = canvas[lb.pad_y : lb.pad_y + new_h, lb.pad_x : lb.pad_x + new_w]
        if (new_w, new_h) == (src_w, src_h):
            np.copyto(roi, image)
        else:
            cv2.resize(image, (new_w, new_h), dst=roi, interpolation=cv2.INTER_LINEAR)
    # BGR→RGB, HWC→CHW and /255 in one pass (a strided view, no temporary).
    np.divide(canvas[:, :, ::-1].transpose(2, 0, 1), np.float32(255.0), out=dst, casting="unsafe")
    return lb


@dataclass(eq=False, slots=True)
class Slot:
    """One batch worth of model input and output tensors, keyed by tensor name."""

    index: int
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


class SlotRing:
    """A fixed set of slots handed out and returned; `acquire` waits (stop-checked) for a free one."""

    def __init__(self, slots: list[Slot]) -> None:
        if len(slots) < 2:
            raise ValueError(f"a slot ring needs at least 2 slots for double buffering, got {len(slots)}")
        self.slots = slots
        self._free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        self._in_use: set[int] = set()
        self._lock = threading.Lock()
        for slot in slots:
            self._free.put(slot)

    @classmethod
    def allocate(cls, count: int, batch: int, input_specs: dict[str, tuple[tuple[int, ...], np.dtype]],
                 output_specs: dict[str, tuple[tuple[int, ...], np.dtype]]) -> SlotRing:
        slots = [
            Slot(
                index=i,
                inputs={name: np.zeros((batch, *shape), dtype) for name, (shape, dtype) in input_specs.items()},
                outputs={name: np.zeros((batch, *shape), dtype) for name, (shape, dtype) in output_specs.items()},
            )
            for i in range(count)
        ]
        return cls(slots)

    def acquire(self, stop: threading.Event) -> Slot:
        while True:
            try:
                slot = self._free.get(timeout=POLL_S)
            except queue.Empty:
                if stop.is_set():
                    raise Stopped("stopped while waiting for a free input slot") from None
                continue
            with self._lock:
                self._in_use.add(slot.index)
            return slot

    def release(self, slot: Slot) -> None:
        with self._lock:
            if slot.index not in self._in_use:
                raise RuntimeError(f"slot {slot.index} released twice (or never acquired)")
            self._in_use.discard(slot.index)
        self._free.put(slot)

    @property
    def in_use(self) -> int:
        with self._lock:
            return len(self._in_use)


class PreprocessStage(Stage):
    """Takes frames from the cameras feeding one model (round-robin), letterboxes them into the
    rows of a free slot, and emits a Batch when it is full or `max_wait_s` has passed since its
    first frame. EndOfStream of a camera flushes the open batch first, so order is kept."""

    def __init__(self, model_id: str, inputs: FanIn, out: BoundedQueue, ring: SlotRing, input_name: str,
                 batch: int, max_wait_s: float, cameras: list[str]) -> None:
        super().__init__(f"preprocess[{model_id}]")
        self.model_id = model_id
        self.inputs = inputs
        self.out = out
        self.ring = ring
        self.input_name = input_name
        self.batch = batch
        self.max_wait_s = max_wait_s
        self.cameras = set(cameras)
        h, w = ring.slots[0].inputs[input_name].shape[2:4]
        self._canvas = np.empty((h, w, 3), np.uint8)

    def run(self, ctx: StageContext) -> None:
        stats = ctx.metrics.stage("preprocess")
        active = set(self.cameras)
        slot = None
        frames: list[Frame] = []
        first_at = 0.0
        while active:
            if ctx.stop.is_set():
                raise Stopped
            # An open batch waits only until its deadline; an idle stage re-checks stop every POLL_S.
            timeout = min(POLL_S, max(0.0, first_at + self.max_wait_s - time.monotonic())) if frames else POLL_S
            try:
                item = self.inputs.get(timeout)
            except queue.Empty:
                if frames and time.monotonic() >= first_at + self.max_wait_s:
                    self._emit(slot, frames, ctx)
                    slot, frames = None, []
                continue
            if isinstance(item, EndOfStream):
                if frames:
                    self._emit(slot, frames, ctx)
                    slot, frames = None, []
                active.discard(item.camera_id)
                self.out.put(item, ctx.stop)
                continue
            now = time.monotonic()
            stats.ages.add((now - item.capture_mono) * 1000.0)
            if slot is None:
                slot = self.ring.acquire(ctx.stop)
                first_at = time.monotonic()
            t0 = time.perf_counter()
            item.letterbox = letterbox_into(item.image, slot.inputs[self.input_name][len(frames)], self._canvas)
            stats.add_work(time.perf_counter() - t0, 1)
            frames.append(item)
            if len(frames) == self.batch:
                self._emit(slot, frames, ctx)
                slot, frames = None, []
        if slot is not None:
            self.ring.release(slot)

    def _emit(self, slot: Slot | None, frames: list[Frame], ctx: StageContext) -> None:
        if slot is None:
            raise RuntimeError("preprocess emitted a batch without a slot")
        self.out.put(Batch(self.model_id, frames, slot), ctx.stop)
