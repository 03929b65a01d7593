"""Counters: the rate meter sees any rate, not only rates below the size of a timestamp ring."""

from __future__ import annotations

import pytest

from pipeline.metrics import RATE_WINDOW_S, RateMeter


@pytest.mark.parametrize("fps", [3.0, 25.0, 204.8, 300.0, 1000.0])
def test_rate_meter_measures_fast_streams_too(fps):
    # A 1024-timestamp ring over a 5 s window read 204.8 for anything faster (a fast file, or the
    # inference rate of a GPU).
    meter = RateMeter()
    t0 = 5000.0
    n = int(fps * 2 * RATE_WINDOW_S)  # twice the window, so old events must have left it
    for i in range(n):
        meter.add(t0 + i / fps)
    now = t0 + n / fps
    # within 3 %, or one event's worth at low rates (the window is counted in whole buckets)
    assert abs(meter.rate(now) - fps) <= 0.03 * fps + 1 / RATE_WINDOW_S, meter.rate(now)


def test_rate_meter_forgets_what_left_the_window_and_starts_from_the_first_event():
    meter = RateMeter()
    assert meter.rate(10.0) == 0.0
    for i in range(25):  # 10 fps for 2.5 s
        meter.add(100.0 + i / 10)
    assert meter.rate(102.5) == pytest.approx(10.0, rel=0.05)  # over 2.5 s of history, not 5
    for i in range(25, 50):  # 2.5 s more
        meter.add(100.0 + i / 10)
    assert meter.rate(105.0) == pytest.approx(10.0, rel=0.05)
    assert meter.rate(107.5) == pytest.approx(5.0, rel=0.1)  # half the window is silent
    assert meter.rate(111.0) == 0.0
    meter.add(111.0)  # slots are reused for new buckets, old counts do not come back
    assert meter.rate(111.0 + 1.0) == pytest.approx(1 / RATE_WINDOW_S, rel=0.05)
