"""Letterbox + normalise into the rows of ring slots (`pipeline.slots`), and the preprocess stage
that batches frames across a model's cameras.

Owns the letterbox arithmetic and the batching policy; it does not own the slots (slots.py) nor
decide which frames exist (capture) or what inference does with them.

Letterbox arithmetic follows Ultralytics (LetterBox, scale_boxes) exactly, so that boxes and scores
agree with Ultralytics' own pipeline on the same model:
  r = min(H / h, W / w); new = (round(w r), round(h r)); pad = (W - new_w) / 2, (H - new_h) / 2;
  left = round(pad_x - 0.1), top = round(pad_y - 0.1); INTER_LINEAR resize; pad value 114;
  boxes map back with per-axis gains new_w / w and new_h / h (scale_boxes in Ultralytics 8.4).
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pipeline.frames import Batch, EndOfStream, Frame, Letterbox
from pipeline.queues import BoundedQueue, FanIn
from pipeline.slots import Rect, Slot, SlotRing
from pipeline.stage import CameraSet, Stage, StageContext
from pipeline.waiting import POLL_S, Stopped

if TYPE_CHECKING:
    from pipeline.inference import InferenceClock

log = logging.getLogger(__name__)

PAD_VALUE = 114
# Just-in-time batching (live graphs): the next batch is filled to be ready at JIT_AIM of the
# running batch's mean inference time, less JIT_MARGIN_S. Aimed early because inference time varies
# (±20 % on a busy CPU): a batch ready a little early costs a little age, one ready late idles the model.
JIT_AIM = 0.75
JIT_MARGIN_S = 0.003


def letterbox_geometry(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[Letterbox, int, int]:
    """The transform and the resized size (w, h) that fit a src_w x src_h image into dst_w x dst_h."""
    r = min(dst_h / src_h, dst_w / src_w)
    new_w, new_h = max(round(src_w * r), 1), max(round(src_h * r), 1)
    pad_x, pad_y = (dst_w - new_w) / 2, (dst_h - new_h) / 2
    lb = Letterbox(scale_x=new_w / src_w, scale_y=new_h / src_h, pad_x=round(pad_x - 0.1), pad_y=round(pad_y - 0.1))
    return lb, new_w, new_h


class LetterboxScratch:
    """Reusable buffers for letterbox_into, sized for one model input (never reallocated)."""

    def __init__(self, height: int, width: int) -> None:
        self.height = height
        self.width = width
        self._resized = np.empty(height * width * 3, np.uint8)
        self._planes = np.empty(height * width * 3, np.uint8)

    def resized(self, h: int, w: int) -> np.ndarray:
        return self._resized[: h * w * 3].reshape(h, w, 3)

    def planes(self, h: int, w: int) -> list[np.ndarray]:
        n = h * w
        return [self._planes[i * n : (i + 1) * n].reshape(h, w) for i in range(3)]


def letterbox_into(image: np.ndarray, dst: np.ndarray, scratch: LetterboxScratch, *,
                   pad_ready: Rect | None = None) -> tuple[Letterbox, Rect]:
    """Letterboxes BGR uint8 `image` into `dst` (3, H, W) float32 as RGB in 0..1, or into a uint8
    `dst` as RGB in 0..255 (a model that normalises itself, e.g. on a Triton server: the same
    numbers before the division, so its float32 is identical to the float32 written here).

    Returns the transform and the rectangle the image occupies. The padding is written only when
    `pad_ready` (the rectangle this `dst` held last time) differs, so a camera whose frames keep
    one size pays for converting its image area alone."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8 BGR, got shape {image.shape} dtype {image.dtype}")
    dst_h, dst_w = dst.shape[1], dst.shape[2]
    if (scratch.height, scratch.width) != (dst_h, dst_w):
        raise ValueError(f"scratch is for {scratch.height}x{scratch.width} inputs, dst is {dst_h}x{dst_w}")
    src_h, src_w = image.shape[:2]
    lb, new_w, new_h = letterbox_geometry(src_w, src_h, dst_w, dst_h)
    rect = (lb.pad_x, lb.pad_y, new_w, new_h)
    as_uint8 = dst.dtype == np.uint8
    if rect != pad_ready:
        dst.fill(PAD_VALUE if as_uint8 else np.float32(PAD_VALUE) / np.float32(255.0))
    if (new_w, new_h) == (src_w, src_h):
        resized = np.ascontiguousarray(image)
    else:
        resized = cv2.resize(image, (new_w, new_h), dst=scratch.resized(new_h, new_w), interpolation=cv2.INTER_LINEAR)
    # Split into contiguous planes, then BGR→RGB + /255 per plane: ~3x faster than one strided pass.
    planes = scratch.planes(new_h, new_w)
    cv2.split(resized, planes)
    roi = dst[:, lb.pad_y : lb.pad_y + new_h, lb.pad_x : lb.pad_x + new_w]
    for channel in range(3):
        if as_uint8:
            np.copyto(roi[channel], planes[2 - channel])
        else:
            np.divide(planes[2 - channel], np.float32(255.0), out=roi[channel], casting="unsafe")
    return lb, rect


class PreprocessStage(Stage):
    """Cross-camera deadline batching: takes frames from whichever cameras feeding one model have
    them (round-robin, so no camera starves another, and never waiting for a camera that has
    nothing), letterboxes them into the rows of a free slot, and emits a Batch when it is full or
    `max_wait_s` has passed since its first frame. EndOfStream of a camera flushes the open batch
    first, so order is kept.

    `max_age_s` (per camera): a frame older than this when picked up is dropped and counted
    (too_old).

    `clock` (live graphs): frames are picked up *just in time*. A batch is opened only when
    inference has room for it and the running batch is expected to end within about the time it
    takes to fill one (from the inference clock, aimed a little early so inference rarely waits).
    Filling as soon as there is room would hand the model frames one whole inference older: on a
    CPU, where inference takes ~100x longer than letterboxing, that doubles frame age for a gain
    of about 1 % in throughput. Where inference is as quick as preprocessing (a GPU), the wait is
    zero and the stages overlap fully."""

    def __init__(self, model_id: str, inputs: FanIn, out: BoundedQueue, ring: SlotRing, input_name: str,
                 batch: int, max_wait_s: float, cameras: CameraSet | list[str], *,
                 max_age_s: dict[str, float] | None = None, clock: InferenceClock | None = None) -> None:
        super().__init__(f"preprocess[{model_id}]")
        self.model_id = model_id
        self.inputs = inputs
        self.out = out
        self.ring = ring
        self.input_name = input_name
        self.batch = batch
        self.max_wait_s = max_wait_s
        self.cameras = cameras if isinstance(cameras, CameraSet) else CameraSet(cameras)
        self.max_age_s = max_age_s if max_age_s is not None else {}
        self.clock = clock
        self.fill_s_per_frame = 0.0  # moving average of letterbox time per frame (just in time uses it)
        h, w = ring.slots[0].inputs[input_name].shape[2:4]
        self._scratch = LetterboxScratch(h, w)

    def run(self, ctx: StageContext) -> None:
        stats = ctx.metrics.stage(self.name)
        metrics = ctx.metrics
        active = self.cameras
        batch: _OpenBatch | None = None
        try:
            while not active.finished():
                if ctx.stop.is_set():
                    raise Stopped
                if batch is None and self.clock is not None and not self.time_to_fill(ctx):
                    continue  # not yet: the frames picked now would wait; newer ones will come
                # An open batch waits only until its deadline; an idle stage re-checks stop every POLL_S.
                timeout = min(POLL_S, max(0.0, batch.deadline - time.monotonic())) if batch else POLL_S
                try:
                    item = self.inputs.get(timeout)
                except queue.Empty:
                    if batch is not None and time.monotonic() >= batch.deadline:
                        self._emit(batch, ctx)
                        batch = None
                    continue
                if isinstance(item, EndOfStream):
                    if batch is not None:  # the camera's last frames go out before its sentinel
                        self._emit(batch, ctx)
                        batch = None
                    self.out.put(item, ctx.stop)
                    # Only now, with its sentinel handed on, is the camera gone from this stage
                    # (a removal waiting for that must not see it gone while the put still blocks).
                    active.discard(item.camera_id)
                    continue
                now = time.monotonic()
                age_s = now - item.capture_mono
                limit = self.max_age_s.get(item.camera_id)
                if limit is not None and age_s > limit:
                    metrics.count_drop(item.camera_id, "too_old")
                    continue
                stats.ages.add(age_s * 1000.0)
                if not item.detect:
                    # Skipped by the camera's gate: it rides along (no row) to keep the camera's order;
                    # with no batch open it goes out at once in a batch of its own.
                    if batch is None:
                        self.out.put(Batch(self.model_id, [item], None), ctx.stop)
                    else:
                        batch.frames.append(item)
                    continue
                if batch is None:
                    batch = _OpenBatch(self.ring.acquire(ctx.stop), [], time.monotonic() + self.max_wait_s)
                t0 = time.perf_counter()
                row = batch.rows
                slot = batch.slot
                device = slot.bindings.get("cuda")  # a GPU ring that letterboxes on the device
                staged = False
                if device is not None and getattr(device, "raw_host", None) is not None:
                    h, w = item.image.shape[:2]
                    lb, new_w, new_h = letterbox_geometry(w, h, self._scratch.width, self._scratch.height)
                    staged = device.stage_raw(row, item.image, (lb.pad_x, lb.pad_y, new_w, new_h))
                    if staged:
                        item.letterbox = lb
                        slot.row_rects[row] = None  # the kernel rewrites the whole row, padding too
                if not staged:
                    item.letterbox, slot.row_rects[row] = letterbox_into(
                        item.image, slot.inputs[self.input_name][row], self._scratch, pad_ready=slot.row_rects[row]
                    )
                took = time.perf_counter() - t0
                stats.add_work(took, 1)
                self.fill_s_per_frame = 0.8 * self.fill_s_per_frame + 0.2 * took if self.fill_s_per_frame else took
                batch.frames.append(item)
                batch.rows += 1
                if batch.rows == self.batch:
                    self._emit(batch, ctx)
                    batch = None
        finally:
            if batch is not None:  # never handed on (stop or error): the slot goes back to the ring
                self.ring.release(batch.slot)

    def time_to_fill(self, ctx: StageContext) -> bool:
        """Whether to open the next batch now (live graphs, see the class docstring). Waits at most
        POLL_S per call, so the caller re-checks stop between calls.

        Returns:
            True when inference is idle, has no history, or the running batch ends within about the
            time it takes to fill the next one; False while a batch is queued or it is too soon."""
        if not self.out.wait_for_room(POLL_S):
            return False  # a batch is already queued for inference
        clock = self.clock
        started, mean = (clock.started, clock.mean_s) if clock is not None else (None, None)
        if started is None or mean is None:
            return True  # inference is idle (or has no history yet): fill now
        fill_s = self.fill_s_per_frame * self.batch + JIT_MARGIN_S
        wait = started + JIT_AIM * mean - fill_s - time.monotonic()
        if wait <= 0:
            return True
        ctx.stop.wait(min(wait, POLL_S))
        return False

    def _emit(self, batch: _OpenBatch, ctx: StageContext) -> None:
        """Hands the batch on (blocking while the next queue is full; raises Stopped on stop)."""
        self.out.put(Batch(self.model_id, batch.frames, batch.slot), ctx.stop)


@dataclass(slots=True)
class _OpenBatch:
    slot: Slot
    frames: list[Frame]
    deadline: float  # monotonic time by which it is sent, full or not
    rows: int = 0  # frames letterboxed into the slot (the others ride along)
