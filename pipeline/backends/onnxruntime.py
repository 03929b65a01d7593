"""ONNX Runtime backend: CPU everywhere, the CUDA execution provider when it is installed.

Runs through IOBinding on the ring slot's own numpy buffers, so ONNX Runtime neither allocates
outputs nor copies inputs per call (one binding per slot and batch size, made once)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import onnxruntime as ort

from pipeline.backends.base import ModelInfo, ModelLoadError, TensorSpec, missing_model_message, model_info, one_image_input
from pipeline.slots import Slot

if TYPE_CHECKING:
    from pipeline.config import ModelConfig

log = logging.getLogger(__name__)

_ORT_DTYPES = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16)}


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU (or its CUDA provider with onnxruntime-gpu) (`backend: onnxruntime`).

    Args:
        path: the .onnx file.
        input_size: [H, W] for models with a dynamic image size and no `imgsz` metadata.
        class_names: overrides the model's class names.
        device: auto (CUDA provider when installed, else CPU), cpu or cuda.
        intra_op_threads: ONNX Runtime's threads per call (default: all cores).
    """

    @classmethod
    def from_config(cls, config: ModelConfig, *, intra_op_threads: int | None = None) -> OnnxRuntimeBackend:
        return cls(config.path, input_size=config.input_size, class_names=config.names, device=config.device,
                   intra_op_threads=intra_op_threads if intra_op_threads is not None else config.threads)

    def __init__(
        self,
        path: Path,
        *,
        input_size: tuple[int, int] | None = None,
        class_names: dict[int, str] | None = None,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        intra_op_threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(missing_model_message(self.path))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: ORT's graph warnings are noise to our users
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        self.providers = _providers(device)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=self.providers)
        except Exception as exc:  # ORT raises its own untyped errors: give them a path and a hint
            raise ModelLoadError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
        self.info = self._read_info(input_size, class_names)
        # Keys this backend's bindings on a slot; an object (not id(self)) can never be reused.
        self._binding_key = object()
        log.info(
            "loaded %s on %s: input %s %s, outputs %s, batch %s, %d classes",
            self.path.name,
            self.session.get_providers()[0],
            self.info.input.name,
            self.info.input.shape,
            {o.name: o.shape for o in self.info.outputs},
            self.info.max_batch or "dynamic",
            len(self.info.class_names),
        )

    def _read_info(self, input_size: tuple[int, int] | None, class_names: dict[int, str] | None) -> ModelInfo:
        inputs = self.session.get_inputs()
        one_image_input(self.path, [i.name for i in inputs])
        inp = inputs[0]
        # The checks and the metadata reading are shared with OpenVINO (base.model_info): both read
        # the same .onnx, so both must describe it alike.
        info = model_info(self.path, (inp.name, inp.shape, _ORT_DTYPES.get(inp.type), inp.type),
                          self.session.get_modelmeta().custom_metadata_map, input_size=input_size, class_names=class_names)
        return replace(info, outputs=self._probe_outputs(info.input, info.max_batch or 1))

    def _probe_outputs(self, input_spec: TensorSpec, rows: int) -> tuple[TensorSpec, ...]:
        """Output shapes per batch row. Symbolic dims are resolved by one warm-up run (which also
        pays ONNX Runtime's first-run cost before any frame arrives)."""
        probe = np.zeros((rows, *input_spec.shape), input_spec.dtype)
        try:
            results = self.session.run(None, {input_spec.name: probe})
        except Exception as exc:  # ORT's own error types: name the model and the probe
            raise ModelLoadError(
                f"{self.path.name}: a test run on a zero {list(probe.shape)} input failed: {exc}"
            ) from exc
        specs = []
        for meta, value in zip(self.session.get_outputs(), results, strict=True):
            if meta.type not in _ORT_DTYPES:
                raise ModelLoadError(f"{self.path.name}: output {meta.name} is {meta.type}, expected float")
            specs.append(TensorSpec(meta.name, tuple(value.shape[1:]), _ORT_DTYPES[meta.type]))
        return tuple(specs)

    def infer(self, slot: Slot, n: int) -> None:
        # A fixed-batch model always runs its full batch; rows past n hold stale data nobody reads.
        n = self.info.max_batch or n
        bound = slot.bindings.get((self._binding_key, n))
        binding = bound[1] if bound is not None else self._bind(slot, n)  # type: ignore[index]
        self.session.run_with_iobinding(binding)  # type: ignore[arg-type]

    def _bind(self, slot: Slot, n: int) -> ort.IOBinding:
        if not 1 <= n <= slot.inputs[self.info.input.name].shape[0]:
            raise ValueError(f"batch of {n} does not fit slot {slot.index} of {slot.inputs[self.info.input.name].shape[0]} rows")
        binding = self.session.io_binding()
        x = slot.inputs[self.info.input.name][:n]
        binding.bind_input(self.info.input.name, "cpu", 0, x.dtype, list(x.shape), x.ctypes.data)
        for spec in self.info.outputs:
            y = slot.outputs[spec.name][:n]
            binding.bind_output(spec.name, "cpu", 0, y.dtype, list(y.shape), y.ctypes.data)
        # Kept on the slot: the binding holds raw pointers into the slot's arrays. And with its
        # session: ONNX Runtime's binding keeps a raw pointer to the session too, so a session freed
        # first (garbage collection breaks a graph's reference cycles in no set order) crashes the
        # process when the binding goes. A tuple drops its items last to first: the binding, then
        # the session.
        slot.bindings[(self._binding_key, n)] = (self.session, binding)
        return binding

    def close(self) -> None:
        """Nothing to free explicitly: bindings live on the slots, the session with this object."""


def _providers(device: Literal["auto", "cpu", "cuda"]) -> list[str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ModelLoadError(
                f"device: cuda asked for, but ONNX Runtime here has only {available}: install onnxruntime-gpu "
                f"or set device: cpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
