"""Live capture against a real RTSP server (Debian's GStreamer RTSP server, started by the tests)
with real faults: the server killed and restarted, a stalled connection, a frozen picture, wrong
credentials, a wrong path. Also the parts that need no server: backoff, masking, USB errors."""

from __future__ import annotations

import logging
import random
import time

import pytest

from pipeline.metrics import CameraState
from pipeline.queues import BoundedQueue, QueuePolicy
from pipeline.redact import mask_url
from pipeline.sources.live import READ_TIMEOUT_MARGIN_S, Backoff, LiveCaptureStage, LiveSettings
from pipeline.sources.rtsp import RtspSource, diagnose
from pipeline.sources.usb import UsbSource
from pipeline.stage import GraphRunner
from tests.helpers import free_port, wait_for
from tests.tools.rtsp import FreezableProxy, RtspServer, need_rtsp_server


@pytest.fixture(scope="module")
def video(media):
    return media / "crowd_overhead.mp4"


@pytest.fixture
def servers():
    started: list[RtspServer] = []
    yield started
    for s in started:
        s.stop()


def start_server(servers: list[RtspServer], video, **kw) -> RtspServer:
    need_rtsp_server()
    server = RtspServer(video, **kw).start()
    servers.append(server)
    return server


def camera(cid: str, url: str, **settings) -> LiveCaptureStage:
    s = LiveSettings(**settings)
    q = BoundedQueue(f"{cid}>out", 2, QueuePolicy.DROP_OLDEST)
    return LiveCaptureStage(cid, lambda: RtspSource(url, open_timeout_s=s.open_timeout_s,
                                                    read_timeout_s=s.stall_timeout_s + READ_TIMEOUT_MARGIN_S),
                            q, s, rng=random.Random(0))


def run_cameras(*cams: LiveCaptureStage) -> GraphRunner:
    runner = GraphRunner(list(cams))
    runner.start()
    return runner


def finish(runner: GraphRunner) -> None:
    runner.drain()
    assert runner.wait(timeout=10), f"still running: {runner.alive()}"


def test_backoff_doubles_to_the_cap_with_jitter_below_each_step():
    b = Backoff(0.5, 3.0, 0.2, random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    for d, nominal in zip(delays, [0.5, 1.0, 2.0, 3.0, 3.0, 3.0], strict=True):
        assert nominal * 0.8 <= d <= nominal
    b.reset()
    assert b.next_delay() <= 0.5


def test_credentials_are_masked_anywhere_in_text():
    assert mask_url("rtsp://admin:s3cret@10.0.0.5:554/stream") == "rtsp://***:***@10.0.0.5:554/stream"
    assert mask_url("cannot open rtsp://bob@cam/x: refused") == "cannot open rtsp://***@cam/x: refused"
    assert mask_url("rtsp://10.0.0.5/stream") == "rtsp://10.0.0.5/stream"
    assert mask_url("rtsp://admin:p@ss@10.0.0.5/s and x@y") == "rtsp://***:***@10.0.0.5/s and x@y"


def test_diagnose_says_refused_for_a_closed_port():
    assert "connection refused" in diagnose(f"rtsp://u:pw@127.0.0.1:{free_port()}/cam")


def test_usb_device_that_is_not_there_is_named():
    from pipeline.sources.base import SourceError

    with pytest.raises(SourceError, match=r"no camera device /dev/video77 \(is it plugged in"):
        UsbSource("/dev/video77").open()


def test_usb_camera_streams(tmp_path):
    import glob

    devices = sorted(glob.glob("/dev/video*"))
    if not devices:
        pytest.skip("no USB/V4L2 camera: no /dev/video* device on this machine")
    source = UsbSource(devices[0])
    source.open()
    try:
        frame = source.read()
        assert frame.image.ndim == 3
    finally:
        source.close()


def test_rtsp_camera_streams_and_stamps_frames(servers, video):
    server = start_server(servers, video)
    cam = camera("a", server.url)
    runner = run_cameras(cam)
    try:
        metrics = runner.ctx.metrics.camera("a")
        assert wait_for(lambda: metrics.state is CameraState.STREAMING, 10) is not None, metrics.state_reason
        time.sleep(6.0)  # past the burst of frames FFmpeg buffers while it probes the stream
        frame = cam.out.get(1.0)
        assert frame.image.shape == (360, 640, 3)
        assert frame.age_ms() < 500
        assert 20 <= metrics.in_rate.rate(time.monotonic()) <= 30  # the server's 25 fps, over the last 5 s
    finally:
        finish(runner)
    assert metrics.state is CameraState.ENDED


def test_server_killed_and_restarted_ten_times(servers, video):
    """Each time the camera is back within 5 s of the server returning, with the default backoff,
    and the other camera's capture rate does not dip."""
    flaky = start_server(servers, video)
    steady = start_server(servers, video)
    runner = run_cameras(camera("flaky", flaky.url), camera("steady", steady.url))
    m = runner.ctx.metrics
    flaky_m, steady_m = m.camera("flaky"), m.camera("steady")
    try:
        assert wait_for(lambda: flaky_m.state is CameraState.STREAMING and steady_m.state is CameraState.STREAMING, 15)
        backs = []
        for cycle in range(10):
            flaky.kill()
            assert wait_for(lambda: flaky_m.state is not CameraState.STREAMING, 5) is not None, f"cycle {cycle}: loss not seen"
            time.sleep(0.5)
            steady_before, t0 = steady_m.frames_in, time.monotonic()
            flaky.start()
            frames_then = flaky_m.frames_in
            back = wait_for(lambda frames_then=frames_then: flaky_m.frames_in > frames_then
                            and flaky_m.state is CameraState.STREAMING, 10)
            assert back is not None, f"cycle {cycle}: not back within 10 s ({flaky_m.state.value}: {flaky_m.state_reason})"
            backs.append(back)
            steady_rate = (steady_m.frames_in - steady_before) / (time.monotonic() - t0)
            assert steady_rate >= 20, f"cycle {cycle}: steady camera dipped to {steady_rate:.1f} fps"
            assert steady_m.state is CameraState.STREAMING
        assert max(backs) < 5.0, f"back after {[round(b, 2) for b in backs]} s"
        assert flaky_m.reconnects >= 10
        assert steady_m.reconnects == 0
    finally:
        finish(runner)


def test_stalled_connection_is_detected_and_reconnected(servers, video):
    server = start_server(servers, video)
    proxy = FreezableProxy(server.port)
    try:
        runner = run_cameras(camera("a", f"rtsp://127.0.0.1:{proxy.port}/cam", stall_timeout_s=1.5))
        metrics = runner.ctx.metrics.camera("a")
        try:
            assert wait_for(lambda: metrics.state is CameraState.STREAMING, 10)
            assert proxy.freeze() >= 1  # TCP stays open, no byte moves
            frozen_at = time.monotonic()
            assert wait_for(lambda: any(st is CameraState.STALLED for _, st, _ in metrics.history), 5) is not None
            stalled_at = next(t for t, st, _ in metrics.history if st is CameraState.STALLED)
            assert 1.4 <= stalled_at - frozen_at <= 2.5  # stall_timeout_s after the last frame
            frames = metrics.frames_in
            assert wait_for(lambda: metrics.frames_in > frames and metrics.state is CameraState.STREAMING, 10) is not None
            assert metrics.reconnects >= 1
        finally:
            finish(runner)
    finally:
        proxy.close()


def test_frozen_picture_is_reported_and_reconnected(servers, video):
    server = start_server(servers, video, freeze_after_s=1.0)
    runner = run_cameras(camera("a", server.url, freeze_timeout_s=1.5))
    metrics = runner.ctx.metrics.camera("a")
    try:
        frozen = wait_for(lambda: metrics.reconnects >= 1 and any(st is CameraState.FROZEN for _, st, _ in metrics.history), 15)
        assert frozen is not None, f"history: {list(metrics.history)}"
        reason = next(r for _, st, r in metrics.history if st is CameraState.FROZEN)
        assert "unchanged" in reason
    finally:
        finish(runner)


def test_wrong_password_is_reported_masked_and_retried(servers, video, caplog):
    server = start_server(servers, video, user="viewer", password="right-one")
    wrong = f"rtsp://viewer:hunter2@127.0.0.1:{server.port}/cam"
    caplog.set_level(logging.INFO)
    runner = run_cameras(camera("a", wrong))
    metrics = runner.ctx.metrics.camera("a")
    try:
        assert wait_for(lambda: metrics.reconnects >= 2, 10) is not None, metrics.state_reason
        assert metrics.state in (CameraState.RECONNECTING, CameraState.STARTING)
        assert "401" in metrics.state_reason and "wrong user name or password" in metrics.state_reason
        assert "rtsp://***:***@127.0.0.1" in metrics.state_reason
    finally:
        finish(runner)
    from pipeline.health import camera_health

    assert "hunter2" not in caplog.text and "hunter2" not in str(camera_health(runner.ctx.metrics))
    # the right password streams
    runner = run_cameras(camera("b", f"rtsp://viewer:right-one@127.0.0.1:{server.port}/cam"))
    try:
        assert wait_for(lambda: runner.ctx.metrics.camera("b").state is CameraState.STREAMING, 10)
    finally:
        finish(runner)


def test_wrong_path_and_dead_port_are_told_apart(servers, video):
    server = start_server(servers, video)
    runner = run_cameras(camera("badpath", f"rtsp://127.0.0.1:{server.port}/nope"),
                         camera("dead", f"rtsp://127.0.0.1:{free_port()}/cam", max_attempts=2, initial_delay_s=0.1))
    m = runner.ctx.metrics
    try:
        assert wait_for(lambda: "404" in m.camera("badpath").state_reason, 10), m.camera("badpath").state_reason
        assert wait_for(lambda: m.camera("dead").state is CameraState.FAILED, 10), m.camera("dead").state_reason
        assert "connection refused" in m.camera("dead").state_reason
        assert "gave up after 2" in m.camera("dead").state_reason
    finally:
        finish(runner)


def test_a_looped_file_is_not_frozen_when_its_timestamps_restart(media):
    """A realtime file with loop: its stream time jumps back to 0 at each loop: not a freeze."""
    from pipeline.sources.file import VideoFileSource

    path = media / "people_small.mp4"  # 50 frames: loops every ~2 s at its native rate
    q = BoundedQueue("loop>out", 2, QueuePolicy.DROP_OLDEST)
    cam = LiveCaptureStage("loop", lambda: VideoFileSource(path, loop=True), q,
                           LiveSettings(freeze_timeout_s=1.5, pace_fps=50.0))
    runner = run_cameras(cam)
    metrics = runner.ctx.metrics.camera("loop")
    try:
        time.sleep(4.0)  # two loops at 50 fps
        assert metrics.state is CameraState.STREAMING, list(metrics.history)
        assert metrics.reconnects == 0
    finally:
        finish(runner)
