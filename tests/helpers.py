"""Plain helper functions shared by the tests (fixtures live in tests/conftest.py).

Import them as `from tests.helpers import ...`: `tests` is a namespace package (no __init__.py, so
that pytest keeps tests/ itself on sys.path for `from conftest import ...`), found through the
repository root, which tests/conftest.py puts on sys.path (and `python -m pytest` adds as the
current directory).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import ConfigError, ConfigIssue


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


def only_issue(info: pytest.ExceptionInfo[ConfigError]) -> ConfigIssue:
    """The one issue of a raised ConfigError; fails the test (showing them all) if there are more."""
    assert len(info.value.issues) == 1, str(info.value)
    return info.value.issues[0]


def refuse_to_open(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Makes `Path.open` of `path` raise PermissionError (EACCES) for the rest of the test; every
    other path opens as usual. chmod 0 would not do: it does not stop root, who may run the tests."""
    real_open = Path.open

    def refuse(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)


def detect_images(backend, media: Path, names: list[str], batch: int, params) -> dict:
    """Each image of `media` named in `names` letterboxed into one CPU slot, `batch` at a time,
    inferred by `backend` and decoded (YOLOv8, NMS with `params`, a DecodeParams); keyed by name."""
    from pipeline.frames import Frame
    from pipeline.postprocess.yolo import YoloDecoder
    from pipeline.preprocess import LetterboxScratch, letterbox_into
    from pipeline.slots import SlotRing

    info = backend.info
    ring = SlotRing.allocate(2, batch, {info.input.name: (info.input.shape, info.input.dtype)},
                             {o.name: (o.shape, o.dtype) for o in info.outputs})
    slot = ring.acquire(threading.Event())
    scratch = LetterboxScratch(*info.input_hw)
    decoder = YoloDecoder("yolov8", info.outputs[0].shape, len(info.class_names), params)
    results = {}
    for start in range(0, len(names), batch):
        frames = []
        for row, name in enumerate(names[start:start + batch]):
            image = cv2.imread(str(media / name))
            frame = Frame("cam", row, image, 0.0, 0.0, name)
            frame.letterbox, _ = letterbox_into(image, slot.inputs[info.input.name][row], scratch)
            frames.append(frame)
        backend.infer(slot, len(frames))
        for frame, det in zip(frames, decoder.decode(slot.outputs[info.outputs[0].name], frames), strict=True):
            results[frame.source_name] = det
    return results


class Running:
    """execute() in a thread, as `run` does in the main thread; drain() ends it."""

    def __init__(self, graph, **kw) -> None:
        self.graph = graph
        self.summary = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, kwargs=kw, daemon=True)
        self._thread.start()

    def _main(self, **kw) -> None:
        from pipeline.runner import execute  # imported here: most helpers need no graph

        try:
            self.summary = execute(self.graph, handle_signals=False, **kw)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def finish(self, timeout: float = 60.0):
        self.graph.runner.drain()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"still running: {self.graph.runner.alive()}"
        if self.error is not None:
            raise self.error
        return self.summary


def fill_disk(folder: Path) -> Path:
    """Writes a file in `folder` until its disk is full (ENOSPC); returns it."""
    import errno
    import os

    path = folder / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return path


def dedupe_events(events: list[dict]) -> list[dict]:
    """Events without redeliveries (at-least-once delivery may send one twice), first arrival kept:
    a message is its (event_id, kind, seq), since an incident's start, updates and end share the
    event_id."""
    seen: set[tuple[str, str, int]] = set()
    out = []
    for e in events:
        key = (e["event_id"], e["kind"], e["seq"])
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out
