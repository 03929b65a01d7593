"""The `sinks:` items and the `outbox:` section as pydantic models (see schema.py for the rest).

Owns each sink's keys, types, bounds and defaults; `type:` selects the sink class (registry in
pipeline/sinks/__init__.py). Cross-sink rules (one file per sink, one backlog per destination) are
checks.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.config.fields import FOURCC_PATTERN, ConfigPath, Strict


class JsonlSinkConfig(Strict):
    """`type: jsonl`: one JSON record per frame (detections) in a JSON Lines file."""

    type: Literal["jsonl"]
    path: ConfigPath
    cameras: list[str] | None = Field(None, description="default: every camera")


class VideoSinkConfig(Strict):
    """`type: video`: an annotated MP4 per camera."""

    type: Literal["video"]
    path: ConfigPath = Field(description="must contain {camera} when the sink takes more than one camera")
    cameras: list[str] | None = None
    fps: float | None = Field(None, gt=0, le=1000, description="default: the source's rate (25 if unknown)")
    codec: str = Field("mp4v", pattern=FOURCC_PATTERN)


class ZmqSinkConfig(Strict):
    """`type: zmq`: rule events published on a ZeroMQ PUB socket."""

    type: Literal["zmq"]
    endpoint: str = Field("tcp://127.0.0.1:5560", pattern=r"^(tcp|ipc|inproc)://.+", description="PUB binds here")
    hwm: int = Field(1000, ge=1, le=1_000_000, description="events queued per subscriber before drops")
    cameras: list[str] | None = None


class EventsSinkConfig(Strict):
    """`type: events`: rule events in a JSON Lines file."""

    type: Literal["events"]
    path: ConfigPath = Field(description="JSON Lines, one event per line")
    cameras: list[str] | None = None


class MqttSinkConfig(Strict):
    """`type: mqtt`: events to an MQTT broker through the outbox (QoS 1 by default: kept until the
    broker's PUBACK); retained camera state, zone counts and an online/offline status (last will)."""

    type: Literal["mqtt"]
    host: str = Field("127.0.0.1", min_length=1, description="the broker")
    port: int = Field(1883, ge=1, le=65535, description="1883; 8883 for TLS")
    client_id: str = Field("vigil", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$", description=(
        "unique per Vigil instance on the broker; also names this sink's backlog in the outbox"))
    topic_prefix: str = Field("vigil", min_length=1, pattern=r"^[^#+\s]+$", description=(
        "topics: PREFIX/CAMERA/events/RULE, PREFIX/CAMERA/state, PREFIX/CAMERA/ZONE/count, PREFIX/status"))
    qos: Literal[0, 1, 2] = Field(1, description="for events; 1: at least once (0 loses events while the broker is away)")
    username: str | None = Field(None, description="write it as ${ENV} or ${file:...}")
    password: str | None = Field(None, description="write it as ${ENV} or ${file:...}, never in the file")
    ca: ConfigPath | None = Field(None, description="CA certificate: turns TLS on")
    cert: ConfigPath | None = Field(None, description="client certificate (with `key`) for mutual TLS")
    key: ConfigPath | None = Field(None, description="the client certificate's private key")
    keepalive_s: int = Field(30, ge=5, le=3600, description="the broker declares us dead (last will) after 1.5x this")
    max_inflight: int = Field(20, ge=1, le=1000, description="events sent before their PUBACKs arrived")
    cameras: list[str] | None = None

    @model_validator(mode="after")
    def _cert_with_key(self) -> MqttSinkConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (mutual TLS): give both or neither")
        return self


class WebhookSinkConfig(Strict):
    """`type: webhook`: POSTs each event as JSON through the outbox; retried with backoff until a
    2xx; a 4xx other than 408/429 fails for good (logged and counted, not retried)."""

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://\S+$", description="http:// or https://")
    headers: dict[str, str] = Field(default_factory=dict, description="e.g. Authorization: Bearer ${HOOK_TOKEN}")
    timeout_s: float = Field(5.0, gt=0, le=300, description="per request")
    max_backoff_s: float = Field(60.0, gt=0, le=3600, description="retries wait 0.5 s, 1 s, 2 s, ... up to this")
    cameras: list[str] | None = None


SinkConfig = Annotated[JsonlSinkConfig | VideoSinkConfig | ZmqSinkConfig | EventsSinkConfig | MqttSinkConfig | WebhookSinkConfig,
                       Field(discriminator="type")]


class OutboxConfig(Strict):
    """The `outbox:` section: where events wait on disk until the network sinks (mqtt, webhook)
    have delivered them, and how much may wait."""

    path: ConfigPath = Field(Path("vigil-outbox.db"), validate_default=True,
                             description="SQLite file (relative: to the config's folder)")
    max_mb: float = Field(100.0, gt=0, le=1_000_000, description="beyond this the oldest events are dropped (counted, logged)")
    max_age_s: float = Field(7 * 86400.0, gt=0, description="events older than this are dropped (counted, logged)")
