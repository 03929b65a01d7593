"""Builds the running graph from a validated config, and adds and removes cameras while it runs.

Per model: a lane (graph/lanes.py). Per sink: a lane with its own queue and stage. Per camera: a
Camera object (graph/camera.py) with its capture, queue and analytics, joined to its model's lane
and to the sinks that want it. Concrete sources, sinks and backends come from their registries
(`pipeline.sources`, `pipeline.sinks`, `pipeline.backends`), so this module never branches on
config types. Reloads are a diff of cameras (graph/reload.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from pipeline.config import CameraConfig, ConfigError, LoadedConfig, check_files
from pipeline.evidence import EvidenceStage
from pipeline.graph.camera import Camera, CameraLifecycle, CameraWiring
from pipeline.graph.lanes import ModelLane, SinkLane
from pipeline.graph.models import LoadedModel, camera_class_issues, load_models
from pipeline.graph.reload import ReloadReport, apply_reload
from pipeline.outbox import SharedOutbox
from pipeline.queues import BoundedQueue, QueuePolicy
from pipeline.sinks import Sink, SinkContext, create_sink
from pipeline.stage import CameraSet, GraphRunner, Stage, StageContext

log = logging.getLogger(__name__)

EVENT_QUEUE_SIZE = 256  # events waiting for an event sink (each a few hundred bytes)


class Graph:
    """The running graph: stages and queues built from a config, and the cameras, which can be
    added and removed while it runs (`add_camera`, `remove_camera`, `apply`).

    Args:
        loaded: the validated config.
        models: its loaded models (see `load_models`).
        reloadable: cameras may come and go at run time (the graph runs until stopped).
        extra_stages: more stages to run in the same runner (tests, benchmarks).
    """

    def __init__(self, loaded: LoadedConfig, models: dict[str, LoadedModel], *, reloadable: bool,
                 extra_stages: Callable[[StageContext], list[Stage]] | None = None) -> None:
        self.built = loaded  # the config the graph was built with: models, sinks, ... come from it
        self.loaded = loaded  # the config last applied
        self.models = models
        self.reloadable = reloadable
        self.ctx = StageContext()
        self._cameras: dict[str, Camera] = {}
        self._lock = threading.Lock()  # one add/remove/apply at a time
        self._capturing: set[str] = set()  # cameras whose capture has not ended
        # The lock a drain seals under (StageContext.seal_lock): a camera joins wholly or not at all.
        self._capturing_lock = self.ctx.seal_lock
        self._applying = False  # a reload is swapping cameras
        self._ended_by_itself = False  # some camera's capture ended on its own (file end, failed)
        self._wiring = self._build_shared()
        stages: list[Stage] = []
        for cam in loaded.config.cameras:
            stages += self._attach(Camera(cam, self._wiring, self._capture_ended))
        stages += [s for lane in self._wiring.lanes.values() for s in lane.stages]
        stages += [self._wiring.evidence] if self._wiring.evidence is not None else []
        stages += [lane.make_stage() for lane in self._wiring.sinks]
        if extra_stages is not None:
            stages.extend(extra_stages(self.ctx))
        self.runner = GraphRunner(_graph_order(stages), self.ctx)
        if not reloadable:
            self.ctx.sealed.set()  # after building: camera sets refuse new members once sealed

    @property
    def camera_ids(self) -> list[str]:
        return list(self._cameras)

    @property
    def wiring(self) -> CameraWiring:
        """The shared parts cameras join (model lanes, sink lanes, evidence); for inspection."""
        return self._wiring

    @property
    def sinks(self) -> list[Sink]:
        return [lane.sink for lane in self._wiring.sinks]

    def _build_shared(self) -> CameraWiring:
        """The parts cameras join: sink lanes, evidence, model lanes."""
        cfg = self.loaded.config
        sealed = self.ctx.sealed
        with_rules = {c.id for c in cfg.cameras if c.rules}
        with_events = with_rules | {c.id for c in cfg.cameras if c.live}  # live cameras: camera_down
        sinks: list[SinkLane] = []
        outbox = SharedOutbox(cfg.outbox.path, cfg.outbox.max_mb, cfg.outbox.max_age_s)  # opened by the first network sink
        for index, sink_cfg in enumerate(cfg.sinks):
            sink = create_sink(sink_cfg, SinkContext(self.ctx.metrics, outbox))
            if not sink.wants_frames and not self.reloadable and not with_events.intersection(cfg.sink_cameras(sink_cfg)):
                log.warning("sink %s gets no events: none of its cameras has rules or is live", sink.name)
            # Events are small and come in bursts (a crowd entering a zone): a deep queue lets the
            # analytics thread hand a burst over without waiting for the sink's disk or network.
            size = cfg.pipeline.queue_size if sink.wants_frames else max(cfg.pipeline.queue_size, EVENT_QUEUE_SIZE)
            queue = BoundedQueue(sink.name, size, QueuePolicy.BLOCK)
            sinks.append(SinkLane(index, sink_cfg, sink, queue, CameraSet((), sealed)))
        evidence = evidence_q = None
        if cfg.evidence is not None and (with_rules or self.reloadable):
            evidence_q = BoundedQueue("analytics>evidence", max(cfg.pipeline.queue_size, 16), QueuePolicy.BLOCK)
            evidence = EvidenceStage(cfg.evidence, evidence_q, CameraSet((), sealed), {})
        lanes: dict[str, ModelLane] = {}
        for model_id, model in self.models.items():
            cams = [c for c in cfg.cameras if c.model == model_id]
            if cams or self.reloadable:
                lanes[model_id] = ModelLane.build(model_id, model, cfg.pipeline, sealed,
                                                  just_in_time=self.reloadable or any(c.live for c in cams))
        return CameraWiring(lanes, sinks, evidence, evidence_q, self.ctx.metrics, cfg.pipeline.queue_size)

    def _attach(self, camera: Camera) -> list[Stage]:
        """Joins a camera to the graph (refused once the graph is sealed); returns its stages."""
        with self._capturing_lock:
            if self.ctx.sealed.is_set():  # (sealed only after the build: see __init__)
                raise RuntimeError(f"cannot add camera {camera.id!r}: the graph is finishing")
            stages = camera.attach()
            self._capturing.add(camera.id)
        self._cameras[camera.id] = camera
        return stages

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
            self.start_camera(cam)

    def remove_camera(self, camera_id: str, timeout_s: float = 30.0) -> None:
        """Stops a camera: its queued frames finish, its files close, the other cameras go on.
        Returns once its end of stream has passed every stage and its own threads have ended (or
        raises TimeoutError), so the same id can be added again at once."""
        with self._locked("remove a camera"):
            self.stop_camera(camera_id, timeout_s)

    def apply(self, new: LoadedConfig) -> ReloadReport:
        """Brings the running cameras in line with `new` (see graph/reload.py). Nothing changes when
        `new` has problems (ConfigError); a camera that cannot be changed is reported in `failed`."""
        with self._locked("reload"):
            with self._capturing_lock:
                self._applying = True  # a camera ending by itself meanwhile must not seal the graph
            try:
                report = apply_reload(self, self.built, new)
            finally:
                with self._capturing_lock:
                    self._applying = False
                    if self._ended_by_itself and not self._capturing:
                        self.ctx.sealed.set()
            self.loaded = new
            return report

    # CameraHost (graph/reload.py): called with self._lock held.

    def running_cameras(self) -> dict[str, CameraConfig]:
        return {cid: c.config for cid, c in self._cameras.items() if c.state is CameraLifecycle.RUNNING}

    def draining_cameras(self) -> set[str]:
        return {cid for cid, c in self._cameras.items() if c.state is CameraLifecycle.DRAINING}

    def check_cameras(self, new: LoadedConfig, camera_ids: set[str]) -> ConfigError | None:
        issues = list(check_files(new))
        for i, cam in enumerate(new.config.cameras):
            if cam.model not in self._wiring.lanes:
                issues.append(new.issue(("cameras", i, "model"), f"model {cam.model!r} is not loaded in this run "
                                                                 f"(models: {sorted(self._wiring.lanes)}); a new model needs a restart"))
        for mid, lane in self._wiring.lanes.items():
            issues.extend(camera_class_issues(new, mid, lane.model.backend.info.class_names, camera_ids))
        return ConfigError(issues) if issues else None

    def start_camera(self, cam: CameraConfig) -> None:
        if cam.id in self._cameras:
            raise ValueError(f"camera {cam.id!r} is already running")
        if cam.model not in self._wiring.lanes:
            raise ValueError(f"camera {cam.id!r}: model {cam.model!r} is not loaded in this run (models: "
                             f"{sorted(self._wiring.lanes)}); adding a model needs a restart")
        for stage in self._attach(Camera(cam, self._wiring, self._capture_ended)):
            self.runner.add_stage(stage)
        log.info("camera %s added (%s)", cam.id, cam.source.type)

    def stop_camera(self, camera_id: str, timeout_s: float) -> None:
        camera = self._cameras.get(camera_id)
        if camera is None:
            raise KeyError(f"no camera {camera_id!r} (cameras: {sorted(self._cameras)})")
        camera.drain()
        camera.wait_stopped(self.runner, timeout_s, self.ctx.stop)
        del self._cameras[camera_id]
        self.ctx.previews.forget(camera_id)
        log.info("camera %s removed", camera_id)

    @contextlib.contextmanager
    def _locked(self, what: str, timeout_s: float = 120.0) -> Iterator[None]:
        if not self._lock.acquire(timeout=timeout_s):
            raise RuntimeError(f"cannot {what}: another camera change has been running for over {timeout_s:.0f} s")
        try:
            yield
        finally:
            self._lock.release()


def _graph_order(stages: list[Stage]) -> list[Stage]:
    """Stages in data-path order (captures, model lanes, analytics, evidence, sinks, others), so
    summaries list them that way."""
    rank = {"capture": 0, "preprocess": 1, "inference": 2, "postprocess": 3, "analytics": 4, "evidence": 5, "sink": 6}
    return sorted(stages, key=lambda s: rank.get(s.name.split("[", 1)[0], 7))


def build_graph(loaded: LoadedConfig, models: dict[str, LoadedModel] | None = None,
                extra_stages: Callable[[StageContext], list[Stage]] | None = None,
                reloadable: bool | None = None) -> Graph:
    """Wires the stages. Checks input files first; loads models unless given.

    A graph with a live camera is `reloadable` by default: it runs until stopped, and cameras can
    be added and removed while it runs. A graph of files ends when its files end.

    Args:
        loaded: the validated config.
        models: already loaded models (e.g. shared by benchmark rounds); None: load them.
        extra_stages: more stages for the same runner.
        reloadable: override the default above.

    Returns:
        The graph, not started (see `pipeline.runner.execute`).

    Example:
        >>> graph = build_graph(load_config("configs/demo.yaml"))
        >>> summary = execute(graph)
    """
    issues = check_files(loaded)
    if issues:
        raise ConfigError(issues)
    models = models if models is not None else load_models(loaded)
    if reloadable is None:
        reloadable = any(c.live for c in loaded.config.cameras)
    return Graph(loaded, models, reloadable=reloadable, extra_stages=extra_stages)
