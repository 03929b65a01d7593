#!/usr/bin/env python
"""Record what Ultralytics' own predict pipeline outputs for the shared yolov8n.onnx.

Run with a separate virtualenv that has ultralytics + CPU torch (NOT the project venv):

    python3.11 -m venv /tmp/ulvenv
    /tmp/ulvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/ulvenv/bin/pip install --no-deps ultralytics
    /tmp/ulvenv/bin/pip install numpy matplotlib opencv-python pillow pyyaml requests psutil \
        polars ultralytics-thop onnxruntime onnx
    /tmp/ulvenv/bin/python tests/tools/make_ultralytics_reference.py

Writes tests/fixtures/ultralytics_reference.json, which the numpy postprocessing tests compare
against without needing torch.

Note on letterboxing: yolov8n.onnx has a *dynamic batch* axis but a fixed 640x640 H/W. Ultralytics
(8.4.x) treats any dynamic output axis as "dynamic" and, because Model.predict() defaults to
rect=True, letterboxes to the minimum stride-32 rectangle (e.g. 480x640 for bus.jpg), which this
graph rejects. So the reference is produced with rect=False (full 640x640 square letterbox, the
shape the model actually takes), and cross-checked against yolov8n_b1.onnx (static batch 1, same
weights) run with Ultralytics' defaults, which picks the square letterbox by itself.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # never try to download anything

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("VIGIL_SHARED", "../shared"))
if not SHARED.is_absolute():
    SHARED = (REPO / SHARED).resolve()
MODEL = SHARED / "models" / "yolov8n.onnx"
MODEL_B1 = SHARED / "models" / "yolov8n_b1.onnx"
MEDIA = SHARED / "media"
IMAGES = ["bus.jpg", "dog.jpg", "person.jpg", "street.png"]
OUT = REPO / "tests" / "fixtures" / "ultralytics_reference.json"

CONF, IOU, IMGSZ, MAX_DET = 0.25, 0.45, 640, 300

LETTERBOX_NOTE = (
    "Ultralytics {ver}, predict on yolov8n.onnx with rect=False (square letterbox; the default rect=True "
    "picks a stride-32 minimum rectangle because the ONNX batch axis is dynamic, which this fixed-640 graph "
    "rejects). Preprocess (data/augment.py LetterBox, auto=False, center=True, scaleup=True): "
    "r=min(640/h,640/w); new_unpad=(max(round(w*r),1), max(round(h*r),1)) [python round = banker's]; "
    "dw=(640-new_w)/2, dh=(640-new_h)/2; top=round(dh-0.1), bottom=round(dh+0.1), left=round(dw-0.1), "
    "right=round(dw+0.1); cv2.resize(INTER_LINEAR) only if size changes; cv2.copyMakeBorder constant 114; "
    "BGR->RGB, /255 float32, NCHW. NMS (utils/nms.py non_max_suppression): candidates where max class "
    "score > conf (strict); boxes cx,cy,w,h -> x1=cx-w/2..x2=cx+w/2; best class only (multi_label=False), "
    "conf=max score, cls=argmax; if >30000 keep top 30000 by conf; class-aware via offset boxes + cls*max_wh "
    "(max_wh=7680); torchvision.ops.nms (suppress IoU > iou, keep <=; area=(x2-x1)*(y2-y1), no +1) if "
    "torchvision is imported else TorchNMS.nms (same semantics); keep[:max_det] in descending score order. "
    "Postprocess (utils/ops.py scale_boxes, ratio_pad=None): gain=min(640/h0,640/w0); new_h,new_w=max(round(h0*gain),1),"
    "max(round(w0*gain),1); gain_y=new_h/h0, gain_x=new_w/w0 (per-axis!); pad_x=round((640-new_w)/2-0.1), "
    "pad_y=round((640-new_h)/2-0.1); x=(x-pad_x)/gain_x, y=(y-pad_y)/gain_y; then clip_boxes clamps x to "
    "[0,w0] and y to [0,h0] (clipped, not w0-1)."
)


def _det_list(result, names):
    boxes = result.boxes
    xyxy = boxes.xyxy.cpu().numpy().tolist()
    conf = boxes.conf.cpu().numpy().tolist()
    cls = boxes.cls.cpu().numpy().astype(int).tolist()
    dets = [
        {
            "class_id": int(c),
            "class_name": names[int(c)],
            "confidence": round(float(s), 6),
            "box": [round(float(v), 4) for v in b],
        }
        for b, s, c in zip(xyxy, conf, cls, strict=True)
    ]
    dets.sort(key=lambda d: d["confidence"], reverse=True)
    return dets


def _run(model_path: Path, shapes: list, **extra):
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionPredictor

    orig_pre = DetectionPredictor.preprocess

    def preprocess(self, im):
        t = orig_pre(self, im)
        shapes.append(list(t.shape))
        return t

    DetectionPredictor.preprocess = preprocess
    try:
        model = YOLO(str(model_path), task="detect")
        out = {}
        for name in IMAGES:
            res = model.predict(
                str(MEDIA / name), imgsz=IMGSZ, conf=CONF, iou=IOU, max_det=MAX_DET, device="cpu", verbose=False,
                **extra,
            )
            out[name] = _det_list(res[0], res[0].names)
        return out
    finally:
        DetectionPredictor.preprocess = orig_pre


def main() -> int:
    import cv2
    import ultralytics
    from ultralytics.data.augment import LetterBox

    print(f"ultralytics {ultralytics.__version__}, model {MODEL}")

    # 1) Plain call exactly as in the brief (default rect=True) -- document what happens.
    default_note = "ok"
    try:
        _run(MODEL, [])
    except Exception as e:  # noqa: BLE001 - onnxruntime InvalidArgument expected
        default_note = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    print("default (rect=True) on yolov8n.onnx:", default_note)

    # 2) The reference: square letterbox forced with rect=False.
    shapes: list = []
    images = _run(MODEL, shapes, rect=False)
    # strict=False: `shapes` has one entry per preprocess call, which is ultralytics' business, not one per image.
    input_shapes = {n: s for n, s in zip(IMAGES, shapes, strict=False)}
    print("preprocessed tensor shapes:", input_shapes)
    nms_impl = "torchvision.ops.nms" if "torchvision" in sys.modules else "TorchNMS.nms"

    # 3) Cross-check: static-batch twin with Ultralytics' defaults must give the same detections.
    shapes_b1: list = []
    images_b1 = _run(MODEL_B1, shapes_b1)
    same = all(
        len(images[n]) == len(images_b1[n])
        and all(
            a["class_id"] == b["class_id"]
            and abs(a["confidence"] - b["confidence"]) < 1e-4
            and max(abs(x - y) for x, y in zip(a["box"], b["box"], strict=True)) < 1e-2
            for a, b in zip(images[n], images_b1[n], strict=True)
        )
        for n in IMAGES
    )
    print("yolov8n_b1.onnx (defaults) shapes:", shapes_b1, "identical detections:", same)

    letterbox_params = {}
    for name in IMAGES:
        img = cv2.imread(str(MEDIA / name))
        p = LetterBox((IMGSZ, IMGSZ), auto=False, stride=32).get_params({"img": img})
        letterbox_params[name] = {
            "orig_hw": list(p["orig_shape"]),
            "ratio": p["ratio"][0],
            "new_unpad_wh": list(p["new_unpad"]),
            "pad_top_bottom_left_right": [p["top"], p["bottom"], p["left"], p["right"]],
        }

    ref = {
        "ultralytics_version": ultralytics.__version__,
        "model": MODEL.name,
        "conf": CONF,
        "iou": IOU,
        "imgsz": IMGSZ,
        "max_det": MAX_DET,
        "predict_kwargs": {"rect": False},
        "input_shape": shapes[0],
        "input_shapes": input_shapes,
        "default_rect_true_result": default_note,
        "cross_check_yolov8n_b1_default_args_identical": same,
        "nms_impl": nms_impl,
        "letterbox": LETTERBOX_NOTE.format(ver=ultralytics.__version__),
        "letterbox_params": letterbox_params,
        "images": images,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(ref, indent=1) + "\n")
    print(f"wrote {OUT}")
    for name, dets in images.items():
        print(f"  {name}: {dict(Counter(d['class_name'] for d in dets))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
