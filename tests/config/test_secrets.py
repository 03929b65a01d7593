"""`${file:PATH}` secrets (Docker/Kubernetes secret files): the value used, paths relative to the
config, problems as `file:line: key: message`, mixing with `${VAR}`, and no secret in any message."""

import textwrap
from pathlib import Path

import pytest

from pipeline.config import ConfigError, config_from_data, load_config
from tests.helpers import only_issue, refuse_to_open

from conftest import run_cli

SECRET = "s3cr3t-pw"


def site(tmp_path: Path, url: str, *, transport: str = "tcp") -> Path:
    """A valid config whose camera URL is `url` (on line 5); written to tmp_path/site/site.yaml."""
    folder = tmp_path / "site"
    folder.mkdir(exist_ok=True)
    path = folder / "site.yaml"
    path.write_text(textwrap.dedent(f"""\
        cameras:
          - id: gate
            source:
              type: rtsp
              url: "{url}"
              transport: {transport}
            model: yolo
        models:
          - id: yolo
            path: yolov8n.onnx
        """))
    return path


def secret_file(tmp_path: Path, content: str | bytes, name: str = "pw") -> Path:
    path = tmp_path / "site" / "secrets" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("ending", ["", "\n", "\n\n", "\r\n"])
def test_secret_file_content_is_used_without_trailing_newlines(tmp_path, ending):
    pw = secret_file(tmp_path, SECRET + ending)
    cfg = load_config(site(tmp_path, f"rtsp://admin:${{file:{pw}}}@10.0.0.5/stream")).config
    assert cfg.cameras[0].source.url == f"rtsp://admin:{SECRET}@10.0.0.5/stream"


def test_relative_path_is_relative_to_the_config_folder(tmp_path, monkeypatch):
    secret_file(tmp_path, SECRET)
    monkeypatch.chdir(tmp_path)  # not the config's folder: a cwd-relative read would miss the file
    cfg = load_config(site(tmp_path, "rtsp://admin:${file:secrets/pw}@10.0.0.5/stream")).config
    assert cfg.cameras[0].source.url == f"rtsp://admin:{SECRET}@10.0.0.5/stream"


def test_missing_secret_file_names_line_key_and_path(tmp_path):
    path = site(tmp_path, "rtsp://admin:${file:secrets/nope}@10.0.0.5/stream")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    expected = tmp_path / "site" / "secrets" / "nope"
    assert str(only_issue(info)) == (f"{path}:5: cameras[0].source.url: secret file not found: {expected} "
                                     f"(referenced as ${{file:secrets/nope}})")


def test_secret_mixes_with_environment_variables(tmp_path, monkeypatch):
    secret_file(tmp_path, SECRET + "\n")
    monkeypatch.setenv("VIGIL_TEST_CAM_USER", "viewer")
    cfg = load_config(site(tmp_path, "rtsp://${VIGIL_TEST_CAM_USER}:${file:secrets/pw}@10.0.0.5/stream")).config
    assert cfg.cameras[0].source.url == f"rtsp://viewer:{SECRET}@10.0.0.5/stream"


def test_unset_variable_and_missing_secret_in_one_value_are_both_reported(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(site(tmp_path, "rtsp://${VIGIL_TEST_UNSET_USER}:${file:secrets/nope}@10.0.0.5/stream"))
    messages = [i.message for i in info.value.issues]
    assert len(messages) == 2 and all(i.line == 5 for i in info.value.issues), str(info.value)
    assert "environment variable VIGIL_TEST_UNSET_USER is not set" in messages[0] + messages[1]
    assert "secret file not found" in messages[0] + messages[1]


def test_secret_content_is_not_expanded_again(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_TEST_CAM_USER", "viewer")
    secret_file(tmp_path, "${VIGIL_TEST_CAM_USER}x")
    cfg = load_config(site(tmp_path, "rtsp://admin:${file:secrets/pw}@10.0.0.5/stream")).config
    assert cfg.cameras[0].source.url == "rtsp://admin:${VIGIL_TEST_CAM_USER}x@10.0.0.5/stream"


def test_a_secret_that_looks_like_yaml_stays_a_string(tmp_path):
    secret_file(tmp_path, "*on\n")
    cfg = load_config(site(tmp_path, "rtsp://admin:${file:secrets/pw}@10.0.0.5/stream")).config
    assert cfg.cameras[0].source.url == "rtsp://admin:*on@10.0.0.5/stream"


def test_invalid_url_message_masks_the_secret(tmp_path):
    # A space in the password breaks the URL pattern and defeats mask_url's user:password@ match:
    # only the secret masking keeps it out of the message.
    secret_file(tmp_path, "hunter 2 pass\n")
    path = site(tmp_path, "rtsp://admin:${file:secrets/pw}@10.0.0.5/stream")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issue = only_issue(info)
    assert (issue.line, issue.key) == (5, "cameras[0].source.url")
    assert "expected an rtsp:// or rtsps:// URL without spaces" in issue.message
    assert "hunter" not in str(info.value) and "***" in issue.message


def test_long_url_message_masks_the_secret_before_cutting(tmp_path):
    secret = "a b" + "x" * 80  # a cut at 60 characters would leave a prefix the masking cannot find
    secret_file(tmp_path, secret)
    with pytest.raises(ConfigError) as info:
        load_config(site(tmp_path, "rtsp://u:${file:secrets/pw}@10.0.0.5/stream"))
    assert "a bxxx" not in str(info.value) and "xxxxxxxx" not in str(info.value)


def test_secret_in_a_choice_field_is_masked_without_a_hint(tmp_path):
    secret_file(tmp_path, "udpp")
    with pytest.raises(ConfigError) as info:
        load_config(site(tmp_path, "rtsp://10.0.0.5/stream", transport="${file:secrets/pw}"))
    issue = only_issue(info)
    assert issue.key == "cameras[0].source.transport"
    assert issue.message == "expected 'tcp' or 'udp', got '***'", issue.message  # no "did you mean 'udp'"


def test_issues_raised_after_loading_mask_secrets(tmp_path):
    secret_file(tmp_path, SECRET)
    loaded = load_config(site(tmp_path, "rtsp://admin:${file:secrets/pw}@10.0.0.5/stream"))
    issue = loaded.issue(("cameras", 0, "source", "url"), f"cannot open rtsp://x/{SECRET}")
    assert SECRET not in str(issue) and issue.line == 5


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "secrets" / "pw").mkdir(parents=True), "secret file is a directory: "),
        (lambda d: secret_file(d.parent, "x" * (64 * 1024 + 1)), "secret file is over 64 KiB (65537 bytes): "),
        (lambda d: secret_file(d.parent, b"\xffpw"), "secret file is not UTF-8 text: "),
    ],
    ids=["directory", "too large", "not utf-8"],
)
def test_unusable_secret_file(tmp_path, make, message):
    path = site(tmp_path, "rtsp://admin:${file:secrets/pw}@10.0.0.5/stream")
    make(path.parent)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issue = only_issue(info)
    assert (issue.line, issue.key) == (5, "cameras[0].source.url")
    assert issue.message.startswith(message) and issue.message.endswith("(referenced as ${file:secrets/pw})"), issue.message
    assert "xxx" not in issue.message and "\\xff" not in issue.message


def test_unreadable_secret_file(tmp_path, monkeypatch):
    pw = secret_file(tmp_path, SECRET)
    refuse_to_open(monkeypatch, pw)
    with pytest.raises(ConfigError, match=r":5: cameras\[0\]\.source\.url: secret file cannot be read \(permission denied\)"):
        load_config(site(tmp_path, "rtsp://admin:${file:secrets/pw}@10.0.0.5/stream"))


def test_file_with_dash_is_still_a_variable_with_a_default(tmp_path):
    cfg = load_config(site(tmp_path, "rtsp://${file:-viewer}@10.0.0.5/stream")).config
    assert cfg.cameras[0].source.url == "rtsp://viewer@10.0.0.5/stream"


def data(url: str) -> dict:
    return {"cameras": [{"id": "cam0", "model": "model", "source": {"type": "rtsp", "url": url}}],
            "models": [{"id": "model", "path": "m.onnx"}]}


def test_config_from_data_reads_secrets_relative_to_base_dir(tmp_path):
    secret_file(tmp_path, SECRET + "\n")
    given = data("rtsp://admin:${file:secrets/pw}@10.0.0.5/stream")
    loaded = config_from_data(given, origin="error", base_dir=tmp_path / "site")
    assert loaded.config.cameras[0].source.url == f"rtsp://admin:{SECRET}@10.0.0.5/stream"
    assert given["cameras"][0]["source"]["url"] == "rtsp://admin:${file:secrets/pw}@10.0.0.5/stream"  # not changed


def test_config_from_data_names_the_option_of_a_missing_secret(tmp_path):
    with pytest.raises(ConfigError) as info:
        config_from_data(data("rtsp://${VIGIL_TEST_UNSET}:${file:nope}@h/s"), origin="error", base_dir=tmp_path,
                         key_names={("cameras", 0, "source", "url"): "SOURCE"})
    # ${VAR} is expanded too (single quotes on a command line leave it for us): both problems are named.
    assert str(info.value).splitlines() == [
        "error: SOURCE: environment variable VIGIL_TEST_UNSET is not set (export it, or write ${VIGIL_TEST_UNSET:-default})",
        f"error: SOURCE: secret file not found: {tmp_path / 'nope'} (referenced as ${{file:nope}})"]


def test_detect_reports_a_missing_secret_as_a_usage_error(tmp_path):
    result = run_cli("detect", "rtsp://admin:${file:" + str(tmp_path / "nope") + "}@10.0.0.5/stream", "--jsonl", str(tmp_path / "x.jsonl"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: SOURCE: secret file not found: {tmp_path / 'nope'}" in result.stderr
