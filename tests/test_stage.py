"""Graph runner: errors, stop deadline, stuck stages; camera sets, stage pruning, drain vs join."""

import threading
import time

import pytest

from pipeline.frames import EndOfStream
from pipeline.queues import BoundedQueue, QueuePolicy
from pipeline.stage import (
    STOP_DEADLINE_S,
    CameraSet,
    GraphFailed,
    GraphRunner,
    GraphStuck,
    Stage,
    StageContext,
    consume,
)
from tests.helpers import wait_for


class Idle(Stage):
    def run(self, ctx: StageContext) -> None:
        while not ctx.stop.wait(0.01):
            pass


class Raises(Stage):
    def run(self, ctx: StageContext) -> None:
        time.sleep(0.1)
        raise ValueError("expected 3 channels, got 4")


class IgnoresStop(Stage):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()

    def run(self, ctx: StageContext) -> None:
        self.release.wait(30)  # e.g. stuck in a native call that never checks the stop event


def test_first_error_stops_every_stage_and_is_re_raised():
    runner = GraphRunner([Idle("a"), Raises("b"), Idle("c")])
    t0 = time.monotonic()
    with pytest.raises(GraphFailed, match="stage 'b' failed: ValueError: expected 3 channels, got 4") as info:
        runner.run()
    assert time.monotonic() - t0 < 2.0
    assert isinstance(info.value.__cause__, ValueError)
    assert runner.alive() == []


def test_a_stage_that_ignores_stop_is_reported_as_stuck():
    stuck = IgnoresStop("stuck")
    runner = GraphRunner([Raises("b"), stuck])
    t0 = time.monotonic()
    with pytest.raises(GraphFailed):  # the original error wins over the stuck report
        runner.run()
    assert STOP_DEADLINE_S <= time.monotonic() - t0 < STOP_DEADLINE_S + 1.5
    stuck.release.set()

    stuck = IgnoresStop("stuck")
    runner = GraphRunner([Idle("a"), stuck])
    runner.start()
    runner.stop()
    with pytest.raises(GraphStuck, match="stuck"):
        runner.wait()
    stuck.release.set()


def test_unique_stage_names():
    with pytest.raises(ValueError, match=r"stage names must be unique, got duplicates \['a'\]"):
        GraphRunner([Idle("a"), Idle("a")])


def test_a_camera_leaves_a_stage_only_once_the_stage_has_handled_its_end_of_stream():
    # Whoever waits for a camera to be gone (a removal, a restart) must wait while the stage still
    # finishes its clips or files or passes the sentinel on.
    ctx = StageContext()
    q = BoundedQueue("q", 4, QueuePolicy.BLOCK)
    cameras = CameraSet(["a"])
    q.put(EndOfStream("a"), ctx.stop)
    items = consume(q, cameras, ctx)
    assert isinstance(next(items), EndOfStream)
    assert "a" in cameras, "the camera left the stage before the stage had handled its end of stream"
    assert list(items) == [] and "a" not in cameras and cameras.finished()


class Quick(Stage):
    def run(self, ctx: StageContext) -> None:
        pass


def test_stages_that_have_returned_are_forgotten_when_stages_are_added():
    # A camera restarted a hundred times must not leave a hundred dead stages and threads behind.
    runner = GraphRunner([Idle("a")])
    runner.start()
    try:
        for _ in range(20):
            stage = Quick("capture[cam]")
            runner.add_stage(stage)
            assert wait_for(lambda stage=stage: not runner.is_running(stage.name), 5)
        assert [s.name for s in runner.stages] == ["a", "capture[cam]"]
        assert [s.name for s in runner.ctx.metrics.stages()] == ["a", "capture[cam]"]  # reused by name
    finally:
        runner.stop()
        runner.wait()


def test_a_drain_waits_for_a_camera_that_is_joining():
    # The graph holds seal_lock while a camera joins its stages' camera sets; a drain that arrives
    # meanwhile seals the graph only once the join is complete, never halfway through.
    runner = GraphRunner([Idle("a")])
    with runner.ctx.seal_lock:
        drain = threading.Thread(target=runner.drain)
        drain.start()
        time.sleep(0.2)
        assert not runner.ctx.sealed.is_set(), "sealed while a camera was joining"
    drain.join(5)
    assert runner.ctx.sealed.is_set() and runner.ctx.drain.is_set()


class Output(Stage):
    """Opens its output after `open_s`, or fails to open it (`fails`), then idles."""

    def __init__(self, name: str, open_s: float = 0.0, fails: bool = False) -> None:
        super().__init__(name)
        self.opened = threading.Event()
        self.open_s, self.fails = open_s, fails

    def run(self, ctx: StageContext) -> None:
        time.sleep(self.open_s)
        if self.fails:
            raise OSError("cannot bind ZeroMQ PUB socket on tcp://127.0.0.1:5555: Address already in use")
        self.opened.set()
        while not ctx.stop.wait(0.01):
            pass


class Source(Stage):
    is_source = True

    def __init__(self, name: str, outputs: list[Output]) -> None:
        super().__init__(name)
        self.outputs = outputs
        self.outputs_open_at_start: bool | None = None

    def run(self, ctx: StageContext) -> None:
        self.outputs_open_at_start = all(o.opened.is_set() for o in self.outputs)
        while not ctx.stop.wait(0.01):
            pass


def test_sources_start_once_every_output_is_open():
    outputs = [Output("fast"), Output("slow", open_s=0.3)]
    source = Source("capture", outputs)
    runner = GraphRunner([source, *outputs])
    runner.start()
    assert wait_for(lambda: source.outputs_open_at_start is not None, 5)
    assert source.outputs_open_at_start is True
    runner.stop()
    runner.wait()


def test_no_source_starts_when_an_output_cannot_be_opened():
    """A busy port stops the run before any frame is read: no other output has written anything."""
    outputs = [Output("events"), Output("zmq", open_s=0.1, fails=True)]
    source = Source("capture", outputs)
    runner = GraphRunner([source, *outputs])
    runner.start()
    with pytest.raises(GraphFailed, match="Address already in use"):
        runner.wait(timeout=5)
    assert source.outputs_open_at_start is None, "the source ran although an output had failed to open"
