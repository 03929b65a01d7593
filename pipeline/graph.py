"""Builds the running graph from a validated config.

Per camera: a capture stage and its own queue (policy from the source: block for files,
drop_oldest for live). Per model: one preprocess stage reading all its cameras' queues round-robin,
one inference stage, one postprocess stage, and a ring of slots shared by the three. Per sink: one
stage with its own queue; postprocess routes each camera's results to the sinks that want it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pipeline.backends.base import Backend, ModelLoadError, create_backend
from pipeline.analytics import AnalyticsStage, CameraAnalytics, class_ids
from pipeline.evidence import EvidenceStage
from pipeline.config import (
    CameraConfig,
    ConfigError,
    ConfigIssue,
    EventsSinkConfig,
    FileSourceConfig,
    ImagesSourceConfig,
    JsonlSinkConfig,
    LoadedConfig,
    ModelConfig,
    ProximityRule,
    RtspSourceConfig,
    SinkConfig,
    SyntheticSourceConfig,
    UsbSourceConfig,
    VideoSinkConfig,
    ZmqSinkConfig,
    check_files,
)
from pipeline.inference import InferenceClock, InferenceStage
from pipeline.postprocess.stage import PostprocessStage
from pipeline.postprocess.yolo import DecodeParams, LayoutError, YoloDecoder
from pipeline.preprocess import PreprocessStage, SlotRing
from pipeline.queues import BoundedQueue, FanIn, QueuePolicy
from pipeline.sinks.base import Sink, SinkStage
from pipeline.sinks.events import EventsJsonlSink, ZmqEventSink
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.video import VideoSink
from pipeline.sources.base import CaptureStage, Source
from pipeline.sources.file import VideoFileSource
from pipeline.sources.images import ImageSource
from pipeline.sources.live import READ_TIMEOUT_MARGIN_S, LiveCaptureStage, LiveSettings
from pipeline.sources.rtsp import RtspSource
from pipeline.sources.synthetic import SyntheticSource
from pipeline.sources.usb import UsbSource
from pipeline.stage import CameraSet, GraphRunner, Stage, StageContext

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LoadedModel:
    config: ModelConfig
    backend: Backend
    decoder: YoloDecoder
    batch: int


def load_models(loaded: LoadedConfig, *, intra_op_threads: int | None = None) -> dict[str, LoadedModel]:
    """Loads every model and checks it against its config (batch, output layout, class filter).
    Problems become ConfigErrors pointing at the key to change."""
    issues: list[ConfigIssue] = []
    models: dict[str, LoadedModel] = {}
    for i, mcfg in enumerate(loaded.config.models):
        try:
            backend = create_backend(mcfg, intra_op_threads=intra_op_threads)
        except ModelLoadError as exc:
            issues.append(loaded.issue(("models", i, "path"), str(exc)))
            continue
        info = backend.info
        if info.max_batch is not None and mcfg.batch != info.max_batch:
            issues.append(loaded.issue(("models", i, "batch"),
                                       f"model {info.path.name} has a fixed batch of {info.max_batch}, got batch: {mcfg.batch} "
                                       f"(set batch: {info.max_batch}, or export the model with a dynamic batch)"))
        if len(info.outputs) != 1:
            issues.append(loaded.issue(("models", i, "family"),
                                       f"family {mcfg.family!r} expects one output tensor, {info.path.name} has "
                                       f"{len(info.outputs)}: {[o.name for o in info.outputs]} (not a YOLO detection "
                                       f"export this build can decode)"))
            continue
        class_ids, class_issues = _resolve_classes(loaded, ("models", i, "classes"), mcfg.classes, info.class_names)
        issues.extend(class_issues)
        issues.extend(camera_class_issues(loaded, mcfg.id, info.class_names))
        try:
            decoder = YoloDecoder(
                mcfg.family,
                info.outputs[0].shape,
                len(info.class_names) or None,
                DecodeParams(conf=mcfg.conf, iou=mcfg.iou, max_det=mcfg.max_det, classes=class_ids),
            )
        except LayoutError as exc:
            issues.append(loaded.issue(("models", i, "family"), f"{info.path.name}: {exc}"))
            continue
        models[mcfg.id] = LoadedModel(mcfg, backend, decoder, mcfg.batch)
    if issues:
        for m in models.values():
            m.backend.close()
        raise ConfigError(issues)
    return models


def camera_class_issues(loaded: LoadedConfig, model_id: str, class_names: dict[int, str],
                        camera_ids: set[str] | None = None) -> list[ConfigIssue]:
    """The rule class names of the cameras fed by `model_id` (or only `camera_ids`) that the model lacks."""
    issues: list[ConfigIssue] = []
    for c, cam in enumerate(loaded.config.cameras):
        if cam.model != model_id or (camera_ids is not None and cam.id not in camera_ids):
            continue
        for r, rule in enumerate(cam.rules):
            issues.extend(_resolve_classes(loaded, ("cameras", c, "rules", r, "classes"), rule.classes, class_names)[1])
            if isinstance(rule, ProximityRule):
                issues.extend(_resolve_classes(loaded, ("cameras", c, "rules", r, "classes_b"), rule.classes_b, class_names)[1])
    return issues


def _resolve_classes(loaded: LoadedConfig, path: tuple, wanted: list[int | str] | None,
                     names: dict[int, str]) -> tuple[frozenset[int] | None, list[ConfigIssue]]:
    """class_ids, with its problems as config issues at `path`."""
    ids, problems = class_ids(names, wanted)
    return ids, [loaded.issue((*path, j), message) for j, message in problems]


SourceConfigs = FileSourceConfig | ImagesSourceConfig | SyntheticSourceConfig | RtspSourceConfig | UsbSourceConfig


def make_source(cam_source: SourceConfigs, camera_id: str, *, read_timeout_s: float = 3.0) -> Source:
    if isinstance(cam_source, FileSourceConfig):
        return VideoFileSource(cam_source.path, loop=cam_source.loop, max_frames=cam_source.max_frames)
    if isinstance(cam_source, ImagesSourceConfig):
        return ImageSource(cam_source.path)
    if isinstance(cam_source, RtspSourceConfig):
        return RtspSource(cam_source.url, transport=cam_source.transport, open_timeout_s=cam_source.open_timeout_s,
                          read_timeout_s=read_timeout_s)
    if isinstance(cam_source, UsbSourceConfig):
        return UsbSource(cam_source.device, width=cam_source.width, height=cam_source.height, fps=cam_source.fps,
                         fourcc=cam_source.fourcc, open_timeout_s=cam_source.open_timeout_s, read_timeout_s=read_timeout_s)
    return SyntheticSource(cam_source.width, cam_source.height, frames=cam_source.frames, name=camera_id)


def live_settings(cam: CameraConfig) -> LiveSettings:
    src = cam.source
    replayed = isinstance(src, (FileSourceConfig, SyntheticSourceConfig))  # a camera's own rate paces the others
    return LiveSettings(
        stall_timeout_s=cam.stall_timeout_s,
        freeze_timeout_s=cam.freeze_timeout_s,
        open_timeout_s=getattr(src, "open_timeout_s", 5.0),
        initial_delay_s=cam.reconnect.initial_delay_s,
        max_delay_s=cam.reconnect.max_delay_s,
        jitter=cam.reconnect.jitter,
        max_attempts=cam.reconnect.max_attempts,
        pace=replayed,
        pace_fps=src.fps if replayed else None,
    )


@dataclass(slots=True)
class _ModelLane:
    """A model's shared stages, which cameras join and leave."""

    model: LoadedModel
    condition: threading.Condition
    fanin: FanIn
    preprocess: PreprocessStage
    to_post: BoundedQueue
    clock: InferenceClock
    post_routes: dict[str, list[BoundedQueue]]  # camera -> analytics queue, or its frame sinks' queues
    max_age_s: dict[str, float]  # camera -> max_frame_age_ms / 1000 (cameras with a bound)
    camera_sets: list[CameraSet]  # preprocess, inference, postprocess


@dataclass(slots=True)
class _SinkLane:
    config: SinkConfig
    sink: Sink
    queue: BoundedQueue
    cameras: CameraSet


@dataclass(slots=True)
class _CameraParts:
    config: CameraConfig
    capture: CaptureStage | LiveCaptureStage
    analytics: AnalyticsStage | None


@dataclass(frozen=True, slots=True)
class ReloadReport:
    added: list[str]
    removed: list[str]
    restarted: list[str]
    not_applied: list[str]  # sections that changed but need a restart (models, sinks, ...)


class Graph:
    """The running graph: stages and queues built from a config, and the cameras, which can be
    added and removed while it runs (see `apply`)."""

    def __init__(self, loaded: LoadedConfig, models: dict[str, LoadedModel], *, reloadable: bool,
                 extra_stages: Callable[[StageContext], list[Stage]] | None = None) -> None:
        self.loaded = loaded
        self.models = models
        self._ctx = StageContext()
        self.reloadable = reloadable
        self.sinks: list[Sink] = []
        self._sinks: list[_SinkLane] = []
        self._lanes: dict[str, _ModelLane] = {}
        self._cameras: dict[str, _CameraParts] = {}
        self._routes: dict[str, list[BoundedQueue]] = {}  # camera -> frame sink queues
        self._event_routes: dict[str, list[BoundedQueue]] = {}  # camera -> event sink queues
        self._evidence: EvidenceStage | None = None
        self._evidence_q: BoundedQueue | None = None
        self._lock = threading.Lock()  # one add/remove/apply at a time
        self._capturing: set[str] = set()  # cameras whose capture has not ended
        self._capturing_lock = threading.Lock()
        self._applying = False  # a reload is swapping cameras
        self._ended_by_itself = False  # some camera's capture ended on its own (file end, failed)
        self.runner = self._build(extra_stages)
        if not reloadable:
            self.ctx.sealed.set()  # after building: camera sets refuse new members once sealed

    @property
    def ctx(self) -> StageContext:
        return self._ctx

    @property
    def camera_ids(self) -> list[str]:
        return list(self._cameras)

    # ---------------------------------------------------------------------------------- building

    def _build(self, extra_stages: Callable[[StageContext], list[Stage]] | None) -> GraphRunner:
        cfg = self.loaded.config
        stages: list[Stage] = []
        metrics = self.ctx.metrics
        sealed = self.ctx.sealed
        with_rules = [c.id for c in cfg.cameras if c.rules]
        for index, sink_cfg in enumerate(cfg.sinks):
            sink: Sink
            if isinstance(sink_cfg, JsonlSinkConfig):
                sink = JsonlSink(sink_cfg.path)
            elif isinstance(sink_cfg, VideoSinkConfig):
                sink = VideoSink(sink_cfg.path, fps=sink_cfg.fps, codec=sink_cfg.codec,
                                 source_fps=lambda cid: metrics.camera(cid).source_fps)
            elif isinstance(sink_cfg, ZmqSinkConfig):
                sink = ZmqEventSink(sink_cfg.endpoint, hwm=sink_cfg.hwm)
            elif isinstance(sink_cfg, EventsSinkConfig):
                sink = EventsJsonlSink(sink_cfg.path)
            else:
                raise TypeError(f"sinks[{index}]: no sink class for {type(sink_cfg).__name__}")
            if not sink.wants_frames and not self.reloadable and not any(
                    cid in with_rules for cid in cfg.sink_cameras(sink_cfg)):
                log.warning("sink %s gets no events: none of its cameras has rules", sink.name)
            q = BoundedQueue(f"{sink.name}", cfg.pipeline.queue_size, QueuePolicy.BLOCK)
            lane = _SinkLane(sink_cfg, sink, q, CameraSet((), sealed))
            self._sinks.append(lane)
            self.sinks.append(sink)
        if cfg.evidence is not None and (with_rules or self.reloadable):
            self._evidence_q = BoundedQueue("analytics>evidence", max(cfg.pipeline.queue_size, 16), QueuePolicy.BLOCK)
            self._evidence = EvidenceStage(cfg.evidence, self._evidence_q, CameraSet((), sealed), self._event_routes)
            stages.append(self._evidence)

        for model_id, model in self.models.items():
            cams = [c for c in cfg.cameras if c.model == model_id]
            if not cams and not self.reloadable:
                continue
            self._lanes[model_id] = self._build_lane(model_id, model, live=any(c.live for c in cams))
        for cam in cfg.cameras:
            stages.extend(self._wire_camera(cam))
        for mid, lane in self._lanes.items():
            info = lane.model.backend.info
            ring = lane.preprocess.ring
            stages.append(lane.preprocess)
            stages.append(InferenceStage(mid, lane.model.backend, ring, lane.preprocess.out, lane.to_post,
                                         lane.camera_sets[1], lane.clock))
            stages.append(PostprocessStage(mid, lane.to_post, ring, lane.model.decoder, info.outputs[0].name,
                                           info.class_names, lane.post_routes, lane.camera_sets[2], lane.max_age_s))
        for index, lane in enumerate(self._sinks):
            stages.append(SinkStage(index, lane.sink, lane.queue, lane.cameras))
        if extra_stages is not None:
            stages.extend(extra_stages(self._ctx))
        return GraphRunner(stages, self._ctx)

    def _build_lane(self, model_id: str, model: LoadedModel, *, live: bool) -> _ModelLane:
        cfg = self.loaded.config
        info = model.backend.info
        allocate_ring = getattr(model.backend, "allocate_ring", None)
        if allocate_ring is not None:  # a GPU backend: pinned host memory with device buffers
            ring = allocate_ring(cfg.pipeline.slots, model.batch, tuple(model.config.gpu_preprocess_max_size))
        else:
            ring = SlotRing.allocate(
                cfg.pipeline.slots,
                model.batch,
                {info.input.name: (info.input.shape, info.input.dtype)},
                {o.name: (o.shape, o.dtype) for o in info.outputs},
            )
        cond = threading.Condition()
        sealed = self.ctx.sealed
        sets = [CameraSet((), sealed) for _ in range(3)]
        max_age: dict[str, float] = {}
        # For live cameras the batch being filled is the *next* one only, filled just in time (see
        # PreprocessStage): frames are picked up when inference is about to need them.
        to_inference = BoundedQueue(f"preprocess>inference[{model_id}]", 1 if live or self.reloadable else cfg.pipeline.slots,
                                    QueuePolicy.BLOCK)
        to_post = BoundedQueue(f"inference>postprocess[{model_id}]", cfg.pipeline.slots, QueuePolicy.BLOCK)
        fanin: FanIn = FanIn([], condition=cond)
        clock = InferenceClock()
        pre = PreprocessStage(model_id, fanin, to_inference, ring, info.input.name, model.batch,
                              model.config.max_wait_ms / 1000.0, sets[0], max_age_s=max_age,
                              clock=clock if live or self.reloadable else None)
        return _ModelLane(model, cond, fanin, pre, to_post, clock, {}, max_age, sets)

    def _wire_camera(self, cam: CameraConfig) -> list[Stage]:
        """Creates a camera's stages and queues and joins it to its model's and sinks' camera sets.
        Returns the new stages (not started)."""
        cfg = self.loaded.config
        metrics = self.ctx.metrics
        lane = self._lanes[cam.model]
        # Join the model's stages first: a set refuses once its stage has finished (the graph is
        # ending), and then nothing of the camera is wired.
        with self._capturing_lock:
            if self.ctx.sealed.is_set():  # (sealed only after the build: see __init__)
                raise RuntimeError(f"cannot add camera {cam.id!r}: the graph is finishing")
            if not all([camera_set.add(cam.id) for camera_set in lane.camera_sets]):
                raise RuntimeError(f"cannot add camera {cam.id!r}: the graph is finishing")
            self._capturing.add(cam.id)
        metrics.camera(cam.id).reset_for_restart()
        routes = self._routes[cam.id] = []
        event_routes = self._event_routes[cam.id] = []
        for sink_lane in self._sinks:
            if sink_lane.config.cameras is not None and cam.id not in sink_lane.config.cameras:
                continue
            if not sink_lane.sink.wants_frames and not cam.rules:
                continue  # events come only from cameras with rules
            (routes if sink_lane.sink.wants_frames else event_routes).append(sink_lane.queue)
            sink_lane.cameras.add(cam.id)
        if not routes and not event_routes:
            log.warning("camera %s feeds no sink: its detections are counted but not written", cam.id)
        new: list[Stage] = []
        analytics: AnalyticsStage | None = None
        if cam.rules:
            q = BoundedQueue(f"postprocess>analytics[{cam.id}]", cfg.pipeline.queue_size, QueuePolicy.BLOCK)
            evidence_q = self._evidence_q
            to_events = [evidence_q] if evidence_q is not None else event_routes
            to_frames = routes + ([evidence_q] if evidence_q is not None else [])
            if self._evidence is not None:
                self._evidence.add_camera(cam.id)
            analytics = AnalyticsStage(CameraAnalytics(cam, lane.model.backend.info.class_names), q, to_frames, to_events)
            lane.post_routes[cam.id] = [q]
            new.append(analytics)
        else:
            lane.post_routes[cam.id] = routes
        if cam.max_frame_age_s is not None:
            lane.max_age_s[cam.id] = cam.max_frame_age_s
        else:
            lane.max_age_s.pop(cam.id, None)
        q = BoundedQueue(f"{cam.id}>preprocess", cam.queue_size, QueuePolicy(cam.policy), condition=lane.condition,
                         on_drop=lambda frame: metrics.count_drop(frame.camera_id, "queue_full"))
        capture: CaptureStage | LiveCaptureStage
        if cam.live:
            settings = live_settings(cam)
            # The decoder's own read timeout is set past the stall timeout, so a silent stream is
            # caught (and reported as stalled) by the supervisor; the abandoned reader then ends
            # when that read times out.
            read_timeout = settings.stall_timeout_s + READ_TIMEOUT_MARGIN_S
            capture = LiveCaptureStage(cam.id, lambda src=cam.source, cid=cam.id, t=read_timeout:
                                       make_source(src, cid, read_timeout_s=t), q, settings)
        else:
            capture = CaptureStage(cam.id, make_source(cam.source, cam.id), q)
        lane.fanin.add(q)
        new.insert(0, capture)
        capture.on_end = self._capture_ended
        self._cameras[cam.id] = _CameraParts(cam, capture, analytics)
        return new

    def _capture_ended(self, camera_id: str, removed: bool) -> None:
        """A camera's capture has sent its end of stream. When the last camera ends by itself
        (its file ended, or it failed for good) rather than by removal, no reload is waiting to
        replace it: the graph is sealed so that it finishes, as a graph of files does."""
        with self._capturing_lock:
            self._capturing.discard(camera_id)
            if not removed:
                self._ended_by_itself = True
                if not self._capturing and not self._applying:
                    self.ctx.sealed.set()

    # ---------------------------------------------------------------------------------- run time

    def add_camera(self, cam: CameraConfig) -> None:
        """Adds a camera to the running graph; it joins its model's batches with its first frame."""
        with self._locked("add a camera"):
            self._add_camera(cam)

    def _add_camera(self, cam: CameraConfig) -> None:
        if cam.id in self._cameras:
            raise ValueError(f"camera {cam.id!r} is already running")
        if cam.model not in self._lanes:
            raise ValueError(f"camera {cam.id!r}: model {cam.model!r} is not loaded in this run (models: "
                             f"{sorted(self._lanes)}); adding a model needs a restart")
        for stage in self._wire_camera(cam):
            self.runner.add_stage(stage)
        log.info("camera %s added (%s)", cam.id, type(cam.source).__name__.removesuffix("SourceConfig").lower())

    def remove_camera(self, camera_id: str, timeout_s: float = 30.0) -> None:
        """Stops a camera: its queued frames finish, its files close, the other cameras go on.
        Returns once its end of stream has passed every stage and its own threads have ended (or
        raises TimeoutError), so the same id can be added again at once."""
        with self._locked("remove a camera"):
            self._remove_camera(camera_id, timeout_s)

    def _remove_camera(self, camera_id: str, timeout_s: float) -> None:
        parts = self._cameras.get(camera_id)
        if parts is None:
            raise KeyError(f"no camera {camera_id!r} (cameras: {sorted(self._cameras)})")
        parts.capture.removed.set()
        deadline = time.monotonic() + timeout_s
        sets = [s for lane in self._lanes.values() for s in lane.camera_sets] + [s.cameras for s in self._sinks]
        if self._evidence is not None:
            sets.append(self._evidence.cameras)
        own = [parts.capture.name] + ([parts.analytics.name] if parts.analytics is not None else [])

        def finished() -> bool:
            return not any(camera_id in s for s in sets) and not any(self.runner.is_running(n) for n in own)

        while not finished():
            if time.monotonic() > deadline:
                raise TimeoutError(f"camera {camera_id!r} did not finish within {timeout_s:.0f} s of its removal")
            if self.ctx.stop.wait(0.05):
                break
        del self._cameras[camera_id]
        lane = self._lanes[parts.config.model]
        lane.post_routes.pop(camera_id, None)
        lane.max_age_s.pop(camera_id, None)
        log.info("camera %s removed", camera_id)

    def apply(self, new: LoadedConfig) -> ReloadReport:
        """Brings the running cameras in line with `new`: adds, removes, and restarts changed ones;
        the others are not touched. Changes outside `cameras` need a restart and are reported.
        Nothing changes when `new` has problems (ConfigError)."""
        with self._locked("reload"):
            old_cfg, new_cfg = self.loaded.config, new.config
            not_applied = [name for name in ("models", "sinks", "evidence", "pipeline", "metrics")
                           if getattr(old_cfg, name) != getattr(new_cfg, name)]
            issues: list[ConfigIssue] = list(check_files(new))
            for i, cam in enumerate(new_cfg.cameras):
                if cam.model not in self._lanes:
                    issues.append(new.issue(("cameras", i, "model"), f"model {cam.model!r} is not loaded in this run "
                                                                     f"(models: {sorted(self._lanes)}); a new model needs a restart"))
            old = {cid: p.config for cid, p in self._cameras.items()}
            wanted = {c.id: c for c in new_cfg.cameras}
            added = [cid for cid in wanted if cid not in old]
            removed = [cid for cid in old if cid not in wanted]
            restarted = [cid for cid in wanted if cid in old and old[cid] != wanted[cid]]
            for mid, lane in self._lanes.items():
                issues.extend(camera_class_issues(new, mid, lane.model.backend.info.class_names, set(added + restarted)))
            if issues:
                raise ConfigError(issues)
            with self._capturing_lock:
                self._applying = True  # a camera ending by itself meanwhile must not seal the graph
            try:
                for cid in removed + restarted:
                    self._remove_camera(cid, 30.0)
                for cid in restarted + added:
                    self._add_camera(wanted[cid])
            finally:
                with self._capturing_lock:
                    self._applying = False
                    if self._ended_by_itself and not self._capturing:
                        self.ctx.sealed.set()
            self.loaded = new
            return ReloadReport(added, removed, restarted, not_applied)

    @contextlib.contextmanager
    def _locked(self, what: str, timeout_s: float = 120.0) -> Iterator[None]:
        if not self._lock.acquire(timeout=timeout_s):
            raise RuntimeError(f"cannot {what}: another camera change has been running for over {timeout_s:.0f} s")
        try:
            yield
        finally:
            self._lock.release()


def build_graph(loaded: LoadedConfig, models: dict[str, LoadedModel] | None = None,
                extra_stages: Callable[[StageContext], list[Stage]] | None = None,
                reloadable: bool | None = None) -> Graph:
    """Wires the stages. Checks input files first; loads models unless given.

    A graph with a live camera is `reloadable` by default: it runs until stopped, and cameras can
    be added and removed while it runs. A graph of files ends when its files end."""
    issues = check_files(loaded)
    if issues:
        raise ConfigError(issues)
    models = models if models is not None else load_models(loaded)
    if reloadable is None:
        reloadable = any(c.live for c in loaded.config.cameras)
    return Graph(loaded, models, reloadable=reloadable, extra_stages=extra_stages)
