import cv2
import numpy as np
import pytest

from pipeline.postprocess import nms as nms_module
from pipeline.postprocess.nms import box_iou, nms


def test_hand_computed_iou():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0, 1.0]])


def test_overlapping_same_class_keeps_the_higher_score():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)  # IoU(0,1) = 90/110
    scores = np.array([0.8, 0.9, 0.5], np.float32)
    assert nms(boxes, scores, np.zeros(3, np.int64), 0.45).tolist() == [1, 2]


def test_different_groups_never_suppress_each_other():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.8, 0.9], np.float32)
    assert nms(boxes, scores, np.array([0, 1]), 0.45).tolist() == [1, 0]


def test_iou_equal_to_threshold_is_kept():
    # IoU = 50 / 150 = 1/3 exactly at the threshold: torchvision suppresses only IoU > threshold.
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, np.zeros(2, np.int64), 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, np.zeros(2, np.int64), 0.3).tolist() == [0]


def test_chain_a_suppresses_b_so_c_survives():
    # a overlaps b, b overlaps c, a does not overlap c: greedy keeps a and c.
    boxes = np.array([[0, 0, 10, 10], [6, 0, 16, 10], [12, 0, 22, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, np.zeros(3, np.int64), 0.2).tolist() == [0, 2]


def test_empty_input():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5).shape == (0,)


def test_shape_errors_say_what_arrived():
    with pytest.raises(ValueError, match=r"shape \(N, 4\), got \(3,\)"):
        nms(np.zeros(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.int64), 0.5)


def _clustered(rng, n, clusters, groups):
    centers = rng.uniform(0, 600, (clusters, 2))
    xy = centers[rng.integers(0, clusters, n)] + rng.normal(0, rng.uniform(1, 10), (n, 2))
    wh = rng.uniform(10, 80, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    return boxes, rng.uniform(0.25, 1, n).astype(np.float32), rng.integers(0, groups, n)


@pytest.mark.parametrize("seed", range(20))
def test_agrees_with_opencv_batched_nms(seed):
    rng = np.random.default_rng(seed)
    boxes, scores, groups = _clustered(rng, int(rng.integers(1, 400)), int(rng.integers(1, 40)), 3)
    ours = nms(boxes, scores, groups, 0.45)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).astype(np.float64)
    ref = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), groups.tolist(), 0.0, 0.45)
    assert sorted(ours.tolist()) == sorted(np.asarray(ref).ravel().tolist())
    assert np.all(np.diff(scores[ours]) <= 0), "kept boxes come highest score first"


@pytest.mark.parametrize("seed", range(10))
def test_matrix_and_loop_paths_agree(seed, monkeypatch):
    rng = np.random.default_rng(100 + seed)
    boxes, scores, groups = _clustered(rng, 500, 30, 2)
    fast = nms(boxes, scores, groups, 0.45)
    monkeypatch.setattr(nms_module, "MATRIX_LIMIT", 0)
    assert nms(boxes, scores, groups, 0.45).tolist() == fast.tolist()
    monkeypatch.setattr(nms_module, "MATRIX_LIMIT", 10_000)
    monkeypatch.setattr(nms_module, "MAX_ROUNDS", 1)  # forces the fallback from inside the matrix path
    assert nms(boxes, scores, groups, 0.45).tolist() == fast.tolist()
