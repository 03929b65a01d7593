"""`vigil detect`: the one-camera, one-model config that the command line describes, without YAML.

Owns turning `detect`'s arguments into a validated LoadedConfig whose errors name the options
(`--conf`, `SOURCE`) instead of YAML keys. It must not load models or run anything: pipeline.cli
runs the result like any config.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, ConfigIssue, LoadedConfig, config_from_data
from pipeline.paths import default_model
from pipeline.sinks.jsonl import STDOUT
from pipeline.sources.images import IMAGE_SUFFIXES


def arg_issue(key: str, message: str) -> ConfigIssue:
    """A config issue about a command-line option or argument (no file, no line).

    Args:
        key: the option as the user typed it, e.g. `--conf` or `SOURCE`.
        message: what was expected and what arrived.
    """
    return ConfigIssue("error", 0, key, message)


def detect_config(args: argparse.Namespace) -> LoadedConfig:
    """The one-camera, one-model config that `detect`'s arguments describe.

    The source kind follows SOURCE: an rtsp:// URL, /dev/videoN, an image or directory of images,
    else a video file. Validation errors name the option (`--conf`, `SOURCE`) instead of a YAML key.

    Raises:
        ConfigError: SOURCE does not exist, `--realtime` with images, or a value out of bounds.
    """
    source: dict[str, Any]
    camera: dict[str, Any] = {"id": "cam0", "model": "model"}
    if args.source.startswith(("rtsp://", "rtsps://")):
        source = {"type": "rtsp", "url": args.source, "transport": args.transport}
    elif args.source.startswith("/dev/video"):
        source = {"type": "usb", "device": args.source}
    else:
        source_path = Path(args.source)
        if not source_path.exists():
            raise ConfigError([arg_issue("SOURCE", f"not found: {source_path} (expected a video file, an image file, a "
                                                    f"directory of images, an rtsp:// URL or /dev/videoN)")])
        is_images = source_path.is_dir() or source_path.suffix.lower() in IMAGE_SUFFIXES
        if args.realtime and is_images:
            raise ConfigError([arg_issue("--realtime", f"paces video files only, got images {source_path}")])
        source = {"type": "images" if is_images else "file", "path": str(source_path)}
        if args.realtime:
            source["realtime"] = True
    if args.max_frame_age_ms is not None:
        camera["max_frame_age_ms"] = args.max_frame_age_ms
    if args.detect_fps is not None:
        camera["detect_fps"] = args.detect_fps
    if args.motion:
        camera["motion"] = {"enabled": True}
    camera["source"] = source
    model_path = args.model or default_model()
    jsonl = STDOUT if str(args.jsonl) == "-" else args.jsonl  # `--jsonl -`: records on stdout
    sinks: list[dict[str, Any]] = [{"type": "jsonl", "path": str(jsonl)}]
    if args.video is not None:
        sinks.append({"type": "video", "path": str(args.video)})
    model: dict[str, Any] = {"id": "model", "path": str(model_path), "family": args.family, "conf": args.conf,
                             "iou": args.iou, "batch": args.batch, "backend": args.backend, "precision": args.precision}
    if args.classes:
        model["classes"] = [int(c) if c.isdigit() else c for c in args.classes]
    data: dict[str, Any] = {"cameras": [camera], "models": [model], "sinks": sinks}
    if args.metrics_port is not None:
        data["metrics"] = {"port": args.metrics_port}
    return config_from_data(data, origin="error", base_dir=Path.cwd(), key_names={
        ("models", 0, "conf"): "--conf", ("models", 0, "iou"): "--iou", ("models", 0, "batch"): "--batch",
        ("models", 0, "family"): "--family", ("models", 0, "path"): "--model", ("sinks", 0, "path"): "--jsonl",
        ("models", 0, "backend"): "--backend", ("models", 0, "precision"): "--precision",
        ("sinks", 1, "path"): "--video", ("cameras", 0, "source", "path"): "SOURCE",
        ("cameras", 0, "source", "url"): "SOURCE", ("cameras", 0, "source", "device"): "SOURCE",
        ("cameras", 0, "max_frame_age_ms"): "--max-frame-age-ms", ("metrics", "port"): "--metrics-port",
        ("cameras", 0, "detect_fps"): "--detect-fps",
    } | {("models", 0, "classes", i): "--classes" for i in range(len(args.classes or []))})
