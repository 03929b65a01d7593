"""Camera URLs at config time: a URL FFmpeg would misread (a '/' in the password makes the password
the port) is refused with a message that does not quote the password, and `detect` takes `${VAR}`
in SOURCE so a password need not be typed on the command line (visible in `ps`)."""

import textwrap
from pathlib import Path

import pytest

from pipeline.config import ConfigError, config_from_data, load_config

from conftest import run_cli

PASSWORD = "hunter2"


def site(tmp_path: Path, url: str) -> Path:
    """A config whose only camera has `url` (on line 5)."""
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(f"""\
        cameras:
          - id: gate
            source:
              type: rtsp
              url: "{url}"
            model: yolo
        models:
          - id: yolo
            path: yolov8n.onnx
        """))
    return path


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("rtsp://admin:hunter2/x@10.0.0.5/cam", "the port is not a number"),
        ("rtsp://admin:hunter2@10.0.0.5:99999/cam", "the port is out of range 1-65535"),
        ("rtsp://admin:hunter2@/cam", "the URL has no host"),
    ],
    ids=["slash in password", "port out of range", "no host"],
)
def test_malformed_url_is_refused_at_config_time_without_the_password(tmp_path, url, message):
    path = site(tmp_path, url)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [issue] = info.value.issues
    assert (issue.line, issue.key) == (5, "cameras[0].source.url"), str(issue)
    assert message in issue.message, issue.message
    assert PASSWORD not in str(info.value)


def test_slash_in_password_says_how_to_write_it(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(site(tmp_path, "rtsp://admin:hunter2/x@10.0.0.5/cam"))
    assert "%2F" in str(info.value)


def test_percent_encoded_password_is_fine(tmp_path):
    cfg = load_config(site(tmp_path, "rtsp://admin:hunter2%2Fx@10.0.0.5:8554/cam")).config
    assert cfg.cameras[0].source.url == "rtsp://admin:hunter2%2Fx@10.0.0.5:8554/cam"


def test_space_in_password_is_masked_in_the_message(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(site(tmp_path, "rtsp://admin:hunter 2@10.0.0.5/cam"))
    assert "hunter" not in str(info.value) and "cameras[0].source.url" in str(info.value)


def test_detect_with_a_space_in_the_password_exits_2_without_it(tmp_path):
    result = run_cli("detect", "rtsp://admin:hunter 2@10.0.0.5/cam", "--jsonl", str(tmp_path / "x.jsonl"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hunter" not in result.stderr and "SOURCE" in result.stderr


def test_detect_with_a_slash_in_the_password_exits_2_without_it(tmp_path):
    result = run_cli("detect", "rtsp://admin:hunter2/x@127.0.0.1:1/cam", "--jsonl", str(tmp_path / "x.jsonl"), timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert PASSWORD not in result.stderr + result.stdout and "SOURCE" in result.stderr


def test_config_from_data_expands_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_TEST_CAM_PW", PASSWORD)
    data = {"cameras": [{"id": "cam0", "model": "model",
                         "source": {"type": "rtsp", "url": "rtsp://admin:${VIGIL_TEST_CAM_PW}@10.0.0.5/cam"}}],
            "models": [{"id": "model", "path": "m.onnx"}]}
    loaded = config_from_data(data, origin="error", base_dir=tmp_path)
    assert loaded.config.cameras[0].source.url == f"rtsp://admin:{PASSWORD}@10.0.0.5/cam"


def test_detect_names_an_unset_variable_in_source(tmp_path):
    result = run_cli("detect", "rtsp://admin:${VIGIL_TEST_UNSET_PW}@127.0.0.1:1/cam", "--jsonl", str(tmp_path / "x.jsonl"),
                     timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: SOURCE: environment variable VIGIL_TEST_UNSET_PW is not set" in result.stderr


def test_detect_expands_the_password_from_the_environment(tmp_path):
    # The expanded password has a '/': only an expanded SOURCE is refused (unexpanded, the URL is
    # well formed and detect would try to connect), and the message must not quote it.
    result = run_cli("detect", "rtsp://admin:${VIGIL_TEST_CAM_PW}@127.0.0.1:1/cam", "--jsonl", str(tmp_path / "x.jsonl"),
                     env={"VIGIL_TEST_CAM_PW": PASSWORD + "/x"}, timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "error: SOURCE: " in result.stderr and "the port is not a number" in result.stderr, result.stderr
    assert PASSWORD not in result.stderr + result.stdout
