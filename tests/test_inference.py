"""The inference stage and its clock: a failing backend gives its slot back, and the clock times
the preprocess stage's just-in-time batches (live graphs)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pipeline.frames import Batch, EndOfStream, Frame
from pipeline.inference import InferenceClock, InferenceStage
from pipeline.preprocess import JIT_AIM, JIT_MARGIN_S, PreprocessStage
from pipeline.queues import BoundedQueue, FanIn, QueuePolicy
from pipeline.slots import SlotRing
from pipeline.stage import StageContext
from pipeline.waiting import POLL_S


def frame(seq: int = 0) -> Frame:
    return Frame("cam", seq, np.zeros((48, 64, 3), np.uint8), time.monotonic(), time.time(), "test")


def test_a_slot_goes_back_to_the_ring_when_the_backend_raises(ort_backend):
    # A ring whose input rows are 32x32 for a 640x640 model: the real ONNX Runtime session refuses
    # the batch. The stage must raise (the graph stops with that error) and leave no slot handed out.
    info = ort_backend.info
    ring = SlotRing.allocate(2, 1, {info.input.name: ((3, 32, 32), np.float32)},
                             {o.name: (o.shape, o.dtype) for o in info.outputs})
    ctx = StageContext()
    inp = BoundedQueue("in", 2, QueuePolicy.BLOCK)
    out = BoundedQueue("out", 2, QueuePolicy.BLOCK)
    inp.put(Batch("m", [frame()], ring.acquire(ctx.stop)), ctx.stop)
    inp.put(EndOfStream("cam"), ctx.stop)
    stage = InferenceStage("m", ort_backend, ring, inp, out, ["cam"])
    assert ring.in_use() == 1
    with pytest.raises(RuntimeError, match="invalid dimensions for input: images"):
        stage.run(ctx)
    assert ring.in_use() == 0, "the failed batch's slot was not released"
    assert len(out) == 0 and stage.clock.started is not None  # nothing handed on


class JustInTime:
    """A preprocess stage of a live graph with one camera and an inference clock to set."""

    def __init__(self, batch: int = 1, out_size: int = 1) -> None:
        ring = SlotRing.allocate(2, batch, {"images": ((3, 32, 32), np.float32)}, {"out": ((4,), np.float32)})
        cond = threading.Condition()
        self.clock = InferenceClock()
        self.out = BoundedQueue("pre>inf", out_size, QueuePolicy.BLOCK)
        self.stage = PreprocessStage("m", FanIn([], condition=cond), self.out, ring, "images", batch, 0.5, ["cam"],
                                     clock=self.clock)
        self.ctx = StageContext()

    def time_to_fill(self) -> tuple[bool, float]:
        t0 = time.monotonic()
        answer = self.stage.time_to_fill(self.ctx)
        return answer, time.monotonic() - t0


def test_just_in_time_fills_at_once_when_inference_is_idle_or_has_no_history():
    jit = JustInTime()
    assert jit.time_to_fill()[0] is True  # no history
    jit.clock.begin(time.monotonic())
    assert jit.time_to_fill()[0] is True  # running, but no mean yet
    jit.clock.end(time.monotonic())
    assert jit.clock.mean_s is not None and jit.clock.started is None
    assert jit.time_to_fill()[0] is True  # idle


def test_just_in_time_waits_until_the_running_batch_is_nearly_done():
    jit = JustInTime(batch=4)
    jit.stage.fill_s_per_frame = 0.01  # 40 ms to fill a batch of 4
    jit.clock.mean_s = 1.0
    jit.clock.begin(time.monotonic())
    # Due at started + JIT_AIM * mean - fill time: about 0.7 s from now; each call waits at most
    # POLL_S (so stop is checked) and says not yet.
    answer, took = jit.time_to_fill()
    assert answer is False and POLL_S * 0.8 <= took < POLL_S * 3
    # A batch that started long enough ago: fill now, without waiting.
    jit.clock.begin(time.monotonic() - (JIT_AIM * 1.0 - 4 * 0.01 - JIT_MARGIN_S) - 0.01)
    answer, took = jit.time_to_fill()
    assert answer is True and took < POLL_S / 2


def test_just_in_time_counts_the_calls_until_the_batch_is_due():
    jit = JustInTime(batch=1)
    jit.stage.fill_s_per_frame = 0.0
    jit.clock.mean_s = 0.4
    start = time.monotonic()
    jit.clock.begin(start)
    due = start + JIT_AIM * 0.4 - JIT_MARGIN_S
    while not jit.time_to_fill()[0]:
        assert time.monotonic() < due + 0.5, "never became due"
    assert time.monotonic() >= due - 0.005, f"filled {due - time.monotonic():.3f} s early"


def test_just_in_time_never_opens_a_batch_while_one_waits_for_inference():
    jit = JustInTime(out_size=1)
    jit.out.put(Batch("m", [frame()], None), jit.ctx.stop)  # a batch is already queued
    answer, took = jit.time_to_fill()
    assert answer is False and took >= POLL_S * 0.8  # waited (bounded) for room, then not yet
