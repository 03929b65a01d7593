"""What the pipeline asks of each source config, the same for every source type."""

import pytest

from pipeline.config import CameraConfig

CASES = {
    # source: (is_live, replayed, pace_fps, open_timeout_s)
    "file": ({"type": "file", "path": "a.mp4"}, (False, True, None, 5.0)),
    "realtime file": ({"type": "file", "path": "a.mp4", "realtime": True, "fps": 12}, (True, True, 12, 5.0)),
    "images": ({"type": "images", "path": "imgs"}, (False, False, None, 5.0)),
    "synthetic": ({"type": "synthetic"}, (False, True, 25.0, 5.0)),
    "live synthetic": ({"type": "synthetic", "live": True, "fps": 10}, (True, True, 10, 5.0)),
    "rtsp": ({"type": "rtsp", "url": "rtsp://h/s", "open_timeout_s": 7}, (True, False, None, 7.0)),
    "usb": ({"type": "usb", "fps": 30}, (True, False, None, 5.0)),  # a camera mode, not a pace
}


@pytest.mark.parametrize("name", CASES)
def test_source_properties(name):
    source, (is_live, replayed, pace_fps, open_timeout_s) = CASES[name]
    cam = CameraConfig.model_validate({"id": "c", "model": "m", "source": source})
    s = cam.source
    assert (s.is_live, s.replayed, s.pace_fps, s.open_timeout_s) == (is_live, replayed, pace_fps, open_timeout_s)
    assert cam.live is is_live
    assert cam.policy == ("drop_oldest" if is_live else "block")
    assert cam.queue_size == (2 if is_live else 8)
    assert cam.max_frame_age_s == (2.0 if is_live else None)
