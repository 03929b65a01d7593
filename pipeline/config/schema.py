"""The YAML camera graph as pydantic models: one model per YAML section.

Owns the shape of a config: every key, its type, its bounds and its default, `extra="forbid"` so a
typo fails, and `type:` selecting the source or sink class. It also answers the questions the rest
of the pipeline asks of a source (is it live, does the pipeline pace it, at what rate). Zones,
lines and rules are in rules.py; sinks and the outbox in sinks.py; the shared field types and
`Strict` in fields.py.

It must not read files or YAML, nor expand `${...}` references: loader.py does that and hands
plain data to `VigilConfig.model_validate(data, context={"base_dir": ...})`. Turning validation
errors into `file:line: key: message` is errors.py's job, cross-section rules are checks.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StrictInt, ValidationInfo, field_validator, model_validator

from pipeline.config.fields import FOURCC_PATTERN, ConfigPath, Identifier, Precision, RtspUrl, Strict, check_precision
from pipeline.config.rules import ClassList, LineConfig, Point, RuleConfig, ZoneConfig
from pipeline.config.sinks import (
    EventsSinkConfig,
    JsonlSinkConfig,
    OutboxConfig,
    SinkConfig,
    VideoSinkConfig,
)

# max_frame_age_ms of live cameras that set none: well above one CPU batch, far below "stale".
DEFAULT_LIVE_MAX_AGE_MS = 2000.0


class _Source(Strict):
    """What the pipeline asks of every source. No fields here: they would lead every source's key list."""

    @property
    def is_live(self) -> bool:
        """Treated as a camera: drop_oldest queue, frame-age bound, reconnects."""
        return False

    @property
    def replayed(self) -> bool:
        """Frames are released by the pipeline itself at `pace_fps` (else the source's own rate)."""
        return False

    @property
    def pace_fps(self) -> float | None:
        return None


class _ReplayedSource(_Source):
    """A source the pipeline itself paces when it is live (a file, generated frames), at its `fps`."""

    open_timeout_s: ClassVar[float] = 5.0

    @property
    def replayed(self) -> bool:
        return True

    @property
    def pace_fps(self) -> float | None:
        return getattr(self, "fps", None)


class FileSourceConfig(_ReplayedSource):
    """`type: file`: a video file, read as fast as the pipeline takes it or, with `realtime`,
    paced at its fps and treated as a live camera."""

    type: Literal["file"]
    path: ConfigPath
    realtime: bool = Field(False, description="pace at the file's native fps and treat it as a live camera")
    loop: bool = False
    fps: float | None = Field(None, gt=0, le=1000, description="pacing rate when realtime; default: the file's")
    max_frames: int | None = Field(None, ge=1, description="stop after this many frames")

    @property
    def is_live(self) -> bool:
        return self.realtime


class ImagesSourceConfig(_Source):
    """`type: images`: one image, or every image in a directory, each one frame."""

    type: Literal["images"]
    path: ConfigPath = Field(description="an image file or a directory of images")

    open_timeout_s: ClassVar[float] = 5.0


class SyntheticSourceConfig(_ReplayedSource):
    """`type: synthetic`: generated frames (a moving rectangle) at `fps`, for tests and benchmarks."""

    type: Literal["synthetic"]
    width: int = Field(640, ge=16, le=8192)
    height: int = Field(480, ge=16, le=8192)
    fps: float = Field(25.0, gt=0, le=1000)
    frames: int | None = Field(None, ge=1)
    live: bool = False

    @property
    def is_live(self) -> bool:
        return self.live


class RtspSourceConfig(_Source):
    """`type: rtsp`: a network camera stream; always live."""

    type: Literal["rtsp"]
    url: RtspUrl = Field(description=(
        "rtsp:// or rtsps:// URL; credentials may come from the environment or a secret file, e.g. "
        "rtsp://${CAM_USER}:${file:/run/secrets/cam_pw}@10.0.0.5/stream, and are masked "
        "(rtsp://***:***@...) wherever the URL is printed"))
    transport: Literal["tcp", "udp"] = Field("tcp", description="tcp: no lost packets/grey smears; udp: lower latency on a clean LAN")
    open_timeout_s: float = Field(5.0, gt=0, le=120, description="connect + DESCRIBE/SETUP/PLAY")

    @property
    def is_live(self) -> bool:
        return True


class UsbSourceConfig(_Source):
    """`type: usb`: a local V4L2/USB camera; always live."""

    type: Literal["usb"]
    device: str | StrictInt = Field("/dev/video0", description="/dev/videoN, or the index N")
    width: int | None = Field(None, ge=16, le=8192, description="ask the camera for this mode; default: its own")
    height: int | None = Field(None, ge=16, le=8192)
    fps: float | None = Field(None, gt=0, le=1000)
    fourcc: str | None = Field(None, pattern=FOURCC_PATTERN, description="e.g. MJPG: most USB cameras reach full fps only so")
    open_timeout_s: float = Field(5.0, gt=0, le=120)

    @property
    def is_live(self) -> bool:
        return True


SourceConfig = Annotated[
    FileSourceConfig | ImagesSourceConfig | SyntheticSourceConfig | RtspSourceConfig | UsbSourceConfig,
    Field(discriminator="type"),
]


class QueueConfig(Strict):
    """A camera's frame queue; unset keys follow the source (see `CameraConfig.policy`, `queue_size`)."""

    size: int | None = Field(None, ge=1, le=1024, description="default: 8 for files, 2 for live sources (fresh frames)")
    policy: Literal["block", "drop_oldest"] | None = Field(None, description=(
        "block: nothing lost (files); drop_oldest: latency bounded (live). Default follows the source."))


class ReconnectConfig(Strict):
    """Exponential backoff with jitter between attempts; each camera on its own."""

    initial_delay_s: float = Field(0.5, gt=0, le=600)
    max_delay_s: float = Field(3.0, gt=0, le=3600)
    jitter: float = Field(0.2, ge=0, le=1, description="each delay is drawn from [d * (1 - jitter), d]")
    max_attempts: int | None = Field(None, ge=1, description="consecutive failures before `failed`; default: forever")

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectConfig:
        if self.max_delay_s < self.initial_delay_s:
            raise ValueError(f"max_delay_s ({self.max_delay_s}) must be >= initial_delay_s ({self.initial_delay_s})")
        return self


class TrackerSettings(Strict):
    """The tracker's score thresholds (low <= high <= new track) and how long a lost track is kept."""

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


class MotionConfig(Strict):
    """A camera's `motion:` gating: the model runs only while something moves, an incident is open or
    a tracked object stands in a rule's zone, plus a heartbeat detection every `max_idle_s`."""

    enabled: bool = True
    threshold: int = Field(25, ge=1, le=255, description="grey-level change (0-255) against the background that counts")
    min_area: float = Field(0.001, ge=0, le=1, description="changed fraction of the frame (or of the mask) that is motion")
    max_idle_s: float = Field(3.0, gt=0, le=3600, description="a detection at least this often, motion or not")
    frame_height: int = Field(90, ge=16, le=1080, description="height of the grey copy motion is measured on")
    alpha: float = Field(0.05, gt=0, le=1, description="weight of each new frame in the running background")
    mask: list[list[Point]] = Field(default_factory=list, description=(
        "polygons in normalized coordinates (0-1) where motion counts; empty: the whole frame"))


class CameraConfig(Strict):
    """One `cameras:` item: its source, the model (by id) it feeds, its zones, lines and rules, and
    how a live source is watched (reconnects, stalls, frozen pictures, stale frames)."""

    id: Identifier
    source: SourceConfig
    model: str
    queue: QueueConfig = QueueConfig()
    zones: list[ZoneConfig] = Field(default_factory=list)
    lines: list[LineConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list, description="tracking runs when a camera has rules")
    tracker: TrackerSettings = TrackerSettings()
    # Live sources only (rtsp, usb, realtime files, live synthetic):
    reconnect: ReconnectConfig = ReconnectConfig()
    stall_timeout_s: float = Field(3.0, gt=0, le=600, description="no frame this long → stalled → reconnect")
    freeze_timeout_s: float | None = Field(10.0, gt=0, le=86400, description=(
        "frames arrive but the picture (or the stream's timestamps) has not changed this long → frozen → reconnect; "
        "null turns it off (e.g. a camera on a scene that is truly static)"))
    # Dropping frames that waited too long keeps latency from building up; a file must lose nothing.
    max_frame_age_ms: float | None = Field(None, gt=0, le=3_600_000, description=(
        "a frame older than this when a stage picks it up is dropped and counted (reason too_old); "
        "default: 2000 for live sources, none for files"))
    # Capacity: how often the model looks at this camera.
    detect_fps: float | None = Field(None, gt=0, le=1000, description=(
        "run the model on at most this many frames per second of stream time, spread evenly; the tracker "
        "predicts in between; default: every frame"))
    motion: MotionConfig | None = Field(None, description="motion gating; default: off")
    down_after_s: float = Field(10.0, gt=0, le=86400, description=(
        "not streaming this long → a camera_down event (rule camera_health) to the event sinks; camera_restored "
        "when it streams again"))

    @property
    def live(self) -> bool:
        return self.source.is_live

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


_InputSize = tuple[Annotated[int, Field(ge=32, le=8192)], Annotated[int, Field(ge=32, le=8192)]]
_FrameSize = tuple[Annotated[int, Field(ge=16, le=16384)], Annotated[int, Field(ge=16, le=16384)]]


class ModelConfig(Strict):
    """One `models:` item: the detector file, its backend and decoding thresholds, batching, and the
    TensorRT-only settings."""

    id: Identifier
    path: ConfigPath | None = Field(None, description=(
        "the model file (.onnx, or an .engine for tensorrt); required for every backend but triton, where the "
        "model lives on the server and a local copy of its .onnx only supplies class names and stride"))
    backend: Literal["auto", "onnxruntime", "openvino", "tensorrt", "triton"] = Field("auto", description=(
        "auto: the fastest one here (tensorrt for an .engine, or with TensorRT and a CUDA GPU unless device: cpu; else "
        "openvino when installed, unless device: cuda; else onnxruntime). onnxruntime: CPU (CUDA provider when "
        "onnxruntime-gpu is installed). openvino: "
        "CPU, reads the .onnx directly. tensorrt: NVIDIA GPU; `path` is the .onnx (its engine is looked up in "
        "engines/, see build-engine) or an .engine. triton: a Triton Inference Server (KServe v2 protocol) at "
        "`url` runs `model_name`; never chosen by auto"))
    precision: Precision | None = Field(None, description=(
        "null: the backend's default (f32; tensorrt: fp16). onnxruntime: f32; openvino: f32, bf16 or auto "
        "(OpenVINO's choice: bf16 on CPUs with AVX-512 BF16/AMX); tensorrt: f32, fp16 or auto (= fp16), of the "
        "engine built from the ONNX file; fp32 is read as f32"))
    family: Literal["yolov8", "yolo11", "yolov5"] = "yolov8"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    conf: float = Field(0.25, gt=0, lt=1)
    iou: float = Field(0.45, gt=0, le=1)
    max_det: int = Field(300, ge=1, le=100000)
    classes: ClassList | None = Field(None, min_length=1, description="keep only these (ids or names)")
    names: dict[int, str] | None = Field(None, description="override the model's class names")
    input_size: _InputSize | None = None
    batch: int = Field(1, ge=1, le=256)
    max_wait_ms: float = Field(10.0, ge=0, le=10000, description="an open batch waits at most this for more frames")
    threads: int | None = Field(None, ge=1, le=256, description="ONNX Runtime / OpenVINO threads per call; default: all cores")
    # TensorRT only:
    build_engine: bool = Field(False, description="build (minutes) when no fitting engine is cached, instead of an error")
    gpu_preprocess: bool = Field(True, description="letterbox on the GPU (one fused kernel); the CPU only decodes")
    gpu_preprocess_max_size: _FrameSize = Field((1080, 1920), description=(
        "largest decoded frame [H, W] staged for GPU preprocessing (pinned memory per slot row); "
        "a larger frame is letterboxed on the CPU instead"))
    gpu_device: int = Field(0, ge=0, le=64, description="CUDA device index")
    # Triton only (backend: triton):
    url: str | None = Field(None, pattern=r"^[A-Za-z0-9._\-\[\]:]+:[0-9]{1,5}$", description=(
        "the Triton server's host:port (gRPC port for protocol grpc, default 8001; HTTP port for http, default 8000)"))
    model_name: str | None = Field(None, min_length=1, description="the model's name in the server's repository")
    model_version: str = Field("", pattern=r"^[0-9]*$", description="the model version to run; empty: the server's choice")
    protocol: Literal["grpc", "http"] = Field("grpc", description="grpc: less overhead per request; http: through proxies")
    input_dtype: Literal["float32", "uint8"] = Field("float32", description=(
        "what the model on the server takes: float32 (the letterboxed RGB image in 0..1, NCHW, as the local backends "
        "run) or uint8 (the same image in 0..255, NCHW: 4x less data; the server divides by 255). Must match the "
        "server's model input"))
    in_flight: int = Field(2, ge=1, le=16, description=(
        "batches at the Triton server at once, so the network's round trip overlaps the server's work; "
        "needs pipeline.slots >= in_flight + 1 to keep preprocess busy meanwhile"))
    timeout_s: float = Field(10.0, gt=0, le=600, description=(
        "longest wait for one Triton request (and for connecting); past it the batch's frames are dropped "
        "(model_unavailable) and the lane retries"))

    @field_validator("precision", mode="before")
    @classmethod
    def _fp32_is_f32(cls, value: Any) -> Any:
        return "f32" if value == "fp32" else value  # the spelling TensorRT configs used before f32

    @field_validator("precision")
    @classmethod
    def _precision_fits_backend(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_precision(info.data.get("backend"), value)

    @field_validator("names", mode="before")
    @classmethod
    def _names_from_list(cls, value: Any) -> Any:
        return dict(enumerate(value)) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _path_or_server(self) -> ModelConfig:
        if self.backend == "triton":
            missing = [key for key in ("url", "model_name") if getattr(self, key) is None]
            if missing:
                raise ValueError(f"backend triton needs {' and '.join(missing)} (the server's host:port and the model's "
                                 f"name in its repository)")
        elif self.path is None:
            raise ValueError(f"path is required for backend {self.backend} (the model file, e.g. "
                             f"${{VIGIL_SHARED}}/models/yolov8n.onnx); only backend triton runs a model kept on a server")
        else:
            set_keys = sorted(k for k in ("url", "model_name") if getattr(self, k) is not None)
            if set_keys:
                raise ValueError(f"{' and '.join(set_keys)} are for backend triton only, the backend is {self.backend}")
        return self


class EvidenceConfig(Strict):
    """The `evidence:` section: a snapshot and a clip for each incident's `start`, on a disk budget."""

    dir: ConfigPath = Field(description="snapshots/ and clips/ are written below it")
    snapshots: bool = Field(True, description="a JPEG with the boxes for each `start` event")
    clips: bool = Field(True, description="an MP4 from pre_seconds before to post_seconds after each start")
    pre_seconds: float = Field(3.0, ge=0, le=60)
    post_seconds: float = Field(3.0, ge=0, le=60)
    max_disk_mb: float = Field(500.0, gt=0, description="oldest files are deleted beyond this")


class PipelineConfig(Strict):
    """The `pipeline:` section: buffering between stages, shutdown time and thread settings."""

    slots: int = Field(3, ge=2, le=64, description="input/output slots per model: 2 = double buffering")
    queue_size: int = Field(4, ge=1, le=1024, description="postprocess → each sink (a model's inner queues hold `slots`)")
    drain_timeout_s: float = Field(30.0, gt=0, le=3600, description="SIGINT/SIGTERM: time to finish queued work")
    # The default 5 ms lets a busy numpy/JSON thread keep the GIL for up to 5 ms after the inference
    # thread's ONNX Runtime call returned, per frame; 0.2 ms hands it back quickly (measured: see
    # README, Performance).
    gil_switch_interval_ms: float = Field(0.2, gt=0, le=100, description="Python's GIL switch interval while the graph runs")
    # The graph already runs stages and cameras in parallel, so 1 avoids oversubscribing the cores
    # inference uses (letterbox 0.80 instead of 1.32 ms of CPU per frame on 2 cores).
    opencv_threads: int = Field(1, ge=0, le=256, description=(
        "threads for OpenCV's own parallel loops (resize, colour conversion); 0 = OpenCV's default"))


class MetricsConfig(Strict):
    """The HTTP endpoint: /metrics (Prometheus text), /healthz (JSON), POST /reload (re-read the config)."""

    port: int | None = Field(None, ge=1, le=65535, description="null: no endpoint")
    # Loopback by default: /healthz and /metrics have no authentication (a warning says so otherwise).
    host: str = Field("127.0.0.1", description="address the endpoint listens on")
    token: str | None = Field(None, min_length=16, description=(
        "POST /reload needs `Authorization: Bearer TOKEN`; write it as ${ENV} or ${file:...}, not in the file"))
    allowed_hosts: list[str] = Field(default_factory=list, description=(
        "Host header names answered beside localhost, IP addresses and `host` (DNS rebinding is refused)"))


class VigilConfig(Strict):
    """A whole config file: cameras, models, sinks and the optional sections."""

    cameras: list[CameraConfig] = Field(min_length=1)
    models: list[ModelConfig] = Field(min_length=1)
    sinks: list[SinkConfig] = Field(default_factory=list)
    evidence: EvidenceConfig | None = None
    # Validated from {} when absent, so its default path is resolved against the config's folder too.
    outbox: OutboxConfig = Field(default_factory=dict, validate_default=True, description="for mqtt and webhook sinks")
    pipeline: PipelineConfig = PipelineConfig()
    metrics: MetricsConfig = MetricsConfig()

    def sink_cameras(self, sink: JsonlSinkConfig | VideoSinkConfig) -> list[str]:
        """The ids of the cameras `sink` takes: its `cameras:` list, else every camera."""
        return list(sink.cameras) if sink.cameras is not None else [c.id for c in self.cameras]

    def sink_paths(self, sink: JsonlSinkConfig | VideoSinkConfig | EventsSinkConfig) -> list[Path]:
        """The files `sink` writes: its `path`, or one per camera where the path holds `{camera}`."""
        template = str(sink.path)
        if "{camera}" not in template:
            return [sink.path]
        return [Path(template.replace("{camera}", cam_id)) for cam_id in self.sink_cameras(sink)]
