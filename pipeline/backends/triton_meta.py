"""What `backend: triton` reads about a model before running it: the server's metadata and config
(parsed into ServerModel) and, optionally, a local .onnx's Ultralytics metadata (class names)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.backends.base import ModelLoadError, missing_model_message


@dataclass(frozen=True, slots=True)
class ServerModel:
    """What the server says about a model (parsed from its metadata and config).

    Args:
        input_name: the one input's name.
        input_shape: its full shape as the metadata gives it, -1 for variable dims.
        input_datatype: its KServe v2 datatype (FP32, UINT8, ...).
        outputs: (name, datatype) of each output.
        max_batch_size: the config's max_batch_size (0: the model does not batch; the batch is the
            first dim of input_shape).
        parameters: the config's string parameters (e.g. names, imgsz, stride).
        platform: the backend running it on the server (onnxruntime_onnx, tensorrt_plan, python, ...).
    """

    input_name: str
    input_shape: tuple[int, ...]
    input_datatype: str
    outputs: tuple[tuple[str, str], ...]
    max_batch_size: int
    parameters: dict[str, str]
    platform: str


def parse_server_model(name: str, metadata: dict[str, Any], config: dict[str, Any]) -> ServerModel:
    """The facts this backend needs from `get_model_metadata` and `get_model_config` (as JSON).

    Args:
        name: the model's name, for messages.
        metadata: the model metadata (name, platform, inputs, outputs).
        config: the model config; the gRPC client's `{"config": {...}}` wrapper is taken off.

    Returns:
        The parsed facts. Raises ModelLoadError when the model is not one image input.
    """
    config = config.get("config", config)
    inputs = metadata.get("inputs") or []
    if len(inputs) != 1:
        raise ModelLoadError(f"Triton model {name!r}: expected one image input, the server lists "
                             f"{len(inputs)}: {[i.get('name') for i in inputs]}")
    outputs = tuple((str(o["name"]), str(o["datatype"])) for o in metadata.get("outputs") or [])
    if not outputs:
        raise ModelLoadError(f"Triton model {name!r}: the server lists no outputs")
    params: dict[str, str] = {}
    for key, value in (config.get("parameters") or {}).items():
        text = value.get("string_value") if isinstance(value, dict) else value
        if isinstance(text, str):
            params[str(key)] = text
    return ServerModel(
        input_name=str(inputs[0]["name"]),
        input_shape=tuple(int(d) for d in inputs[0]["shape"]),
        input_datatype=str(inputs[0]["datatype"]),
        outputs=outputs,
        max_batch_size=int(config.get("max_batch_size", 0) or 0),
        parameters=params,
        platform=str(metadata.get("platform") or config.get("backend") or config.get("platform") or "?"),
    )


def local_metadata(path: Path) -> dict[str, str]:
    """The Ultralytics metadata of a local .onnx (class names, imgsz, stride), read with ONNX Runtime."""
    if not path.is_file():
        raise ModelLoadError(missing_model_message(path))
    import onnxruntime as ort

    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"ONNX Runtime cannot read {path} (for its class names): {exc}") from exc
    return dict(session.get_modelmeta().custom_metadata_map)
