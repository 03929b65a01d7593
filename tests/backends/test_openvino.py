"""OpenVINO backend against ONNX Runtime on the same .onnx, through the real letterbox, decoder and
NMS; its precision, thread and batch settings; a missing package; and `bench --compare-backends`."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline.backends import ModelLoadError
from pipeline.backends.openvino import OpenVINOBackend
from pipeline.bench_backends import Agreement, match_detections
from pipeline.postprocess.yolo import DecodeParams
from pipeline.slots import SlotRing
from tests.helpers import detect_images

from conftest import REPO, run_cli

IMAGES = ["bus.jpg", "dog.jpg", "person.jpg", "street.png"]
# Measured here (AMD EPYC with AVX-512 BF16, OpenVINO 2026.4): bf16 finds every one of ONNX Runtime
# f32's 32 boxes on the four images at IoU >= 0.9, with one extra low-confidence box, and
# confidences within 0.012. The bounds leave room for other CPUs' bf16 kernels, not for a wrong model.
BF16_MAX_CONF_DIFF = 0.03


@pytest.fixture(scope="module")
def ov_f32(model_path):
    backend = OpenVINOBackend(model_path, precision="f32")
    yield backend
    backend.close()


def _has_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def detect(backend, media: Path, names: list[str], batch: int) -> dict:
    """Each image letterboxed into the slot, `batch` at a time, inferred and decoded with NMS."""
    return detect_images(backend, media, names, batch, DecodeParams(conf=0.25, iou=0.45, max_det=300))


def assert_same_detections(got: dict, ref: dict) -> None:
    for name, r in ref.items():
        g = got[name]
        assert len(g) == len(r), f"{name}: {len(g)} detections, ONNX Runtime found {len(r)}"
        np.testing.assert_array_equal(g.class_id, r.class_id, err_msg=name)
        np.testing.assert_allclose(g.xyxy, r.xyxy, atol=1.0, err_msg=name)
        np.testing.assert_allclose(g.confidence, r.confidence, atol=1e-3, err_msg=name)


def test_model_info_is_the_same_as_onnxruntime(ov_f32, ort_backend):
    """Class names, input size and stride come from the ONNX metadata OpenVINO keeps in rt_info."""
    assert ov_f32.info == ort_backend.info
    assert ov_f32.info.class_names[5] == "bus" and ov_f32.info.stride == 32 and ov_f32.info.max_batch is None


def test_f32_detections_equal_onnxruntime(ov_f32, ort_backend, media):
    assert ov_f32.precision == "f32"
    assert_same_detections(detect(ov_f32, media, IMAGES, 1), detect(ort_backend, media, IMAGES, 1))


def test_batch_4_runs_and_gives_the_batch_1_detections(ov_f32, ort_backend, media):
    """The model's batch is dynamic: one request per (slot, batch size), rows 0..n-1 only."""
    assert_same_detections(detect(ov_f32, media, IMAGES, 4), detect(ort_backend, media, IMAGES, 1))
    assert_same_detections(detect(ov_f32, media, IMAGES, 3), detect(ort_backend, media, IMAGES, 1))  # 3 + 1


def test_bf16_agrees_with_onnxruntime_f32(model_path, ort_backend, media):
    backend = OpenVINOBackend(model_path, precision="bf16")
    assert backend.precision == ("bf16" if _has_bf16() else "f32")  # OpenVINO falls back where the CPU has no bf16
    got, ref = detect(backend, media, IMAGES, 1), detect(ort_backend, media, IMAGES, 1)
    total = Agreement(0, 0, 0, 0.0)
    for name in IMAGES:
        total = total + match_detections(ref[name], got[name])
    assert total.total == 32 and total.matched == total.total, total
    assert total.max_conf_diff < BF16_MAX_CONF_DIFF, total


def test_precision_auto_is_openvinos_choice_and_threads_are_set(model_path):
    backend = OpenVINOBackend(model_path, precision="auto", threads=1)
    # Why f32 must be asked for explicitly: left alone, OpenVINO runs bf16 on a CPU that has it.
    assert backend.precision == ("bf16" if _has_bf16() else "f32")
    assert backend.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert str(backend.compiled.get_property("PERFORMANCE_HINT")).endswith("LATENCY")


def test_infer_writes_into_the_slot_and_binds_once_per_batch_size(ov_f32):
    info = ov_f32.info
    ring = SlotRing.allocate(2, 2, {info.input.name: (info.input.shape, info.input.dtype)},
                             {o.name: (o.shape, o.dtype) for o in info.outputs})
    slot = ring.acquire(threading.Event())
    out = slot.outputs[info.outputs[0].name]
    slot.inputs[info.input.name][:] = 0.5
    ov_f32.infer(slot, 1)
    assert np.abs(out[0]).sum() > 0 and not out[1].any()  # row 0 written in place, row 1 untouched
    ov_f32.infer(slot, 1)
    ov_f32.infer(slot, 2)
    assert out[1].any() and len(slot.bindings) == 2
    np.testing.assert_allclose(out[0], out[1], atol=1e-4)
    with pytest.raises(ValueError, match="batch of 3 does not fit slot 0 of 2 rows"):
        ov_f32.infer(slot, 3)


def test_fixed_batch_model_keeps_its_batch(model_path):
    """yolov8n_b1.onnx bakes batch 1 into its graph: a dynamic batch would not reach its output."""
    assert OpenVINOBackend(model_path.with_name("yolov8n_b1.onnx")).info.max_batch == 1


def test_missing_or_unreadable_model(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model file not found: .*nothere.onnx"):
        OpenVINOBackend(tmp_path / "nothere.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not protobuf")
    with pytest.raises(ModelLoadError, match=r"OpenVINO cannot read .*bad.onnx"):
        OpenVINOBackend(bad)


def test_without_openvino_the_error_names_the_package_and_auto_falls_back(tmp_path, model_path, media):
    """A machine without the package, simulated in a fresh interpreter: `import openvino` fails there."""
    code = f"""
import sys
sys.modules["openvino"] = None  # what a missing package looks like to `import openvino`
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from pipeline.backends import ModelLoadError
from pipeline.backends.auto import choose_backend, machine_facts
from pipeline.backends.openvino import OpenVINOBackend
from pipeline.cli import main
try:
    OpenVINOBackend(Path({str(model_path)!r}))
except ModelLoadError as exc:
    print("LOAD", exc)
print("AUTO", choose_backend(Path({str(model_path)!r}), machine_facts(Path({str(model_path)!r}))))
rc = main(["detect", {str(media / "bus.jpg")!r}, "--model", {str(model_path)!r}, "--backend", "openvino",
           "--jsonl", {str(tmp_path / "o.jsonl")!r}, "--no-progress"])
print("RC", rc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "LOAD OpenVINO is not installed" in out.stdout and "pip install openvino" in out.stdout, out.stdout + out.stderr
    if "AUTO ('tensorrt'" not in out.stdout:  # (a machine with TensorRT and a GPU picks that first)
        assert "AUTO ('onnxruntime', 'no TensorRT and no OpenVINO (pip install openvino" in out.stdout, out.stdout
    assert "RC 2" in out.stdout
    assert "error: --model: OpenVINO is not installed" in out.stderr and "pip install openvino" in out.stderr, out.stderr


def test_detect_with_openvino_from_the_command_line(tmp_path, model_path, media):
    result = run_cli("detect", str(media / "bus.jpg"), "--model", str(model_path), "--backend", "openvino",
                     "--precision", "f32", "--jsonl", str(tmp_path / "o.jsonl"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "with OpenVINO" in result.stderr and "(f32, LATENCY" in result.stderr
    record = (tmp_path / "o.jsonl").read_text()
    assert record.count('"class_name":"person"') == 4 and record.count('"class_name":"bus"') == 1


def test_detect_rejects_a_precision_the_backend_lacks(tmp_path, media):
    result = run_cli("detect", str(media / "bus.jpg"), "--backend", "onnxruntime", "--precision", "bf16",
                     "--jsonl", str(tmp_path / "o.jsonl"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: --precision: backend onnxruntime runs f32 only"), result.stderr


def test_bench_compare_backends_prints_a_table_and_a_last_line_for_scripts(media):
    result = run_cli("bench", "--video", str(media / "crowd_overhead.mp4"), "--compare-backends", "--frames", "2",
                     "--rounds", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"onnxruntime=\d+\.\d\d openvino-f32=\d+\.\d\d openvino-bf16=\d+\.\d\d( tensorrt-fp16=\d+\.\d\d)?",
                        lines[-1]), lines[-1]
    table = "\n".join(lines)
    assert re.search(r"^onnxruntime +f32 .*reference \(32 boxes\)$", table, re.M), table
    assert re.search(r"^openvino-f32 +f32 .* 32/32 matched \(32 found\), max \|dconf\| 0\.000\d$", table, re.M), table
    assert re.search(r"^openvino-bf16 .* 32/32 matched", table, re.M), table


def test_bench_compare_backends_checks_its_options(media):
    result = run_cli("bench", "--video", str(media / "crowd_overhead.mp4"), "--compare-backends", "--batch", "0")
    assert result.returncode == 2 and "error: --batch: must be at least 1, got 0" in result.stderr, result.stderr
