"""`vigil validate` means runnable: the checks that need the world outside the config file.

Owns opening each source once (one frame read), probing that every output can be written, and
checking that each video sink names a container (and codec) its writer handles. The config's own
rules stay in pipeline.config (schema, cross checks, files that exist); loading models stays in
pipeline.graph. `run` and `detect` call `check_outputs` before loading a model, so a bad output
costs no model load; only `validate` opens sources (a run opens them anyway, once).

Nothing here leaves a file or folder behind: writability is probed with a temporary file that is
removed at once, and folders that do not exist yet are judged by the nearest one that does.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from pipeline.config import ConfigIssue, LoadedConfig, MqttSinkConfig, VideoSinkConfig, WebhookSinkConfig
from pipeline.sinks.jsonl import STDOUT
from pipeline.sinks.mp4 import VideoFile
from pipeline.sources import SourceError, create_source

log = logging.getLogger(__name__)

# What FFmpeg picks a muxer from: the file's extension (pipeline/sinks/mp4.py writes the files).
VIDEO_CONTAINERS = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm")


def check_runnable(loaded: LoadedConfig) -> list[ConfigIssue]:
    """Everything `validate` checks beyond the config itself: sources, outputs, video codecs.
    Live cameras that cannot be opened now are logged as warnings (a run keeps reconnecting).

    Args:
        loaded: a config that passed `check_files`.

    Returns:
        The problems, each at its key and line; empty when the config can run.
    """
    issues, warnings = check_sources(loaded)
    for warning in warnings:
        log.warning("%s", warning)
    return issues + check_outputs(loaded) + check_codecs(loaded)


def check_sources(loaded: LoadedConfig) -> tuple[list[ConfigIssue], list[ConfigIssue]]:
    """Opens each camera's source once and reads one frame.

    Args:
        loaded: the config.

    Returns:
        (problems, warnings): a file or image source that cannot be read is a problem; a live
        camera (RTSP, USB) that cannot be opened right now is a warning, since a run would keep
        reconnecting to it.
    """
    issues: list[ConfigIssue] = []
    warnings: list[ConfigIssue] = []
    for i, cam in enumerate(loaded.config.cameras):
        field = next((f for f in ("path", "url", "device") if hasattr(cam.source, f)), None)
        key = ("cameras", i, "source", field) if field else ("cameras", i, "source")
        problem = _read_one_frame(cam.source, cam.id)
        if problem is None:
            continue
        if field == "path":  # a file does not come back by itself
            issues.append(loaded.issue(key, problem))
        else:
            warnings.append(loaded.issue(key, f"{problem} (a run keeps reconnecting to camera {cam.id!r})"))
    return issues, warnings


def _read_one_frame(config: object, camera_id: str) -> str | None:
    """None when the source opens and yields a frame, else why not."""
    try:
        source = create_source(config, camera_id)
    except (SourceError, ValueError) as exc:
        return str(exc)
    try:
        source.open()
        if source.read() is None:
            return f"{source.name}: no frame to read (empty?)"
    except SourceError as exc:
        return str(exc)
    finally:
        source.close()
    return None


def check_outputs(loaded: LoadedConfig) -> list[ConfigIssue]:
    """Every output file can be created (its folder, or the nearest existing one, is writable) and
    each video sink ends in a container its writer handles. Creates nothing that stays.

    Args:
        loaded: the config.

    Returns:
        The problems, at `sinks[i].path`, `outbox.path` (with a network sink) or `evidence.dir`.
    """
    cfg = loaded.config
    issues: list[ConfigIssue] = []
    for i, sink in enumerate(cfg.sinks):
        path = getattr(sink, "path", None)
        if path is None or Path(path) == STDOUT:
            continue
        if isinstance(sink, VideoSinkConfig) and Path(path).suffix.lower() not in VIDEO_CONTAINERS:
            issues.append(loaded.issue(("sinks", i, "path"), (
                f"{Path(path).name}: {Path(path).suffix or 'no extension'} is not a video container this build writes; "
                f"end the path in {', '.join(VIDEO_CONTAINERS)} (.mp4 plays everywhere)")))
            continue
        problem = next((p for p in map(_file_problem, cfg.sink_paths(sink)) if p is not None), None)
        if problem is not None:
            issues.append(loaded.issue(("sinks", i, "path"), problem))
    if any(isinstance(sink, MqttSinkConfig | WebhookSinkConfig) for sink in cfg.sinks):
        problem = _file_problem(Path(cfg.outbox.path))
        if problem is not None:
            issues.append(loaded.issue(("outbox", "path"), problem))
    if cfg.evidence is not None:
        problem = _folder_problem(Path(cfg.evidence.dir))
        if problem is not None:
            issues.append(loaded.issue(("evidence", "dir"), f"cannot write evidence in {cfg.evidence.dir}: {problem}"))
    return issues


def check_codecs(loaded: LoadedConfig) -> list[ConfigIssue]:
    """Each video sink's codec writes its container: one small frame through the sink's own
    writer (pipeline.sinks.mp4.VideoFile), in a temporary folder.

    Args:
        loaded: the config (video sinks with a known container; see `check_outputs`).

    Returns:
        The problems, at `sinks[i].codec`.
    """
    issues: list[ConfigIssue] = []
    with tempfile.TemporaryDirectory(prefix="vigil-validate-") as tmp:
        for i, sink in enumerate(loaded.config.sinks):
            if not isinstance(sink, VideoSinkConfig) or sink.path.suffix.lower() not in VIDEO_CONTAINERS:
                continue
            probe = Path(tmp) / f"probe{i}{sink.path.suffix}"
            try:
                writer = VideoFile(probe, fps=25.0, width=64, height=48, codec=sink.codec)
                try:
                    writer.write(np.zeros((48, 64, 3), np.uint8))
                finally:
                    writer.close()
            except OSError as exc:
                why = (exc.strerror or str(exc)).replace(str(probe), f"{sink.path.suffix} files")
                issues.append(loaded.issue(("sinks", i, "codec"), f"{why} (mp4v suits .mp4, MJPG .avi)"))
    return issues


def _file_problem(path: Path) -> str | None:
    """None when `path` can be (re)written as a file, else why not."""
    if path.is_dir():
        return f"cannot write {path}: it is a folder (expected a file name)"
    if path.exists():
        try:
            with path.open("ab"):  # append mode and no write: the file stays as it is
                pass
        except OSError as exc:
            return f"cannot write {path}: {exc.strerror or exc}"
        return None
    problem = _folder_problem(path.parent)
    return f"cannot write {path}: {problem}" if problem is not None else None


def _folder_problem(folder: Path) -> str | None:
    """None when files can be created in `folder` (or, if it does not exist yet, in the nearest
    existing folder above it, where the sinks would create it), else why not."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        # A real file, not os.access: root passes every permission check, but not a read-only mount.
        fd, probe = tempfile.mkstemp(prefix=".vigil-probe-", dir=existing)
    except OSError as exc:
        return f"cannot write in {existing}: {exc.strerror or exc}"
    os.close(fd)
    os.unlink(probe)
    return None
