"""`backend: auto` (which backend a machine gets, and one real load) and `precision:` per backend:
config errors name the key and its line; `fp32` is still read; TensorRT's engine precision is unchanged."""

from __future__ import annotations

import importlib.util
import logging
import textwrap
from pathlib import Path

import pytest

from pipeline.backends import create_backend
from pipeline.backends.auto import MachineFacts, choose_backend
from pipeline.backends.onnxruntime import OnnxRuntimeBackend
from pipeline.config import ConfigError, ModelConfig, load_config

ONNX = Path("models/yolov8n.onnx")


@pytest.mark.parametrize(("path", "facts", "backend", "why"), [
    (Path("engines/yolov8n.engine"), MachineFacts(False, 0, True), "tensorrt", "the model is a TensorRT engine"),
    (ONNX, MachineFacts(True, 2, True), "tensorrt", "TensorRT and 2 CUDA GPU(s) are present"),
    (ONNX, MachineFacts(True, 0, True), "openvino", "no CUDA GPU; OpenVINO is installed"),
    (ONNX, MachineFacts(False, 0, True), "openvino", "no TensorRT; OpenVINO is installed"),
    (ONNX, MachineFacts(False, 0, False), "onnxruntime", "no TensorRT and no OpenVINO (pip install openvino"),
    (ONNX, MachineFacts(True, 0, False), "onnxruntime", "no CUDA GPU and no OpenVINO"),
])
def test_auto_picks_the_fastest_backend_the_machine_has(path, facts, backend, why):
    chosen, reason = choose_backend(path, facts)
    assert chosen == backend and reason.startswith(why)


@pytest.mark.parametrize(("precision", "backend", "why"), [
    ("bf16", "openvino", "precision bf16 runs on OpenVINO"),
    ("fp16", "tensorrt", "precision fp16 runs on TensorRT"),
    ("f32", "openvino", "no TensorRT; OpenVINO is installed"),
])
def test_auto_with_a_precision_only_one_backend_runs_picks_that_backend(precision, backend, why):
    chosen, reason = choose_backend(ONNX, MachineFacts(False, 0, True), "auto", precision)
    assert chosen == backend and reason.startswith(why)


@pytest.mark.parametrize(("device", "facts", "backend", "why"), [
    ("cpu", MachineFacts(True, 1, True), "openvino", "device: cpu; OpenVINO is installed"),
    ("cpu", MachineFacts(True, 1, False), "onnxruntime", "device: cpu and no OpenVINO"),
    ("cuda", MachineFacts(True, 1, True), "tensorrt", "TensorRT and 1 CUDA GPU(s) are present"),
    ("cuda", MachineFacts(False, 0, True), "onnxruntime", "device: cuda and no TensorRT: ONNX Runtime's CUDA provider"),
])
def test_auto_follows_the_models_device(device, facts, backend, why):
    chosen, reason = choose_backend(ONNX, facts, device)
    assert chosen == backend and reason.startswith(why)


def test_auto_loads_openvino_here_and_says_why(model_path, caplog):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: auto may pick it (see the chooser test for that case)")
    from pipeline.backends.openvino import OpenVINOBackend

    config = ModelConfig.model_validate({"id": "m", "path": str(model_path)})
    assert config.backend == "auto" and config.precision is None
    with caplog.at_level(logging.INFO, logger="pipeline.backends"):
        backend = create_backend(config)
    assert isinstance(backend, OpenVINOBackend) and backend.precision == "f32"  # unset: the backend's default
    assert "model m: backend auto chose openvino: no TensorRT; OpenVINO is installed" in caplog.text


def test_an_explicit_backend_is_not_second_guessed(model_path):
    config = ModelConfig.model_validate({"id": "m", "path": str(model_path), "backend": "onnxruntime"})
    assert isinstance(create_backend(config), OnnxRuntimeBackend)


def _config(tmp_path: Path, model_path: Path, media: Path, model_keys: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(f"""\
        cameras:
          - id: lobby
            source: {{type: file, path: {media / 'crowd_overhead.mp4'}}}
            model: yolo
        models:
          - id: yolo
            path: {model_path}
        """) + "".join(f"    {line}\n" for line in model_keys.splitlines()))
    return path


@pytest.mark.parametrize(("keys", "message"), [
    ("backend: onnxruntime\nprecision: bf16", "backend onnxruntime runs f32 only: remove precision or set it to f32"),
    ("backend: onnxruntime\nprecision: auto", "backend onnxruntime runs f32 only"),
    ("backend: openvino\nprecision: fp16", "backend openvino takes precision f32, bf16 or auto (auto: OpenVINO's own choice"),
    ("backend: tensorrt\nprecision: bf16", "backend tensorrt takes precision f32, fp16 or auto (auto = fp16), got 'bf16'"),
    ("backend: openvino\nprecision: f16", "expected 'auto', 'f32', 'bf16' or 'fp16', got 'f16' (did you mean"),
])
def test_a_precision_the_backend_lacks_is_an_error_at_its_line(tmp_path, model_path, media, keys, message):
    path = _config(tmp_path, model_path, media, keys)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issue = info.value.issues[0]
    assert (issue.line, issue.key) == (8 + keys.count("\n"), "models[0].precision"), str(issue)  # the last key
    assert message in issue.message, str(issue)
    assert str(info.value).startswith(f"{path}:{issue.line}: models[0].precision: ")


@pytest.mark.parametrize(("keys", "precision", "engine"), [
    ("backend: tensorrt", None, "fp16"),
    ("backend: tensorrt\nprecision: fp16", "fp16", "fp16"),
    ("backend: tensorrt\nprecision: auto", "auto", "fp16"),
    ("backend: tensorrt\nprecision: fp32", "f32", "fp32"),  # the spelling older configs use
    ("backend: tensorrt\nprecision: f32", "f32", "fp32"),
    ("backend: openvino\nprecision: bf16", "bf16", None),
    ("backend: onnxruntime\nprecision: fp32", "f32", None),
    ("precision: auto", "auto", None),
])
def test_valid_precisions_and_tensorrt_engine_precision(tmp_path, model_path, media, keys, precision, engine):
    from pipeline.backends.tensorrt import engine_precision  # (a plain function: TensorRT itself is not imported)

    model = load_config(_config(tmp_path, model_path, media, keys)).config.models[0]
    assert model.precision == precision
    if engine is not None:
        assert engine_precision(model.precision) == engine
