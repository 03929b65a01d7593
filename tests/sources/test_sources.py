import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.frames import EndOfStream
from pipeline.metrics import CameraState
from pipeline.queues import BoundedQueue, QueuePolicy
from pipeline.sources.base import CaptureStage, SourceError
from pipeline.sources.file import FALLBACK_FPS, VideoFileSource, checked_fps
from pipeline.sources.images import ImageSource
from pipeline.sources.live import LiveCaptureStage, LiveSettings
from pipeline.sources.synthetic import SyntheticSource
from pipeline.stage import StageContext


def take_all(q):
    return [q.get_nowait() for _ in range(len(q))]


def read_all(source):
    info = source.open()
    frames = []
    while (got := source.read()) is not None:
        frames.append(got)
    source.close()
    return info, frames


def test_video_file_source_reads_every_frame(media):
    info, frames = read_all(VideoFileSource(media / "people_small.mp4"))
    assert info.total_frames == 50 and info.fps == pytest.approx(3, abs=0.5)
    assert len(frames) == 50 and frames[0].image.shape == (240, 320, 3) and frames[0].name == "people_small.mp4"


def test_video_file_source_loops_and_limits(media):
    source = VideoFileSource(media / "people_small.mp4", loop=True, max_frames=120)
    info, frames = read_all(source)
    assert info.total_frames == 120 and len(frames) == 120
    np.testing.assert_array_equal(frames[0].image, frames[50].image)


def test_missing_and_undecodable_video(tmp_path):
    with pytest.raises(SourceError, match="video file not found: .*nope.mp4"):
        VideoFileSource(tmp_path / "nope.mp4").open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(SourceError, match="cannot open video .*junk.mp4"):
        VideoFileSource(junk).open()


def test_image_directory_is_read_in_name_order(tmp_path, media):
    for name in ("person.jpg", "bus.jpg"):
        (tmp_path / name).symlink_to(media / name)
    (tmp_path / "notes.txt").write_text("ignored")
    info, frames = read_all(ImageSource(tmp_path))
    assert info.total_frames == 2
    assert [f.name for f in frames] == ["bus.jpg", "person.jpg"]


def test_unreadable_images_are_skipped_warned_and_counted(tmp_path, media, caplog):
    # Issue 10 item 19: one broken file used to end the whole folder (exit 1, no records for the
    # good images). A folder of images is a batch of independent frames: skip the file, say so.
    (tmp_path / "a_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "b_empty.jpg").touch()
    (tmp_path / "c_bus.jpg").symlink_to(media / "bus.jpg")
    (tmp_path / "d_gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # a dangling link: listed, not readable
    (tmp_path / "e_dog.jpg").symlink_to(media / "dog.jpg")
    with caplog.at_level("WARNING", logger="pipeline.sources.images"):
        info, frames = read_all(ImageSource(tmp_path))
    assert [f.name for f in frames] == ["c_bus.jpg", "e_dog.jpg"]
    assert info.total_frames == 4  # what was listed (the dangling link is not a file)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "a_broken.jpg" in warned and "b_empty.jpg" in warned and "unreadable" in warned


def test_unreadable_images_are_reported_as_drops(tmp_path, media):
    (tmp_path / "a_empty.jpg").touch()
    (tmp_path / "b_bus.jpg").symlink_to(media / "bus.jpg")
    source = ImageSource(tmp_path)
    source.open()
    assert source.read().name == "b_bus.jpg" and source.read() is None
    assert source.drops() == {"unreadable": 1}


def test_a_folder_where_no_image_decodes_is_an_error(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "empty.png").touch()
    source = ImageSource(tmp_path)
    source.open()
    with pytest.raises(SourceError, match="none of the 2 images in .* could be read.*broken.jpg"):
        source.read()


def test_a_single_unreadable_image_is_an_error(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    source = ImageSource(tmp_path / "broken.jpg")
    source.open()
    with pytest.raises(SourceError, match="cannot decode image .*broken.jpg"):
        source.read()


def test_empty_image_directory(tmp_path):
    with pytest.raises(SourceError, match="no images in"):
        ImageSource(tmp_path).open()


def test_live_capture_paces_a_realtime_source_and_ends_with_a_sentinel():
    q = BoundedQueue("q", 1000, QueuePolicy.DROP_OLDEST)
    stage = LiveCaptureStage("cam", lambda: SyntheticSource(64, 48, frames=40), q,
                             LiveSettings(pace_fps=40, freeze_timeout_s=None))
    ctx = StageContext()
    t0 = time.monotonic()
    stage.run(ctx)
    elapsed = time.monotonic() - t0
    items = take_all(q)
    assert isinstance(items[-1], EndOfStream) and items[-1].camera_id == "cam"
    frames = items[:-1]
    assert [f.seq for f in frames] == list(range(40))
    assert 0.8 < elapsed < 2.0, f"40 frames at 40 fps took {elapsed:.2f} s"
    stamps = np.array([f.capture_mono for f in frames])
    assert np.median(np.diff(stamps)) == pytest.approx(1 / 40, rel=0.3)
    assert all(f.capture_wall > 1e9 for f in frames)


def test_live_capture_stops_on_drain():
    q = BoundedQueue("q", 10, QueuePolicy.DROP_OLDEST)
    stage = LiveCaptureStage("cam", lambda: SyntheticSource(64, 48, frames=None), q, LiveSettings(pace_fps=30))
    ctx = StageContext()
    threading.Timer(0.3, ctx.drain.set).start()
    t0 = time.monotonic()
    stage.run(ctx)
    assert time.monotonic() - t0 < 1.0
    assert isinstance(take_all(q)[-1], EndOfStream)


def test_live_stream_time_starts_at_the_first_frame_not_when_the_stage_was_built():
    # Models can load for seconds between building a camera's stage and its first frame.
    q = BoundedQueue("q", 100, QueuePolicy.DROP_OLDEST)
    stage = LiveCaptureStage("cam", lambda: SyntheticSource(64, 48, frames=5), q,
                             LiveSettings(pace_fps=50, freeze_timeout_s=None))
    time.sleep(0.5)
    stage.run(StageContext())
    frames = take_all(q)[:-1]
    assert len(frames) == 5
    assert frames[0].pts == 0.0, f"the first frame's stream time is {frames[0].pts:.2f} s"
    assert 0.04 < frames[-1].pts < 0.4  # 4 frames later at 50 frames/s, give or take a busy machine


@pytest.mark.parametrize("reported", [0.0, -1.0, float("nan"), float("inf"), 1000.0, 90000.0])
def test_an_implausible_container_rate_falls_back_to_25_with_a_warning(reported, caplog):
    assert checked_fps(reported, Path("v.mp4")) == FALLBACK_FPS == 25.0
    assert f"video v.mp4 reports {reported!r} frames/s, not a plausible rate" in caplog.text


@pytest.mark.parametrize("rate", [3.0, 25.0, 29.97, 240.0])
def test_a_plausible_container_rate_is_kept(rate, caplog):
    assert checked_fps(rate, Path("v.mp4")) == rate and not caplog.text


def write_video(path: Path, fps: float, frames: int = 10) -> Path:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    assert out.isOpened(), f"cannot write {path} at {fps} fps"
    for i in range(frames):
        out.write(np.full((48, 64, 3), i * 20, np.uint8))
    out.release()
    return path


def test_a_file_with_a_bogus_rate_gets_stream_times_at_25_fps(tmp_path, caplog):
    # The container says 1000 frames/s (a time base taken for a rate): the stream time, and with
    # it every rule duration and clip length, would run 40x too fast.
    path = write_video(tmp_path / "bogus.mp4", 1000.0)
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(1000.0)
    cap.release()
    q = BoundedQueue("q", 100, QueuePolicy.BLOCK)
    ctx = StageContext()
    CaptureStage("cam", VideoFileSource(path), q).run(ctx)
    frames = take_all(q)[:-1]
    assert [f.pts for f in frames] == pytest.approx([i / 25 for i in range(10)])
    assert ctx.metrics.camera("cam").source_fps == 25.0
    assert "not a plausible rate: timing it at 25 frames/s" in caplog.text


def test_a_file_that_cannot_be_opened_fails_its_camera_alone(tmp_path, caplog):
    # The camera is marked failed (the run exits 1 at the end, naming it) and ends like a stream:
    # its end of stream goes out so the rest of the graph finishes the other cameras.
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video at all\n" * 100)
    q = BoundedQueue("q", 10, QueuePolicy.BLOCK)
    ctx = StageContext()
    stage = CaptureStage("bad", VideoFileSource(junk), q)
    ended = []
    stage.on_end = lambda cid, removed: ended.append((cid, removed))
    stage.run(ctx)  # does not raise: that would stop every camera
    assert [type(i) for i in take_all(q)] == [EndOfStream] and ended == [("bad", False)]
    cam = ctx.metrics.camera("bad")
    assert cam.state is CameraState.FAILED and "cannot open video" in cam.state_reason
    assert "camera bad: starting -> failed (OpenCV/FFmpeg cannot open video" in caplog.text


def test_images_a_source_skipped_are_counted_as_the_camera_s_drops(tmp_path, media):
    (tmp_path / "a_empty.jpg").touch()
    (tmp_path / "b_bus.jpg").symlink_to(media / "bus.jpg")
    q = BoundedQueue("q", 10, QueuePolicy.BLOCK)
    ctx = StageContext()
    CaptureStage("stills", ImageSource(tmp_path), q).run(ctx)
    assert [f.source_name for f in take_all(q)[:-1]] == ["b_bus.jpg"]
    assert ctx.metrics.camera("stills").drops == {"unreadable": 1}
