"""Builds the running graph from a validated config.

Per camera: a capture stage and its own queue (policy from the source: block for files,
drop_oldest for live). Per model: one preprocess stage reading all its cameras' queues round-robin,
one inference stage, one postprocess stage, and a ring of slots shared by the three. Per sink: one
stage with its own queue; postprocess routes each camera's results to the sinks that want it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.backends.base import Backend, ModelLoadError, create_backend
from pipeline.analytics import AnalyticsStage, CameraAnalytics, class_ids
from pipeline.evidence import EvidenceStage
from pipeline.config import (
    ConfigError,
    ConfigIssue,
    EventsSinkConfig,
    FileSourceConfig,
    ProximityRule,
    ZmqSinkConfig,
    ImagesSourceConfig,
    JsonlSinkConfig,
    LoadedConfig,
    ModelConfig,
    SyntheticSourceConfig,
    VideoSinkConfig,
    check_files,
)
from pipeline.inference import InferenceStage
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
from pipeline.sources.synthetic import SyntheticSource
from pipeline.stage import GraphRunner, Stage, StageContext

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LoadedModel:
    config: ModelConfig
    backend: Backend
    decoder: YoloDecoder
    batch: int


@dataclass(slots=True)
class Graph:
    runner: GraphRunner
    models: dict[str, LoadedModel]
    sinks: list[Sink]

    @property
    def ctx(self) -> StageContext:
        return self.runner.ctx


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
        for c, cam in enumerate(loaded.config.cameras):
            if cam.model != mcfg.id:
                continue
            for r, rule in enumerate(cam.rules):
                _, rule_issues = _resolve_classes(loaded, ("cameras", c, "rules", r, "classes"), rule.classes, info.class_names)
                issues.extend(rule_issues)
                if isinstance(rule, ProximityRule):
                    _, rule_issues = _resolve_classes(loaded, ("cameras", c, "rules", r, "classes_b"), rule.classes_b,
                                                      info.class_names)
                    issues.extend(rule_issues)
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


def _resolve_classes(loaded: LoadedConfig, path: tuple, wanted: list[int | str] | None,
                     names: dict[int, str]) -> tuple[frozenset[int] | None, list[ConfigIssue]]:
    """class_ids, with its problems as config issues at `path`."""
    ids, problems = class_ids(names, wanted)
    return ids, [loaded.issue((*path, j), message) for j, message in problems]


def make_source(cam_source: FileSourceConfig | ImagesSourceConfig | SyntheticSourceConfig, camera_id: str) -> Source:
    if isinstance(cam_source, FileSourceConfig):
        return VideoFileSource(cam_source.path, loop=cam_source.loop, max_frames=cam_source.max_frames)
    if isinstance(cam_source, ImagesSourceConfig):
        return ImageSource(cam_source.path)
    return SyntheticSource(cam_source.width, cam_source.height, frames=cam_source.frames, name=camera_id)


def build_graph(loaded: LoadedConfig, models: dict[str, LoadedModel] | None = None,
                extra_stages: Callable[[StageContext], list[Stage]] | None = None) -> Graph:
    """Wires the stages. Checks input files first; loads models unless given."""
    issues = check_files(loaded)
    if issues:
        raise ConfigError(issues)
    cfg = loaded.config
    models = models if models is not None else load_models(loaded)
    ctx = StageContext()
    metrics = ctx.metrics
    stages: list[Stage] = []

    # Sinks first: postprocess and analytics need their queues to route to.
    routes: dict[str, list[BoundedQueue]] = {c.id: [] for c in cfg.cameras}  # frames
    event_routes: dict[str, list[BoundedQueue]] = {c.id: [] for c in cfg.cameras}
    with_rules = {c.id for c in cfg.cameras if c.rules}
    sinks: list[Sink] = []
    sink_stages: list[Stage] = []
    for index, sink_cfg in enumerate(cfg.sinks):
        cams = cfg.sink_cameras(sink_cfg)
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
        if not sink.wants_frames:
            # Only cameras with rules make events (and send this sink their end of stream).
            cams = [cid for cid in cams if cid in with_rules]
            if not cams:
                log.warning("sink %s gets no events: none of its cameras has rules", sink.name)
        q = BoundedQueue(f"{sink.name}", cfg.pipeline.queue_size, QueuePolicy.BLOCK)
        for cid in cams:
            (routes if sink.wants_frames else event_routes)[cid].append(q)
        sinks.append(sink)
        sink_stages.append(SinkStage(index, sink, q, cams))
    for cam in cfg.cameras:
        if not routes[cam.id] and not event_routes[cam.id]:
            log.warning("camera %s feeds no sink: its detections are counted but not written", cam.id)

    evidence_q: BoundedQueue | None = None
    if cfg.evidence is not None and with_rules:
        evidence_q = BoundedQueue("analytics>evidence", max(cfg.pipeline.queue_size, 16), QueuePolicy.BLOCK)
        stages.append(EvidenceStage(cfg.evidence, evidence_q, sorted(with_rules), event_routes))

    for model_id, model in models.items():
        cams = [c for c in cfg.cameras if c.model == model_id]
        if not cams:
            continue
        info = model.backend.info
        ring = SlotRing.allocate(
            cfg.pipeline.slots,
            model.batch,
            {info.input.name: (info.input.shape, info.input.dtype)},
            {o.name: (o.shape, o.dtype) for o in info.outputs},
        )
        cond = threading.Condition()
        camera_queues = []
        for cam in cams:
            metrics.camera(cam.id)
            q = BoundedQueue(
                f"{cam.id}>preprocess", cam.queue.size, QueuePolicy(cam.policy), condition=cond,
                on_drop=lambda frame: metrics.count_drop(frame.camera_id, "queue_full"),
            )
            camera_queues.append(q)
            fps = cam.source.fps if cam.live and isinstance(cam.source, (FileSourceConfig, SyntheticSourceConfig)) else None
            stages.append(CaptureStage(cam.id, make_source(cam.source, cam.id), q, realtime=cam.live, fps=fps))
        cam_ids = [c.id for c in cams]
        # Cameras with rules: postprocess → analytics (tracking + rules) → frame sinks, and events
        # → evidence (when configured, which also keeps the frames) → event sinks.
        post_routes: dict[str, list[BoundedQueue]] = {}
        for cam in cams:
            if cam.rules:
                q = BoundedQueue(f"postprocess>analytics[{cam.id}]", cfg.pipeline.queue_size, QueuePolicy.BLOCK)
                to_events = [evidence_q] if evidence_q is not None else event_routes[cam.id]
                to_frames = routes[cam.id] + ([evidence_q] if evidence_q is not None else [])
                stages.append(AnalyticsStage(CameraAnalytics(cam, info.class_names), q, to_frames, to_events))
                post_routes[cam.id] = [q]
            else:
                post_routes[cam.id] = routes[cam.id]
        to_inference = BoundedQueue(f"preprocess>inference[{model_id}]", cfg.pipeline.slots, QueuePolicy.BLOCK)
        to_postprocess = BoundedQueue(f"inference>postprocess[{model_id}]", cfg.pipeline.slots, QueuePolicy.BLOCK)
        stages.append(PreprocessStage(model_id, FanIn(camera_queues), to_inference, ring, info.input.name,
                                      model.batch, model.config.max_wait_ms / 1000.0, cam_ids))
        stages.append(InferenceStage(model_id, model.backend, ring, to_inference, to_postprocess, cam_ids))
        stages.append(PostprocessStage(model_id, to_postprocess, ring, model.decoder, info.outputs[0].name,
                                       info.class_names, post_routes))
    stages.extend(sink_stages)
    if extra_stages is not None:
        stages.extend(extra_stages(ctx))
    return Graph(GraphRunner(stages, ctx), models, sinks)
