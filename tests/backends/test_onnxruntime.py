import pytest

from pipeline.backends.base import ModelLoadError, parse_ultralytics_metadata
from pipeline.backends.onnxruntime import OnnxRuntimeBackend


def test_metadata_is_parsed():
    names, imgsz, stride = parse_ultralytics_metadata({"names": "{0: 'person', 1: 'bicycle'}", "imgsz": "[640, 480]", "stride": "32"})
    assert names == {0: "person", 1: "bicycle"} and imgsz == (640, 480) and stride == 32


@pytest.mark.parametrize(("meta", "message"), [
    ({"names": "{0: person"}, "unreadable Ultralytics metadata 'names'"),
    ({"imgsz": "[1, 2, 3]"}, "unreadable Ultralytics metadata 'imgsz'"),
    ({"names": "42"}, "expected a dict or list of class names"),
])
def test_unreadable_metadata_names_the_key(meta, message):
    with pytest.raises(ModelLoadError, match=message):
        parse_ultralytics_metadata(meta)


def test_missing_model_names_the_path_and_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model file not found: .*nothere.onnx.*VIGIL_SHARED"):
        OnnxRuntimeBackend(tmp_path / "nothere.onnx")


def test_not_a_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not protobuf")
    with pytest.raises(ModelLoadError, match=r"ONNX Runtime cannot load .*bad.onnx"):
        OnnxRuntimeBackend(bad)


def test_fixed_batch_model_reports_its_batch(model_path):
    backend = OnnxRuntimeBackend(model_path.with_name("yolov8n_b1.onnx"))
    assert backend.info.max_batch == 1
    assert OnnxRuntimeBackend(model_path).info.max_batch is None
