"""The YAML camera graph: models (schema, with zones, lines and rules in rules and the shared field
types in fields), `file:line: key: message` errors (errors), checks between sections (checks) and
reading a file with `${VAR}` and `${file:...}` references (loader).

Code outside this package imports from `pipeline.config`; the modules inside import each other by
their full path (fields ← rules ← schema ← errors ← checks ← loader), never from here.
"""

from pipeline.config.checks import check_files, cross_check
from pipeline.config.errors import ConfigError, ConfigIssue, LoadedConfig, did_you_mean, format_path, mask_secrets
from pipeline.config.fields import (
    FOURCC_PATTERN,
    ID_PATTERN,
    PATTERN_MEANING,
    RTSP_URL_PATTERN,
    ConfigPath,
    Identifier,
    Strict,
)
from pipeline.config.loader import SECRET_MAX_BYTES, config_from_data, load_config
from pipeline.config.rules import (
    ClassList,
    CountRule,
    DwellRule,
    LineConfig,
    LineCrossingRule,
    Point,
    ProximityRule,
    RuleBase,
    RuleConfig,
    ZoneConfig,
    ZoneIntrusionRule,
)
from pipeline.config.schema import (
    DEFAULT_LIVE_MAX_AGE_MS,
    CameraConfig,
    EvidenceConfig,
    FileSourceConfig,
    ImagesSourceConfig,
    MetricsConfig,
    ModelConfig,
    MotionConfig,
    PipelineConfig,
    QueueConfig,
    ReconnectConfig,
    RtspSourceConfig,
    SourceConfig,
    SyntheticSourceConfig,
    TrackerSettings,
    UsbSourceConfig,
    VigilConfig,
)
from pipeline.config.sinks import (
    EventsSinkConfig,
    JsonlSinkConfig,
    MqttSinkConfig,
    OutboxConfig,
    SinkConfig,
    VideoSinkConfig,
    WebhookSinkConfig,
    ZmqSinkConfig,
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
    "MotionConfig",
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
    "MqttSinkConfig",
    "WebhookSinkConfig",
    "OutboxConfig",
    "EvidenceConfig",
    "PipelineConfig",
    "MetricsConfig",
    "VigilConfig",
]
