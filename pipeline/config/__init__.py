"""The YAML camera graph: models (schema), `file:line: key: message` errors (errors), checks between
sections (checks) and reading a file with `${VAR}` and `${file:...}` references (loader).

Code outside this package imports from `pipeline.config`; the modules inside import each other by
their full path (schema ← errors ← checks ← loader), never from here.
"""

from pipeline.config.checks import check_files, cross_check
from pipeline.config.errors import ConfigError, ConfigIssue, LoadedConfig, did_you_mean, format_path, mask_secrets
from pipeline.config.loader import SECRET_MAX_BYTES, config_from_data, load_config
from pipeline.config.schema import (
    DEFAULT_LIVE_MAX_AGE_MS,
    FOURCC_PATTERN,
    ID_PATTERN,
    PATTERN_MEANING,
    RTSP_URL_PATTERN,
    CameraConfig,
    ClassList,
    ConfigPath,
    CountRule,
    DwellRule,
    EventsSinkConfig,
    EvidenceConfig,
    FileSourceConfig,
    Identifier,
    ImagesSourceConfig,
    JsonlSinkConfig,
    LineConfig,
    LineCrossingRule,
    MetricsConfig,
    ModelConfig,
    PipelineConfig,
    Point,
    ProximityRule,
    QueueConfig,
    ReconnectConfig,
    RtspSourceConfig,
    RuleBase,
    RuleConfig,
    SinkConfig,
    SourceConfig,
    Strict,
    SyntheticSourceConfig,
    TrackerSettings,
    UsbSourceConfig,
    VideoSinkConfig,
    VigilConfig,
    ZmqSinkConfig,
    ZoneConfig,
    ZoneIntrusionRule,
)

__all__ = [
    # loading
    "load_config",
    "config_from_data",
    "SECRET_MAX_BYTES",
    # errors
    "ConfigError",
    "ConfigIssue",
    "LoadedConfig",
    "did_you_mean",
    "format_path",
    "mask_secrets",
    # checks
    "check_files",
    "cross_check",
    # schema: constants and types
    "DEFAULT_LIVE_MAX_AGE_MS",
    "FOURCC_PATTERN",
    "ID_PATTERN",
    "PATTERN_MEANING",
    "RTSP_URL_PATTERN",
    "ClassList",
    "ConfigPath",
    "Identifier",
    "Point",
    "Strict",
    # schema: sources
    "SourceConfig",
    "FileSourceConfig",
    "ImagesSourceConfig",
    "SyntheticSourceConfig",
    "RtspSourceConfig",
    "UsbSourceConfig",
    # schema: cameras, zones, lines, rules
    "CameraConfig",
    "QueueConfig",
    "ReconnectConfig",
    "TrackerSettings",
    "ZoneConfig",
    "LineConfig",
    "RuleConfig",
    "RuleBase",
    "ZoneIntrusionRule",
    "DwellRule",
    "LineCrossingRule",
    "ProximityRule",
    "CountRule",
    # schema: models, outputs, the rest
    "ModelConfig",
    "SinkConfig",
    "JsonlSinkConfig",
    "VideoSinkConfig",
    "ZmqSinkConfig",
    "EventsSinkConfig",
    "EvidenceConfig",
    "PipelineConfig",
    "MetricsConfig",
    "VigilConfig",
]
