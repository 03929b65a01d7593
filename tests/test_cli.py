"""The command-line contract, run as a user runs it (subprocesses, real files)."""

import json
import re
import signal
import subprocess
import sys
import time

import cv2

from conftest import REPO, run_cli


def test_detect_on_an_image_directory(tmp_path, model_path, media):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("person.jpg", "bus.jpg", "dog.jpg"):
        (images / name).symlink_to(media / name)
    out = tmp_path / "det.jsonl"
    result = run_cli("detect", str(images), "--model", str(model_path), "--jsonl", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["source"] for r in records] == ["bus.jpg", "dog.jpg", "person.jpg"]
    for r in records:
        assert set(r) >= {"camera", "seq", "source", "capture_ts", "age_ms", "width", "height", "detections"}
    names = {r["source"]: sorted(d["class_name"] for d in r["detections"]) for r in records}
    assert names["bus.jpg"].count("person") == 4 and "bus" in names["bus.jpg"]
    assert {"dog", "bicycle", "car"} <= set(names["dog.jpg"])
    assert {"horse", "person", "dog"} <= set(names["person.jpg"])
    assert "3 frames" in result.stdout


def test_detect_single_image_with_video_and_thresholds(tmp_path, model_path, media):
    out, video = tmp_path / "bus.jsonl", tmp_path / "bus.mp4"
    result = run_cli("detect", str(media / "bus.jpg"), "--model", str(model_path), "--jsonl", str(out),
                     "--video", str(video), "--conf", "0.8", "--iou", "0.5", "--no-progress")
    assert result.returncode == 0, result.stderr
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(d["confidence"] > 0.8 for d in record["detections"])
    assert len(record["detections"]) == 4  # 3 people and the bus score above 0.8
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    assert ok and frame.shape == (1080, 810, 3)


def test_detect_missing_source_and_model(tmp_path, model_path):
    result = run_cli("detect", str(tmp_path / "nope.mp4"), "--jsonl", str(tmp_path / "x.jsonl"))
    assert result.returncode == 2 and "not found" in result.stderr and "nope.mp4" in result.stderr
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), (255 * (cv2.getGaussianKernel(64, 8) @ cv2.getGaussianKernel(64, 8).T)).astype("uint8"))
    result = run_cli("detect", str(image), "--model", str(tmp_path / "missing.onnx"), "--jsonl", str(tmp_path / "x.jsonl"))
    assert result.returncode == 2
    assert "model file not found" in result.stderr and "missing.onnx" in result.stderr and "VIGIL_SHARED" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_during_a_run_leaves_valid_output_files(tmp_path, model_path, media):
    out, video = tmp_path / "crowd.jsonl", tmp_path / "crowd.mp4"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), "detect", str(media / "crowd_overhead.mp4"), "--model", str(model_path),
         "--jsonl", str(out), "--video", str(video), "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 5):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "interrupted" in stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]  # every line whole
    assert 5 <= len(records) < 341
    assert [r["seq"] for r in records] == list(range(len(records)))
    cap = cv2.VideoCapture(str(video))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == len(records), "the video holds exactly the frames that were written to JSONL"


def test_a_failing_stage_exits_1_with_the_original_error(tmp_path, model_path, media):
    cfg = tmp_path / "bad_codec.yaml"
    cfg.write_text(f"""
cameras:
  - {{id: yard, source: {{type: file, path: {media / 'people_small.mp4'}}}, model: yolo}}
models:
  - {{id: yolo, path: {model_path}}}
sinks:
  - {{type: video, path: out/yard.mp4, codec: ZZZZ}}
""")
    t0 = time.monotonic()
    result = run_cli("run", str(cfg), "--no-progress")
    assert result.returncode == 1
    assert re.search(r"error: stage 'sink\[0:video:yard.mp4\]' failed: OSError: "
                     r"OpenCV cannot write video .*yard.mp4 with codec 'ZZZZ'", result.stderr)
    assert time.monotonic() - t0 < 30


def test_bench_prints_ratio_line(model_path, media):
    result = run_cli("bench", "--model", str(model_path), "--video", str(media / "people_small.mp4"), "--frames", "6",
                     "--rounds", "1", "--no-sequential", timeout=180)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"pipeline_fps=\d+\.\d+ raw_fps=\d+\.\d+ ratio=\d+\.\d+", last), last
    assert "preprocess" in result.stdout and "inference" in result.stdout and "age p99" in result.stdout


def test_shorthand_run_config(tmp_path):
    result = run_cli(str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "config file not found" in result.stderr
