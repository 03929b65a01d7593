"""Graph runner: errors, stop deadline, stuck stages."""

import threading
import time

import pytest

from pipeline.stage import STOP_DEADLINE_S, GraphFailed, GraphRunner, GraphStuck, Stage, StageContext


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
