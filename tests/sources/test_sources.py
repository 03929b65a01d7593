import threading
import time

import numpy as np
import pytest

from pipeline.frames import EndOfStream
from pipeline.queues import BoundedQueue, QueuePolicy
from pipeline.sources.base import SourceError
from pipeline.sources.file import VideoFileSource
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


def test_unreadable_image_is_an_error_not_a_skip(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    source = ImageSource(tmp_path)
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
