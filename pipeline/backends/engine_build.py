"""TensorRT engines for a model: the key this machine needs, finding a cached engine that fits,
building one, and the `validate` report of the cache.

Imports TensorRT (10 only: 11 removed the builder API used here) and cuda-python on first use, so
`validate` can report the cache on a machine without either. The cache's files and records are
engine_cache.py's; running an engine is tensorrt.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.backends.base import ModelLoadError, ModelNotBuilt, missing_model_message, parse_ultralytics_metadata
from pipeline.backends.engine_cache import (
    EngineCacheError,
    EngineKey,
    EngineRecord,
    batch_profile,
    cached_engine,
    engine_candidates,
    find_engine,
    rebuild_hint,
    sha256_file,
)

log = logging.getLogger(__name__)

TENSORRT_PIN = "tensorrt-cu12>=10,<11"
INSTALL_HINT = ("install the GPU extras on a machine with an NVIDIA GPU and driver: "
                "pip install -r requirements-gpu.txt (TensorRT wheels come from NVIDIA's index: pypi.nvidia.com)")
DEFAULT_ENGINE_DIR = Path(__file__).resolve().parents[2] / "engines"


def import_tensorrt() -> Any:
    """The `tensorrt` module. Raises ModelLoadError, with the install hint, when it is missing or
    not TensorRT 10 (the API this backend is written against)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ModelLoadError(f"TensorRT is not installed ({exc}): {INSTALL_HINT}") from exc
    version = str(getattr(trt, "__version__", "?"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise ModelLoadError(f"unrecognised TensorRT version {version!r}: this backend needs TensorRT 10 "
                             f"(pip install '{TENSORRT_PIN}'); {INSTALL_HINT}") from None
    if major < 10:
        raise ModelLoadError(f"TensorRT {version} is too old: this backend uses the TensorRT 10 API "
                             f"(named tensors, execute_async_v3); {INSTALL_HINT}")
    if major > 10:
        raise ModelLoadError(f"TensorRT {version} is not supported: this backend uses the TensorRT 10 API "
                             f"(TensorRT 11 removed BuilderFlag.FP16 and platform_has_fast_fp16); install "
                             f"TensorRT 10: pip install --extra-index-url https://pypi.nvidia.com '{TENSORRT_PIN}'")
    return trt


def engine_precision(precision: str | None) -> str:
    """The engine precision (`fp16` | `fp32`, as engine keys and file names spell it) for a model
    config's `precision`: unset and `auto` mean fp16, `f32` means fp32."""
    return "fp32" if precision == "f32" else "fp16"


def machine_key(onnx_sha256: str, precision: str, batch: int, device: int = 0) -> EngineKey:
    """The key an engine for the ONNX file with this hash must have to run `batch` at `precision`
    on GPU `device` here (asks TensorRT for its version and CUDA for the GPU's compute capability)."""
    from pipeline.cuda.runtime import compute_capability

    trt = import_tensorrt()
    with _usable_gpu(device):
        major, minor = compute_capability(device)
    return EngineKey(onnx_sha256, f"{major}.{minor}", trt.__version__, precision, batch_profile(batch))


def current_key(onnx_path: Path, precision: str, batch: int, device: int = 0) -> EngineKey:
    """`machine_key` for an ONNX file (hashed here)."""
    return machine_key(sha256_file(onnx_path), precision, batch, device)


@dataclass(frozen=True, slots=True)
class OnnxFacts:
    """What the builder needs from the ONNX file: its input, image size, batch and Ultralytics metadata."""

    input_name: str
    input_hw: tuple[int, int]
    batch: int | None  # the batch dimension when it is a number (a fixed-batch export), else None
    static: bool  # every input dimension is a number: no optimisation profile is needed
    class_names: dict[int, str]
    stride: int | None


def onnx_facts(onnx_path: Path) -> OnnxFacts:
    """The ONNX file's input and metadata (read with ONNX Runtime, which the CPU path has anyway).
    Raises ModelLoadError when the image size is dynamic and the metadata has none."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    names, imgsz, stride = parse_ultralytics_metadata(session.get_modelmeta().custom_metadata_map)
    batch, h, w = inp.shape[0], inp.shape[2], inp.shape[3]
    static = all(isinstance(d, int) for d in inp.shape)
    if not (isinstance(h, int) and isinstance(w, int)):
        if imgsz is None:
            raise ModelLoadError(f"{onnx_path.name}: dynamic input size and no imgsz metadata: export with a fixed size")
        h, w = imgsz
    return OnnxFacts(inp.name, (int(h), int(w)), batch if isinstance(batch, int) else None, static, names, stride)


@contextlib.contextmanager
def _usable_gpu(device: int) -> Iterator[None]:
    """Turns a CUDA failure inside (no cuda-python, no driver, no such GPU) into a ModelLoadError
    naming the GPU."""
    from pipeline.cuda.runtime import CudaError, CudaUnavailable

    try:
        yield
    except (CudaUnavailable, CudaError) as exc:
        raise ModelLoadError(f"no usable NVIDIA GPU {device}: {exc}") from exc


def build_engine(onnx_path: Path, *, fp16: bool, max_batch: int, engine_dir: Path = DEFAULT_ENGINE_DIR,
                 rebuild: bool = False, workspace_mb: int = 2048, device: int = 0) -> tuple[Path, bool]:
    """Builds the engine for `onnx_path` on GPU `device`, or finds a cached one that fits.

    Args:
        onnx_path: the model.
        fp16: FP16 precision (else FP32).
        max_batch: the largest batch of the profile (1..max_batch); a fixed-batch ONNX allows only its own.
        engine_dir: the cache folder.
        rebuild: build even when a fitting engine is cached.
        workspace_mb: the builder's workspace.
        device: the CUDA device to build for.

    Returns:
        (engine path, whether it was built now). Raises ModelLoadError saying what to change.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelLoadError(missing_model_message(onnx_path))
    facts = onnx_facts(onnx_path)
    if facts.batch is not None and facts.batch != max_batch:  # checked here: TensorRT's own error names no option
        raise ModelLoadError(f"{onnx_path.name} has a fixed batch of {facts.batch}: build it with --max-batch {facts.batch}, "
                             f"or export the model with a dynamic batch (Ultralytics: dynamic=True)")
    trt = import_tensorrt()
    key = current_key(onnx_path, "fp16" if fp16 else "fp32", max_batch, device)
    key = dataclasses.replace(key, batch=batch_profile(max_batch, facts.batch))
    if not rebuild and (found := find_engine(engine_dir, onnx_path, key).engine) is not None:
        return found, False
    from pipeline.cuda.runtime import device_name, use_device

    # The builder, the runtime and the allocations all work on the current device, which is 0 in a
    # thread that never chose.
    with _usable_gpu(device):
        use_device(device)

    engine_path = cached_engine(engine_dir, onnx_path, key)
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
    h, w = facts.input_hw
    if not facts.static:  # a fully static input has its one shape already; a profile is for dynamic dims
        profile = builder.create_optimization_profile()
        lo, opt, hi = key.batch
        profile.set_shape(facts.input_name, (lo, 3, h, w), (opt, 3, h, w), (hi, 3, h, w))
        config.add_optimization_profile(profile)
    log.info("building TensorRT engine for %s (%s, batch %s) on GPU %d: this takes minutes",
             onnx_path.name, key.precision, key.batch, device)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
    engine_dir.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_suffix(".engine.tmp")
    tmp.write_bytes(bytes(serialized))
    # The record first, then the engine under its final name: never an engine without its record,
    # nor a half-written engine.
    EngineRecord(key, str(onnx_path), facts.input_name, (h, w), facts.class_names, facts.stride, device_name(device),
                 datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")).write(engine_path)
    tmp.replace(engine_path)
    return engine_path, True


def resolve_engine(path: Path, *, precision: str, batch: int, build: bool, engine_dir: Path = DEFAULT_ENGINE_DIR,
                   device: int = 0) -> Path:
    """The engine to load for a model whose `path` is an .onnx (the first cached engine that fits,
    see engine_cache.find_engine; built when `build`) or an .engine (checked against this machine).

    Raises:
        ModelNotBuilt: no cached engine fits and `build` is off; says what differs for each cached one.
        ModelLoadError: the file is missing, or a given .engine does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(missing_model_message(path))
    if path.suffix != ".onnx":
        return _checked_engine_file(path, precision, batch, device)
    key = current_key(path, precision, batch, device)
    lookup = find_engine(engine_dir, path, key)
    if lookup.engine is not None:
        return lookup.engine
    if build:
        return build_engine(path, fp16=precision == "fp16", max_batch=batch, engine_dir=engine_dir, rebuild=True,
                            device=device)[0]
    why = f"; cached but not fitting: {lookup.reasons()}" if lookup.rejected else ""
    raise ModelNotBuilt(f"no TensorRT engine for {path.name} ({precision}, batch {batch}) fits this GPU in {engine_dir}"
                        f"{why}. Build one: `{rebuild_hint(path, key)}`, or set build_engine: true")


def _engine_key_here(path: Path, record: EngineRecord, precision: str, batch: int, device: int) -> tuple[EngineKey, bool]:
    """The key a given .engine must match here, and whether its ONNX file is here to be hashed."""
    onnx = Path(record.onnx_path)
    if onnx.is_file():
        return current_key(onnx, precision, batch, device), True
    return machine_key(record.key.onnx_sha256, precision, batch, device), False


def _checked_engine_file(path: Path, precision: str, batch: int, device: int) -> Path:
    try:
        record = EngineRecord.read(path)
    except EngineCacheError as exc:
        raise ModelLoadError(str(exc)) from exc
    key, onnx_here = _engine_key_here(path, record, precision, batch, device)
    if not onnx_here:  # shipped alone: GPU, TensorRT, precision and batch are still checked
        log.warning("%s: its ONNX file %s is not here: cannot check that %s was built from it",
                    path.name, record.onnx_path, path.name)
    problems = record.key.differences(key, check_onnx=onnx_here)
    if problems:
        raise ModelLoadError(f"engine {path.name} does not fit: {'; '.join(problems)}. Rebuild: "
                             f"`{rebuild_hint(record.onnx_path, key)}`")
    return path


def engine_report(path: Path, *, precision: str, batch: int, engine_dir: Path = DEFAULT_ENGINE_DIR,
                  device: int = 0) -> list[str]:
    """Lines for `validate`: the cached engines of this model, whether each fits this machine and
    which one a run would load (the same find_engine as loading). Works without TensorRT or a GPU
    (then says it cannot check the fit here)."""
    path = Path(path)
    if not path.is_file():
        return [f"{path}: not found"]
    onnx = path.suffix == ".onnx"
    lines: list[str] = []
    if onnx:
        candidates = engine_candidates(engine_dir, path)
        lines.append(f"{path.name} (sha256 {sha256_file(path)[:12]}…): {len(candidates)} cached engine(s) in {engine_dir}")
    else:
        candidates = [path]
    problems: dict[Path, list[str]] | None = None  # None: the fit could not be checked here
    use_line = ""
    try:
        if onnx:
            here = current_key(path, precision, batch, device)
            lookup = find_engine(engine_dir, path, here)
            problems = {p: list(why) for p, why in lookup.rejected}
            use_line = (f"  uses {lookup.engine.name}" if lookup.engine is not None else
                        f"  none fits: `{rebuild_hint(path, here)}`, or build_engine: true")
        else:
            record = EngineRecord.read(path)
            key, onnx_here = _engine_key_here(path, record, precision, batch, device)
            problems = {path: record.key.differences(key, check_onnx=onnx_here)}
    except (ModelLoadError, EngineCacheError, OSError, RuntimeError) as exc:
        lines.append(f"  fit not checked here: {str(exc).split(':')[0]}")
    for engine in candidates:
        try:
            record = EngineRecord.read(engine)
        except EngineCacheError as exc:
            lines.append(f"  {engine.name}: {exc}")
            continue
        k = record.key
        desc = (f"  {engine.name}: built {record.built_at or '?'} on {record.gpu_name or '?'} (sm {k.compute_capability}), "
                f"TensorRT {k.tensorrt_version}, {k.precision}, batch {k.batch[0]}..{k.batch[2]}")
        if problems is not None:
            why = problems.get(engine)
            desc += ": does not fit: " + "; ".join(why) if why else ": fits"
        lines.append(desc)
    if use_line:
        lines.append(use_line)
    return lines
