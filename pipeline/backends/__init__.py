"""Inference backends. The CPU path (ONNX Runtime, OpenVINO) imports nothing from TensorRT or CUDA.

`BACKENDS` maps a model config's `backend` to its class, imported on first use. Adding a backend
is one module with a class that has `from_config`, `info`, `infer(slot, n)` and `close()`, one
line here, and its name in `ModelConfig.backend` (config/schema.py). `auto` there is no class: it
is resolved to one of these by `create_backend` (see auto.py).
"""

import logging

from pipeline.backends.auto import choose_backend, machine_facts
from pipeline.backends.base import Backend, ModelInfo, ModelLoadError, TensorSpec
from pipeline.registry import Registry, RegistryError
from pipeline.signals import stop_signals_blocked

log = logging.getLogger(__name__)

BACKENDS: Registry[Backend] = Registry("backend", {
    "onnxruntime": "pipeline.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "pipeline.backends.openvino:OpenVINOBackend",
    "tensorrt": "pipeline.backends.tensorrt:TensorRTBackend",
    "triton": "pipeline.backends.triton:TritonBackend",
})


def create_backend(config: object, *, intra_op_threads: int | None = None) -> Backend:
    """Loads the model of one `models[]` config entry with the backend it names.

    Args:
        config: the model's validated config (ModelConfig).
        intra_op_threads: CPU threads per inference call, overriding the config's.

    Returns:
        The loaded backend. Raises ModelLoadError when the model or its backend cannot be loaded.
    """
    name = config.backend  # type: ignore[attr-defined]
    if name == "auto":
        name, why = choose_backend(config.path, machine_facts(config.path), config.device,  # type: ignore[attr-defined]
                                   config.precision)  # type: ignore[attr-defined]
        log.info("model %s: backend auto chose %s: %s", config.id, name, why)  # type: ignore[attr-defined]
    try:
        cls = BACKENDS.get(name)
    except RegistryError as exc:
        raise ModelLoadError(f"model {config.id!r}: {exc}") from exc  # type: ignore[attr-defined]
    # Native thread pools made now inherit a mask without the stop signals: a SIGINT then reaches
    # the main thread, never a worker of ONNX Runtime or OpenVINO.
    with stop_signals_blocked():
        return cls.from_config(config, intra_op_threads=intra_op_threads)


__all__ = ["BACKENDS", "Backend", "ModelInfo", "ModelLoadError", "TensorSpec", "create_backend"]
