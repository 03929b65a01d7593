"""Registries: names to classes imported lazily, with clear errors."""

import pytest

from pipeline.registry import Registry, RegistryError


class Thing:
    """A class to register."""


def test_a_name_maps_to_a_class_imported_on_first_use():
    registry: Registry[object] = Registry("thing", {"odict": "collections:OrderedDict"})
    import collections

    assert registry.get("odict") is collections.OrderedDict
    registry.register("thing", Thing)
    assert registry.get("thing") is Thing and "thing" in registry and registry.names() == ["odict", "thing"]
    registry.unregister("thing")
    assert "thing" not in registry


def test_unknown_names_and_missing_modules_say_what_is_wrong():
    registry: Registry[object] = Registry("backend", {"onnxruntime": "collections:OrderedDict",
                                                      "ghost": "no_such_package_here:Engine"})
    with pytest.raises(RegistryError, match=r"unknown backend 'onnxruntim' \(did you mean 'onnxruntime'\?\); known: onnxruntime, ghost"):
        registry.get("onnxruntim")
    with pytest.raises(RegistryError, match=r"backend 'ghost' is not available: No module named 'no_such_package_here'"):
        registry.get("ghost")
    with pytest.raises(ValueError, match="expected 'package.module:ClassName'"):
        registry.register("bad", "collections.OrderedDict")


def test_an_unknown_backend_is_a_model_load_error_naming_the_model():
    from pipeline.backends import BACKENDS, ModelLoadError, create_backend
    from pipeline.config import ModelConfig

    config = ModelConfig(id="m", path="/nonexistent.onnx", backend="tensorrt")
    BACKENDS.register("tensorrt", "no_such_package_here:TensorRTBackend")
    try:
        with pytest.raises(ModelLoadError, match=r"model 'm': backend 'tensorrt' is not available"):
            create_backend(config)
    finally:
        BACKENDS.register("tensorrt", "pipeline.backends.tensorrt:TensorRTBackend")
