"""The glibc setting that returns freed frames to the OS (pipeline/memory.py).

Measured in a fresh interpreter: in the test process, threads left by earlier tests (a graph's
daemon stages, native decoder and inference pools) allocate and free at the same time and move
the RSS by tens of MB either way, which is what made this test fail in CI.
"""

import ctypes.util
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = textwrap.dedent("""
    import numpy as np
    from pipeline.memory import keep_frames_off_the_heap

    def rss_kb():
        return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1])

    if FIX:
        assert keep_frames_off_the_heap()
    np.ones((720, 1280, 3), np.uint8)  # a freed frame raises glibc's dynamic mmap threshold
    before = rss_kb()
    frames = [np.ones((720, 1280, 3), np.uint8) for _ in range(40)]  # 110 MB of decoded frames
    pin = np.ones(64 * 1024, np.uint8)  # allocated above the frames: the heap cannot shrink past it
    held = rss_kb() - before
    del frames
    print(held, rss_kb() - before)
""")


def _probe(fix: bool) -> tuple[int, int]:
    """(kB the frames added to the RSS, kB still there after they were freed)."""
    result = subprocess.run([sys.executable, "-c", f"FIX = {fix}\n{PROBE}"], capture_output=True, text=True,
                            timeout=60, check=False, cwd=REPO)
    assert result.returncode == 0, result.stderr
    held_kb, left_kb = map(int, result.stdout.split())
    assert held_kb > 80_000, f"the frames did not show in the RSS: +{held_kb} kB"
    return held_kb, left_kb


@pytest.mark.skipif(platform.system() != "Linux" or not ctypes.util.find_library("c"), reason="needs Linux with glibc")
def test_freed_frames_go_back_to_the_os():
    _, left_kb = _probe(fix=True)
    assert left_kb < 20_000, f"freed frames stayed in the process: +{left_kb} kB after del"


@pytest.mark.skipif(platform.system() != "Linux" or not ctypes.util.find_library("c"), reason="needs Linux with glibc")
def test_without_the_setting_freed_frames_stay_in_the_heap():
    """The probe tells the two apart: with glibc's defaults the same frames are not given back."""
    held_kb, left_kb = _probe(fix=False)
    assert left_kb > held_kb / 2, f"glibc gave the frames back without the setting (+{left_kb} kB left): the probe proves nothing"
