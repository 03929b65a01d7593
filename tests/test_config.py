"""Config loading: every malformed config gives `file:line: key: message` with the right line.

Each case marks the line the error must point at with `#<`."""

import textwrap
from pathlib import Path

import pytest

from pipeline.config import ConfigError, FileSourceConfig, check_files, load_config

from conftest import run_cli

CAMERA = """\
cameras:
  - id: lobby
    source:
      type: file
      path: ${VIGIL_SHARED}/media/people_small.mp4
    model: yolo
"""
MODEL = """\
models:
  - id: yolo
    path: ${VIGIL_SHARED}/models/yolov8n.onnx
"""
SINK = """\
sinks:
  - type: jsonl
    path: out/lobby.jsonl
"""
VALID = CAMERA + MODEL + SINK


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def marked_line(text: str) -> int:
    lines = [i + 1 for i, line in enumerate(textwrap.dedent(text).splitlines()) if "#<" in line]
    assert len(lines) == 1, "each case marks exactly one line with #<"
    return lines[0]


MALFORMED = {
    "misspelt key": (VALID.replace("      type: file\n", "      type: file\n      fsp: 25 #<\n"),
                     "cameras[0].source.fsp", "unknown key (did you mean 'fps'?)"),
    "misspelt section": (VALID.replace("sinks:", "sink: #<"), "sink", "unknown key (did you mean 'sinks'?)"),
    "unknown key without a near match": (VALID.replace("    model: yolo\n", "    model: yolo\n    zzz: 1 #<\n"),
                                         "cameras[0].zzz", "unknown key; expected one of: id, source, model, queue"),
    "misspelt source type": (VALID.replace("type: file", "type: fil #<"), "cameras[0].source.type",
                             "unknown type 'fil' (did you mean 'file'?); expected one of file, images, synthetic"),
    "source without type": (VALID.replace("      type: file\n", "").replace("    source:", "    source: #<"),
                            "cameras[0].source", "missing 'type': expected one of file, images, synthetic"),
    "source given as a string": (VALID.replace("    source:\n      type: file\n      path: ${VIGIL_SHARED}/media/people_small.mp4\n",
                                               "    source: video.mp4 #<\n"), "cameras[0].source", "got 'video.mp4'"),
    "confidence out of range": (VALID.replace("    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n",
                                              "    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n    conf: 1.5 #<\n"),
                                "models[0].conf", "input should be less than 1, got 1.5"),
    "confidence not a number": (VALID.replace("    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n",
                                              "    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n    conf: high #<\n"),
                                "models[0].conf", "input should be a valid number, unable to parse string as a number, got 'high'"),
    "batch zero": (VALID.replace("    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n",
                                 "    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n    batch: 0 #<\n"),
                   "models[0].batch", "input should be greater than or equal to 1, got 0"),
    "unknown family": (VALID.replace("    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n",
                                     "    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n    family: yolov9 #<\n"),
                       "models[0].family", "expected 'yolov8', 'yolo11' or 'yolov5', got 'yolov9' (did you mean 'yolov8'?)"),
    "camera refers to unknown model": (VALID.replace("    model: yolo\n", "    model: yolo2 #<\n"), "cameras[0].model",
                                       "camera 'lobby' refers to unknown model 'yolo2' (did you mean 'yolo'?); models are ['yolo']"),
    "duplicate camera id": (CAMERA + CAMERA.replace("cameras:\n", "").replace("  - id: lobby", "  - id: lobby #<") + MODEL + SINK,
                            "cameras[1].id", "duplicate id 'lobby' (also cameras[0])"),
    "missing cameras": ("models: #<\n  - id: yolo\n    path: m.onnx\n", "cameras", "required key is missing"),
    "empty camera list": (VALID.replace(CAMERA, "cameras: [] #<\n"), "cameras",
                          "list should have at least 1 item after validation, not 0, got []"),
    "yaml syntax error": (VALID.replace("    model: yolo\n", "    model: yolo\n   oops: [1, 2 #<\n"), "yaml", "YAML syntax error"),
    "duplicate key": (VALID.replace("    model: yolo\n", "    model: yolo\n    model: other #<\n"), "cameras[0].model",
                      "duplicate key (first given on line 6)"),
    "unset environment variable": (VALID.replace("path: out/lobby.jsonl", "path: ${VIGIL_TEST_UNSET_VAR}/x.jsonl #<"),
                                   "sinks[0].path", "environment variable VIGIL_TEST_UNSET_VAR is not set"),
    "misspelt queue policy": (VALID.replace("    model: yolo\n", "    model: yolo\n    queue:\n      policy: drop_olderst #<\n"),
                              "cameras[0].queue.policy",
                              "expected 'block' or 'drop_oldest', got 'drop_olderst' (did you mean 'drop_oldest'?)"),
    "misspelt sink type": (VALID.replace("type: jsonl", "type: jsnl #<"), "sinks[0].type", "unknown type 'jsnl' (did you mean 'jsonl'?)"),
    "sink for unknown camera": (VALID + "    cameras: [lobbby] #<\n", "sinks[0].cameras[0]",
                                "unknown camera 'lobbby' (did you mean 'lobby'?); cameras are ['lobby']"),
    "video sink for two cameras without {camera}": (
        CAMERA + CAMERA.replace("cameras:\n", "").replace("id: lobby", "id: dock") + MODEL
        + "sinks:\n  - type: video\n    path: out/all.mp4 #<\n",
        "sinks[0].path", "a video sink for 2 cameras needs '{camera}' in its path"),
    "two sinks write one file": (VALID + "  - type: jsonl\n    path: out/lobby.jsonl #<\n", "sinks[1].path",
                                 "same output file as sinks[0]"),
    "camera id with a space": (VALID.replace("  - id: lobby", "  - id: front door #<"), "cameras[0].id",
                               "expected an id of letters, digits"),
    "input size with one number": (VALID.replace("    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n",
                                                 "    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n    input_size: [640] #<\n"),
                                   "models[0].input_size", "expected 2 items, got [640]"),
    "negative batch wait": (VALID.replace("    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n",
                                          "    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n    max_wait_ms: -1 #<\n"),
                            "models[0].max_wait_ms", "greater than or equal to 0, got -1"),
    "model fed by no camera": (VALID.replace(SINK, "  - id: spare #<\n    path: m.onnx\n" + SINK), "models[1].id",
                               "model 'spare' is fed by no camera"),
    "empty file": ("#<\n", "config", "config is empty"),
    "list at the top": ("- cameras #<\n", "config", "expected a mapping with cameras, models and sinks at the top, got a list"),
    "pipeline slots too few": (VALID + "pipeline:\n  slots: 1 #<\n", "pipeline.slots", "greater than or equal to 2, got 1"),
    "bad sink cameras type": (VALID + "    cameras: lobby #<\n", "sinks[0].cameras", "expected a list, got 'lobby'"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_config_names_file_line_key(tmp_path, case):
    text, key, message = MALFORMED[case]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issue = info.value.issues[0]
    shown = str(info.value).splitlines()[0]
    assert issue.file == str(path)
    assert issue.line == marked_line(text), shown
    assert issue.key == key, shown
    assert message in issue.message, shown
    assert shown.startswith(f"{path}:{issue.line}: ")


def test_at_least_twenty_malformed_cases():
    assert len(MALFORMED) >= 20


def test_valid_config_expands_env_and_resolves_relative_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_SHARED", "/data/shared")
    cfg = load_config(write(tmp_path, VALID)).config
    assert isinstance(cfg.cameras[0].source, FileSourceConfig)
    assert cfg.cameras[0].source.path == Path("/data/shared/media/people_small.mp4")
    assert cfg.sinks[0].path == (tmp_path / "out" / "lobby.jsonl").resolve()
    assert cfg.cameras[0].policy == "block"


def test_unquoted_env_number_becomes_a_number(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_TEST_BATCH", "4")
    text = VALID.replace("    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n",
                         "    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n    batch: ${VIGIL_TEST_BATCH}\n"
                         "    conf: ${VIGIL_TEST_CONF:-0.4}\n")
    cfg = load_config(write(tmp_path, text)).config
    assert cfg.models[0].batch == 4 and cfg.models[0].conf == 0.4


def test_realtime_source_defaults_to_drop_oldest(tmp_path):
    cfg = load_config(write(tmp_path, VALID.replace("      type: file\n", "      type: file\n      realtime: true\n"))).config
    assert cfg.cameras[0].live and cfg.cameras[0].policy == "drop_oldest"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_missing_input_files_are_reported_with_their_lines(tmp_path):
    text = VALID.replace("people_small.mp4", "no_such_video.mp4").replace("yolov8n.onnx", "no_such_model.onnx")
    loaded = load_config(write(tmp_path, text))
    issues = check_files(loaded)
    assert [(i.line, i.key) for i in issues] == [(5, "cameras[0].source.path"), (9, "models[0].path")]
    assert "video file not found" in issues[0].message and "no_such_video.mp4" in issues[0].message
    assert "model file not found" in issues[1].message and "VIGIL_SHARED" in issues[1].message


def test_demo_config_is_valid():
    from conftest import REPO

    load_config(REPO / "configs" / "demo.yaml")


# --- through the command line, as a user sees it -------------------------------------------------


def test_validate_ok(tmp_path, model_path, media):
    result = run_cli("validate", str(write(tmp_path, VALID)))
    assert result.returncode == 0, result.stderr
    assert "valid (1 cameras, 1 models, 1 sinks)" in result.stdout


def test_validate_reports_errors_with_exit_2_and_no_traceback(tmp_path):
    path = write(tmp_path, MALFORMED["misspelt key"][0])
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{path}:5: cameras[0].source.fsp: unknown key (did you mean 'fps'?)"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("patch", "line", "key", "message"),
    [
        (("    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n", "    path: ${VIGIL_SHARED}/models/yolov8n_b1.onnx\n    batch: 4\n"),
         10, "models[0].batch", "has a fixed batch of 1, got batch: 4"),
        (("    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n", "    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n    family: yolov5\n"),
         10, "models[0].family", "set family: yolov8"),
        (("    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n",
          "    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n    classes: [person, buss]\n"),
         10, "models[0].classes[1]", "unknown class name 'buss' (did you mean 'bus'?)"),
        (("yolov8n.onnx", "missing.onnx"), 9, "models[0].path", "model file not found"),
        (("people_small.mp4", "missing.mp4"), 5, "cameras[0].source.path", "video file not found"),
    ],
)
def test_validate_checks_model_and_files(tmp_path, model_path, media, patch, line, key, message):
    path = write(tmp_path, VALID.replace(*patch))
    result = run_cli("validate", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith(f"{path}:{line}: {key}: "), first
    assert message in first


def test_run_with_bad_config_exits_2(tmp_path):
    path = write(tmp_path, MALFORMED["misspelt section"][0])
    result = run_cli("run", str(path))
    assert result.returncode == 2 and "did you mean 'sinks'" in result.stderr and "Traceback" not in result.stderr


def test_merge_key_in_a_valid_config(tmp_path):
    text = CAMERA.replace("    source:\n", "    source: &src\n") + """\
  - id: dock
    source:
      <<: *src
      realtime: true
    model: yolo
""" + MODEL + SINK
    cfg = load_config(write(tmp_path, text)).config
    assert cfg.cameras[1].source.path == cfg.cameras[0].source.path and cfg.cameras[1].live


@pytest.mark.parametrize(
    ("patch", "line", "key", "message"),
    [
        (("path: out/lobby.jsonl", "path: !env FOO"), 12, "sinks[0].path", "cannot read value 'FOO' tagged !env"),
        (("  - id: lobby", "  - id: lobby\n    1: x"), 3, "cameras[0]", "keys must be names, got '1'"),
        (("    model: yolo\n", "    model: yolo\n    source2: file\n"), 7, "cameras[0].source2", "unknown key (did you mean 'source'?)"),
    ],
)
def test_odd_yaml_is_reported_not_crashed(tmp_path, patch, line, key, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, VALID.replace(*patch)))
    issue = info.value.issues[0]
    assert (issue.line, issue.key) == (line, key), str(issue)
    assert message in issue.message


def test_source_given_as_a_word_says_what_is_expected(tmp_path):
    text = VALID.replace("    source:\n      type: file\n      path: ${VIGIL_SHARED}/media/people_small.mp4\n", "    source: file\n")
    with pytest.raises(ConfigError, match=r":3: cameras\[0\]\.source: "
                                          r"expected a mapping with type: one of file, images, synthetic, rtsp, usb, got 'file'"):
        load_config(write(tmp_path, text))


def test_secret_from_env_stays_a_string(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_TEST_SECRET", "*on")
    cfg = load_config(write(tmp_path, VALID.replace("out/lobby.jsonl", "out/${VIGIL_TEST_SECRET}.jsonl"))).config
    assert cfg.sinks[0].path.name == "*on.jsonl"


def test_sink_listing_a_camera_twice(tmp_path):
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.cameras\[1\]: camera 'lobby' is listed twice"):
        load_config(write(tmp_path, VALID + "    cameras: [lobby, lobby]\n"))


def test_boolean_is_not_a_class_id(tmp_path):
    text = VALID.replace("    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n",
                         "    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n    classes: [true]\n")
    with pytest.raises(ConfigError, match=r"models\[0\]\.classes\[0\]"):
        load_config(write(tmp_path, text))


def test_bench_and_detect_argument_errors_name_the_option(tmp_path, media):
    result = run_cli("bench", "--video", str(media / "people_small.mp4"), "--batch", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: --batch: input should be greater than or equal to 1, got 0" in result.stderr
    result = run_cli("detect", str(media / "bus.jpg"), "--jsonl", str(tmp_path / "x.jsonl"), "--conf", "2")
    assert result.returncode == 2 and "error: --conf: input should be less than 1, got 2.0" in result.stderr


def test_shorthand_accepts_global_options_first(tmp_path):
    result = run_cli("--log-level", "warning", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "config file not found" in result.stderr


def test_every_cli_error_line_has_file_line_key_message(tmp_path):
    import re

    for case in ("yaml syntax error", "empty file", "misspelt key", "camera refers to unknown model"):
        path = write(tmp_path, MALFORMED[case][0])
        result = run_cli("validate", str(path))
        assert result.returncode == 2
        for line in result.stderr.strip().splitlines():
            assert re.fullmatch(rf"{re.escape(str(path))}:\d+: [\w.\[\]]+: .+", line), line


@pytest.mark.parametrize(
    ("patch", "key", "message"),
    [
        (("    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n", "    path: ${VIGIL_SHARED}/models/yolov8n.onnx\n    classes: [1.5]\n"),
         "models[0].classes[0]", "input should be a valid integer or input should be a valid string, got 1.5"),
        (("      type: file\n", "      type: file\n      file: 1\n"), "cameras[0].source.file", "unknown key; expected one of: type, path"),
    ],
)
def test_union_member_names_never_appear_in_keys(tmp_path, patch, key, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, VALID.replace(*patch)))
    assert len(info.value.issues) == 1, str(info.value)
    assert info.value.issues[0].key == key and message in info.value.issues[0].message, str(info.value)


def test_empty_env_value_takes_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_TEST_EMPTY", "")
    cfg = load_config(write(tmp_path, VALID.replace("out/lobby.jsonl", "${VIGIL_TEST_EMPTY:-out}/x.jsonl"))).config
    assert cfg.sinks[0].path == (tmp_path / "out" / "x.jsonl").resolve()


def test_detect_errors_after_validation_name_the_option(tmp_path, media):
    result = run_cli("detect", str(media / "bus.jpg"), "--model", str(tmp_path / "nope.onnx"), "--jsonl", str(tmp_path / "x.jsonl"))
    assert result.returncode == 2 and "error: --model: model file not found" in result.stderr


def test_bad_log_level_from_environment(tmp_path):
    result = run_cli("validate", str(tmp_path / "x.yaml"), env={"VIGIL_LOG_LEVEL": "verbose"})
    assert result.returncode == 2 and "VIGIL_LOG_LEVEL" in result.stderr and "Traceback" not in result.stderr
