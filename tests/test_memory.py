"""The glibc setting that returns freed frames to the OS (pipeline/memory.py)."""

import ctypes.util
import platform

import numpy as np
import pytest

from pipeline.memory import keep_frames_off_the_heap


def _rss_kb() -> int:
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1])


@pytest.mark.skipif(platform.system() != "Linux" or not ctypes.util.find_library("c"), reason="needs Linux with glibc")
def test_freed_frames_go_back_to_the_os():
    assert keep_frames_off_the_heap()
    before = _rss_kb()
    frames = [np.ones((720, 1280, 3), np.uint8) for _ in range(40)]  # 110 MB of decoded frames
    assert _rss_kb() - before > 80_000
    del frames
    assert _rss_kb() - before < 20_000, "freed frames stayed in the process"
