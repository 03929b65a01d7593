"""TensorRT backend (TensorRT 10 Python API) on the cuda-python memory layer, and the engine builder.

Written against TensorRT's documented Python API: named I/O tensors (`num_io_tensors`,
`get_tensor_name`, `get_tensor_mode`, `get_tensor_profile_shape`), `set_input_shape`,
`set_tensor_address` and `execute_async_v3` on one stream per engine. It has NOT run here: no
machine of this project has had TensorRT (see README, "GPU status"). Imported only when a model
says `backend: tensorrt` or `run.py build-engine` runs, so the CPU path never imports it.

Per batch, on the engine's stream: host→device copy of the slot's rows (or, with GPU
preprocessing, of the raw frames and the letterbox kernel), `h2d_done` recorded, inference,
device→host copy of the output rows, `d2h_done` recorded and waited for (with a timeout) before the
slot goes on to postprocess. While the GPU works on this slot, preprocess fills the next one in
pinned memory: the ring's `acquire` never hands out a slot whose copies are still running.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.backends.base import ModelInfo, ModelLoadError, TensorSpec, missing_model_message, parse_ultralytics_metadata
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

if TYPE_CHECKING:
    from pipeline.config import ModelConfig

log = logging.getLogger(__name__)

INSTALL_HINT = ("install the GPU extras on a machine with an NVIDIA GPU and driver: "
                "pip install -r requirements-gpu.txt (TensorRT wheels come from NVIDIA's index: pypi.nvidia.com)")
INFER_WAIT_S = 30.0  # a batch that takes longer than this means the GPU is hung
DEFAULT_ENGINE_DIR = Path(__file__).resolve().parents[2] / "engines"


def import_tensorrt() -> Any:
    """The `tensorrt` module. Raises ModelLoadError, with the install hint, when it is missing or older than 10."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ModelLoadError(f"TensorRT is not installed ({exc}): {INSTALL_HINT}") from exc
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise ModelLoadError(f"TensorRT {trt.__version__} is too old: this backend uses the TensorRT 10 API "
                             f"(named tensors, execute_async_v3); {INSTALL_HINT}")
    return trt


def engine_precision(precision: str | None) -> str:
    """The engine precision (`fp16` | `fp32`, as engine keys and file names spell it) for a model
    config's `precision`: unset and `auto` mean fp16, `f32` means fp32."""
    return "fp32" if precision == "f32" else "fp16"


def current_key(onnx_path: Path, precision: str, max_batch: int, device: int = 0) -> EngineKey:
    """The key an engine must have to serve this model here (needs TensorRT and a GPU)."""
    trt = import_tensorrt()
    try:
        from pipeline.cuda.runtime import CudaError, CudaUnavailable, compute_capability

        major, minor = compute_capability(device)
    except (CudaUnavailable, CudaError) as exc:
        raise ModelLoadError(f"no usable NVIDIA GPU {device}: {exc}") from exc
    return EngineKey(sha256_file(onnx_path), f"{major}.{minor}", trt.__version__, precision, batch_profile(max_batch))


def onnx_facts(onnx_path: Path) -> tuple[str, tuple[int, int], dict[int, str], int | None]:
    """Input name, input (H, W), class names and stride from the ONNX file (via ONNX Runtime, which
    the CPU path has anyway)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    names, imgsz, stride = parse_ultralytics_metadata(session.get_modelmeta().custom_metadata_map)
    h, w = inp.shape[2], inp.shape[3]
    if not (isinstance(h, int) and isinstance(w, int)):
        if imgsz is None:
            raise ModelLoadError(f"{onnx_path.name}: dynamic input size and no imgsz metadata: export with a fixed size")
        h, w = imgsz
    return inp.name, (int(h), int(w)), names, stride


def build_engine(onnx_path: Path, *, fp16: bool, max_batch: int, engine_dir: Path = DEFAULT_ENGINE_DIR,
                 rebuild: bool = False, workspace_mb: int = 2048, device: int = 0) -> tuple[Path, bool]:
    """Builds (or finds in the cache) the engine for `onnx_path`. Returns (path, built_now)."""
    from pipeline.cuda.runtime import device_name

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelLoadError(missing_model_message(onnx_path))
    trt = import_tensorrt()
    key = current_key(onnx_path, "fp16" if fp16 else "fp32", max_batch, device)
    engine_path = cached_engine(engine_dir, onnx_path, key)
    if engine_path.is_file() and not rebuild and not _engine_problems(engine_path, key):
        return engine_path, False
    input_name, (h, w), names, stride = onnx_facts(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # (from the file: ONNX external data works too)
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelLoadError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast FP16: building FP16 anyway, it may not be faster")
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    lo, opt, hi = key.batch
    profile.set_shape(input_name, (lo, 3, h, w), (opt, 3, h, w), (hi, 3, h, w))
    config.add_optimization_profile(profile)
    log.info("building TensorRT engine for %s (%s, batch %s): this takes minutes", onnx_path.name, key.precision, key.batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
    engine_dir.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_suffix(".engine.tmp")
    tmp.write_bytes(bytes(serialized))
    # The record first, then the engine under its final name: never an engine without its record,
    # nor a half-written engine.
    EngineRecord(key, str(onnx_path), input_name, (h, w), names, stride, device_name(device),
                 datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")).write(engine_path)
    tmp.replace(engine_path)
    return engine_path, True


def _engine_problems(engine: Path, key: EngineKey) -> list[str]:
    try:
        return check_engine(engine, key)
    except EngineCacheError as exc:  # e.g. its record is missing: rebuild
        return [str(exc)]


def resolve_engine(path: Path, *, precision: str, max_batch: int, build: bool, engine_dir: Path = DEFAULT_ENGINE_DIR,
                   device: int = 0) -> Path:
    """The engine to load for a model whose `path` is an .onnx (looked up in the cache, built when
    `build`) or an .engine (checked against this machine). Raises ModelLoadError saying what differs."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(missing_model_message(path))
    if path.suffix == ".onnx":
        key = current_key(path, precision, max_batch, device)
        engine = cached_engine(engine_dir, path, key)
        if engine.is_file() and not _engine_problems(engine, key):
            return engine
        if build:
            return build_engine(path, fp16=precision == "fp16", max_batch=max_batch, engine_dir=engine_dir,
                                rebuild=True, device=device)[0]
        raise ModelLoadError(f"no TensorRT engine for {path.name} ({precision}, batch up to {max_batch}) on this GPU "
                             f"in {engine_dir}: run `{rebuild_hint(path, key)}`, or set build_engine: true")
    try:
        record = EngineRecord.read(path)
        onnx = Path(record.onnx_path)
        key = current_key(onnx, precision, max_batch, device) if onnx.is_file() else None
        problems = record.key.differences(key) if key is not None else []
    except EngineCacheError as exc:
        raise ModelLoadError(str(exc)) from exc
    if problems:
        raise ModelLoadError(f"engine {path.name} does not fit: {'; '.join(problems)}. Rebuild: "
                             f"`{rebuild_hint(record.onnx_path, record.key)}`")
    return path


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
        engine = resolve_engine(config.path, precision=engine_precision(config.precision), max_batch=config.batch,
                                build=config.build_engine, device=config.gpu_device)
        return cls(engine, class_names=config.names, device=config.gpu_device, gpu_preprocess=config.gpu_preprocess)

    def __init__(self, engine_path: Path, *, class_names: dict[int, str] | None = None, device: int = 0,
                 gpu_preprocess: bool = True) -> None:
        from pipeline.cuda.memory import Stream
        from pipeline.cuda.runtime import check, modules

        trt = import_tensorrt()
        self.trt = trt
        self.path = Path(engine_path)
        self.record = EngineRecord.read(self.path)
        rt, _, _ = modules()
        check("cudaSetDevice", rt.cudaSetDevice(device))
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
        if len(inputs) != 1:
            raise ModelLoadError(f"{self.path.name}: expected one image input, got {inputs}")
        self.input_name = inputs[0]
        lo, _opt, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        h, w = int(hi[2]), int(hi[3])
        if (int(lo[2]), int(lo[3])) != (h, w):
            raise ModelLoadError(f"{self.path.name}: input height/width vary in the profile ({tuple(lo)}..{tuple(hi)}); "
                                 f"build it with a fixed image size")
        in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
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
            out_specs.append(TensorSpec(name, shape[1:], np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))))
        self.info = ModelInfo(self.path, TensorSpec(self.input_name, (3, h, w), in_dtype), tuple(out_specs),
                              self.max_batch, class_names or self.record.class_names, self.record.stride)
        self.stream = Stream()
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
            raise ModelLoadError(f"{self.path.name}: batch {batch} is outside the engine's profile "
                                 f"{self.min_batch}..{self.max_batch}: {rebuild_hint(self.record.onnx_path, self.record.key)}")
        info = self.info
        ring = PinnedSlotRing.allocate_pinned(count, batch, {info.input.name: (info.input.shape, info.input.dtype)},
                                              {o.name: (o.shape, o.dtype) for o in info.outputs},
                                              raw_capacity=raw_capacity if self.gpu_preprocess else None,
                                              device=self.device)
        self._rings.append(ring)
        return ring

    def infer(self, slot: Any, n: int) -> None:
        from pipeline.cuda.kernels import LetterboxArgs
        from pipeline.cuda.memory import copy_async
        from pipeline.cuda.runtime import check, modules

        rt, _, _ = modules()
        check("cudaSetDevice", rt.cudaSetDevice(self.device))  # this (inference) thread, this engine's GPU
        dev = slot.bindings.get("cuda")
        if dev is None:
            raise RuntimeError(f"slot {slot.index} has no device buffers: allocate the ring with backend.allocate_ring()")
        info = self.info
        name = info.input.name
        row_bytes = slot.inputs[name][0].nbytes
        h, w = info.input_hw
        for row in range(n):
            raw = dev.raw_rows[row] if dev.raw_rows else None
            if raw is not None and self._kernel is not None:
                rh, rw = raw
                lb = dev.raw_geom[row]
                src = dev.raw_device.ptr + row * dev.raw_row_bytes
                copy_async(src, dev.raw_host.ptr + row * dev.raw_row_bytes, rh * rw * 3, "h2d", self.stream)
                self._kernel.launch(LetterboxArgs(src, rw, rh, rw * 3, dev.device[name].ptr + row * row_bytes, w, h,
                                                  lb[0], lb[1], lb[2], lb[3]), self.stream,
                                    half=info.input.dtype == np.float16)
            else:  # letterboxed on the CPU into the pinned input row
                copy_async(dev.device[name].ptr + row * row_bytes, dev.host[name].ptr + row * row_bytes, row_bytes,
                           "h2d", self.stream)
        dev.h2d_done.record(self.stream)
        if not self.context.set_input_shape(name, (n, 3, h, w)):
            raise RuntimeError(f"TensorRT refused input shape {(n, 3, h, w)} (profile {self.min_batch}..{self.max_batch})")
        for tensor, buf in dev.device.items():
            self.context.set_tensor_address(tensor, buf.ptr)
        if not self.context.execute_async_v3(self.stream.ptr):
            raise RuntimeError(f"TensorRT execute_async_v3 failed on {self.path.name} (see the TensorRT log)")
        for out in info.outputs:
            nbytes = slot.outputs[out.name][0].nbytes * n
            copy_async(dev.host[out.name].ptr, dev.device[out.name].ptr, nbytes, "d2h", self.stream)
        dev.d2h_done.record(self.stream)
        dev.d2h_done.wait(INFER_WAIT_S)  # postprocess reads the outputs next

    def close(self) -> None:
        """Frees the engine's rings, kernel module and stream once the GPU has finished with them
        (call after the graph has stopped; the runner does not call it while a stage is stuck)."""
        if self.stream is not None:
            from pipeline.cuda.memory import Event

            done = Event()
            done.record(self.stream)
            try:
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
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        self.context = None
        self.engine = None


def engine_report(path: Path, *, precision: str, max_batch: int, engine_dir: Path = DEFAULT_ENGINE_DIR,
                  device: int = 0) -> list[str]:
    """Lines for `run.py validate`: which engines exist for this model and whether they fit this
    machine. Works without TensorRT or a GPU (then says it cannot check the fit here)."""
    path = Path(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            return [f"{path}: not found"]
        sha = sha256_file(path)
        engines = sorted(Path(engine_dir).glob(f"{path.stem}.{sha[:12]}.*.engine"))
        lines = [f"{path.name} (sha256 {sha[:12]}…): {len(engines)} cached engine(s) in {engine_dir}"]
        candidates = engines
    else:
        lines, candidates = [], [path]
    try:
        here = current_key(path if path.suffix == ".onnx" else Path(EngineRecord.read(path).onnx_path), precision,
                           max_batch, device)
    except (ModelLoadError, EngineCacheError, OSError, RuntimeError) as exc:
        here = None
        why = str(exc).split(":")[0]
        lines.append(f"  fit not checked here: {why}")
    for engine in candidates:
        try:
            record = EngineRecord.read(engine)
        except EngineCacheError as exc:
            lines.append(f"  {engine.name}: {exc}")
            continue
        k = record.key
        desc = (f"  {engine.name}: built {record.built_at or '?'} on {record.gpu_name or '?'} (sm {k.compute_capability}), "
                f"TensorRT {k.tensorrt_version}, {k.precision}, batch {k.batch[0]}..{k.batch[2]}")
        if here is not None:
            problems = k.differences(here)
            desc += ": fits" if not problems else ": does not fit: " + "; ".join(problems)
        lines.append(desc)
    return lines
