import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.frames import Letterbox
from pipeline.preprocess import PAD_VALUE, LetterboxScratch, letterbox_geometry, letterbox_into
from pipeline.queues import Stopped
from pipeline.slots import SlotRing

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "ultralytics_reference.json").read_text())


def reference_letterbox(image: np.ndarray, size: int = 640) -> np.ndarray:
    """Ultralytics' LetterBox + predictor preprocessing, written out with copyMakeBorder."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return (padded[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)) / np.float32(255.0)


@pytest.mark.parametrize("name", ["bus.jpg", "dog.jpg", "person.jpg", "street.png"])
def test_letterbox_geometry_matches_ultralytics(name):
    ref = FIXTURE["letterbox_params"][name]
    h, w = ref["orig_hw"]
    lb, new_w, new_h = letterbox_geometry(w, h, 640, 640)
    top, _bottom, left, _right = ref["pad_top_bottom_left_right"]
    assert [new_w, new_h] == ref["new_unpad_wh"]
    assert (lb.pad_x, lb.pad_y) == (left, top)


@pytest.mark.parametrize("name", ["bus.jpg", "dog.jpg", "person.jpg", "street.png"])
def test_letterbox_into_equals_reference_exactly(media, name):
    image = cv2.imread(str(media / name))
    dst = np.full((3, 640, 640), -1.0, np.float32)  # poisoned: every element must be written
    letterbox_into(image, dst, LetterboxScratch(640, 640))
    np.testing.assert_array_equal(dst, reference_letterbox(image))


def test_reused_row_skips_padding_but_gives_the_same_tensor(media):
    scratch = LetterboxScratch(640, 640)
    a = cv2.imread(str(media / "dog.jpg"))
    b = np.ascontiguousarray(a[::-1])  # same size, different content
    dst = np.empty((3, 640, 640), np.float32)
    _, rect = letterbox_into(a, dst, scratch)
    letterbox_into(b, dst, scratch, pad_ready=rect)
    np.testing.assert_array_equal(dst, reference_letterbox(b))
    # A different size in the same row must rewrite the padding.
    c = cv2.imread(str(media / "bus.jpg"))
    letterbox_into(c, dst, scratch, pad_ready=rect)
    np.testing.assert_array_equal(dst, reference_letterbox(c))


def test_image_already_at_input_size_is_copied_not_resized():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (640, 640, 3), dtype=np.uint8)
    dst = np.empty((3, 640, 640), np.float32)
    lb, rect = letterbox_into(image, dst, LetterboxScratch(640, 640))
    assert rect == (0, 0, 640, 640)
    assert (lb.scale_x, lb.scale_y, lb.pad_x, lb.pad_y) == (1.0, 1.0, 0, 0)
    np.testing.assert_array_equal(dst, reference_letterbox(image))


@pytest.mark.parametrize("size", [(1080, 1920), (480, 854), (1080, 810), (731, 1441), (100, 3000), (3000, 100)])
def test_letterbox_round_trip_of_boxes(size):
    h, w = size
    lb, _, _ = letterbox_geometry(w, h, 640, 640)
    boxes = np.array([[0, 0, w, h], [w * 0.25, h * 0.1, w * 0.5, h * 0.9], [1, 2, 3, 4]], np.float32)
    back = lb.to_input(boxes)
    assert back.min() >= 0 and back[:, 0::2].max() <= 640 and back[:, 1::2].max() <= 640
    lb.to_original(back, w, h)
    np.testing.assert_allclose(back, boxes, atol=1e-3 * max(w, h) / 640 + 1e-3)


def test_to_original_clips_to_frame():
    lb = Letterbox(scale_x=0.5, scale_y=0.5, pad_x=0, pad_y=80)
    boxes = np.array([[-10, 70, 700, 600]], np.float32)
    lb.to_original(boxes, 1280, 960)
    np.testing.assert_array_equal(boxes, [[0, 0, 1280, 960]])


def test_letterbox_rejects_wrong_image_type():
    with pytest.raises(ValueError, match=r"image must be HxWx3 uint8 BGR, got shape \(10, 10\)"):
        letterbox_into(np.zeros((10, 10), np.uint8), np.empty((3, 640, 640), np.float32), LetterboxScratch(640, 640))


def test_slot_ring_hands_out_each_slot_once_and_waits_for_release():
    ring = SlotRing.allocate(2, 1, {"x": ((3, 8, 8), np.float32)}, {"y": ((4,), np.float32)})
    stop = threading.Event()
    a, b = ring.acquire(stop), ring.acquire(stop)
    assert {a.index, b.index} == {0, 1}
    assert a.inputs["x"].shape == (1, 3, 8, 8) and a.outputs["y"].shape == (1, 4)
    threading.Timer(0.1, ring.release, args=(a,)).start()
    assert ring.acquire(stop) is a  # waited for the release
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(Stopped):
        ring.acquire(stop)
    ring.release(b)
    with pytest.raises(RuntimeError, match="released twice"):
        ring.release(b)


def test_slot_ring_needs_two_slots():
    with pytest.raises(ValueError, match="at least 2 slots"):
        SlotRing.allocate(1, 1, {"x": ((1,), np.float32)}, {})
