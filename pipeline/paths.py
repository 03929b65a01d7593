"""Where the shared models and media live: one setting, VIGIL_SHARED, defaulting to ../shared
(beside the repository), so users and CI can point elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_ENV = "VIGIL_SHARED"


def shared_dir() -> Path:
    value = os.environ.get(SHARED_ENV)
    return Path(value).expanduser().resolve() if value else (REPO_ROOT.parent / "shared").resolve()


def default_model() -> Path:
    return shared_dir() / "models" / "yolov8n.onnx"
