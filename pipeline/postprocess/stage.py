"""Postprocess stage: decode + NMS per batch, release the slot, route results to each camera's sinks.

The slot goes back to the ring as soon as its outputs are decoded, before any result is routed, so
preprocess can refill it while sinks are slow. That is safe because the decoder's Detections are
copies (fancy indexing), never views of the slot's arrays; nothing downstream may keep such a view.
"""

from __future__ import annotations

import time

from pipeline.frames import Batch, Detections, EndOfStream, FrameResult
from pipeline.metrics import CameraMetrics
from pipeline.postprocess.yolo import YoloDecoder
from pipeline.queues import BoundedQueue
from pipeline.slots import SlotRing
from pipeline.stage import CameraSet, Stage, StageContext, consume


class PostprocessStage(Stage):
    """Decodes each batch's output, releases its slot, and puts each frame's FrameResult on its
    camera's routes; results older than the camera's bound are dropped (counted as too_old).

    Args:
        model_id: the model's id, for the stage name.
        inp: batches from the inference stage.
        ring: the slot ring to release the batches' slots to.
        decoder: the model's YOLO decoder.
        output_name: the output tensor it decodes.
        class_names: the model's class names, attached to each result.
        routes: camera id -> the queues of the stages that take its results.
        cameras: the cameras whose EndOfStream the stage waits for; default: those in `routes`.
        max_age_s: camera id -> the oldest a result may be when handed on; none for cameras not in it.
    """

    def __init__(self, model_id: str, inp: BoundedQueue, ring: SlotRing, decoder: YoloDecoder, output_name: str,
                 class_names: dict[int, str], routes: dict[str, list[BoundedQueue]],
                 cameras: CameraSet | None = None, max_age_s: dict[str, float] | None = None) -> None:
        super().__init__(f"postprocess[{model_id}]")
        self.inp = inp
        self.ring = ring
        self.decoder = decoder
        self.output_name = output_name
        self.class_names = class_names
        self.routes = routes  # camera id -> the input queues of the sinks that want that camera
        self.cameras = cameras if cameras is not None else CameraSet(routes)
        # Per camera: results older than this are dropped (too_old) rather than handed on late.
        self.max_age_s = max_age_s if max_age_s is not None else {}

    def run(self, ctx: StageContext) -> None:
        stats = ctx.metrics.stage(self.name)
        metrics = ctx.metrics
        previews = ctx.previews
        cameras: dict[str, CameraMetrics] = {}  # cached: metrics.camera() takes a lock
        for item in consume(self.inp, self.cameras, ctx):
            if isinstance(item, EndOfStream):
                for q in self.routes.get(item.camera_id, ()):  # a removed camera's routes may be gone
                    q.put(item, ctx.stop)
                continue
            batch: Batch = item
            t0 = time.perf_counter()
            now = time.monotonic()
            for frame in batch.frames:
                stats.ages.add((now - frame.capture_mono) * 1000.0)
            decoded: list[Detections] = []
            if batch.slot is not None:
                try:
                    self.ring.ready(batch.slot)  # a GPU ring: its outputs' copy back to the host has completed
                    decoded = self.decoder.decode(batch.slot.outputs[self.output_name], batch.detected_frames)
                finally:
                    self.ring.release(batch.slot)
            stats.add_work(time.perf_counter() - t0, len(batch))
            rows = iter(decoded)
            for frame in batch.frames:
                # Frames the model skipped ride along with no detections (the tracker predicts theirs).
                dets = next(rows) if frame.detect else Detections.empty()
                now = time.monotonic()
                limit = self.max_age_s.get(frame.camera_id)
                if limit is not None and now - frame.capture_mono > limit:
                    metrics.count_drop(frame.camera_id, "too_old")
                    continue
                cam = cameras.get(frame.camera_id) or cameras.setdefault(frame.camera_id, metrics.camera(frame.camera_id))
                cam.record_out(now, frame.age_ms(now), detected=frame.detect)
                cam.check_capacity_now_and_then(now)
                result = FrameResult(frame, dets, self.class_names, detected=frame.detect)
                previews.offer(result)  # a reference, for the status page
                for q in self.routes[frame.camera_id]:
                    q.put(result, ctx.stop)
