"""Plain helper functions shared by the tests (fixtures live in tests/conftest.py).

Import them as `from tests.helpers import ...`: `tests` is a namespace package (no __init__.py, so
that pytest keeps tests/ itself on sys.path for `from conftest import ...`), found through the
repository root, which tests/conftest.py puts on sys.path (and `python -m pytest` adds as the
current directory).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np


def wait_for(predicate: Callable[[], object], timeout: float, step: float = 0.05) -> float | None:
    """Calls `predicate()` every `step` seconds until it returns something true, for at most
    `timeout` seconds. Returns the seconds that took, or None on timeout.

    The seconds are never 0.0, so both `assert wait_for(...)` and `assert wait_for(...) is not None`
    work; a test that checks how long something took uses the number."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return max(time.monotonic() - start, 1e-9)
        time.sleep(step)
    return None


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSON Lines file, one per line. Every line must be whole JSON: a blank
    or cut line fails the test (the sinks flush whole lines, so a stopped run never leaves one)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count_video_frames(path: Path) -> int:
    """How many frames OpenCV decodes from the video file at `path` (read to the end, not the
    container's frame count); fails the test if the file does not open as a video."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open as a video"
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def write_still_then_video(src: Path, dst: Path, *, still_s: float, width: int = 640, freeze_at: int | None = None,
                           freeze_s: float = 0.0, max_frames: int | None = None) -> tuple[float, int]:
    """Writes `dst` (MP4): `src`'s first frame held for `still_s` seconds (a static scene), then
    `src` itself, optionally held still again on its frame `freeze_at` for `freeze_s` seconds (a
    person who stops moving). Frames are scaled to `width`. Returns (fps, frames of the first still part)."""
    cap = cv2.VideoCapture(str(src))
    assert cap.isOpened(), f"{src} does not open as a video"
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    ok, first = cap.read()
    assert ok, f"{src} has no frame"
    height = round(first.shape[0] * width / first.shape[1] / 2) * 2
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert out.isOpened(), f"cannot write {dst}"

    def scaled(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)

    still = round(still_s * fps)
    for _ in range(still):
        out.write(scaled(first))
    index, image = 0, first
    while ok and (max_frames is None or index < max_frames):
        out.write(scaled(image))
        if index == freeze_at:
            for _ in range(round(freeze_s * fps)):
                out.write(scaled(image))
        ok, image = cap.read()
        index += 1
    cap.release()
    out.release()
    return fps, still
