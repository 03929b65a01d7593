"""The types that cross queues: Detections validates itself and indexes like an array."""

import numpy as np
import pytest

from pipeline.frames import Detections


def make(n: int, tracked: bool = False) -> Detections:
    xyxy = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    return Detections(xyxy, np.linspace(0.1, 0.9, n, dtype=np.float32), np.arange(n, dtype=np.int64),
                      np.arange(n, dtype=np.int64) - 1 if tracked else None, {"area": np.arange(n) * 2.0})


def test_detections_index_by_mask_array_slice_and_int_keeping_columns_aligned():
    det = make(5, tracked=True)
    picked = det[det.confidence > 0.5]
    assert len(picked) == 2 and picked.class_id.tolist() == [3, 4] and picked.track_id.tolist() == [2, 3]
    assert picked.data["area"].tolist() == [6.0, 8.0] and picked.xyxy[0].tolist() == [12, 13, 14, 15]
    assert det[np.array([4, 0])].class_id.tolist() == [4, 0]
    assert det[1:3].track_id.tolist() == [0, 1]
    assert len(det[2]) == 1 and det[2].class_id.tolist() == [2]
    assert make(3)[[0]].track_id is None and not make(3).tracked and det.tracked


def test_detections_with_track_ids_and_empty():
    det = make(2).with_track_ids(np.array([7, -1]))
    assert det.track_id.dtype == np.int64 and det.track_id.tolist() == [7, -1]
    assert len(Detections.empty()) == 0 and Detections.empty().track_id is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"xyxy": np.zeros((3,), np.float32)}, r"xyxy must be a 2D array of shape \(N, 4\), got \(3,\)"),
    ({"confidence": np.zeros((2,), np.float32)}, r"confidence must have shape \(3,\), got \(2,\)"),
    ({"class_id": np.zeros((3, 1), np.int64)}, r"class_id must have shape \(3,\), got \(3, 1\)"),
    ({"track_id": np.zeros((4,), np.int64)}, r"track_id must have shape \(3,\) or be None, got \(4,\)"),
    ({"data": {"area": np.zeros(2)}}, r"data\['area'\] must have 3 rows \(one per detection\), got 2"),
])
def test_detections_say_what_shape_was_expected_and_what_arrived(kwargs, message):
    base = {"xyxy": np.zeros((3, 4), np.float32), "confidence": np.zeros((3,), np.float32),
            "class_id": np.zeros((3,), np.int64)}
    with pytest.raises(ValueError, match=message):
        Detections(**(base | kwargs))
