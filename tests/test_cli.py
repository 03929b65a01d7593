"""The command-line contract, run as a user runs it (subprocesses, real files)."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from tests.helpers import count_video_frames, read_jsonl, wait_for

from conftest import REPO, run_cli, start_cli


def _detect_crowd(model_path: Path, media: Path, out: Path, *args: str, **popen) -> subprocess.Popen:
    """`detect` on crowd_overhead.mp4 into the JSONL file `out` (plus `args`), started and given up to
    60 s to write 5 records, so that a signal sent next lands mid-run."""
    proc = start_cli("detect", str(media / "crowd_overhead.mp4"), "--model", str(model_path), "--jsonl", str(out), *args,
                     "--no-progress", **popen)
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 5, 60, step=0.1)
    return proc


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
    proc = _detect_crowd(model_path, media, out, "--video", str(video))
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "interrupted" in stdout
    records = read_jsonl(out)  # every line whole
    assert 5 <= len(records) < 341
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert count_video_frames(video) == len(records), "the video holds exactly the frames that were written to JSONL"


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
    # (the writer's own words after the stage name: they changed with the PyAV writer, pipeline/sinks/mp4.py)
    assert re.search(r"error: stage 'sink\[0:video:yard.mp4\]' failed: OSError: "
                     r".*cannot write video .*yard.mp4.*'ZZZZ'", result.stderr), result.stderr
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


# ------------------------------------------------------------------------------------------------
# Hardening (issue 10): setup problems are one line and exit 2; signals; small command-line holes.


def _no_traceback_one_error(result) -> str:
    """The stderr of a run that must fail with exactly one `error...` line and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_detect_with_a_busy_metrics_port_exits_2_naming_the_port(tmp_path, model_path, media):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("detect", str(media / "bus.jpg"), "--model", str(model_path), "--jsonl", str(tmp_path / "x.jsonl"),
                         "--metrics-port", str(port), "--no-progress")
    assert result.returncode == 2, result.stderr
    assert str(port) in _no_traceback_one_error(result)


def test_sighup_drains_like_sigterm_when_there_is_nothing_to_reload(tmp_path, model_path, media):
    out, video = tmp_path / "crowd.jsonl", tmp_path / "crowd.mp4"
    proc = _detect_crowd(model_path, media, out, "--video", str(video))
    proc.send_signal(signal.SIGHUP)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    records = read_jsonl(out)
    assert 5 <= len(records) < 341
    assert count_video_frames(video) == len(records)


SLOW_LOAD = """
import sys, time
import pipeline.graph.models as models
real = models.create_backend
def slow(*args, **kwargs):
    print("loading the model", file=sys.stderr, flush=True)
    time.sleep(10)  # a slow model load (a TensorRT build takes minutes): the signal lands here
    return real(*args, **kwargs)
models.create_backend = slow
from pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_model_load_exits_130_with_one_line(tmp_path, model_path, media, sig):
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_LOAD, "detect", str(media / "bus.jpg"), "--model", str(model_path),
         "--jsonl", str(tmp_path / "x.jsonl"), "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    for _ in range(50):  # whatever is logged before the model load, then our line
        line = proc.stderr.readline()
        if not line or "loading the model" in line:
            break
    assert "loading the model" in line, "the command ended before loading the model"
    proc.send_signal(sig)
    _stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, f"exit {proc.returncode}: {stderr}"
    assert "Traceback" not in stderr, stderr
    assert len([line for line in stderr.splitlines() if line.startswith("error")]) == 1, stderr


@pytest.mark.parametrize("args, key", [
    (["--gil-switch-ms", "0"], "--gil-switch-ms"),
    (["--live", "1", "--seconds", "-1"], "--seconds"),
    (["--frames", "-3"], "--frames"),
])
def test_bench_rejects_bad_numbers_in_one_line(model_path, media, args, key):
    result = run_cli("bench", "--model", str(model_path), "--video", str(media / "people_small.mp4"), *args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert key in _no_traceback_one_error(result)


def test_bench_on_an_empty_video_file_is_one_line(tmp_path, model_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    result = run_cli("bench", "--model", str(model_path), "--video", str(empty), timeout=60)
    assert result.returncode == 2, result.stderr
    line = _no_traceback_one_error(result)
    assert "--video" in line and "empty.mp4" in line


@pytest.mark.parametrize("args, key", [(["--count", "-1"], "--count"), (["--timeout", "-1"], "--timeout")])
def test_listen_rejects_negative_count_and_timeout(args, key):
    result = run_cli("listen", "tcp://127.0.0.1:5599", *args, timeout=30)
    assert result.returncode == 2, result.stderr
    assert key in _no_traceback_one_error(result)


def test_listen_to_an_unresolvable_host_says_so(tmp_path):
    result = run_cli("listen", "tcp://no-such-host.invalid:5560", "--timeout", "3", timeout=30)
    assert result.returncode == 2, result.stderr
    line = _no_traceback_one_error(result)
    assert "no-such-host.invalid" in line and "resolve" in line and "no event" not in line


def test_detect_jsonl_dash_writes_records_to_stdout_and_the_summary_to_stderr(tmp_path, model_path, media):
    result = run_cli("detect", str(media / "bus.jpg"), "--model", str(model_path), "--jsonl", "-", "--no-progress")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]  # nothing but whole records
    assert len(records) == 1 and records[0]["source"] == "bus.jpg"
    assert "1 frames" in result.stderr and "age p99" in result.stderr
    assert not (REPO / "-").exists() and not (tmp_path / "-").exists()


def test_detect_with_a_video_that_is_not_a_video_container_fails_before_the_model_loads(tmp_path, model_path, media):
    result = run_cli("--log-level", "info", "detect", str(media / "bus.jpg"), "--model", str(model_path),
                     "--jsonl", str(tmp_path / "x.jsonl"), "--video", str(tmp_path / "out.txt"), "--no-progress")
    assert result.returncode == 2, result.stderr
    line = _no_traceback_one_error(result)
    assert "--video" in line and "out.txt" in line and ".mp4" in line and "codec" not in line
    assert "onnxruntime" not in result.stderr.lower() and "openvino" not in result.stderr.lower(), "the model was loaded first"
    assert not (tmp_path / "x.jsonl").exists()


def test_a_folder_with_one_unreadable_image_skips_it_warns_and_keeps_the_others(tmp_path, model_path, media):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("bus.jpg", "dog.jpg", "person.jpg"):
        (images / name).symlink_to(media / name)
    (images / "cat.jpg").touch()  # zero bytes, sorts between the good ones
    out = tmp_path / "det.jsonl"
    result = run_cli("detect", str(images), "--model", str(model_path), "--jsonl", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["source"] for line in out.read_text().splitlines()] == ["bus.jpg", "dog.jpg", "person.jpg"]
    warnings = [line for line in result.stderr.splitlines() if "cat.jpg" in line]
    assert warnings and "WARNING" in warnings[0] and "unreadable" in warnings[0], result.stderr


def test_sigint_to_the_process_and_then_its_group_is_one_signal(tmp_path, model_path, media):
    """What `timeout -s INT` does: the signal to its child, then to the whole process group, so the
    child gets SIGINT twice a moment apart. That must drain (exit 0), not stop at once (130)."""
    import os

    out = tmp_path / "crowd.jsonl"
    proc = _detect_crowd(model_path, media, out, start_new_session=True)
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.002)  # two deliveries that come together are merged by Python itself; these are handled one by one
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "interrupted, queued frames finished" in stdout
