import errno
import json

import cv2
import numpy as np
import pytest

from pipeline.frames import Detections, EndOfStream, Frame, FrameResult
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.video import VideoSink


def result(seq, w=320, h=240):
    image = np.full((h, w, 3), 80, np.uint8)
    frame = Frame("cam", seq, image, 0.0, 1_700_000_000.5, "src.mp4")
    det = Detections(np.array([[10.123, 20.456, 100.0, 200.0]], np.float32), np.array([0.87654321], np.float32),
                     np.array([0], np.int64))
    return FrameResult(frame, det, {0: "person"})


def test_jsonl_record_schema(tmp_path):
    sink = JsonlSink(tmp_path / "a" / "out.jsonl")
    sink.open()
    sink.write(result(0))
    sink.write(result(1))
    sink.close()
    lines = (tmp_path / "a" / "out.jsonl").read_text().splitlines()
    r = json.loads(lines[1])
    assert r["camera"] == "cam" and r["seq"] == 1 and r["source"] == "src.mp4"
    assert r["capture_ts"] == 1_700_000_000.5 and r["age_ms"] >= 0
    assert (r["width"], r["height"]) == (320, 240)
    assert r["detections"] == [{"class_id": 0, "class_name": "person", "confidence": 0.87654, "box": [10.12, 20.46, 100.0, 200.0]}]


def test_detections_validate_their_shapes():
    with pytest.raises(ValueError, match=r"xyxy must be a 2D array of shape \(N, 4\), got \(3,\)"):
        Detections(np.zeros(3, np.float32), np.zeros(1, np.float32), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match=r"confidence must have shape \(1,\), got \(2,\)"):
        Detections(np.zeros((1, 4), np.float32), np.zeros(2, np.float32), np.zeros(1, np.int64))


def test_video_sink_writes_one_file_per_camera_and_leaves_frames_untouched(tmp_path):
    sink = VideoSink(tmp_path / "{camera}.mp4", fps=10, source_fps=lambda cid: None)
    sink.open()
    results = [result(i) for i in range(5)]
    for r in results:
        sink.write(r)
    sink.close()
    assert all((r.frame.image == 80).all() for r in results), "drawing happens on the sink's own canvas"
    cap = cv2.VideoCapture(str(tmp_path / "cam.mp4"))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    assert len(frames) == 5 and frames[0].shape == (240, 320, 3)
    assert cap.get(cv2.CAP_PROP_FPS) == 10
    assert np.abs(frames[0].astype(int) - 80).max() > 50, "boxes and labels are drawn"


def test_video_sink_fits_frames_of_another_size_into_the_file(tmp_path):
    sink = VideoSink(tmp_path / "{camera}.mp4", fps=5, source_fps=lambda cid: None)
    sink.open()
    sink.write(result(0, 320, 240))
    sink.write(result(1, 480, 640))  # portrait image in a landscape video: letterboxed, not an error
    sink.close()
    cap = cv2.VideoCapture(str(tmp_path / "cam.mp4"))
    shapes = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        shapes.append(image.shape)
    assert shapes == [(240, 320, 3), (240, 320, 3)]




def test_jsonl_cut_by_a_full_disk_keeps_whole_lines_and_names_the_cause(full_disk):
    path = full_disk / "out.jsonl"
    sink = JsonlSink(path)
    sink.open()
    with pytest.raises(OSError) as failed:
        for i in range(100_000):
            sink.write(result(i))
    sink.close()
    assert failed.value.errno == errno.ENOSPC and str(path) in str(failed.value), failed.value
    text = path.read_text()
    assert text.endswith("\n"), f"a cut last line: {text[-80:]!r}"
    assert [json.loads(line)["seq"] for line in text.splitlines()] == list(range(len(text.splitlines())))


def test_video_on_a_full_disk_fails_naming_the_cause(full_disk):
    path = full_disk / "{camera}.mp4"
    sink = VideoSink(path, fps=25, source_fps=lambda cid: None)
    sink.open()
    rng = np.random.default_rng(0)
    with pytest.raises(OSError) as failed:
        for i in range(500):  # noise does not compress: 100 kB fill within a few frames
            r = result(i)
            r.frame.image[:] = rng.integers(0, 255, r.frame.image.shape, np.uint8)
            sink.write(r)
        sink.close()
    sink.close()
    assert failed.value.errno == errno.ENOSPC, failed.value
    assert "cam.mp4" in str(failed.value) and "No space left on device" in str(failed.value)


def test_a_run_that_never_started_leaves_the_previous_outputs(tmp_path):
    """The graph failed before the sink got anything (a busy port, a bad camera): the JSONL file of
    the previous run is not truncated; a run that ended normally with no record writes an empty file."""
    from pipeline.queues import BoundedQueue
    from pipeline.sinks import SinkStage
    from pipeline.stage import StageContext, Stopped

    path = tmp_path / "out.jsonl"
    path.write_text('{"previous": "run"}\n')
    ctx = StageContext()
    ctx.stop.set()  # another stage failed at start
    stage = SinkStage(0, JsonlSink(path), BoundedQueue("sink", 4, "block"), ["cam"])
    with pytest.raises(Stopped):
        stage.run(ctx)
    assert path.read_text() == '{"previous": "run"}\n'

    ctx = StageContext()
    queue = BoundedQueue("sink", 4, "block")
    queue.put(EndOfStream("cam"), ctx.stop)
    SinkStage(0, JsonlSink(path), queue, ["cam"]).run(ctx)
    assert path.read_text() == "", "a completed run with no records leaves an empty file"
