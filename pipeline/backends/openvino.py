"""OpenVINO backend (`backend: openvino`): the .onnx read directly (no export step), compiled for the CPU.

Shares with ONNX Runtime the slot ring, the postprocess and the model facts: `base.model_info` reads
the same Ultralytics metadata, which OpenVINO keeps from the ONNX file's `metadata_props` under
`rt_info["framework"]`. Per slot and batch size one InferRequest is made, once, with shared-memory
`ov.Tensor`s over the slot's own input and output rows: a call neither allocates nor copies. The
requests of one compiled model share its (single-stream) graph, so more requests cost no more
activation memory.

Precision: OpenVINO's CPU plugin runs bf16 by itself on CPUs with AVX-512 BF16 or AMX (such as the
AMD EPYC this project's machines have), so `f32` sets INFERENCE_PRECISION_HINT explicitly; `auto`
sets nothing and leaves the choice to OpenVINO.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pipeline.backends.base import ModelInfo, ModelLoadError, TensorSpec, missing_model_message, model_info, one_image_input
from pipeline.slots import Slot

if TYPE_CHECKING:
    from pipeline.config import ModelConfig

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install openvino (it is part of the CPU install: pip install -e .), or set backend: onnxruntime"
# LATENCY, not THROUGHPUT: the pipeline runs one synchronous request per model at a time.
# THROUGHPUT splits the cores into streams (here 2 streams of 1 thread) and one request then runs on
# one stream only. Measured on this project's 2-core AMD EPYC, yolov8n batch 1, one request at a
# time as infer() runs it, 3 interleaved rounds of 40 calls: f32 18.1 fps with LATENCY vs 10.9 with
# THROUGHPUT; bf16 38.4 vs 20.1.
PERFORMANCE_HINT = "LATENCY"
PRECISIONS = ("f32", "bf16", "auto")
_FLOAT_TYPES = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16)}


def import_openvino() -> Any:
    """The `openvino` module. Raises ModelLoadError, naming the package to install, when it is missing."""
    try:
        import openvino
    except ImportError as exc:
        raise ModelLoadError(f"OpenVINO is not installed ({exc}): {INSTALL_HINT}") from exc
    return openvino


class OpenVINOBackend:
    """OpenVINO on the CPU, from the same .onnx as ONNX Runtime (`backend: openvino`).

    Args:
        path: the .onnx file.
        input_size: [H, W] for models with a dynamic image size and no `imgsz` metadata.
        class_names: overrides the model's class names.
        precision: f32 (exact, the default), bf16 (faster where the CPU has it), or auto (OpenVINO's choice).
        threads: OpenVINO's threads per call (INFERENCE_NUM_THREADS; default: all cores).
    """

    @classmethod
    def from_config(cls, config: ModelConfig, *, intra_op_threads: int | None = None) -> OpenVINOBackend:
        if config.device == "cuda":
            raise ModelLoadError(f"model {config.id!r}: backend openvino runs on the CPU here: set device: cpu or auto, "
                                 f"or backend: tensorrt for an NVIDIA GPU")
        return cls(config.path, input_size=config.input_size, class_names=config.names,
                   precision=config.precision or "f32",  # type: ignore[arg-type]  # checked by the config
                   threads=intra_op_threads if intra_op_threads is not None else config.threads)

    def __init__(
        self,
        path: Path,
        *,
        input_size: tuple[int, int] | None = None,
        class_names: dict[int, str] | None = None,
        precision: Literal["f32", "bf16", "auto"] = "f32",
        threads: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        ov = import_openvino()
        self._ov = ov
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(missing_model_message(self.path))
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except RuntimeError as exc:  # OpenVINO's errors are plain RuntimeErrors: give them the path
            raise ModelLoadError(f"OpenVINO cannot read {self.path}: {exc}") from exc
        one_image_input(self.path, [port.get_any_name() for port in model.inputs])
        port = model.inputs[0]
        dtype = _FLOAT_TYPES.get(port.get_element_type().get_type_name())
        shape = [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]
        info = model_info(self.path, (port.get_any_name(), shape, dtype, str(port.get_element_type())),
                          _onnx_metadata(model), input_size=input_size, class_names=class_names)
        model, max_batch = _static_image_dynamic_batch(model, info, lambda: core.read_model(str(self.path)))
        properties: dict[str, Any] = {"PERFORMANCE_HINT": PERFORMANCE_HINT}
        if precision != "auto":
            properties["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            properties["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = core.compile_model(model, "CPU", properties)
        except RuntimeError as exc:
            raise ModelLoadError(f"OpenVINO cannot compile {self.path} for the CPU: {exc}") from exc
        # What runs, which with `auto` is OpenVINO's choice (bf16 on CPUs that have it): bench and logs show it.
        self.precision: str = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        info = replace(info, max_batch=max_batch)
        self.info: ModelInfo = replace(info, outputs=self._probe_outputs(info.input, max_batch or 1))
        # Keys this backend's requests on a slot; an object (not id(self)) can never be reused.
        self._binding_key = object()
        log.info(
            "loaded %s with OpenVINO %s on the CPU (%s, %s, %s threads): input %s %s, outputs %s, batch %s, %d classes",
            self.path.name, ov.get_version().split("-")[0], self.precision, PERFORMANCE_HINT,
            self.compiled.get_property("INFERENCE_NUM_THREADS"), self.info.input.name, self.info.input.shape,
            {o.name: o.shape for o in self.info.outputs}, self.info.max_batch or "dynamic", len(self.info.class_names),
        )

    def _probe_outputs(self, input_spec: TensorSpec, rows: int) -> tuple[TensorSpec, ...]:
        """Output shapes per batch row, from one run on zeros (which also pays OpenVINO's first-run
        cost before any frame arrives)."""
        request = self.compiled.create_infer_request()
        request.set_tensor(input_spec.name, self._ov.Tensor(np.zeros((rows, *input_spec.shape), input_spec.dtype)))
        try:
            request.infer()
        except RuntimeError as exc:
            raise ModelLoadError(f"{self.path.name}: a test run on a zero {[rows, *input_spec.shape]} input failed: {exc}") from exc
        specs = []
        for port in self.compiled.outputs:
            dtype = _FLOAT_TYPES.get(port.get_element_type().get_type_name())
            if dtype is None:
                raise ModelLoadError(f"{self.path.name}: output {port.get_any_name()} is {port.get_element_type()}, expected float")
            specs.append(TensorSpec(port.get_any_name(), tuple(request.get_tensor(port).shape[1:]), dtype))
        return tuple(specs)

    def infer(self, slot: Slot, n: int) -> None:
        """Runs rows 0..n-1 of `slot`'s input into the same rows of its outputs (a fixed-batch model
        always runs its full batch; rows past n hold stale data nobody reads)."""
        n = self.info.max_batch or n
        request = slot.bindings.get((self._binding_key, n))
        if request is None:
            request = self._bind(slot, n)
        # start_async + wait, not InferRequest.infer(): infer() returns the outputs as fresh numpy
        # copies, while here they are already in the slot. wait() releases the GIL.
        request.start_async()
        request.wait()

    def _bind(self, slot: Slot, n: int) -> Any:
        rows = slot.inputs[self.info.input.name].shape[0]
        if not 1 <= n <= rows:
            raise ValueError(f"batch of {n} does not fit slot {slot.index} of {rows} rows")
        request = self.compiled.create_infer_request()
        request.set_tensor(self.info.input.name, self._ov.Tensor(slot.inputs[self.info.input.name][:n], shared_memory=True))
        for spec in self.info.outputs:
            request.set_tensor(spec.name, self._ov.Tensor(slot.outputs[spec.name][:n], shared_memory=True))
        # Kept on the slot: the request's tensors point into the slot's arrays.
        slot.bindings[(self._binding_key, n)] = request
        return request

    def close(self) -> None:
        """Nothing to free explicitly: requests live on the slots, the compiled model with this object."""


def _onnx_metadata(model: Any) -> dict[str, str]:
    """The ONNX file's metadata_props (Ultralytics' names, imgsz, stride) as OpenVINO keeps them:
    rt_info["framework"][key], each value a string."""
    if not model.has_rt_info(["framework"]):
        return {}
    return {str(key): value.astype(str) for key, value in model.get_rt_info()["framework"].items()}


def _static_image_dynamic_batch(model: Any, info: ModelInfo, reread: Any) -> tuple[Any, int | None]:
    """The model reshaped to [dynamic batch, 3, H, W] (a fixed image size compiles to faster CPU
    code), and its batch limit (None: dynamic).

    A fixed-batch model is tried with a dynamic batch too; it keeps its fixed batch (re-read, as
    ONNX Runtime would run it) unless every output then follows the batch with the same row shape:
    an export whose graph bakes in its batch (a Reshape to [1, ...]) would otherwise mix rows.
    """
    name = model.inputs[0].get_any_name()
    rows_before = [_row_dims(o) for o in model.outputs]
    target = [-1, 3, *info.input_hw]
    if [d.get_length() if d.is_static else -1 for d in model.inputs[0].get_partial_shape()] == target:
        return model, None
    try:
        model.reshape({name: target})
        follows = all(o.get_partial_shape()[0].is_dynamic for o in model.outputs)
        same_rows = [_row_dims(o) for o in model.outputs] == rows_before
        if follows and (same_rows or info.max_batch is None):
            return model, None
    except RuntimeError as exc:
        log.debug("%s: no dynamic batch in OpenVINO (%s)", info.path.name, exc)
    model = reread()
    if info.max_batch is None:  # the batch was dynamic, only the image size did not take: keep it as read
        return model, None
    try:
        model.reshape({name: [info.max_batch, 3, *info.input_hw]})
    except RuntimeError as exc:
        raise ModelLoadError(f"{info.path.name}: OpenVINO cannot fix its input to {[info.max_batch, 3, *info.input_hw]}: "
                             f"{exc}") from exc
    log.info("%s keeps its fixed batch of %d in OpenVINO: its graph does not follow a dynamic batch",
             info.path.name, info.max_batch)
    return model, info.max_batch


def _row_dims(port: Any) -> list[str]:
    """An output's dims after the batch axis, as text (`?` where dynamic)."""
    return [str(d) for d in port.get_partial_shape()][1:]
