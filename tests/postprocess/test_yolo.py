import numpy as np
import pytest

from pipeline.frames import Frame, Letterbox
from pipeline.postprocess.yolo import DecodeParams, LayoutError, YoloDecoder

NC = 3
IDENTITY = Letterbox(scale_x=1.0, scale_y=1.0, pad_x=0, pad_y=0)


def frame(w=640, h=640, letterbox=IDENTITY):
    f = Frame("cam", 0, np.zeros((h, w, 3), np.uint8), 0.0, 0.0, "x")
    f.letterbox = letterbox
    return f


def v8_output(rows, anchors=16):
    """rows: (cx, cy, w, h, class, score) -> [1, 4 + NC, anchors], other anchors all zero."""
    out = np.zeros((1, 4 + NC, anchors), np.float32)
    for a, (cx, cy, w, h, cls, score) in enumerate(rows):
        out[0, :4, a] = (cx, cy, w, h)
        out[0, 4 + cls, a] = score
    return out


def v5_output(rows, anchors=16):
    """rows: (cx, cy, w, h, objectness, class, class_score) -> [1, anchors, 5 + NC]."""
    out = np.zeros((1, anchors, 5 + NC), np.float32)
    for a, (cx, cy, w, h, obj, cls, score) in enumerate(rows):
        out[0, a, :5] = (cx, cy, w, h, obj)
        out[0, a, 5 + cls] = score
    return out


def test_v8_decode_hand_computed():
    out = v8_output([
        (100, 100, 20, 40, 0, 0.9),   # kept
        (102, 100, 20, 40, 0, 0.8),   # same class, IoU ~0.82: suppressed
        (102, 100, 20, 40, 1, 0.7),   # other class: kept
        (300, 300, 10, 10, 2, 0.2),   # under conf
    ])
    dec = YoloDecoder("yolov8", out.shape[1:], NC, DecodeParams(conf=0.25, iou=0.45))
    [det] = dec.decode(out, [frame()])
    np.testing.assert_allclose(det.xyxy, [[90, 80, 110, 120], [92, 80, 112, 120]])
    np.testing.assert_allclose(det.confidence, [0.9, 0.7])
    assert det.class_id.tolist() == [0, 1]


def test_v8_confidence_is_the_best_class_score():
    out = v8_output([(100, 100, 20, 20, 0, 0.3)])
    out[0, 4 + 2, 0] = 0.6  # class 2 scores higher on the same anchor
    [det] = YoloDecoder("yolov8", out.shape[1:], NC, DecodeParams()).decode(out, [frame()])
    assert det.class_id.tolist() == [2] and det.confidence.tolist() == pytest.approx([0.6])


def test_v5_decode_multiplies_objectness_by_class_score():
    out = v5_output([
        (100, 100, 20, 40, 0.9, 1, 0.5),  # 0.45: kept
        (300, 300, 20, 40, 0.9, 0, 0.2),  # 0.18: under conf
        (500, 500, 20, 40, 0.2, 0, 1.0),  # objectness under conf
    ])
    [det] = YoloDecoder("yolov5", out.shape[1:], NC, DecodeParams(conf=0.25)).decode(out, [frame()])
    np.testing.assert_allclose(det.xyxy, [[90, 80, 110, 120]])
    assert det.confidence.tolist() == pytest.approx([0.45])
    assert det.class_id.tolist() == [1]


def test_boxes_map_back_through_the_letterbox_and_clip():
    # 1280x720 into 640x640: scale 0.5, image 640x360 at y offset 140.
    lb = Letterbox(scale_x=0.5, scale_y=0.5, pad_x=0, pad_y=140)
    out = v8_output([(320, 320, 100, 50, 0, 0.9), (630, 150, 40, 40, 1, 0.8)])
    [det] = YoloDecoder("yolov8", out.shape[1:], NC, DecodeParams()).decode(out, [frame(1280, 720, lb)])
    np.testing.assert_allclose(det.xyxy, [[540, 310, 740, 410], [1220, 0, 1280, 60]])


def test_batch_rows_go_to_their_own_frames_and_never_suppress_across_images():
    row = (100, 100, 20, 20, 0, 0.9)
    out = np.concatenate([v8_output([row]), v8_output([]), v8_output([row])])
    dets = YoloDecoder("yolov8", out.shape[1:], NC, DecodeParams()).decode(out, [frame(), frame(), frame()])
    assert [len(d) for d in dets] == [1, 0, 1]


def test_class_filter_and_max_det():
    rows = [(50 + 60 * i, 100, 20, 20, i % NC, 0.9 - 0.01 * i) for i in range(9)]
    out = v8_output(rows)
    [det] = YoloDecoder("yolov8", out.shape[1:], NC, DecodeParams(classes=frozenset({1}))).decode(out, [frame()])
    assert det.class_id.tolist() == [1, 1, 1]
    [det] = YoloDecoder("yolov8", out.shape[1:], NC, DecodeParams(max_det=4)).decode(out, [frame()])
    assert len(det) == 4 and det.confidence.tolist() == pytest.approx([0.9, 0.89, 0.88, 0.87])


def test_only_rows_of_the_batch_are_read():
    out = np.concatenate([v8_output([]), v8_output([(100, 100, 20, 20, 0, 0.9)])])
    [det] = YoloDecoder("yolov8", out.shape[1:], NC, DecodeParams()).decode(out, [frame()])
    assert len(det) == 0  # row 1 is stale data from an earlier, larger batch


def test_v5_output_with_v8_family_is_a_clear_error():
    with pytest.raises(LayoutError, match=r"expects output \[batch, 4\+nc, anchors\] = \[batch, 84, N\], "
                                          r"got \[batch, 25200, 85\]\..*set family: yolov5"):
        YoloDecoder("yolov8", (25200, 85), 80, DecodeParams())


def test_v8_output_with_v5_family_is_a_clear_error():
    with pytest.raises(LayoutError, match=r"expects output \[batch, anchors, 5\+nc\] = \[batch, N, 85\], "
                                          r"got \[batch, 84, 8400\]\..*set family: yolov8"):
        YoloDecoder("yolov5", (84, 8400), 80, DecodeParams())


def test_class_count_mismatch_is_a_clear_error():
    with pytest.raises(LayoutError, match=r"\[batch, 84, N\], got \[batch, 24, 8400\]"):
        YoloDecoder("yolov8", (24, 8400), 80, DecodeParams())


def test_unknown_family():
    with pytest.raises(LayoutError, match="unknown family 'yolox'"):
        YoloDecoder("yolox", (84, 8400), 80, DecodeParams())
