"""The YAML camera graph as pydantic models, and load_config() with `file:line: key: message` errors.

One model per YAML section, `extra="forbid"` so a typo fails, bounds on every number, `type:`
selecting the source or sink class. Errors name the file, the line, the dotted key and what was
expected against what arrived, with a "did you mean" for misspelt keys and names.

`${VAR}` and `${VAR:-default}` in any string are replaced from the environment before validation
(for secrets such as camera passwords); VIGIL_SHARED defaults to ../shared. Relative paths are
relative to the config file's folder.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.paths import SHARED_ENV, shared_dir
from pipeline.redact import mask_url

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
FOURCC_PATTERN = r"^[A-Za-z0-9 ]{4}$"
RTSP_URL_PATTERN = r"^rtsps?://\S+$"
# max_frame_age_ms of live cameras that set none: well above one CPU batch, far below "stale".
DEFAULT_LIVE_MAX_AGE_MS = 2000.0
# What each pattern means, for error messages (a regex is no help to a user).
PATTERN_MEANING = {
    ID_PATTERN: "an id of letters, digits, '_', '.' or '-', starting with a letter or digit, at most 64 long",
    FOURCC_PATTERN: "a 4-character FourCC codec code such as mp4v, avc1 or MJPG",
    RTSP_URL_PATTERN: "an rtsp:// or rtsps:// URL without spaces, e.g. rtsp://${CAM_USER}:${CAM_PASSWORD}@10.0.0.5:554/stream",
}


# --------------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file  # line 0: not from a file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """One or more problems in a config file; str() is one `file:line: key: message` per line
    (the key is `yaml` for syntax errors and `config` for the file as a whole)."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.file, i.line))
        super().__init__("\n".join(str(i) for i in self.issues))


# --------------------------------------------------------------------------------------------------
# Schema


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    return (Path(base) / value).resolve() if base is not None and not value.is_absolute() else value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSourceConfig(Strict):
    type: Literal["file"]
    path: ConfigPath
    realtime: bool = False  # pace at the file's native fps and treat it as a live camera
    loop: bool = False
    fps: float | None = Field(None, gt=0, le=1000)  # pacing rate when realtime; default: the file's
    max_frames: int | None = Field(None, ge=1)  # stop after this many frames


class ImagesSourceConfig(Strict):
    type: Literal["images"]
    path: ConfigPath  # an image file or a directory of images


class SyntheticSourceConfig(Strict):
    type: Literal["synthetic"]
    width: int = Field(640, ge=16, le=8192)
    height: int = Field(480, ge=16, le=8192)
    fps: float = Field(25.0, gt=0, le=1000)
    frames: int | None = Field(None, ge=1)
    live: bool = False


class RtspSourceConfig(Strict):
    type: Literal["rtsp"]
    # Credentials may come from the environment: rtsp://${CAM_USER}:${CAM_PASSWORD}@10.0.0.5/stream.
    # They are masked (rtsp://***:***@...) wherever the URL is printed.
    url: str = Field(pattern=RTSP_URL_PATTERN)
    transport: Literal["tcp", "udp"] = "tcp"  # tcp: no lost packets/grey smears; udp: lower latency on a clean LAN
    open_timeout_s: float = Field(5.0, gt=0, le=120)  # connect + DESCRIBE/SETUP/PLAY


class UsbSourceConfig(Strict):
    type: Literal["usb"]
    device: str | StrictInt = Field("/dev/video0")  # /dev/videoN, or the index N
    width: int | None = Field(None, ge=16, le=8192)  # ask the camera for this mode; default: its own
    height: int | None = Field(None, ge=16, le=8192)
    fps: float | None = Field(None, gt=0, le=1000)
    fourcc: str | None = Field(None, pattern=FOURCC_PATTERN)  # e.g. MJPG: most USB cameras reach full fps only so
    open_timeout_s: float = Field(5.0, gt=0, le=120)


SourceConfig = Annotated[
    Union[FileSourceConfig, ImagesSourceConfig, SyntheticSourceConfig, RtspSourceConfig, UsbSourceConfig],
    Field(discriminator="type"),
]


class QueueConfig(Strict):
    size: int | None = Field(None, ge=1, le=1024)  # default: 8 for files, 2 for live sources (fresh frames)
    # block: nothing lost (files); drop_oldest: latency bounded (live). Default follows the source.
    policy: Literal["block", "drop_oldest"] | None = None


class ReconnectConfig(Strict):
    """Exponential backoff with jitter between attempts; each camera on its own."""

    initial_delay_s: float = Field(0.5, gt=0, le=600)
    max_delay_s: float = Field(3.0, gt=0, le=3600)
    jitter: float = Field(0.2, ge=0, le=1)  # each delay is drawn from [d * (1 - jitter), d]
    max_attempts: int | None = Field(None, ge=1)  # consecutive failures before `failed`; default: forever

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectConfig:
        if self.max_delay_s < self.initial_delay_s:
            raise ValueError(f"max_delay_s ({self.max_delay_s}) must be >= initial_delay_s ({self.initial_delay_s})")
        return self


Point = tuple[float, float]
ClassList = list[StrictInt | str]


class ZoneConfig(Strict):
    id: Identifier
    points: list[Point] = Field(min_length=3)  # polygon corners
    units: Literal["pixels", "normalized"] = "pixels"  # normalized: fractions of width/height


class LineConfig(Strict):
    id: Identifier
    points: tuple[Point, Point]  # a → b; `in`: from the left-hand to the right-hand side walking a→b
    units: Literal["pixels", "normalized"] = "pixels"


class RuleBase(Strict):
    id: Identifier
    classes: ClassList | None = Field(None, min_length=1)  # names or ids; default every class
    anchor: Literal["bottom_center", "center", "top_center"] = "bottom_center"
    clear_seconds: float = Field(1.0, ge=0, le=3600)  # condition false this long ends an incident
    cooldown_seconds: float = Field(10.0, ge=0, le=86400)  # no new incident for the same subject before
    update_seconds: float | None = Field(None, gt=0, le=3600)  # `update` events while active


class ZoneIntrusionRule(RuleBase):
    type: Literal["zone_intrusion"]
    zone: str
    min_seconds: float = Field(0.5, ge=0, le=3600)


class DwellRule(RuleBase):
    type: Literal["dwell"]
    zone: str
    max_seconds: float = Field(gt=0, le=86400)


class LineCrossingRule(RuleBase):
    type: Literal["line_crossing"]
    line: str
    direction: Literal["in", "out", "both"] = "both"


class ProximityRule(RuleBase):
    type: Literal["proximity"]
    classes_b: ClassList = Field(min_length=1)
    max_distance: float = Field(gt=0)
    units: Literal["pixels", "box_height"] = "box_height"  # box_height: multiples of the A box's height
    min_seconds: float = Field(0.5, ge=0, le=3600)


class CountRule(RuleBase):
    type: Literal["count"]
    zone: str
    max_count: int = Field(ge=0)
    min_seconds: float = Field(1.0, ge=0, le=3600)


RuleConfig = Annotated[
    Union[ZoneIntrusionRule, DwellRule, LineCrossingRule, ProximityRule, CountRule], Field(discriminator="type")
]


class TrackerSettings(Strict):
    high_score: float = Field(0.5, gt=0, lt=1)
    low_score: float = Field(0.1, gt=0, lt=1)
    new_track_score: float = Field(0.6, gt=0, le=1)
    lost_timeout_s: float = Field(1.0, gt=0, le=60)

    @model_validator(mode="after")
    def _ordered(self) -> TrackerSettings:
        if not self.low_score <= self.high_score <= self.new_track_score:
            raise ValueError(f"need low_score <= high_score <= new_track_score, got {self.low_score}, "
                             f"{self.high_score} and {self.new_track_score}")
        return self


class CameraConfig(Strict):
    id: Identifier
    source: SourceConfig
    model: str
    queue: QueueConfig = QueueConfig()
    zones: list[ZoneConfig] = Field(default_factory=list)
    lines: list[LineConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)  # tracking runs when a camera has rules
    tracker: TrackerSettings = TrackerSettings()
    # Live sources only (rtsp, usb, realtime files, live synthetic):
    reconnect: ReconnectConfig = ReconnectConfig()
    stall_timeout_s: float = Field(3.0, gt=0, le=600)  # no frame this long → stalled → reconnect
    # Frames arrive but the picture (or the stream's timestamps) has not changed this long → frozen
    # → reconnect. null turns it off (e.g. a camera on a scene that is truly static).
    freeze_timeout_s: float | None = Field(10.0, gt=0, le=86400)
    # A frame older than this when a stage picks it up is dropped and counted (reason too_old), so
    # latency cannot build up. Default: 2000 for live sources, none for files (nothing may be lost).
    max_frame_age_ms: float | None = Field(None, gt=0, le=3_600_000)

    @property
    def live(self) -> bool:
        s = self.source
        return (
            isinstance(s, (RtspSourceConfig, UsbSourceConfig))
            or (isinstance(s, FileSourceConfig) and s.realtime)
            or (isinstance(s, SyntheticSourceConfig) and s.live)
        )

    @property
    def policy(self) -> Literal["block", "drop_oldest"]:
        return self.queue.policy or ("drop_oldest" if self.live else "block")

    @property
    def queue_size(self) -> int:
        return self.queue.size or (2 if self.live else 8)

    @property
    def max_frame_age_s(self) -> float | None:
        ms = self.max_frame_age_ms if self.max_frame_age_ms is not None else (DEFAULT_LIVE_MAX_AGE_MS if self.live else None)
        return ms / 1000.0 if ms is not None else None


class ModelConfig(Strict):
    id: Identifier
    path: ConfigPath
    # onnxruntime: CPU (CUDA provider when onnxruntime-gpu is installed). tensorrt: NVIDIA GPU;
    # `path` is the .onnx (its engine is looked up in engines/, see build-engine) or an .engine.
    backend: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    family: Literal["yolov8", "yolo11", "yolov5"] = "yolov8"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    conf: float = Field(0.25, gt=0, lt=1)
    iou: float = Field(0.45, gt=0, le=1)
    max_det: int = Field(300, ge=1, le=100000)
    classes: list[StrictInt | str] | None = Field(None, min_length=1)  # keep only these (ids or names)
    names: dict[int, str] | None = None  # override the model's class names
    input_size: tuple[Annotated[int, Field(ge=32, le=8192)], Annotated[int, Field(ge=32, le=8192)]] | None = None
    batch: int = Field(1, ge=1, le=256)
    max_wait_ms: float = Field(10.0, ge=0, le=10000)  # an open batch waits at most this for more frames
    threads: int | None = Field(None, ge=1, le=256)  # ONNX Runtime intra-op threads; default: all cores
    # TensorRT only:
    precision: Literal["fp16", "fp32"] = "fp16"  # of the engine built from the ONNX file
    build_engine: bool = False  # build (minutes) when no fitting engine is cached, instead of an error
    gpu_preprocess: bool = True  # letterbox on the GPU (one fused kernel); the CPU only decodes
    # Largest decoded frame [H, W] staged for GPU preprocessing (pinned memory per slot row);
    # a larger frame is letterboxed on the CPU instead.
    gpu_preprocess_max_size: tuple[Annotated[int, Field(ge=16, le=16384)], Annotated[int, Field(ge=16, le=16384)]] = (1080, 1920)
    gpu_device: int = Field(0, ge=0, le=64)  # CUDA device index

    @field_validator("names", mode="before")
    @classmethod
    def _names_from_list(cls, value: Any) -> Any:
        return dict(enumerate(value)) if isinstance(value, list) else value


class JsonlSinkConfig(Strict):
    type: Literal["jsonl"]
    path: ConfigPath
    cameras: list[str] | None = None  # default: every camera


class VideoSinkConfig(Strict):
    type: Literal["video"]
    path: ConfigPath  # must contain {camera} when the sink takes more than one camera
    cameras: list[str] | None = None
    fps: float | None = Field(None, gt=0, le=1000)  # default: the source's rate (25 if unknown)
    codec: str = Field("mp4v", pattern=FOURCC_PATTERN)


class ZmqSinkConfig(Strict):
    type: Literal["zmq"]
    endpoint: str = Field("tcp://127.0.0.1:5560", pattern=r"^(tcp|ipc|inproc)://.+")  # PUB binds here
    hwm: int = Field(1000, ge=1, le=1_000_000)  # events queued per subscriber before drops
    cameras: list[str] | None = None


class EventsSinkConfig(Strict):
    type: Literal["events"]
    path: ConfigPath  # JSON Lines, one event per line
    cameras: list[str] | None = None


SinkConfig = Annotated[Union[JsonlSinkConfig, VideoSinkConfig, ZmqSinkConfig, EventsSinkConfig], Field(discriminator="type")]


class EvidenceConfig(Strict):
    dir: ConfigPath  # snapshots/ and clips/ are written below it
    snapshots: bool = True  # a JPEG with the boxes for each `start` event
    clips: bool = True  # an MP4 from pre_seconds before to post_seconds after each start
    pre_seconds: float = Field(3.0, ge=0, le=60)
    post_seconds: float = Field(3.0, ge=0, le=60)
    max_disk_mb: float = Field(500.0, gt=0)  # oldest files are deleted beyond this


class PipelineConfig(Strict):
    slots: int = Field(3, ge=2, le=64)  # input/output slots per model: 2 = double buffering
    queue_size: int = Field(4, ge=1, le=1024)  # postprocess → each sink (a model's inner queues hold `slots`)
    drain_timeout_s: float = Field(30.0, gt=0, le=3600)  # SIGINT/SIGTERM: time to finish queued work
    # Python's GIL switch interval while the graph runs. The default 5 ms lets a busy numpy/JSON
    # thread keep the GIL for up to 5 ms after the inference thread's ONNX Runtime call returned,
    # per frame; 0.2 ms hands it back quickly (measured: see README, Performance).
    gil_switch_interval_ms: float = Field(0.2, gt=0, le=100)
    # Threads for OpenCV's own parallel loops (resize, colour conversion). The graph already runs
    # stages and cameras in parallel, so 1 avoids oversubscribing the cores inference uses
    # (letterbox 0.80 instead of 1.32 ms of CPU per frame on 2 cores). 0 = OpenCV's default.
    opencv_threads: int = Field(1, ge=0, le=256)


class MetricsConfig(Strict):
    """The HTTP endpoint: /metrics (Prometheus text), /healthz (JSON), POST /reload (re-read the config)."""

    port: int | None = Field(None, ge=1, le=65535)  # null: no endpoint
    host: str = "127.0.0.1"  # loopback by default: the endpoint has no authentication


class VigilConfig(Strict):
    cameras: list[CameraConfig] = Field(min_length=1)
    models: list[ModelConfig] = Field(min_length=1)
    sinks: list[SinkConfig] = Field(default_factory=list)
    evidence: EvidenceConfig | None = None
    pipeline: PipelineConfig = PipelineConfig()
    metrics: MetricsConfig = MetricsConfig()

    def sink_cameras(self, sink: JsonlSinkConfig | VideoSinkConfig) -> list[str]:
        return list(sink.cameras) if sink.cameras is not None else [c.id for c in self.cameras]


# --------------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: VigilConfig
    file: str
    lines: dict[tuple[Any, ...], int]
    # For configs built from command-line options: the option that set a key, named in errors.
    key_names: dict[tuple[Any, ...], str] = field(default_factory=dict)

    def line_of(self, path: tuple[Any, ...]) -> int:
        """The line of `path` (or of its nearest parent) in the file; 0 for configs built in code."""
        return _line_of(self.lines, path)

    def issue(self, path: tuple[Any, ...], message: str) -> ConfigIssue:
        return ConfigIssue(self.file, self.line_of(path), self.key_names.get(path, format_path(path)), message)


def format_path(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int:
    if not lines:
        return 0  # a config built in code has no lines
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(text: str) -> tuple[str, list[str]]:
    """Expands ${VAR} / ${VAR:-default}; returns the text and the names of unset variables."""
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = os.environ.get(name)
        # As in the shell, ${VAR:-default} also takes the default when VAR is set but empty.
        if value is not None and (value or default is None):
            return value
        if default is not None:
            return default
        if name == SHARED_ENV:
            return str(shared_dir())  # unset or empty: the same ../shared default as the CLI
        missing.append(name)
        return m.group(0)

    return _ENV_REF.sub(sub, text), missing


class _Builder:
    """Turns a composed YAML node tree into Python data, recording each key's line."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[tuple[Any, ...], int] = {}
        self.issues: list[ConfigIssue] = []
        self._constructor = yaml.SafeLoader("")

    def _scalar(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self.issues.append(ConfigIssue(self.file, node.start_mark.line + 1, format_path(path) or "config",
                                           f"cannot read value {node.value!r} tagged {node.tag}: {problem}"))
            return None

    def build(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            try:
                self._constructor.flatten_mapping(node)  # resolves `<<: *defaults` merge keys
            except yaml.MarkedYAMLError as exc:
                line = exc.problem_mark.line + 1 if exc.problem_mark else node.start_mark.line + 1
                self.issues.append(ConfigIssue(self.file, line, format_path(path) or "config",
                                               f"bad merge key (<<): {exc.problem}"))
                return {}
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node, path)
                line = key_node.start_mark.line + 1
                # Keys are names; only a class-name table (`names: {0: person}`) is keyed by numbers.
                numeric_ok = path[-1:] == ("names",) and isinstance(key, int)
                if isinstance(key, bool) or not (isinstance(key, str) or numeric_ok):
                    self.issues.append(ConfigIssue(self.file, line, format_path(path) or "config",
                                                   f"keys must be names, got {key_node.value!r}"))
                    continue
                if not path and isinstance(key, str) and key.startswith("x-"):
                    # Top-level `x-...` keys hold shared YAML anchors (as in docker-compose), e.g.
                    # `x-live: &live {...}` merged into each camera with `<<: *live`.
                    continue
                if key in out:
                    first = self.lines.get((*path, key), line)
                    self.issues.append(
                        ConfigIssue(self.file, line, format_path((*path, key)), f"duplicate key (first given on line {first})")
                    )
                    continue
                self.lines[(*path, key)] = line
                out[key] = self.build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        value = self._scalar(node, path)
        if isinstance(value, str) and "${" in value:
            # Stays a string: pydantic turns "4" into 4 where a field wants a number, and a secret
            # such as "*pw" or "on" is never re-read as YAML.
            expanded, missing = _expand_env(value)
            for name in missing:
                self.issues.append(
                    ConfigIssue(self.file, node.start_mark.line + 1, format_path(path),
                                f"environment variable {name} is not set (export it, or write ${{{name}:-default}})")
                )
            return expanded
        return value


def load_config(path: str | Path) -> LoadedConfig:
    """Reads, expands, validates and cross-checks a config. Raises ConfigError with every issue found.
    Does not touch the files it names (see `check_files`) nor load models."""
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise ConfigError([ConfigIssue(file, 1, "config", "config file not found")])
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        message = f"YAML syntax error: {exc.problem or exc}"
        if (exc.context and exc.context.startswith("while") and exc.context_mark is not None
                and exc.context_mark.line + 1 != line):
            # e.g. an unclosed [ is noticed lines later: name where it opened too
            message += f" ({exc.context} that starts on line {exc.context_mark.line + 1}; check indentation and brackets)"
        raise ConfigError([ConfigIssue(file, line, "yaml", message)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, 1, "yaml", f"YAML error: {exc}")]) from None
    if root is None:
        raise ConfigError([ConfigIssue(file, 1, "config", "config is empty: expected a mapping with cameras, models and sinks")])
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError([ConfigIssue(file, root.start_mark.line + 1, "config",
                                       f"expected a mapping with cameras, models and sinks at the top, got a {_node_kind(root)}")])
    builder = _Builder(file)
    data = builder.build(root, ())
    if builder.issues:
        raise ConfigError(builder.issues)
    try:
        config = VigilConfig.model_validate(data, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(_issues_from_pydantic(file, builder.lines, data, exc, {})) from None
    loaded = LoadedConfig(config, file, builder.lines)
    issues = cross_check(loaded)
    if issues:
        raise ConfigError(issues)
    return loaded


def config_from_data(data: dict[str, Any], *, origin: str, base_dir: Path,
                     key_names: dict[tuple[Any, ...], str] | None = None) -> LoadedConfig:
    """Validates a config built in code (the `detect` and `bench` commands). Issues carry line 0
    and, where `key_names` maps a config key to the option that set it, the option's name."""
    names = key_names or {}
    try:
        config = VigilConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(_issues_from_pydantic(origin, {}, data, exc, names)) from None
    loaded = LoadedConfig(config, origin, {}, names)
    issues = cross_check(loaded)
    if issues:
        raise ConfigError(issues)
    return loaded


def _node_kind(node: yaml.Node) -> str:
    return "list" if isinstance(node, yaml.SequenceNode) else "single value" if isinstance(node, yaml.ScalarNode) else "mapping"


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
                                       f"camera {cam.id!r} refers to unknown model {cam.model!r}{did_you_mean(cam.model, model_ids)}; models are {model_ids}"))
    for i, cam in enumerate(cfg.cameras):
        if cam.live and cam.queue.policy == "block":
            issues.append(loaded.issue(("cameras", i, "queue", "policy"),
                                       f"camera {cam.id!r} is live: its queue must be drop_oldest (a blocked reader lets the "
                                       f"decoder's buffer fill with stale frames), got block"))
        for section in ("zones", "lines", "rules"):
            seen_ids: dict[str, int] = {}
            for j, item in enumerate(getattr(cam, section)):
                if item.id in seen_ids:
                    issues.append(loaded.issue(("cameras", i, section, j, "id"), f"duplicate id {item.id!r} (also {section}[{seen_ids[item.id]}])"))
                seen_ids.setdefault(item.id, j)
        for j, ln in enumerate(cam.lines):
            if tuple(ln.points[0]) == tuple(ln.points[1]):
                issues.append(loaded.issue(("cameras", i, "lines", j, "points"), f"line {ln.id!r} has two equal points: it can never be crossed"))
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
            issues.append(loaded.issue(("models", i, "id"), f"model {model.id!r} is fed by no camera (set model: {model.id} on a camera, or remove it)"))
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
        if isinstance(sink, VideoSinkConfig) and len(cfg.sink_cameras(sink)) > 1 and "{camera}" not in str(sink.path):
            issues.append(loaded.issue(("sinks", i, "path"),
                                       f"a video sink for {len(cfg.sink_cameras(sink))} cameras needs '{{camera}}' in its path "
                                       f"(one file per camera), got {str(sink.path)!r}"))
        key = str(sink.path)
        if key in outputs:
            issues.append(loaded.issue(("sinks", i, "path"), f"same output file as sinks[{outputs[key]}]: {key}"))
        outputs.setdefault(key, i)
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
        if not model.path.is_file():
            issues.append(loaded.issue(("models", i, "path"),
                                       f"model file not found: {model.path} (put the ONNX file there, or set {SHARED_ENV} "
                                       f"to the folder holding models/)"))
    return issues


# --------------------------------------------------------------------------------------------------
# pydantic errors → file:line: key: message


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """pydantic's loc without the parts that name a union member: the `type` tag of a tagged
    union (the 'file' in cameras.0.source.file.path) or the member type of a plain union (the
    'int' in classes.0.int). A part is taken as a member name only where the schema has a union."""
    path: list[Any] = []
    node = data
    skipped_at: tuple[Any, ...] | None = None
    for part in loc:
        here = tuple(path)
        if skipped_at != here and isinstance(part, str) and _is_union(_annotation_at(data, here)):
            is_tag = isinstance(node, dict) and node.get("type") == part
            if is_tag or not isinstance(node, dict):
                skipped_at = here  # one member name per union level
                continue
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
        path.append(part)
    return tuple(path)


def _is_optional(ann: Any) -> bool:
    return typing.get_origin(ann) in (Union, types.UnionType) and type(None) in typing.get_args(ann)


def _is_union(ann: Any) -> bool:
    while typing.get_origin(ann) is Annotated:
        ann = typing.get_args(ann)[0]
    if typing.get_origin(ann) not in (Union, types.UnionType):
        return False
    return len([a for a in typing.get_args(ann) if a is not type(None)]) > 1


def _annotation_at(data: Any, path: tuple[Any, ...]) -> Any:
    """The type annotation that validates the value at `path` (union members picked by `type`)."""
    ann: Any = VigilConfig
    node = data
    for part in path:
        ann = _unwrap(ann, node)
        if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(part, str) and part in ann.model_fields:
            ann = ann.model_fields[part].annotation
        elif typing.get_origin(ann) is list and isinstance(part, int):
            ann = typing.get_args(ann)[0]
        elif typing.get_origin(ann) is dict:
            ann = typing.get_args(ann)[1]
        else:
            return None
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    return ann


def _model_at(data: Any, path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that validates the mapping at `path`."""
    ann = _unwrap(_annotation_at(data, path), _value_at(data, path))
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _union_tags(data: Any, path: tuple[Any, ...]) -> list[str]:
    """The `type:` values a discriminated union at `path` accepts, in declaration order."""
    ann = _annotation_at(data, path)
    while typing.get_origin(ann) is Annotated:
        ann = typing.get_args(ann)[0]
    tags = []
    for member in typing.get_args(ann):
        if isinstance(member, type) and issubclass(member, BaseModel) and "type" in member.model_fields:
            tags.extend(str(t) for t in typing.get_args(member.model_fields["type"].annotation))
    return tags


def _value_at(data: Any, path: tuple[Any, ...]) -> Any:
    node = data
    for part in path:
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    return node


def _has(node: Any, part: Any) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and 0 <= part < len(node)


def _unwrap(ann: Any, node: Any) -> Any:
    """Strips Annotated and Optional, and picks the union member that validates `node` (by its
    `type:` tag for tagged mappings). None when a tag matches no member."""
    while True:
        origin = typing.get_origin(ann)
        if origin is Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(ann) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            if len(members) == 1:
                ann = members[0]
            elif models and isinstance(node, dict):
                tag = node.get("type")
                match = [m for m in models if "type" in m.model_fields and typing.get_args(m.model_fields["type"].annotation) == (tag,)]
                if not match:
                    return None
                ann = match[0]
            else:
                # No tag to go by: the first member that holds this kind of value (mapping or not).
                fitting = [m for m in members if (m in models) == isinstance(node, dict)]
                ann = (fitting or members)[0]
        else:
            return ann


def _show(value: Any) -> str:
    text = mask_url(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _issues_from_pydantic(file: str, lines: dict[tuple[Any, ...], int], data: Any, exc: ValidationError,
                          key_names: dict[tuple[Any, ...], str]) -> list[ConfigIssue]:
    """One issue per key: a value that fits no member of a union gives one line, not one per member."""
    by_key: dict[tuple[str, int], list[str]] = {}
    for err in exc.errors(include_url=False):
        issue = _issue_from_pydantic(file, lines, data, err)
        key = key_names.get(_data_path(data, tuple(err["loc"])), issue.key)
        messages = by_key.setdefault((key, issue.line), [])
        if issue.message not in messages:
            messages.append(issue.message)
    return [ConfigIssue(file, line, key, " or ".join(messages) if len(messages) < 2 else
                        " or ".join(m.rsplit(", got ", 1)[0] for m in messages[:-1]) + " or " + messages[-1])
            for (key, line), messages in by_key.items()]


def _issue_from_pydantic(file: str, lines: dict[tuple[Any, ...], int], data: Any, err: Any) -> ConfigIssue:
    loc = tuple(err["loc"])
    path = _data_path(data, loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        model = _model_at(data, path[:-1])
        allowed = list(model.model_fields) if model else []
        key = str(path[-1])
        hint = did_you_mean(key, allowed)
        message = f"unknown key{hint}" + ("" if hint or not allowed else f"; expected one of: {', '.join(allowed)}")
    elif kind == "missing" and path and isinstance(path[-1], int):
        path = path[:-1]  # a fixed-length list (e.g. input_size) is short
        ann = _annotation_at(data, path)
        while typing.get_origin(ann) is Annotated or _is_optional(ann):
            ann = typing.get_args(ann)[0]
        count = len(typing.get_args(ann)) if typing.get_origin(ann) is tuple else None
        message = f"expected {count or 'more'} items, got {_show(_value_at(data, path))}"
    elif kind == "missing":
        message = "required key is missing"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = _union_tags(data, path)
        if kind == "union_tag_not_found":
            message = f"missing 'type': expected one of {', '.join(expected)}"
        else:
            tag = str(ctx.get("tag", ""))
            path = (*path, "type")
            message = f"unknown type {tag!r}{did_you_mean(tag, expected)}; expected one of {', '.join(expected)}"
    elif kind == "literal_error":
        expected_text = str(ctx.get("expected", ""))
        choices = re.findall(r"'([^']*)'", expected_text)
        message = f"expected {expected_text}, got {_show(value)}{did_you_mean(str(value), choices)}"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        tags = _union_tags(data, path)
        wanted = f"a mapping with type: one of {', '.join(tags)}" if tags else "a mapping of keys"
        message = f"expected {wanted}, got {_show(value)}"
    elif kind == "string_pattern_mismatch" and ctx.get("pattern") in PATTERN_MEANING:
        message = f"expected {PATTERN_MEANING[ctx['pattern']]}, got {_show(value)}"
    elif kind == "list_type":
        message = f"expected a list, got {_show(value)}"
    else:
        message = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {_show(value)}"
    return ConfigIssue(file, _line_of(lines, path), format_path(path), message)
