"""Our preprocess + ONNX Runtime + decode against Ultralytics' own pipeline on the same model.

tests/fixtures/ultralytics_reference.json was recorded with Ultralytics 8.4.190
(tests/tools/make_ultralytics_reference.py), so CI needs no torch. Criteria from the issue: same
classes, boxes within 1 px, scores within 1e-3."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.postprocess.yolo import DecodeParams
from tests.helpers import detect_images

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "ultralytics_reference.json").read_text())
IMAGES = list(FIXTURE["images"])
PARAMS = DecodeParams(conf=FIXTURE["conf"], iou=FIXTURE["iou"], max_det=FIXTURE["max_det"])


def assert_matches_reference(det, ref, class_names):
    assert len(det) == len(ref), f"{len(det)} detections, Ultralytics found {len(ref)}"
    for i, r in enumerate(ref):  # both sorted by confidence, descending
        assert int(det.class_id[i]) == r["class_id"], f"detection {i}: class {det.class_id[i]} != {r['class_id']}"
        assert class_names[r["class_id"]] == r["class_name"]
        assert abs(float(det.confidence[i]) - r["confidence"]) < 1e-3
        np.testing.assert_allclose(det.xyxy[i], r["box"], atol=1.0)


@pytest.mark.parametrize("batch", [1, 4])
def test_same_detections_as_ultralytics(ort_backend, media, batch):
    results = detect_images(ort_backend, media, IMAGES, batch, PARAMS)
    for name in IMAGES:
        assert_matches_reference(results[name], FIXTURE["images"][name], ort_backend.info.class_names)


def test_bus_has_four_people_and_a_bus(ort_backend, media):
    det = detect_images(ort_backend, media, ["bus.jpg"], 1, PARAMS)["bus.jpg"]
    names = [ort_backend.info.class_names[c] for c in det.class_id.tolist()]
    assert names.count("person") == 4
    assert names.count("bus") == 1


def test_class_names_come_from_model_metadata(ort_backend):
    names = ort_backend.info.class_names
    assert len(names) == 80 and names[0] == "person" and names[5] == "bus"
    assert ort_backend.info.stride == 32
    assert ort_backend.info.input_hw == (640, 640)
