"""Inference backends. The CPU path (ONNX Runtime) imports nothing from TensorRT or CUDA."""

from pipeline.backends.base import Backend, ModelInfo, ModelLoadError, TensorSpec, create_backend

__all__ = ["Backend", "ModelInfo", "ModelLoadError", "TensorSpec", "create_backend"]
