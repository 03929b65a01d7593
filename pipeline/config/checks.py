"""Checks between sections, after each section validated on its own (schema.py).

Owns `cross_check` (ids unique, references to models, zones, lines and cameras that exist, outputs
that do not collide and replace no input, live cameras not blocking, live-only settings on live
cameras) and `check_files` (the files a config names exist and no output is an input under another
name, for `validate`, `run` and `detect`). Issues come from `LoadedConfig.issue`, so they carry the
key's line (or the command-line option that set the key).

cross_check must not touch the file system: load_config runs it on every (re)load; it compares
paths as written (made absolute). Only check_files looks at files, and only to stat them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.config.errors import ConfigIssue, LoadedConfig, did_you_mean, format_path
from pipeline.config.rules import LineCrossingRule
from pipeline.config.schema import FileSourceConfig, ImagesSourceConfig
from pipeline.config.sinks import MqttSinkConfig, VideoSinkConfig, WebhookSinkConfig, ZmqSinkConfig
from pipeline.paths import SHARED_ENV

Key = tuple[Any, ...]


def cross_check(loaded: LoadedConfig) -> list[ConfigIssue]:
    """Rules between sections: unique ids, references that exist, outputs that do not collide."""
    cfg = loaded.config
    issues: list[ConfigIssue] = []
    for section, items in (("cameras", cfg.cameras), ("models", cfg.models)):
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.id in seen:
                issues.append(loaded.issue((section, i, "id"), f"duplicate id {item.id!r} (also {section}[{seen[item.id]}])"))
            else:
                seen[item.id] = i
    model_ids = [m.id for m in cfg.models]
    camera_ids = [c.id for c in cfg.cameras]
    for i, cam in enumerate(cfg.cameras):
        if cam.model not in model_ids:
            issues.append(loaded.issue(("cameras", i, "model"),
                                       f"camera {cam.id!r} refers to unknown model {cam.model!r}"
                                       f"{did_you_mean(cam.model, model_ids)}; models are {model_ids}"))
    for i, cam in enumerate(cfg.cameras):
        if cam.max_frame_age_ms is not None and not cam.live:
            # On a file it silently drops most frames (they all wait longer than a live bound).
            issues.append(loaded.issue(("cameras", i, "max_frame_age_ms"),
                                       f"camera {cam.id!r} is not live: max_frame_age_ms applies to live sources only "
                                       f"(rtsp, usb, a video file with realtime: true (detect: --realtime), synthetic with "
                                       f"live: true); a file loses no frame, so remove it or pace the file"))
        if cam.live and cam.queue.policy == "block":
            issues.append(loaded.issue(("cameras", i, "queue", "policy"),
                                       f"camera {cam.id!r} is live: its queue must be drop_oldest (a blocked reader lets the "
                                       f"decoder's buffer fill with stale frames), got block"))
        for section in ("zones", "lines", "rules"):
            seen_ids: dict[str, int] = {}
            for j, item in enumerate(getattr(cam, section)):
                if item.id in seen_ids:
                    issues.append(loaded.issue(("cameras", i, section, j, "id"),
                                               f"duplicate id {item.id!r} (also {section}[{seen_ids[item.id]}])"))
                seen_ids.setdefault(item.id, j)
        for j, ln in enumerate(cam.lines):
            if tuple(ln.points[0]) == tuple(ln.points[1]):
                issues.append(loaded.issue(("cameras", i, "lines", j, "points"),
                                           f"line {ln.id!r} has two equal points: it can never be crossed"))
        zone_ids, line_ids = [z.id for z in cam.zones], [ln.id for ln in cam.lines]
        for j, rule in enumerate(cam.rules):
            ref, known = ("line", line_ids) if isinstance(rule, LineCrossingRule) else ("zone", zone_ids)
            target = getattr(rule, ref, None)
            if target is not None and target not in known:
                issues.append(loaded.issue(("cameras", i, "rules", j, ref),
                                           f"rule {rule.id!r} of camera {cam.id!r} refers to unknown {ref} {target!r}"
                                           f"{did_you_mean(target, known)}; {ref}s are {known}"))
    used = {c.model for c in cfg.cameras}
    for i, model in enumerate(cfg.models):
        if model.id not in used:
            issues.append(loaded.issue(("models", i, "id"),
                                       f"model {model.id!r} is fed by no camera (set model: {model.id} on a camera, or remove it)"))
    if any(isinstance(sink, MqttSinkConfig) for sink in cfg.sinks):
        # PREFIX/CAMERA/ZONE/count would read as PREFIX/CAMERA/events/RULE for a rule named `count`.
        for i, cam in enumerate(cfg.cameras):
            for j, zone in enumerate(cam.zones):
                if zone.id == "events":
                    issues.append(loaded.issue(("cameras", i, "zones", j, "id"),
                                               "a zone may not be named 'events' with an mqtt sink: its count topic "
                                               f"{cam.id}/events/count would look like the events of a rule 'count'"))
    outputs: dict[str, int] = {}
    for i, sink in enumerate(cfg.sinks):
        for j, cam_id in enumerate(sink.cameras or []):
            if cam_id in (sink.cameras or [])[:j]:
                issues.append(loaded.issue(("sinks", i, "cameras", j), f"camera {cam_id!r} is listed twice"))
            elif cam_id not in camera_ids:
                issues.append(loaded.issue(("sinks", i, "cameras", j),
                                           f"unknown camera {cam_id!r}{did_you_mean(cam_id, camera_ids)}; cameras are {camera_ids}"))
        if isinstance(sink, ZmqSinkConfig):
            if sink.endpoint in outputs:
                issues.append(loaded.issue(("sinks", i, "endpoint"), f"same endpoint as sinks[{outputs[sink.endpoint]}]: {sink.endpoint}"))
            outputs.setdefault(sink.endpoint, i)
            continue
        if isinstance(sink, MqttSinkConfig | WebhookSinkConfig):
            # The backlog in the outbox is named after the destination: two sinks of one name would share it.
            field, key = ("client_id", f"mqtt:{sink.client_id}@{sink.host}:{sink.port}") if isinstance(sink, MqttSinkConfig) \
                else ("url", f"webhook:{sink.url}")
            if key in outputs:
                issues.append(loaded.issue(("sinks", i, field), f"same destination as sinks[{outputs[key]}]"
                                           + (" (give each a client_id of its own)" if field == "client_id" else "")))
            outputs.setdefault(key, i)
            continue
        cameras = len(cfg.sink_cameras(sink))
        if isinstance(sink, VideoSinkConfig) and cameras > 1 and "{camera}" not in str(sink.path):
            issues.append(loaded.issue(("sinks", i, "path"),
                                       f"a video sink for {cameras} cameras needs '{{camera}}' in its path "
                                       f"(one file per camera), got {str(sink.path)!r}"))
        key = str(sink.path)
        if key in outputs:
            issues.append(loaded.issue(("sinks", i, "path"), f"same output file as sinks[{outputs[key]}]: {key}"))
        outputs.setdefault(key, i)
    return issues + _outputs_replacing_inputs(loaded)


def _norm(path: Path) -> str:
    return os.path.normpath(os.path.abspath(path))  # `a/../b` and `./b` are b; no file system access


def _outputs(loaded: LoadedConfig) -> Iterator[tuple[Key, Path]]:
    """(key, file) for every file a sink writes; a video sink's `{camera}` filled in per camera."""
    cfg = loaded.config
    for i, sink in enumerate(cfg.sinks):
        if getattr(sink, "path", None) is None:  # network sinks (zmq, ...) write no file
            continue
        for path in cfg.sink_paths(sink):
            yield ("sinks", i, "path"), path


def _inputs(loaded: LoadedConfig) -> Iterator[tuple[Key, Path]]:
    """(key, file) for every file the run reads: sources, models and the config file itself."""
    for i, cam in enumerate(loaded.config.cameras):
        if isinstance(cam.source, (FileSourceConfig, ImagesSourceConfig)):
            yield ("cameras", i, "source", "path"), cam.source.path
    for i, model in enumerate(loaded.config.models):
        if model.path is not None:  # backend triton may have none: its model is on the server
            yield ("models", i, "path"), model.path
    if loaded.config_file is not None:
        yield (), loaded.config_file


def _input_name(loaded: LoadedConfig, key: Key) -> str:
    return loaded.key_names.get(key, format_path(key)) if key else "the config file itself"


def _outputs_replacing_inputs(loaded: LoadedConfig) -> list[ConfigIssue]:
    """An output equal to an input would replace it (a source video, the model, the config); one in
    the evidence folder is in the way of the evidence stage's own files and its disk cap."""
    issues = []
    inputs = {_norm(path): key for key, path in _inputs(loaded)}
    evidence = loaded.config.evidence
    folder = _norm(evidence.dir) if evidence is not None else None
    for key, path in _outputs(loaded):
        out = _norm(path)
        if out in inputs:
            issues.append(loaded.issue(key, f"output {out} would replace {_input_name(loaded, inputs[out])}, which this "
                                            f"config reads: write the output elsewhere"))
        elif folder is not None and os.path.commonpath([out, folder]) == folder:
            issues.append(loaded.issue(key, f"output {out} is inside evidence.dir ({folder}), which holds the evidence "
                                            f"stage's own files (and its disk cap deletes old ones): write it elsewhere"))
    return issues


def check_files(loaded: LoadedConfig) -> list[ConfigIssue]:
    """Every input path the config names exists (sources, models)."""
    issues = []
    for i, cam in enumerate(loaded.config.cameras):
        src = cam.source
        if isinstance(src, FileSourceConfig) and not src.path.is_file():
            issues.append(loaded.issue(("cameras", i, "source", "path"), f"video file not found: {src.path}"))
        if isinstance(src, ImagesSourceConfig) and not src.path.exists():
            issues.append(loaded.issue(("cameras", i, "source", "path"), f"image file or directory not found: {src.path}"))
    for i, model in enumerate(loaded.config.models):
        if model.path is not None and not model.path.is_file():
            issues.append(loaded.issue(("models", i, "path"),
                                       f"model file not found: {model.path} (put the ONNX file there, or set {SHARED_ENV} "
                                       f"to the folder holding models/)"))
    for i, sink in enumerate(loaded.config.sinks):
        if isinstance(sink, MqttSinkConfig):
            for field in ("ca", "cert", "key"):
                path = getattr(sink, field)
                if path is not None and not path.is_file():
                    issues.append(loaded.issue(("sinks", i, field), f"TLS file not found: {path}"))
    return issues + _outputs_linked_to_inputs(loaded)


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except (OSError, ValueError):  # missing (most outputs, before the first run) or unusable: nothing to compare
        return None
    return info.st_dev, info.st_ino


def _outputs_linked_to_inputs(loaded: LoadedConfig) -> list[ConfigIssue]:
    """Outputs that are an input under another name (a symbolic or hard link): cross_check compares
    names only."""
    inputs = {}
    for key, path in _inputs(loaded):
        file_id = _file_id(path)
        if file_id is not None:
            inputs.setdefault(file_id, key)
    issues = []
    for key, path in _outputs(loaded):
        file_id = _file_id(path)
        if file_id is not None and file_id in inputs:
            issues.append(loaded.issue(key, f"output {path} is {_input_name(loaded, inputs[file_id])} under another name "
                                            f"(a link), which this config reads: writing would replace it"))
    return issues
