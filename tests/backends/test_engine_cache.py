"""Engine lookup, the validate report and the TensorRT version checks, without a GPU or TensorRT.

The lookup asks TensorRT only for its version string and CUDA only for the GPU's compute
capability; the `here` fixture stands in for exactly those two answers (TensorRT 10.4.1 on a
compute capability 8.6 GPU). Nothing here claims anything about a GPU: engines are placeholder
files whose JSON records are all that the lookup reads.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

from pipeline.backends.base import ModelLoadError, ModelNotBuilt
from pipeline.backends.engine_build import build_engine, engine_report, import_tensorrt, resolve_engine
from pipeline.backends.engine_cache import EngineKey, EngineRecord, find_engine, sha256_file
from pipeline.backends.tensorrt import numpy_dtype

from conftest import REPO, SHARED, run_cli


@pytest.fixture
def here(monkeypatch):
    """This machine as TensorRT 10.4.1 on a compute capability 8.6 GPU (the two facts the lookup asks for)."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.4.1"))
    import pipeline.cuda.runtime as runtime

    monkeypatch.setattr(runtime, "compute_capability", lambda device=0: (8, 6))


def cached(engine_dir: Path, onnx: Path, *, sha: str | None = None, trt: str = "10.4.1", cc: str = "8.6",
           precision: str = "fp16", batch: tuple[int, int, int] = (1, 4, 4)) -> Path:
    """A cached engine for `onnx` as build-engine leaves it: a file named by its key and its record."""
    key = EngineKey(sha or sha256_file(onnx), cc, trt, precision, batch)
    path = engine_dir / key.filename(onnx.stem)
    path.write_bytes(b"placeholder: the lookup reads only the record beside it")
    EngineRecord(key, str(onnx), "images", (640, 640), {0: "person"}, 32, "NVIDIA A2", "2026-01-01T00:00:00+00:00").write(path)
    return path


def test_an_engine_built_for_batches_1_to_8_serves_batch_4(tmp_path, model_path, here):
    wide = cached(tmp_path, model_path, batch=(1, 8, 8))
    assert resolve_engine(model_path, precision="fp16", batch=4, build=False, engine_dir=tmp_path) == wide


def test_the_exact_build_comes_first_then_the_tightest_profile(tmp_path, model_path, here):
    cached(tmp_path, model_path, batch=(1, 16, 16))
    tight = cached(tmp_path, model_path, batch=(1, 8, 8))
    assert resolve_engine(model_path, precision="fp16", batch=4, build=False, engine_dir=tmp_path) == tight
    exact = cached(tmp_path, model_path, batch=(1, 4, 4))
    assert resolve_engine(model_path, precision="fp16", batch=4, build=False, engine_dir=tmp_path) == exact


def test_a_profile_that_starts_above_the_batch_does_not_fit(tmp_path, model_path, here):
    cached(tmp_path, model_path, batch=(4, 4, 4))
    with pytest.raises(ModelNotBuilt, match=r"batch: profile starts at 4, config asks 2"):
        resolve_engine(model_path, precision="fp16", batch=2, build=False, engine_dir=tmp_path)


def test_stale_engines_are_reported_in_words(tmp_path, model_path, here):
    old_trt = cached(tmp_path, model_path, trt="10.3.0")
    old_onnx = cached(tmp_path, model_path, sha="ab" * 32)
    cached(tmp_path, model_path, precision="fp32")
    with pytest.raises(ModelNotBuilt) as err:
        resolve_engine(model_path, precision="fp16", batch=4, build=False, engine_dir=tmp_path)
    text = str(err.value)
    assert f"{old_trt.name}: TensorRT: built with 10.3.0, installed 10.4.1" in text
    assert f"{old_onnx.name}: ONNX file changed since the build (sha256 abababababab…" in text
    assert "precision: built fp32, config asks fp16" in text
    assert "build-engine" in text and "--max-batch 4" in text and "build_engine: true" in text


def test_validate_reports_the_engine_the_lookup_picks(tmp_path, model_path, here):
    wide = cached(tmp_path, model_path, batch=(1, 8, 8))
    stale = cached(tmp_path, model_path, trt="10.3.0")
    text = "\n".join(engine_report(model_path, precision="fp16", batch=4, engine_dir=tmp_path))
    assert f"{wide.name}: built 2026-01-01T00:00:00+00:00 on NVIDIA A2 (sm 8.6), TensorRT 10.4.1, fp16, batch 1..8: fits" in text
    assert f"{stale.name}: built" in text and "does not fit: TensorRT: built with 10.3.0, installed 10.4.1" in text
    assert f"uses {wide.name}" in text
    assert resolve_engine(model_path, precision="fp16", batch=4, build=False, engine_dir=tmp_path) == wide


def test_other_models_engines_are_not_candidates(tmp_path, model_path, here):
    other = tmp_path / "yolov8n.int8.onnx"  # its stem starts with this model's stem
    other.write_bytes(b"another model")
    cached(tmp_path, other, batch=(1, 8, 8))
    lookup = find_engine(tmp_path, model_path, EngineKey(sha256_file(model_path), "8.6", "10.4.1", "fp16", (1, 4, 4)))
    assert lookup.engine is None and lookup.rejected == ()


def test_an_engine_given_without_its_onnx_is_still_checked(tmp_path, here, caplog):
    gone = tmp_path / "gone.onnx"  # never written: the engine is shipped alone
    stale = cached(tmp_path, gone, sha="cd" * 32, trt="10.3.0")
    with pytest.raises(ModelLoadError, match=r"does not fit: TensorRT: built with 10\.3\.0, installed 10\.4\.1"):
        resolve_engine(stale, precision="fp16", batch=1, build=False, engine_dir=tmp_path)
    good = cached(tmp_path, gone, sha="cd" * 32, batch=(1, 2, 2))
    with caplog.at_level("WARNING"):
        assert resolve_engine(good, precision="fp16", batch=2, build=False, engine_dir=tmp_path) == good
    assert f"cannot check that {good.name} was built from it" in caplog.text


@pytest.mark.parametrize(("version", "message"), [
    ("11.0.0", r"TensorRT 11\.0\.0 is not supported: this backend uses the TensorRT 10 API .*tensorrt-cu12>=10,<11"),
    ("9.2.0", r"TensorRT 9\.2\.0 is too old"),
    ("unknown", r"unrecognised TensorRT version 'unknown'"),
])
def test_only_tensorrt_10_is_accepted(monkeypatch, version, message):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
    with pytest.raises(ModelLoadError, match=message):
        import_tensorrt()


def test_the_gpu_extra_pins_tensorrt_10():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    trt = next(Requirement(r) for r in extra if Requirement(r).name == "tensorrt-cu12")
    assert "10.13.0" in trt.specifier and "11.0.0" not in trt.specifier and "9.2.0" not in trt.specifier
    gpu_txt = (REPO / "requirements-gpu.txt").read_text()
    assert "--extra-index-url https://pypi.nvidia.com" in gpu_txt and "-e .[gpu]" in gpu_txt


def test_a_fixed_batch_onnx_is_not_built_with_a_larger_profile(tmp_path):
    fixed = SHARED / "models" / "yolov8n_b1.onnx"
    if not fixed.is_file():
        pytest.skip(f"missing {fixed}: a fixed-batch export of YOLOv8n")
    with pytest.raises(ModelLoadError, match=r"yolov8n_b1\.onnx has a fixed batch of 1: build it with --max-batch 1"):
        build_engine(fixed, fp16=True, max_batch=4, engine_dir=tmp_path)
    result = run_cli("build-engine", str(fixed), "--fp16", "--max-batch", "4", "--engine-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: yolov8n_b1.onnx has a fixed batch of 1: build it with --max-batch 1" in result.stderr
    assert list(tmp_path.iterdir()) == []


class _DataType:
    """Stands in for a `tensorrt.DataType` member: TensorRT prints them as `DataType.BF16`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return f"DataType.{self.name}"


def _nptype(dtype: _DataType) -> type:
    """`tensorrt.nptype` as TensorRT 10 has it: a TypeError for types numpy has no equivalent of."""
    known = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32}
    if dtype.name not in known:
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
    return known[dtype.name]


@pytest.mark.parametrize("name", ["BF16", "FP8"])
def test_tensor_types_numpy_cannot_hold_are_refused_in_words(name):
    fake = types.SimpleNamespace(nptype=_nptype)
    assert numpy_dtype(fake, _DataType("HALF"), "images", Path("m.engine")) == np.float16
    with pytest.raises(ModelLoadError, match=rf"m\.engine: tensor 'output0' is {name}, which numpy cannot hold: "
                                             r"build the engine with FP16 or FP32 inputs and outputs"):
        numpy_dtype(fake, _DataType(name), "output0", Path("m.engine"))
