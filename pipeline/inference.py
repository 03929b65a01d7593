"""Inference stage: runs each batch's slot through the backend, in place, and passes it on.

It only calls the backend: the batch's input tensors are already in its slot (preprocess wrote
them), outputs land in the same slot, and decoding them is postprocess's job.
"""

from __future__ import annotations

import collections
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from pipeline.backends.base import Backend, BackendUnavailable
from pipeline.frames import Batch, EndOfStream
from pipeline.queues import BoundedQueue
from pipeline.slots import SlotRing
from pipeline.stage import CameraSet, Stage, StageContext, consume


@dataclass(slots=True)
class InferenceClock:
    """When the running batch started and how long batches take (moving average), shared with the
    model's preprocess stage so that for live cameras it fills the next batch just before the
    running one ends, with the newest frames. Written by the inference thread only."""

    started: float | None = None  # monotonic start of the batch running now; None when idle
    mean_s: float | None = None  # moving average of one batch's inference time

    def begin(self, now: float) -> None:
        self.started = now

    def end(self, now: float) -> None:
        if self.started is not None:
            took = now - self.started
            self.mean_s = took if self.mean_s is None else 0.8 * self.mean_s + 0.2 * took
        self.started = None


class InferenceStage(Stage):
    """Runs each batch through the backend on its slot (outputs land in the slot) and passes the
    batch on; a batch that fails is released back to the ring.

    A backend that raises BackendUnavailable (a model server down or too slow) does not end the
    run: the batch's detected frames are dropped and counted (`model_unavailable`), frames riding
    along go on without detections, and the model lane's state (Metrics.model) is `unavailable`
    until a batch runs again (`ready`).

    Args:
        model_id: the model's id, for the stage name.
        backend: the loaded model.
        ring: the slot ring the batches' slots belong to.
        inp: batches from the model's preprocess stage.
        out: the queue to postprocess.
        cameras: the cameras whose EndOfStream the stage waits for.
        clock: shared with preprocess to time live batches; a new one when None.
    """

    def __init__(self, model_id: str, backend: Backend, ring: SlotRing, inp: BoundedQueue, out: BoundedQueue,
                 cameras: CameraSet | list[str], clock: InferenceClock | None = None) -> None:
        super().__init__(f"inference[{model_id}]")
        self.model_id = model_id
        self.backend = backend
        self.ring = ring
        self.inp = inp
        self.out = out
        self.cameras = cameras if isinstance(cameras, CameraSet) else CameraSet(cameras)
        self.clock = clock if clock is not None else InferenceClock()

    def run(self, ctx: StageContext) -> None:
        if getattr(self.backend, "max_in_flight", 1) > 1:
            self._run_in_flight(ctx)
            return
        stats = ctx.metrics.stage(self.name)
        for item in consume(self.inp, self.cameras, ctx):
            if isinstance(item, EndOfStream) or item.slot is None:  # a sentinel, or only frames the model skips
                self.out.put(item, ctx.stop)
                continue
            now = time.monotonic()
            for frame in item.frames:
                stats.ages.add((now - frame.capture_mono) * 1000.0)
            t0 = time.perf_counter()
            self.clock.begin(now)
            try:
                self.backend.infer(item.slot, item.rows)
            except BackendUnavailable as exc:
                self._unavailable(item, exc, ctx)
                continue
            except BaseException:
                self.ring.release(item.slot)  # not handed on: nobody else will release it
                raise
            self._hand_on(item, t0, ctx)

    def _run_in_flight(self, ctx: StageContext) -> None:
        """Keeps up to `backend.max_in_flight` batches submitted (a remote model server: the
        network's round trip overlaps the server's work) and hands them on in submission order.
        Anything that must not overtake a batch (an end of stream, frames the model skips) waits
        until the batches before it are done."""
        stats = ctx.metrics.stage(self.name)
        limit = self.backend.max_in_flight  # type: ignore[attr-defined]
        wait_s = getattr(self.backend, "timeout_s", 60.0) + 5.0  # the backend times out its own requests first
        pending: collections.deque[tuple[Batch, Future[None], float]] = collections.deque()

        def finish_oldest(block: bool) -> bool:
            item, future, t0 = pending[0]
            if not block and not future.done():
                return False
            pending.popleft()
            try:
                future.result(timeout=wait_s)
            except (BackendUnavailable, FutureTimeout) as exc:
                self._unavailable(item, exc if isinstance(exc, BackendUnavailable) else
                                  BackendUnavailable(f"no answer within {wait_s:g} s"), ctx)
                return True
            except BaseException:
                self.ring.release(item.slot)  # type: ignore[arg-type]
                raise
            self._hand_on(item, t0, ctx)
            return True

        def finish_done() -> None:
            while pending and finish_oldest(block=False):
                pass

        for item in consume(self.inp, self.cameras, ctx, on_idle=finish_done):
            if isinstance(item, EndOfStream) or item.slot is None:
                while pending:
                    finish_oldest(block=True)
                self.out.put(item, ctx.stop)
                continue
            now = time.monotonic()
            for frame in item.frames:
                stats.ages.add((now - frame.capture_mono) * 1000.0)
            self.clock.begin(now)
            pending.append((item, self.backend.submit(item.slot, item.rows), time.perf_counter()))  # type: ignore[attr-defined]
            while len(pending) >= limit:
                finish_oldest(block=True)
            finish_done()

    def _unavailable(self, item: Batch, exc: BackendUnavailable, ctx: StageContext) -> None:
        """A batch the model server could not run: its detected frames are dropped and counted,
        the frames riding along go on without detections."""
        self.clock.started = None  # no timing from a failed batch
        assert item.slot is not None
        self.ring.release(item.slot)
        detected = item.detected_frames
        for frame in detected:
            ctx.metrics.count_drop(frame.camera_id, "model_unavailable")
        ctx.metrics.model(self.model_id).set_unavailable(str(exc), len(detected))
        riding = [f for f in item.frames if not f.detect]
        if riding:  # they need no model: keep each camera's stream (and tracker) going
            self.out.put(Batch(item.model_id, riding, None), ctx.stop)

    def _hand_on(self, item: Batch, t0: float, ctx: StageContext) -> None:
        """A batch whose outputs are in its slot: on to postprocess."""
        ctx.metrics.model(self.model_id).set_ready()
        try:
            self.clock.end(time.monotonic())
            ctx.metrics.stage(self.name).add_work(time.perf_counter() - t0, item.rows)
            self.out.put(item, ctx.stop)
        except BaseException:
            assert item.slot is not None
            self.ring.release(item.slot)  # not handed on: nobody else will release it
            raise
