"""Hostile or broken config files are refused in one line, quickly, without a traceback: alias
bombs ("billion laughs"), recursive aliases, deep nesting, huge files and bytes that are not UTF-8;
also through POST /reload, which answers 400 and leaves the running cameras alone."""

import json
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config
from tests.helpers import only_issue, refuse_to_open

from conftest import run_cli

VALID = textwrap.dedent("""\
    cameras:
      - id: gate
        source: {type: file, path: in.mp4}
        model: yolo
    models:
      - id: yolo
        path: m.onnx
    """)

# 9 levels of 9 aliases each: 9**9 = 387 million strings once expanded, from under 800 bytes.
BOMB = VALID + "pipeline:\n  x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"  x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 9))


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "site.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_billion_laughs_is_refused_at_once(tmp_path):
    assert len(BOMB.encode()) < 900
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, BOMB))
    assert time.monotonic() - start < 2.0
    issue = only_issue(info)
    assert issue.key == "yaml" and "aliases" in issue.message and "100000" in issue.message, str(issue)


def test_merge_key_bomb_is_refused_at_once(tmp_path):
    text = VALID + "x-0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}\n" + "".join(
        f"x-{i}: &m{i}\n  <<: [" + ", ".join([f"*m{i - 1}"] * 8) + "]\n" for i in range(1, 9))
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert time.monotonic() - start < 2.0
    assert "aliases" in only_issue(info).message


def test_recursive_alias_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, VALID + "pipeline: &p\n  slots: *p\n"))
    issue = only_issue(info)
    assert issue.line == 9 and "refers to itself" in issue.message, str(issue)


def test_deep_nesting_is_refused_with_its_line(tmp_path):
    text = VALID + "pipeline:\n  slots: " + "[" * 900 + "]" * 900 + "\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    issue = only_issue(info)
    assert issue.line == 9 and "nested more than 64 levels" in issue.message, str(issue)


def test_deep_nesting_through_aliases_is_refused(tmp_path):
    text = VALID + "".join(f"x-{i}: &d{i} [{f'*d{i - 1}' if i else 0}]\n" for i in range(200)) + "pipeline: {slots: *d199}\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "nested more than 64 levels" in only_issue(info).message


def test_config_over_one_mib_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, VALID + "# " + "x" * (1024 * 1024) + "\n"))
    issue = only_issue(info)
    assert (issue.line, issue.key) == (1, "config") and "over 1 MiB" in issue.message, str(issue)


def test_config_that_is_not_utf8_names_the_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, VALID.encode() + b"sinks: []\n# caf\xe9\n"))
    issue = only_issue(info)
    assert issue.line == 9 and "not UTF-8" in issue.message and "0xe9" in issue.message, str(issue)


def test_unreadable_config_is_a_config_error(tmp_path, monkeypatch):
    path = write(tmp_path, VALID)
    refuse_to_open(monkeypatch, path)
    with pytest.raises(ConfigError, match=r":1: config: cannot read the config file \(permission denied\)"):
        load_config(path)


def test_a_large_honest_config_still_loads(tmp_path):
    """64 cameras sharing settings through a merge key, each with a 100-point motion mask."""
    mask = "[" + ", ".join(f"[{i / 100:.2f}, 0.5]" for i in range(100)) + "]"
    cams = "".join(f"  - {{<<: *cam, id: c{i}, motion: {{mask: [{mask}]}}}}\n" for i in range(64))
    text = ("x-cam: &cam {source: {type: file, path: in.mp4}, model: yolo, detect_fps: 5}\ncameras:\n" + cams
            + "models:\n  - {id: yolo, path: m.onnx}\n")
    assert len(load_config(write(tmp_path, text)).config.cameras) == 64


@pytest.mark.parametrize("case", ["bomb", "nesting", "latin-1", "control character"])
def test_validate_prints_one_line_and_exits_2(tmp_path, case):
    text = {"bomb": BOMB, "nesting": VALID + "pipeline: " + "[" * 900 + "]" * 900 + "\n",
            "latin-1": VALID.encode() + b"# caf\xe9\n", "control character": VALID + "sinks: [\x00]\n"}[case]
    path = write(tmp_path, text)
    result = run_cli("validate", str(path), timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(f"{path}:"), result.stderr[-2000:]


def test_reload_of_a_bomb_answers_400_at_once(tmp_path):
    from pipeline.health import HealthServer
    from pipeline.metrics import Metrics
    from pipeline.runner import Reloader

    path = write(tmp_path, BOMB)
    # The config is loaded before the graph is asked anything: no graph is needed to refuse it.
    reloader = Reloader(None, lambda: load_config(path))  # type: ignore[arg-type]
    server = HealthServer(Metrics(), port=0, reload=reloader.reload).start()
    try:
        start = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(f"{server.url}/reload", method="POST"), timeout=30)
        assert time.monotonic() - start < 2.0
        assert info.value.code == 400
        body = json.loads(info.value.read())
        assert body["ok"] is False and "aliases" in body["errors"][0]
    finally:
        server.close()
