"""VideoFile: fragmented MP4 that a killed process leaves readable, and errors that name the file."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from pipeline.sinks.mp4 import VideoFile
from tests.helpers import count_video_frames

from conftest import REPO


def noise(n: int, h: int = 240, w: int = 320, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), np.uint8) for _ in range(n)]


def test_a_killed_writer_leaves_every_finished_fragment_readable(tmp_path):
    path = tmp_path / "killed.mp4"
    script = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        sys.path.insert(0, {str(REPO)!r})
        from pipeline.sinks.mp4 import VideoFile
        video = VideoFile({str(path)!r}, fps=25, width=320, height=240)
        rng = np.random.default_rng(0)
        for _ in range(100):
            video.write(rng.integers(0, 255, (240, 320, 3), np.uint8))
        os._exit(0)  # no close: as SIGKILL or a power loss
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    # 100 frames at 25 fps with a key frame every second: 3 whole fragments (75 frames), the
    # fourth still being buffered when the process died.
    assert count_video_frames(path) >= 75


def test_frames_rate_and_size_come_back(tmp_path):
    path = tmp_path / "v.mp4"
    video = VideoFile(path, fps=10, width=320, height=240)
    for image in noise(12):
        video.write(image)
    video.close()
    video.close()  # idempotent: a sink may close after end_camera
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FPS) == 10
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (320, 240)
    assert count_video_frames(path) == 12 and video.frames == 12
    assert b"moof" in path.read_bytes(), "fragmented"


def test_odd_sizes_lose_one_row_and_column(tmp_path):
    path = tmp_path / "odd.mp4"
    video = VideoFile(path, fps=5, width=333, height=251)
    for image in noise(3, 251, 333):
        video.write(image)
    video.close()
    cap = cv2.VideoCapture(str(path))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (332, 250)


@pytest.mark.parametrize("codec", ["avc1", "MJPG"])
def test_other_codecs(tmp_path, codec):
    path = tmp_path / f"{codec}.mp4"
    video = VideoFile(path, fps=25, width=320, height=240, codec=codec)
    for image in noise(5):
        video.write(image)
    video.close()
    assert count_video_frames(path) == 5


def test_an_unknown_codec_is_one_clear_error(tmp_path):
    with pytest.raises(OSError, match=r"cannot write video .*v\.mp4: unknown codec 'ZZZZ'; known: .*mp4v"):
        VideoFile(tmp_path / "v.mp4", fps=25, width=320, height=240, codec="ZZZZ")
    assert not (tmp_path / "v.mp4").exists()


def test_a_folder_that_does_not_exist_names_the_file(tmp_path):
    with pytest.raises(OSError, match=r"cannot create video .*nowhere/v\.mp4"):
        VideoFile(tmp_path / "nowhere" / "v.mp4", fps=25, width=320, height=240)
