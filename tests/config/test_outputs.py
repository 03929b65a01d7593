"""No output may replace an input: a sink path equal to a source, a model, the config file itself,
or inside the evidence folder is a config error naming both keys (`detect`, `run` and `validate`
all check it before anything is opened)."""

import shutil
import textwrap
from pathlib import Path

import pytest

from pipeline.config import ConfigError, check_files, config_from_data, load_config
from tests.helpers import only_issue

from conftest import run_cli


def site(tmp_path: Path, sinks: str, extra: str = "") -> Path:
    """A config reading in.mp4 with model m.onnx (both in tmp_path) and the given `sinks:` items."""
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent("""\
        cameras:
          - id: gate
            source: {type: file, path: in.mp4}
            model: yolo
        models:
          - id: yolo
            path: m.onnx
        sinks:
        """) + textwrap.dedent(sinks) + textwrap.dedent(extra))
    return path


@pytest.mark.parametrize(
    ("sinks", "line", "key", "names"),
    [
        ("  - {type: jsonl, path: in.mp4}\n", 9, "sinks[0].path", "cameras[0].source.path"),
        ("  - {type: jsonl, path: ./sub/../in.mp4}\n", 9, "sinks[0].path", "cameras[0].source.path"),
        ("  - {type: video, path: in.mp4}\n", 9, "sinks[0].path", "cameras[0].source.path"),
        ("  - {type: events, path: m.onnx}\n", 9, "sinks[0].path", "models[0].path"),
        ("  - {type: jsonl, path: site.yaml}\n", 9, "sinks[0].path", "the config file itself"),
        ("  - {type: video, path: '{camera}.mp4'}\n", 9, "sinks[0].path", "cameras[0].source.path"),
    ],
    ids=["jsonl over the video", "same file by another name", "video over the video", "events over the model",
         "jsonl over the config", "template naming the video"],
)
def test_an_output_equal_to_an_input_is_refused(tmp_path, sinks, line, key, names):
    path = site(tmp_path, sinks)
    if "{camera}" in sinks:  # camera gate's video is gate.mp4
        path.write_text(path.read_text().replace("path: in.mp4}", "path: gate.mp4}"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issue = only_issue(info)
    assert (issue.line, issue.key) == (line, key), str(issue)
    assert names in issue.message and "would replace" in issue.message, issue.message


def test_an_output_inside_the_evidence_folder_is_refused(tmp_path):
    path = site(tmp_path, "  - {type: jsonl, path: evidence/frames.jsonl}\n", "evidence: {dir: evidence}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issue = only_issue(info)
    assert (issue.line, issue.key) == (9, "sinks[0].path"), str(issue)
    assert "inside evidence.dir" in issue.message, issue.message


def test_an_input_reached_through_a_link_is_refused_by_the_file_check(tmp_path):
    (tmp_path / "in.mp4").write_bytes(b"x")
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "link.mp4").symlink_to(tmp_path / "in.mp4")
    # Absolute, so the name is kept as written (a relative path is resolved, links and all): only
    # the file check, which stats both, can see that it is the source.
    loaded = load_config(site(tmp_path, f"  - {{type: jsonl, path: {tmp_path / 'link.mp4'}}}\n"))
    issues = [i for i in check_files(loaded) if i.key == "sinks[0].path"]
    assert len(issues) == 1 and "cameras[0].source.path" in issues[0].message, [str(i) for i in check_files(loaded)]


def test_distinct_outputs_pass(tmp_path):
    load_config(site(tmp_path, "  - {type: jsonl, path: out/in.jsonl}\n  - {type: video, path: out/in.mp4}\n",
                     "evidence: {dir: evidence}\n"))


def test_config_from_data_names_the_options(tmp_path):
    data = {"cameras": [{"id": "cam0", "model": "model", "source": {"type": "file", "path": str(tmp_path / "v.mp4")}}],
            "models": [{"id": "model", "path": str(tmp_path / "m.onnx")}],
            "sinks": [{"type": "jsonl", "path": str(tmp_path / "m.onnx")}]}
    with pytest.raises(ConfigError) as info:
        config_from_data(data, origin="error", base_dir=tmp_path,
                         key_names={("sinks", 0, "path"): "--jsonl", ("models", 0, "path"): "--model"})
    assert str(only_issue(info)).startswith("error: --jsonl: "), str(info.value)
    assert "--model" in str(info.value)


# --- as a user sees it: nothing is replaced ------------------------------------------------------


@pytest.fixture
def video(tmp_path, media) -> Path:
    path = tmp_path / "v.mp4"
    shutil.copy(media / "people_small.mp4", path)
    return path


@pytest.mark.parametrize("option", ["--jsonl", "--video"])
def test_detect_refuses_to_write_over_its_source(tmp_path, video, option):
    before = video.read_bytes()
    args = ["--jsonl", str(video)] if option == "--jsonl" else ["--jsonl", str(tmp_path / "o.jsonl"), "--video", str(video)]
    result = run_cli("detect", str(video), *args, "--no-progress")
    assert result.returncode == 2, result.stderr
    assert f"error: {option}: " in result.stderr and "SOURCE" in result.stderr and "Traceback" not in result.stderr
    assert video.read_bytes() == before


def test_detect_refuses_to_write_over_its_model(tmp_path, video, model_path):
    model = tmp_path / "m.onnx"
    shutil.copy(model_path, model)
    before = model.read_bytes()
    result = run_cli("detect", str(video), "--model", str(model), "--jsonl", str(model), "--no-progress")
    assert result.returncode == 2, result.stderr
    assert "error: --jsonl: " in result.stderr and "--model" in result.stderr
    assert model.read_bytes() == before


def test_validate_refuses_a_sink_over_a_source(tmp_path, video, model_path):
    path = tmp_path / "site.yaml"
    path.write_text(f"cameras:\n  - {{id: gate, source: {{type: file, path: v.mp4}}, model: yolo}}\n"
                    f"models:\n  - {{id: yolo, path: {model_path}}}\nsinks:\n  - {{type: jsonl, path: v.mp4}}\n")
    result = run_cli("validate", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().startswith(f"{path}:6: sinks[0].path: ") and "cameras[0].source.path" in result.stderr
