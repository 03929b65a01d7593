"""`vigil validate` means runnable: every source opens once, every output can be written, video
sinks name a container and codec their writer handles (pipeline/validate.py, called by `validate`, `run` and `detect`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.config import config_from_data

from conftest import run_cli


@pytest.fixture()
def readonly_dir(tmp_path):
    """A folder nobody can write to, root included: a read-only tmpfs when running as root (root
    ignores permission bits), else a folder with mode 555. Skips when neither can be had."""
    path = tmp_path / "readonly"
    path.mkdir()
    mounted = False
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16k", "tmpfs", str(path)], capture_output=True,
                              timeout=10)
        mounted = done.returncode == 0
    else:
        path.chmod(0o555)
    try:
        probe = path / "probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("cannot make a read-only folder here (root without permission to mount a tmpfs)")
        yield path
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], capture_output=True, timeout=10)
        else:
            path.chmod(0o755)


def _loaded(tmp_path: Path, cameras: list[dict], sinks: list[dict], model_path: Path, evidence: dict | None = None):
    data = {"cameras": [{**c, "model": "m"} for c in cameras], "models": [{"id": "m", "path": str(model_path)}],
            "sinks": sinks}
    if evidence is not None:
        data["evidence"] = evidence
    return config_from_data(data, origin=str(tmp_path / "site.yaml"), base_dir=tmp_path)


def test_validate_rejects_what_would_fail_at_once(tmp_path, model_path, media, readonly_dir):
    text = tmp_path / "notes.mp4"
    text.write_text("these are notes, not a video\n" * 50)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"""
cameras:
  - {{id: text, source: {{type: file, path: {text}}}, model: yolo}}
  - {{id: nothing, source: {{type: images, path: {empty}}}, model: yolo}}
  - {{id: good, source: {{type: file, path: {media / 'people_small.mp4'}}}, model: yolo}}
models:
  - {{id: yolo, path: {model_path}}}
sinks:
  - {{type: jsonl, path: {readonly_dir / 'out' / 'det.jsonl'}}}
  - {{type: video, path: "out/{{camera}}.txt"}}
""")
    result = run_cli("validate", str(cfg))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    by_key = {key: next((ln for ln in lines if f": {key}: " in ln), "") for key in (
        "cameras[0].source.path", "cameras[1].source.path", "sinks[0].path", "sinks[1].path")}
    assert "notes.mp4" in by_key["cameras[0].source.path"] and f"{cfg}:3:" in by_key["cameras[0].source.path"], lines
    assert "no images" in by_key["cameras[1].source.path"], lines
    assert "cannot write" in by_key["sinks[0].path"] and "readonly" in by_key["sinks[0].path"], lines
    assert ".txt" in by_key["sinks[1].path"] and ".mp4" in by_key["sinks[1].path"], lines
    assert not any("cameras[2]" in ln for ln in lines), "the good camera is not reported"


def test_a_runnable_config_is_valid_and_validate_writes_nothing(tmp_path, model_path, media):
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"""
cameras:
  - {{id: yard, source: {{type: file, path: {media / 'people_small.mp4'}}}, model: yolo}}
  - {{id: stills, source: {{type: images, path: {media / 'bus.jpg'}}}, model: yolo}}
models:
  - {{id: yolo, path: {model_path}}}
sinks:
  - {{type: jsonl, path: out/det.jsonl}}
  - {{type: video, path: "out/{{camera}}.mp4"}}
""")
    result = run_cli("validate", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "valid (2 cameras" in result.stdout
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["site.yaml"], "validate created files"


def test_check_sources_opens_each_source_once(tmp_path, model_path, media):
    from pipeline.validate import check_sources

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").touch()
    loaded = _loaded(tmp_path, [
        {"id": "ok", "source": {"type": "images", "path": str(media / "bus.jpg")}},
        {"id": "bad", "source": {"type": "images", "path": str(broken)}},
        {"id": "syn", "source": {"type": "synthetic", "frames": 3}},
    ], [], model_path)
    issues, warnings = check_sources(loaded)
    assert [i.key for i in issues] == ["cameras[1].source.path"] and "a.jpg" in issues[0].message
    assert warnings == []


def test_check_outputs_names_the_container_and_the_folder(tmp_path, model_path, media, readonly_dir):
    from pipeline.validate import check_outputs

    camera = [{"id": "c", "source": {"type": "images", "path": str(media / "bus.jpg")}}]
    assert check_outputs(_loaded(tmp_path, camera, [{"type": "jsonl", "path": "a/b/c.jsonl"},
                                                    {"type": "video", "path": "v.mkv"}], model_path)) == []
    assert not (tmp_path / "a").exists(), "checking may not create the folders"
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    issues = check_outputs(_loaded(tmp_path, camera, [
        {"type": "jsonl", "path": str(blocker / "x.jsonl")},
        {"type": "video", "path": "v.txt"},
        {"type": "events", "path": str(readonly_dir / "e.jsonl")},
        {"type": "jsonl", "path": str(tmp_path)},
    ], model_path, evidence={"dir": str(readonly_dir / "evidence")}))
    keys = {i.key: i.message for i in issues}
    assert set(keys) == {"sinks[0].path", "sinks[1].path", "sinks[2].path", "sinks[3].path", "evidence.dir"}, keys
    assert "not a folder" in keys["sinks[0].path"]
    assert "is a folder" in keys["sinks[3].path"]
    assert "read-only" in keys["sinks[2].path"] or "cannot write" in keys["sinks[2].path"]


def test_stdout_is_a_valid_jsonl_output(tmp_path, model_path, media):
    from pipeline.validate import check_outputs

    camera = [{"id": "c", "source": {"type": "images", "path": str(media / "bus.jpg")}}]
    assert check_outputs(_loaded(tmp_path, camera, [{"type": "jsonl", "path": "/dev/stdout"}], model_path)) == []


def test_check_codecs_writes_one_frame_with_the_sinks_own_writer(tmp_path, model_path, media):
    from pipeline.validate import check_codecs

    camera = [{"id": "c", "source": {"type": "images", "path": str(media / "bus.jpg")}}]
    issues = check_codecs(_loaded(tmp_path, camera, [{"type": "video", "path": "a.mp4"},
                                                    {"type": "video", "path": "b.mp4", "codec": "ZZZZ"}], model_path))
    assert [i.key for i in issues] == ["sinks[1].codec"] and "ZZZZ" in issues[0].message, issues
    assert str(tmp_path) not in issues[0].message, "the probe's temporary path is not the user's problem"


def test_detect_into_a_read_only_folder_fails_before_the_model_loads(tmp_path, model_path, media, readonly_dir):
    result = run_cli("--log-level", "info", "detect", str(media / "bus.jpg"), "--model", str(model_path),
                     "--jsonl", str(readonly_dir / "det.jsonl"), "--no-progress")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("error")]
    assert line.startswith("error: --jsonl: cannot write") and "det.jsonl" in line, line
    assert "loaded yolov8n" not in result.stderr, "the model was loaded before the output was checked"
