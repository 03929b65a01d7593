"""TensorRT engine cache: where a built engine lives and whether it still fits.

An engine is only valid for the ONNX file, GPU architecture (compute capability), TensorRT version,
precision and batch profile it was built with. Each is part of the cache key; the engine file's name
carries them and a JSON sidecar (`X.engine.json`) records them in full, with the model facts an
engine does not keep (class names, stride, input size from the ONNX's Ultralytics metadata).

Everything here is plain Python: it runs (and is tested) without a GPU or TensorRT, and it must
not import either; building engines is engine_build.py's job, loading them tensorrt.py's.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

SIDECAR_SUFFIX = ".json"
_HASH_CHUNK = 1 << 20
# What EngineKey.filename puts after the ONNX stem: a name that only starts with the stem (the
# engines of `yolov8n.int8.onnx` next to those of `yolov8n.onnx`) does not match.
_KEY_PART = re.compile(r"\.[0-9a-f]{12}\.sm\d+\.trt\d[\w.]*\.(?:fp16|fp32)\.b\d+-\d+-\d+\.engine")


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file's contents, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def batch_profile(max_batch: int, fixed: int | None = None) -> tuple[int, int, int]:
    """(min, opt, max) batch of the optimisation profile. Cross-camera batches are usually full
    (one frame per camera), so TensorRT tunes its kernels for the largest batch.

    Args:
        max_batch: the largest batch the engine must run.
        fixed: the ONNX file's own batch when it is a number: the engine can run only that one.
    """
    if max_batch < 1:
        raise ValueError(f"max batch must be >= 1, got {max_batch}")
    if fixed is not None:
        if fixed != max_batch:
            raise ValueError(f"the model has a fixed batch of {fixed}, got max batch {max_batch}")
        return (fixed, fixed, fixed)
    return (1, max_batch, max_batch)


@dataclass(frozen=True, slots=True)
class EngineKey:
    """Everything an engine is only valid for: the ONNX file's hash, the GPU's compute capability,
    the TensorRT version, the precision and the batch profile."""

    onnx_sha256: str
    compute_capability: str  # "8.6"
    tensorrt_version: str  # "10.3.0"
    precision: str  # "fp16" | "fp32"
    batch: tuple[int, int, int]  # (min, opt, max)

    def filename(self, onnx_stem: str) -> str:
        b = "-".join(map(str, self.batch))
        return (f"{onnx_stem}.{self.onnx_sha256[:12]}.sm{self.compute_capability.replace('.', '')}"
                f".trt{self.tensorrt_version}.{self.precision}.b{b}.engine")

    def differences(self, current: EngineKey, *, check_onnx: bool = True) -> list[str]:
        """What differs between this (the engine's) key and `current` (what this run needs), in
        words. The batch fits when the engine's profile holds the batch that `current` runs (its
        max); `check_onnx=False` skips the hash, for an engine whose ONNX file is not here."""
        out = []
        if check_onnx and self.onnx_sha256 != current.onnx_sha256:
            out.append(f"ONNX file changed since the build (sha256 {self.onnx_sha256[:12]}… → {current.onnx_sha256[:12]}…)")
        if self.compute_capability != current.compute_capability:
            out.append(f"GPU: built for compute capability {self.compute_capability}, this GPU is {current.compute_capability}")
        if self.tensorrt_version != current.tensorrt_version:
            out.append(f"TensorRT: built with {self.tensorrt_version}, installed {current.tensorrt_version}")
        if self.precision != current.precision:
            out.append(f"precision: built {self.precision}, config asks {current.precision}")
        if self.batch[2] < current.batch[2]:
            out.append(f"batch: profile allows up to {self.batch[2]}, config asks {current.batch[2]}")
        elif self.batch[0] > current.batch[2]:
            out.append(f"batch: profile starts at {self.batch[0]}, config asks {current.batch[2]}")
        return out


@dataclass(frozen=True, slots=True)
class EngineRecord:
    """The sidecar: the key plus what the runtime needs and the engine does not store."""

    key: EngineKey
    onnx_path: str
    input_name: str
    input_hw: tuple[int, int]
    class_names: dict[int, str] = field(default_factory=dict)
    stride: int | None = None
    gpu_name: str = ""
    built_at: str = ""

    def write(self, engine_path: Path) -> Path:
        path = sidecar_path(engine_path)
        data = asdict(self)
        data["class_names"] = {str(k): v for k, v in self.class_names.items()}
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, engine_path: Path) -> EngineRecord:
        path = sidecar_path(engine_path)
        if not path.is_file():
            raise EngineCacheError(f"{engine_path} has no {path.name} beside it: its GPU, TensorRT version, precision and "
                                   f"class names are unknown. Rebuild it with `python run.py build-engine MODEL.onnx`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            key = data["key"]
            return cls(
                key=EngineKey(key["onnx_sha256"], str(key["compute_capability"]), str(key["tensorrt_version"]),
                              key["precision"], tuple(int(b) for b in key["batch"])),  # type: ignore[arg-type]
                onnx_path=data["onnx_path"], input_name=data["input_name"],
                input_hw=(int(data["input_hw"][0]), int(data["input_hw"][1])),
                class_names={int(k): str(v) for k, v in data.get("class_names", {}).items()},
                stride=data.get("stride"), gpu_name=data.get("gpu_name", ""), built_at=data.get("built_at", ""))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise EngineCacheError(f"{path}: unreadable engine record ({type(exc).__name__}: {exc}); rebuild the engine "
                                   f"with `python run.py build-engine MODEL.onnx --rebuild`") from exc


class EngineCacheError(RuntimeError):
    """An engine is missing, stale or built for something else; the message says what and what to do."""


def sidecar_path(engine_path: Path) -> Path:
    """The JSON record beside an engine: `X.engine` -> `X.engine.json`."""
    return Path(str(engine_path) + SIDECAR_SUFFIX)


def cached_engine(cache_dir: Path, onnx_path: Path, key: EngineKey) -> Path:
    """Where the engine for `onnx_path` and `key` lives in `cache_dir` (whether it exists or not)."""
    return Path(cache_dir) / key.filename(Path(onnx_path).stem)


def check_engine(engine_path: Path, current: EngineKey) -> list[str]:
    """Why `engine_path` cannot serve `current` (empty when it can). Raises EngineCacheError when
    the engine or its record is missing."""
    if not Path(engine_path).is_file():
        raise EngineCacheError(f"no engine at {engine_path}")
    return EngineRecord.read(engine_path).key.differences(current)


@dataclass(frozen=True, slots=True)
class EngineLookup:
    """The outcome of `find_engine`: the engine to use (None: none fits) and, for every other cached
    engine of the model, what differs, in words."""

    engine: Path | None
    rejected: tuple[tuple[Path, tuple[str, ...]], ...]

    def reasons(self) -> str:
        """`name: difference, difference; name: ...` for the rejected engines ('' when none)."""
        return "; ".join(f"{path.name}: {', '.join(why)}" for path, why in self.rejected)


def engine_candidates(cache_dir: Path, onnx_path: Path) -> list[Path]:
    """Every cached engine built from a file named like `onnx_path` (any hash, GPU, TensorRT
    version, precision or batch profile), by name."""
    stem = Path(onnx_path).stem
    found = Path(cache_dir).glob(f"{glob.escape(stem)}.*.engine")
    return sorted(p for p in found if _KEY_PART.fullmatch(p.name[len(stem):]))


def find_engine(cache_dir: Path, onnx_path: Path, current: EngineKey) -> EngineLookup:
    """The cached engine that serves `current` (what this run needs) with no difference: the exact
    build for `current` first, then the one with the tightest batch profile (TensorRT tunes for its
    largest batch). Both `validate` and loading use this, so they agree.

    Args:
        cache_dir: the engine cache folder.
        onnx_path: the model's ONNX file.
        current: the key this run needs (see tensorrt's current_key).

    Returns:
        The engine to use, or None, and what differs for each engine not used.
    """
    exact = cached_engine(cache_dir, onnx_path, current)
    scored: list[tuple[tuple[bool, int, str], Path, list[str]]] = []
    for path in engine_candidates(cache_dir, onnx_path):
        try:
            record = EngineRecord.read(path)
        except EngineCacheError as exc:
            scored.append(((True, 0, path.name), path, [str(exc)]))
            continue
        scored.append(((path != exact, record.key.batch[2], path.name), path, record.key.differences(current)))
    scored.sort(key=lambda item: item[0])
    fitting = next((path for _, path, why in scored if not why), None)
    rejected = tuple((path, tuple(why)) for _, path, why in scored if why)
    return EngineLookup(fitting, rejected)


def rebuild_hint(onnx_path: Path | str, key: EngineKey) -> str:
    """The `run.py build-engine` command that builds an engine for `key` in place of a stale one."""
    fp16 = " --fp16" if key.precision == "fp16" else ""
    return f"python run.py build-engine {onnx_path}{fp16} --max-batch {key.batch[2]} --rebuild"
