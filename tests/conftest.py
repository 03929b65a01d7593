"""Shared fixtures: the real model and media from VIGIL_SHARED (default ../shared)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.paths import shared_dir  # noqa: E402 - needs REPO on sys.path first

SHARED = shared_dir()
MODEL = SHARED / "models" / "yolov8n.onnx"
MEDIA = SHARED / "media"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"missing {path}: set VIGIL_SHARED to the folder holding models/ and media/")
    return path


@pytest.fixture(scope="session")
def model_path() -> Path:
    return _need(MODEL)


@pytest.fixture(scope="session")
def media() -> Path:
    return _need(MEDIA)


@pytest.fixture(scope="session")
def ort_backend(model_path: Path):
    """One real ONNX Runtime session for the whole test session (loading costs ~0.3 s)."""
    from pipeline.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(model_path)
    yield backend
    backend.close()


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None):
    """Runs `python run.py ARGS` as a user would; returns the CompletedProcess."""
    import os
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def start_cli(*args: str, **popen):
    """Starts `python run.py ARGS` as run_cli runs it, without waiting: returns the Popen, stdout and
    stderr piped as text; `popen` adds Popen options (start_new_session=True for a process group)."""
    import subprocess

    return subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def _tmpfs(mount_point: Path, size: str):
    """A tmpfs of `size` mounted at `mount_point` for the duration (needs root; skips otherwise)."""
    import contextlib
    import subprocess

    @contextlib.contextmanager
    def mounted():
        mount_point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                                capture_output=True, text=True, timeout=10)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a {size} tmpfs to fill (needs root): {result.stderr.strip()}")
        try:
            yield mount_point
        finally:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=10)

    return mounted()


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 100 kB tmpfs: writes fail with ENOSPC once it is full (needs root to mount; skipped otherwise)."""
    with _tmpfs(tmp_path / "tiny", "100k") as mount_point:
        yield mount_point


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MB tmpfs to fill up (needs root to mount; skipped otherwise)."""
    with _tmpfs(tmp_path / "small", "1m") as mount_point:
        yield mount_point
