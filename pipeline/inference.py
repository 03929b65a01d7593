"""Inference stage: runs each batch's slot through the backend, in place, and passes it on."""

from __future__ import annotations

import time

from pipeline.backends.base import Backend
from pipeline.frames import EndOfStream
from pipeline.preprocess import SlotRing
from pipeline.queues import BoundedQueue
from pipeline.stage import CameraSet, Stage, StageContext, consume


class InferenceStage(Stage):
    def __init__(self, model_id: str, backend: Backend, ring: SlotRing, inp: BoundedQueue, out: BoundedQueue,
                 cameras: CameraSet | list[str]) -> None:
        super().__init__(f"inference[{model_id}]")
        self.backend = backend
        self.ring = ring
        self.inp = inp
        self.out = out
        self.cameras = cameras if isinstance(cameras, CameraSet) else CameraSet(cameras)

    def run(self, ctx: StageContext) -> None:
        stats = ctx.metrics.stage(self.name)
        for item in consume(self.inp, self.cameras, ctx):
            if isinstance(item, EndOfStream):
                self.out.put(item, ctx.stop)
                continue
            now = time.monotonic()
            for frame in item.frames:
                stats.ages.add((now - frame.capture_mono) * 1000.0)
            t0 = time.perf_counter()
            try:
                self.backend.infer(item.slot, len(item))
                stats.add_work(time.perf_counter() - t0, len(item))
                self.out.put(item, ctx.stop)
            except BaseException:
                self.ring.release(item.slot)  # not handed on: nobody else will release it
                raise
