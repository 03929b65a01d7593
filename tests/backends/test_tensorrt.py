"""TensorRT engine cache and backend: what runs without a GPU (keys, records, mismatch messages,
CLI errors, import isolation). The backend itself needs TensorRT and a GPU: skipped with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.backends.engine_cache import (
    EngineCacheError,
    EngineKey,
    EngineRecord,
    batch_profile,
    cached_engine,
    check_engine,
    rebuild_hint,
    sha256_file,
)

from conftest import REPO, run_cli

KEY = EngineKey("ab" * 32, "8.6", "10.3.0", "fp16", (1, 4, 4))


def test_engine_file_name_carries_every_part_of_the_key():
    name = KEY.filename("yolov8n")
    assert name == "yolov8n.abababababab.sm86.trt10.3.0.fp16.b1-4-4.engine"
    assert cached_engine(Path("engines"), Path("m/yolov8n.onnx"), KEY) == Path("engines") / name


def test_batch_profile_tunes_for_the_largest_batch():
    assert batch_profile(1) == (1, 1, 1)
    assert batch_profile(8) == (1, 8, 8)
    with pytest.raises(ValueError, match="max batch must be >= 1, got 0"):
        batch_profile(0)


def test_differences_are_said_in_words():
    here = EngineKey("cd" * 32, "8.9", "10.4.0", "fp32", (1, 8, 8))
    text = "; ".join(KEY.differences(here))
    assert "ONNX file changed since the build (sha256 abababababab… → cdcdcdcdcdcd…)" in text
    assert "GPU: built for compute capability 8.6, this GPU is 8.9" in text
    assert "TensorRT: built with 10.3.0, installed 10.4.0" in text
    assert "precision: built fp16, config asks fp32" in text
    assert "batch: profile allows up to 4, config asks 8" in text
    assert KEY.differences(KEY) == []
    assert KEY.differences(EngineKey(KEY.onnx_sha256, "8.6", "10.3.0", "fp16", (1, 2, 2))) == []  # smaller batch fits


def test_record_round_trip_and_stale_detection(tmp_path, model_path):
    sha = sha256_file(model_path)
    key = EngineKey(sha, "8.6", "10.3.0", "fp16", (1, 4, 4))
    engine = tmp_path / key.filename("yolov8n")
    engine.write_bytes(b"not a real engine: only the record is read here")
    EngineRecord(key, str(model_path), "images", (640, 640), {0: "person", 1: "bicycle"}, 32, "NVIDIA A2", "2026-11-28").write(engine)
    record = EngineRecord.read(engine)
    assert record.key == key and record.class_names == {0: "person", 1: "bicycle"} and record.input_hw == (640, 640)
    assert check_engine(engine, key) == []
    newer = EngineKey(sha, "8.6", "10.4.1", "fp16", (1, 4, 4))
    assert check_engine(engine, newer) == ["TensorRT: built with 10.3.0, installed 10.4.1"]
    assert rebuild_hint(model_path, key).endswith("yolov8n.onnx --fp16 --max-batch 4 --rebuild")


def test_missing_or_corrupt_records_say_how_to_rebuild(tmp_path):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"x")
    with pytest.raises(EngineCacheError, match=r"has no x.engine.json beside it.*build-engine"):
        EngineRecord.read(engine)
    (tmp_path / "x.engine.json").write_text("{not json")
    with pytest.raises(EngineCacheError, match=r"unreadable engine record.*--rebuild"):
        EngineRecord.read(engine)
    with pytest.raises(EngineCacheError, match="no engine at"):
        check_engine(tmp_path / "absent.engine", KEY)


def _have_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401 - only probing that it imports
    except ImportError:
        return False
    return True


def test_tensorrt_model_without_tensorrt_is_a_clear_config_error(tmp_path, model_path, media):
    if _have_tensorrt():
        pytest.skip("TensorRT is installed here: this checks the message where it is not")
    cfg = tmp_path / "trt.yaml"
    cfg.write_text(f"""cameras:
  - {{id: c, source: {{type: file, path: {media / 'people_small.mp4'}}}, model: m}}
models:
  - {{id: m, path: {model_path}, backend: tensorrt, batch: 2}}
""")
    result = run_cli("validate", str(cfg))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{cfg}:4: models[0].path: TensorRT is not installed" in result.stderr
    assert "pip install -r requirements-gpu.txt" in result.stderr
    assert "model m: TensorRT engines" in result.stdout and "0 cached engine(s)" in result.stdout
    result = run_cli("build-engine", str(model_path), "--fp16", "--max-batch", "4")
    assert result.returncode == 2 and "error: TensorRT is not installed" in result.stderr
    result = run_cli("build-engine", str(media / "bus.jpg"))
    assert result.returncode == 2 and "error: MODEL: expected an .onnx file" in result.stderr


def test_validate_reports_cached_engines_and_their_fit(tmp_path, model_path, media):
    from pipeline.backends.engine_build import engine_report

    key = EngineKey(sha256_file(model_path), "8.6", "10.3.0", "fp16", (1, 4, 4))
    engine = tmp_path / key.filename(model_path.stem)
    engine.write_bytes(b"x")
    EngineRecord(key, str(model_path), "images", (640, 640), {}, 32, "NVIDIA A2", "2026-11-28T10:00:00+00:00").write(engine)
    lines = engine_report(model_path, precision="fp16", batch=4, engine_dir=tmp_path)
    assert lines[0].endswith(f"1 cached engine(s) in {tmp_path}")
    assert any("built 2026-11-28T10:00:00+00:00 on NVIDIA A2 (sm 8.6), TensorRT 10.3.0, fp16, batch 1..4" in ln for ln in lines)
    if not _have_tensorrt():
        assert any("fit not checked here: TensorRT is not installed" in ln for ln in lines)


def test_the_cpu_path_imports_nothing_from_cuda_or_tensorrt(tmp_path, media, model_path):
    """Even with cuda-python installed (the dev requirements have it for the NVRTC test)."""
    code = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from pipeline.cli import main
rc = main(["detect", {str(media / 'bus.jpg')!r}, "--model", {str(model_path)!r}, "--jsonl", {str(tmp_path / 'o.jsonl')!r}, "--no-progress"])
# (cuda-bindings' .pth file registers the bare `cuda` namespace at interpreter start: not a load of CUDA)
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorrt", "cupy", "torch", "pycuda")
             or m.startswith(("cuda.", "pipeline.cuda")) or m == "pipeline.backends.tensorrt")
print("RC", rc, "IMPORTED", bad)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "RC 0 IMPORTED []" in out.stdout, out.stdout + out.stderr


def _gpu_missing() -> str | None:
    if not _have_tensorrt():
        return ("TensorRT not installed: on an NVIDIA GPU machine run "
                "`pip install --extra-index-url https://pypi.nvidia.com -e .[gpu]`")
    from pipeline.cuda.runtime import CudaError, CudaUnavailable, device_count

    try:
        return None if device_count() >= 1 else "no CUDA device: this test needs an NVIDIA GPU and its driver"
    except (CudaUnavailable, CudaError) as exc:
        return f"no CUDA GPU: {exc}"


def _letterboxed(media: Path, names: tuple[str, ...]) -> tuple[list, np.ndarray]:
    import cv2

    from pipeline.preprocess import LetterboxScratch, letterbox_into

    images = [cv2.imread(str(media / n)) for n in names]
    rows = np.empty((len(images), 3, 640, 640), np.float32)
    for row, image in enumerate(images):
        letterbox_into(image, rows[row], LetterboxScratch(640, 640))
    return images, rows


@pytest.mark.parametrize("gpu_preprocess", [False, True])
def test_tensorrt_backend_on_a_gpu_agrees_with_onnx_runtime(model_path, media, tmp_path, ort_backend, gpu_preprocess):
    """Two different real images in one batch, the outputs poisoned (NaN) first, each row compared
    with ONNX Runtime on the same input; the engine is built in tmp_path, never in engines/."""
    reason = _gpu_missing()
    if reason:
        pytest.skip(reason)
    import threading

    from pipeline.backends.engine_build import build_engine
    from pipeline.backends.tensorrt import TensorRTBackend
    from pipeline.preprocess import letterbox_geometry
    from pipeline.slots import SlotRing

    engine, _ = build_engine(model_path, fp16=False, max_batch=2, engine_dir=tmp_path)
    assert engine.parent == tmp_path
    images, rows = _letterboxed(media, ("bus.jpg", "street.png"))
    info = ort_backend.info
    ref_ring = SlotRing.allocate(2, 2, {info.input.name: (info.input.shape, info.input.dtype)},
                                 {o.name: (o.shape, o.dtype) for o in info.outputs})
    ref_slot = ref_ring.acquire(threading.Event())
    ref_slot.inputs[info.input.name][:] = rows
    ort_backend.infer(ref_slot, 2)
    want = ref_slot.outputs[info.outputs[0].name].copy()
    assert not np.allclose(want[0], want[1], atol=1.0)  # two different images: a copied row cannot pass

    backend = TensorRTBackend(engine, gpu_preprocess=gpu_preprocess)
    try:
        ring = backend.allocate_ring(3, 2, (1080, 1920))
        slot = ring.acquire(threading.Event())
        out = slot.outputs[backend.info.outputs[0].name]
        out.fill(np.nan)
        slot.inputs[backend.info.input.name].fill(np.nan)
        for row, image in enumerate(images):
            if gpu_preprocess:
                h, w = image.shape[:2]
                lb, new_w, new_h = letterbox_geometry(w, h, 640, 640)
                assert slot.bindings["cuda"].stage_raw(row, image, (lb.pad_x, lb.pad_y, new_w, new_h))
            else:
                slot.inputs[backend.info.input.name][row] = rows[row]
        backend.infer(slot, 2)
        ring.ready(slot)  # what postprocess does before it reads the outputs
        got = out.copy()
        ring.release(slot)
    finally:
        backend.close()
    assert not np.isnan(got).any(), "TensorRT left output elements unwritten"
    # TensorRT may use TF32 for an fp32 engine: boxes within a pixel, class scores within 0.02.
    assert np.abs(got[:, :4] - want[:, :4]).max() <= 1.0
    assert np.abs(got[:, 4:] - want[:, 4:]).max() <= 0.02
    assert json.loads(Path(str(engine) + ".json").read_text())["key"]["precision"] == "fp32"
