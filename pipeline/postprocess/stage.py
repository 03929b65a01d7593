"""Postprocess stage: decode + NMS per batch, release the slot, route results to each camera's sinks."""

from __future__ import annotations

import time

from pipeline.frames import Batch, EndOfStream, FrameResult
from pipeline.postprocess.yolo import YoloDecoder
from pipeline.preprocess import SlotRing
from pipeline.queues import BoundedQueue
from pipeline.stage import Stage, StageContext, consume


class PostprocessStage(Stage):
    def __init__(self, model_id: str, inp: BoundedQueue, ring: SlotRing, decoder: YoloDecoder, output_name: str,
                 class_names: dict[int, str], routes: dict[str, list[BoundedQueue]]) -> None:
        super().__init__(f"postprocess[{model_id}]")
        self.inp = inp
        self.ring = ring
        self.decoder = decoder
        self.output_name = output_name
        self.class_names = class_names
        self.routes = routes  # camera id -> the input queues of the sinks that want that camera

    def run(self, ctx: StageContext) -> None:
        stats = ctx.metrics.stage(self.name)
        cameras = {cid: ctx.metrics.camera(cid) for cid in self.routes}
        for item in consume(self.inp, self.routes, ctx):
            if isinstance(item, EndOfStream):
                for q in self.routes[item.camera_id]:
                    q.put(item, ctx.stop)
                continue
            batch: Batch = item
            t0 = time.perf_counter()
            now = time.monotonic()
            for frame in batch.frames:
                stats.ages.add((now - frame.capture_mono) * 1000.0)
            try:
                detections = self.decoder.decode(batch.slot.outputs[self.output_name], batch.frames)
            finally:
                self.ring.release(batch.slot)
            stats.add_work(time.perf_counter() - t0, len(batch))
            for frame, dets in zip(batch.frames, detections, strict=True):
                cam = cameras[frame.camera_id]
                cam.frames_out += 1
                cam.last_out_mono = time.monotonic()
                cam.output_ages.add(frame.age_ms(cam.last_out_mono))
                result = FrameResult(frame, dets, self.class_names)
                for q in self.routes[frame.camera_id]:
                    q.put(result, ctx.stop)
