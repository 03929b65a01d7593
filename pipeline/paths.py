"""Where the shared models and media live: one setting, VIGIL_SHARED, defaulting to ../shared
(beside the repository), so users and CI can point elsewhere.

It only computes paths: nothing here checks that they exist or creates them.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_ENV = "VIGIL_SHARED"


def shared_dir() -> Path:
    """The shared folder: $VIGIL_SHARED (with `~` expanded) when set, else ../shared beside the repository."""
    value = os.environ.get(SHARED_ENV)
    return Path(value).expanduser().resolve() if value else (REPO_ROOT.parent / "shared").resolve()


def default_model() -> Path:
    """The model `detect` and `bench` use without `--model`: models/yolov8n.onnx in the shared folder."""
    return shared_dir() / "models" / "yolov8n.onnx"
