#!/usr/bin/env bash
# One-command set-up: a virtualenv in .venv with Vigil installed in editable mode with its runtime,
# test and lint dependencies (pyproject.toml's `dev` extra; gives .venv/bin/vigil), and a check that
# the default model is where the demo expects it.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"

shared="${VIGIL_SHARED:-$(cd .. && pwd)/shared}"
model="$shared/models/yolov8n.onnx"
if [ -f "$model" ]; then
  echo "model: $model"
else
  cat >&2 <<MSG
No model at $model.
Put a YOLOv8n ONNX export there (or set VIGIL_SHARED to a folder with models/yolov8n.onnx), e.g.:
  pip install ultralytics && yolo export model=yolov8n.pt format=onnx dynamic=True
  mkdir -p "$shared/models" && mv yolov8n.onnx "$shared/models/"
MSG
fi
echo "ready: .venv/bin/vigil run configs/demo.yaml  (or: .venv/bin/python run.py run configs/demo.yaml)"
