"""TensorRT backend (TensorRT 10 Python API) on the cuda-python memory layer.

Written against TensorRT's documented Python API: named I/O tensors (`num_io_tensors`,
`get_tensor_name`, `get_tensor_mode`, `get_tensor_profile_shape`), `set_input_shape`,
`set_tensor_address` and `execute_async_v3`. It has NOT run here: no machine of this project has
had TensorRT (see README, "GPU"). Imported only when a model says `backend: tensorrt`, so the CPU
path never imports it; finding and building engines is engine_build.py's.

Per batch, nothing waits on the host: the slot's rows (or, with GPU preprocessing, its raw frames)
go to the device on the *copy* stream, `h2d_done` is recorded there, and the *compute* stream waits
for it on the GPU, then runs the letterbox kernel, the engine and the copy of the outputs back,
recording `d2h_done`. So batch k+1's upload overlaps batch k's compute. The slot goes on to
postprocess at once; postprocess calls the ring's `ready(slot)` (which waits for `d2h_done`, with a
timeout) before it reads the outputs, and the ring's `acquire` never hands out a slot whose copies
are still running.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.backends.base import ModelInfo, ModelLoadError, TensorSpec, one_image_input
from pipeline.backends.engine_build import engine_precision, import_tensorrt, resolve_engine
from pipeline.backends.engine_cache import EngineRecord, batch_profile, rebuild_hint

if TYPE_CHECKING:
    from pipeline.config import ModelConfig

log = logging.getLogger(__name__)

INFER_WAIT_S = 30.0  # a batch that takes longer than this means the GPU is hung


def numpy_dtype(trt: Any, dtype: Any, tensor: str, path: Path) -> np.dtype:
    """The numpy dtype of an engine tensor's TensorRT type. Raises ModelLoadError for types numpy
    has no equivalent of (BF16, FP8, INT4, FP4: `trt.nptype` raises a TypeError for them).

    Args:
        trt: the tensorrt module.
        dtype: the tensor's `trt.DataType`.
        tensor: its name, for the message.
        path: the engine file, for the message.
    """
    try:
        return np.dtype(trt.nptype(dtype))
    except (TypeError, KeyError, ValueError):
        name = str(dtype).rsplit(".", 1)[-1]
        raise ModelLoadError(f"{path.name}: tensor {tensor!r} is {name}, which numpy cannot hold: build the engine with "
                             f"FP16 or FP32 inputs and outputs (vigil build-engine does)") from None


class TensorRTBackend:
    """A TensorRT 10 engine on an NVIDIA GPU (`backend: tensorrt`), fed from a pinned slot ring.

    Args:
        engine_path: the serialized engine (see `resolve_engine` and `vigil build-engine`).
        class_names: overrides the class names recorded with the engine.
        device: CUDA device index.
        gpu_preprocess: letterbox on the GPU with the NVRTC kernel.
    """

    @classmethod
    def from_config(cls, config: ModelConfig, *, intra_op_threads: int | None = None) -> TensorRTBackend:
        engine = resolve_engine(config.path, precision=engine_precision(config.precision), batch=config.batch,
                                build=config.build_engine, device=config.gpu_device)
        return cls(engine, class_names=config.names, device=config.gpu_device, gpu_preprocess=config.gpu_preprocess)

    def __init__(self, engine_path: Path, *, class_names: dict[int, str] | None = None, device: int = 0,
                 gpu_preprocess: bool = True) -> None:
        from pipeline.cuda.memory import Stream
        from pipeline.cuda.runtime import use_device

        trt = import_tensorrt()
        self.trt = trt
        self.path = Path(engine_path)
        self.record = EngineRecord.read(self.path)
        use_device(device)  # the engine is deserialized onto, and its memory allocated on, the current device
        self.device = device
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ModelLoadError(f"TensorRT cannot deserialize {self.path} (built with another TensorRT version or "
                                 f"GPU?): {rebuild_hint(self.record.onnx_path, self.record.key)}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        one_image_input(self.path, inputs)
        self.input_name = inputs[0]
        static = tuple(int(d) for d in self.engine.get_tensor_shape(self.input_name))
        if len(static) == 4 and min(static) >= 0:  # built from a fixed-batch, fixed-size ONNX: no profile
            lo = hi = static
        else:
            lo, _opt, hi = (tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0))
        self.min_batch, self.max_batch = lo[0], hi[0]
        h, w = hi[2], hi[3]
        if (lo[2], lo[3]) != (h, w):
            raise ModelLoadError(f"{self.path.name}: input height/width vary in the profile ({lo}..{hi}); "
                                 f"build it with a fixed image size")
        in_dtype = numpy_dtype(trt, self.engine.get_tensor_dtype(self.input_name), self.input_name, self.path)
        if in_dtype not in (np.float32, np.float16):
            raise ModelLoadError(f"{self.path.name}: expected a float32 or float16 input, got {in_dtype}")
        self.context = self.engine.create_execution_context()  # one per inference thread: one per backend
        if not self.context.set_input_shape(self.input_name, (self.min_batch, 3, h, w)):
            raise ModelLoadError(f"{self.path.name}: TensorRT refused input shape {(self.min_batch, 3, h, w)}")
        out_specs = []
        for name in outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape[1:]):
                raise ModelLoadError(f"{self.path.name}: output {name} has a data-dependent shape {shape}: "
                                     f"not a YOLO detection engine this backend can run")
            out_specs.append(TensorSpec(name, shape[1:], numpy_dtype(trt, self.engine.get_tensor_dtype(name), name, self.path)))
        self.info = ModelInfo(self.path, TensorSpec(self.input_name, (3, h, w), in_dtype), tuple(out_specs),
                              self.max_batch, class_names or self.record.class_names, self.record.stride,
                              min_batch=self.min_batch)
        # Two streams: uploads on copy_stream, kernel + engine + download on stream (which waits
        # for each slot's upload on the GPU), so one batch's upload runs during another's compute.
        self.stream = Stream()
        self.copy_stream = Stream()
        self.gpu_preprocess = gpu_preprocess
        self._kernel = None
        if gpu_preprocess:
            from pipeline.cuda.kernels import LetterboxKernel
            from pipeline.cuda.runtime import CudaError

            try:
                self._kernel = LetterboxKernel(device)
            except (CudaError, RuntimeError, OSError) as exc:  # e.g. no NVRTC library: letterbox on the CPU
                log.warning("GPU preprocessing off for %s, letterboxing on the CPU: %s", self.path.name, exc)
                self.gpu_preprocess = gpu_preprocess = False
        self._rings: list[Any] = []
        log.info("loaded TensorRT engine %s: input %s %s %s, batch %d..%d, outputs %s, GPU preprocessing %s",
                 self.path.name, self.input_name, (3, h, w), in_dtype, self.min_batch, self.max_batch,
                 {o.name: o.shape for o in out_specs}, "on" if gpu_preprocess else "off")

    def allocate_ring(self, count: int, batch: int, raw_capacity: tuple[int, int] | None = None):
        """A ring of pinned slots (and device buffers) for this engine, freed by close()."""
        from pipeline.cuda.ring import PinnedSlotRing

        if not self.min_batch <= batch <= self.max_batch:
            needed = dataclasses.replace(self.record.key, batch=batch_profile(batch))
            raise ModelLoadError(f"{self.path.name}: batch {batch} is outside the engine's profile "
                                 f"{self.min_batch}..{self.max_batch}: {rebuild_hint(self.record.onnx_path, needed)}")
        info = self.info
        ring = PinnedSlotRing.allocate_pinned(count, batch, {info.input.name: (info.input.shape, info.input.dtype)},
                                              {o.name: (o.shape, o.dtype) for o in info.outputs},
                                              raw_capacity=raw_capacity if self.gpu_preprocess else None,
                                              device=self.device)
        self._rings.append(ring)
        return ring

    def infer(self, slot: Any, n: int) -> None:
        """Enqueues rows 0..n-1 of `slot` (upload, letterbox kernel, engine, download) and returns
        without waiting: read the outputs only after the ring's `ready(slot)`."""
        from pipeline.cuda.kernels import LetterboxArgs
        from pipeline.cuda.memory import copy_async
        from pipeline.cuda.runtime import use_device

        use_device(self.device)  # this (inference) thread, this engine's GPU
        dev = slot.bindings.get("cuda")
        if dev is None:
            raise RuntimeError(f"slot {slot.index} has no device buffers: allocate the ring with backend.allocate_ring()")
        info = self.info
        name = info.input.name
        row_bytes = slot.inputs[name][0].nbytes
        h, w = info.input_hw
        # A profile that starts above n (a fixed-batch engine) runs its smallest batch: the rows
        # past n are stale and nobody reads their outputs.
        rows = max(n, self.min_batch)
        kernel_rows = []
        for row in range(rows):
            raw = dev.raw_rows[row] if dev.raw_rows else None
            if raw is not None and self._kernel is not None:
                rh, rw = raw
                src = dev.raw_device.ptr + row * dev.raw_row_bytes
                copy_async(src, dev.raw_host.ptr + row * dev.raw_row_bytes, rh * rw * 3, "h2d", self.copy_stream)
                kernel_rows.append((row, src, rh, rw))
            else:  # letterboxed on the CPU into the pinned input row
                copy_async(dev.device[name].ptr + row * row_bytes, dev.host[name].ptr + row * row_bytes, row_bytes,
                           "h2d", self.copy_stream)
        dev.h2d_done.record(self.copy_stream)
        self.stream.wait_event(dev.h2d_done)  # on the GPU: the host goes on
        for row, src, rh, rw in kernel_rows:
            lb = dev.raw_geom[row]
            self._kernel.launch(LetterboxArgs(src, rw, rh, rw * 3, dev.device[name].ptr + row * row_bytes, w, h,
                                              lb[0], lb[1], lb[2], lb[3]), self.stream,
                                half=info.input.dtype == np.float16)
        if not self.context.set_input_shape(name, (rows, 3, h, w)):
            raise RuntimeError(f"TensorRT refused input shape {(rows, 3, h, w)} (profile {self.min_batch}..{self.max_batch})")
        for tensor, buf in dev.device.items():
            self.context.set_tensor_address(tensor, buf.ptr)
        if not self.context.execute_async_v3(self.stream.ptr):
            raise RuntimeError(f"TensorRT execute_async_v3 failed on {self.path.name} (see the TensorRT log)")
        for out in info.outputs:
            nbytes = slot.outputs[out.name][0].nbytes * n
            copy_async(dev.host[out.name].ptr, dev.device[out.name].ptr, nbytes, "d2h", self.stream)
        dev.d2h_done.record(self.stream)  # waited for by ring.ready() in postprocess and ring.acquire()

    def close(self) -> None:
        """Frees the engine's rings, kernel module and stream once the GPU has finished with them
        (call after the graph has stopped; the runner does not call it while a stage is stuck)."""
        if self.stream is None:
            return
        from pipeline.cuda.memory import Event
        from pipeline.cuda.runtime import use_device

        use_device(self.device)  # the closing thread may be on another GPU
        done = Event()
        try:
            for stream in (self.copy_stream, self.stream):
                done.record(stream)
                done.wait(INFER_WAIT_S)
        except TimeoutError:
            log.error("GPU work of %s still running after %.0f s: its memory is not freed", self.path.name, INFER_WAIT_S)
            return
        finally:
            done.close()
        for ring in self._rings:
            ring.close()
        self._rings.clear()
        if self._kernel is not None:
            self._kernel.close()
            self._kernel = None
        self.copy_stream.close()
        self.stream.close()
        self.stream = None
        self.context = None
        self.engine = None
