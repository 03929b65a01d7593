"""load_models: the batch a model runs at against what the model accepts, and `validate` never
building engines. The backend is a stub with the real YOLOv8n's facts: load_models reads only its
`info` and calls `close()`, so nothing here depends on which engine stands behind it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pipeline.backends.base import ModelInfo, ModelNotBuilt, TensorSpec
from pipeline.config import ConfigError, LoadedConfig, config_from_data
from pipeline.graph import models as graph_models

COCO80 = {i: f"class{i}" for i in range(80)}


class StubBackend:
    """A loaded backend as load_models sees it: its model facts and close()."""

    def __init__(self, info: ModelInfo) -> None:
        self.info = info
        self.closed = False

    def close(self) -> None:
        self.closed = True


def yolo_info(path: Path, *, max_batch: int | None, min_batch: int | None = None) -> ModelInfo:
    return ModelInfo(path=path, input=TensorSpec("images", (3, 640, 640), np.dtype(np.float32)),
                     outputs=(TensorSpec("output0", (84, 8400), np.dtype(np.float32)),), max_batch=max_batch,
                     class_names=COCO80, stride=32, min_batch=min_batch)


def config(tmp_path: Path, batch: int, **model: object) -> LoadedConfig:
    return config_from_data({
        "cameras": [{"id": "c", "model": "m", "source": {"type": "synthetic", "fps": 5}}],
        "models": [{"id": "m", "path": str(tmp_path / "m.onnx"), "batch": batch, **model}],
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "o.jsonl")}],
    }, origin="test.yaml", base_dir=tmp_path)


@pytest.fixture
def backend_with(monkeypatch):
    """Makes load_models get a StubBackend with `info`; returns the configs it was asked to load."""
    asked: list[object] = []

    def use(info: ModelInfo | Exception) -> list[object]:
        def create(cfg: object, *, intra_op_threads: int | None = None) -> StubBackend:
            asked.append(cfg)
            if isinstance(info, Exception):
                raise info
            return StubBackend(info)

        monkeypatch.setattr(graph_models, "create_backend", create)
        return asked

    return use


def test_an_engine_profile_of_1_to_8_takes_batch_4(tmp_path, backend_with):
    backend_with(yolo_info(tmp_path / "m.onnx", max_batch=8, min_batch=1))
    loaded = graph_models.load_models(config(tmp_path, 4, backend="tensorrt"))
    assert loaded["m"].batch == 4
    assert loaded["m"].backend.info.fixed_batch is None


def test_a_batch_outside_the_profile_is_refused_at_its_key(tmp_path, backend_with):
    backend_with(yolo_info(tmp_path / "m.onnx", max_batch=8, min_batch=2))
    for batch, why in ((16, "takes batches 2..8"), (1, "takes batches 2..8")):
        with pytest.raises(ConfigError, match=rf"models\[0\]\.batch: model m\.onnx {why} \(its engine's profile\), "
                                              rf"got batch: {batch}"):
            graph_models.load_models(config(tmp_path, batch, backend="tensorrt"))


def test_a_fixed_batch_model_still_needs_exactly_that_batch(tmp_path, backend_with):
    backend_with(yolo_info(tmp_path / "m.onnx", max_batch=1))
    with pytest.raises(ConfigError, match=r"models\[0\]\.batch: model m\.onnx has a fixed batch of 1, got batch: 4 "
                                          r"\(set batch: 1, or export the model with a dynamic batch\)"):
        graph_models.load_models(config(tmp_path, 4))
    assert yolo_info(tmp_path / "m.onnx", max_batch=1).fixed_batch == 1
    assert yolo_info(tmp_path / "m.onnx", max_batch=4, min_batch=4).fixed_batch == 4
    assert yolo_info(tmp_path / "m.onnx", max_batch=None).fixed_batch is None


def test_validate_loads_models_without_building_engines(tmp_path, backend_with, caplog):
    asked = backend_with(yolo_info(tmp_path / "m.onnx", max_batch=8, min_batch=1))
    cfg = config(tmp_path, 4, backend="tensorrt", build_engine=True)
    graph_models.load_models(cfg, build_engines=False)
    assert [c.build_engine for c in asked] == [False]
    graph_models.load_models(cfg)  # `run` builds as the config says
    assert [c.build_engine for c in asked] == [False, True]
    # No engine cached: validate says run will build one, and the config is still valid.
    backend_with(ModelNotBuilt("no TensorRT engine for m.onnx fits this GPU"))
    with caplog.at_level(logging.WARNING):
        assert graph_models.load_models(cfg, build_engines=False) == {}
    assert "model m: no TensorRT engine for m.onnx fits this GPU; `vigil run` builds one first (build_engine: true" in caplog.text
    # Without build_engine: true the same is an error at the model's path.
    with pytest.raises(ConfigError, match=r"models\[0\]\.path: no TensorRT engine for m\.onnx fits this GPU"):
        graph_models.load_models(config(tmp_path, 4, backend="tensorrt"), build_engines=False)
