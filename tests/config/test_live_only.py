"""Settings for live sources only: `max_frame_age_ms` on a camera that is not live would drop the
frames of a file (which must lose nothing) without a word, so it is a config error."""

import textwrap
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

from conftest import run_cli


def site(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(f"""\
        cameras:
          - id: gate
            source: {source}
            model: yolo
            max_frame_age_ms: 500
        models:
          - id: yolo
            path: m.onnx
        """))
    return path


@pytest.mark.parametrize("source", ["{type: file, path: in.mp4}", "{type: images, path: imgs}", "{type: synthetic}"])
def test_max_frame_age_on_a_source_that_is_not_live_is_refused(tmp_path, source):
    with pytest.raises(ConfigError) as info:
        load_config(site(tmp_path, source))
    [issue] = info.value.issues
    assert (issue.line, issue.key) == (5, "cameras[0].max_frame_age_ms"), str(issue)
    assert "live sources only" in issue.message and "realtime: true" in issue.message, issue.message


@pytest.mark.parametrize("source", ["{type: file, path: in.mp4, realtime: true}", "{type: synthetic, live: true}",
                                    "{type: rtsp, url: 'rtsp://h/s'}", "{type: usb}"])
def test_max_frame_age_on_a_live_source_is_fine(tmp_path, source):
    assert load_config(site(tmp_path, source)).config.cameras[0].max_frame_age_s == 0.5


def test_detect_refuses_max_frame_age_on_a_file(tmp_path, media):
    out = tmp_path / "x.jsonl"
    result = run_cli("detect", str(media / "people_small.mp4"), "--jsonl", str(out), "--max-frame-age-ms", "1",
                     "--no-progress")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: --max-frame-age-ms: " in result.stderr and "--realtime" in result.stderr
    assert not out.exists()
