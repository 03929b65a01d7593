"""The shared parts cameras join: a model lane (preprocess, inference, postprocess and their slot
ring, per model) and a sink lane (one sink, its queue and stage).

Owns the wiring inside a lane and the joining and leaving of cameras. It does not decide which
cameras exist (graph/builder.py, graph/reload.py) nor what a camera owns (graph/camera.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pipeline.config import CameraConfig, PipelineConfig, SinkConfig
from pipeline.graph.models import LoadedModel
from pipeline.inference import InferenceClock, InferenceStage
from pipeline.postprocess.stage import PostprocessStage
from pipeline.preprocess import PreprocessStage
from pipeline.queues import BoundedQueue, FanIn, QueuePolicy
from pipeline.sinks import Sink, SinkStage
from pipeline.slots import SlotRing
from pipeline.stage import CameraSet, Stage


class CameraRefused(RuntimeError):
    """A camera could not join: the graph is finishing and its stages no longer take cameras."""


@dataclass(slots=True)
class ModelLane:
    """A model's shared stages, which cameras join and leave while the graph runs.

    Args:
        model: the loaded model.
        ring: its slots (shared by the three stages).
        condition: notified when any of its cameras' queues gets a frame (the fan-in waits on it).
        fanin: reads the cameras' queues round-robin into preprocess.
        preprocess, inference, postprocess: the stages.

    The stages' per-camera tables (routes, age bounds) are replaced whole when a camera joins or
    leaves, never changed in place: a stage thread reading one never sees it change under it.
    """

    model: LoadedModel
    ring: SlotRing
    condition: threading.Condition
    fanin: FanIn
    preprocess: PreprocessStage
    inference: InferenceStage
    postprocess: PostprocessStage

    @classmethod
    def build(cls, model_id: str, model: LoadedModel, pipeline: PipelineConfig, sealed: threading.Event, *,
              just_in_time: bool) -> ModelLane:
        """Allocates the ring and wires the three stages, with no camera yet.

        Args:
            model_id: the model's id (in stage and queue names).
            model: the loaded model.
            pipeline: slot and queue settings.
            sealed: set once no camera can join any more.
            just_in_time: live graphs fill each batch just before inference needs it (see PreprocessStage).
        """
        info = model.backend.info
        allocate_ring = getattr(model.backend, "allocate_ring", None)
        if allocate_ring is not None:  # a GPU backend: pinned host memory with device buffers
            ring = allocate_ring(pipeline.slots, model.batch, tuple(model.config.gpu_preprocess_max_size))
        else:
            ring = SlotRing.allocate(pipeline.slots, model.batch, {info.input.name: (info.input.shape, info.input.dtype)},
                                     {o.name: (o.shape, o.dtype) for o in info.outputs})
        condition = threading.Condition()
        fanin: FanIn = FanIn([], condition=condition)
        clock = InferenceClock()
        # Just in time, the batch being filled is the *next* one only: frames are picked up when
        # inference is about to need them.
        to_inference = BoundedQueue(f"preprocess>inference[{model_id}]", 1 if just_in_time else pipeline.slots,
                                    QueuePolicy.BLOCK)
        to_post = BoundedQueue(f"inference>postprocess[{model_id}]", pipeline.slots, QueuePolicy.BLOCK)
        pre = PreprocessStage(model_id, fanin, to_inference, ring, info.input.name, model.batch,
                              model.config.max_wait_ms / 1000.0, CameraSet((), sealed), max_age_s={},
                              clock=clock if just_in_time else None)
        inference = InferenceStage(model_id, model.backend, ring, to_inference, to_post, CameraSet((), sealed), clock)
        post = PostprocessStage(model_id, to_post, ring, model.decoder, info.outputs[0].name, info.class_names,
                                {}, CameraSet((), sealed), {})
        return cls(model, ring, condition, fanin, pre, inference, post)

    @property
    def routes(self) -> dict[str, list[BoundedQueue]]:
        """Camera -> where postprocess sends its results (analytics, or its frame sinks)."""
        return self.postprocess.routes

    @property
    def max_age_s(self) -> dict[str, float]:
        """Camera -> frame-age bound in seconds (cameras that have one)."""
        return self.postprocess.max_age_s

    @property
    def camera_sets(self) -> tuple[CameraSet, CameraSet, CameraSet]:
        """The cameras each stage still expects an end of stream from (preprocess, inference, postprocess)."""
        return self.preprocess.cameras, self.inference.cameras, self.postprocess.cameras

    @property
    def stages(self) -> list[Stage]:
        """The lane's three stages, in data-path order."""
        return [self.preprocess, self.inference, self.postprocess]

    def join(self, camera_id: str, queue: BoundedQueue, routes: list[BoundedQueue], max_age_s: float | None) -> None:
        """Adds a camera: its frames come from `queue`, its results go to `routes`.

        Raises CameraRefused, with nothing joined, when a stage has finished (the graph is ending).
        """
        joined = []
        for camera_set in self.camera_sets:
            if not camera_set.add(camera_id):
                for s in joined:  # all or nothing: a half-joined camera would hold up the drain
                    s.discard(camera_id)
                raise CameraRefused(f"cannot add camera {camera_id!r}: the graph is finishing")
            joined.append(camera_set)
        # Replaced whole (see the class docstring), before the camera's first frame can arrive.
        ages = {cid: age for cid, age in self.max_age_s.items() if cid != camera_id}
        if max_age_s is not None:
            ages[camera_id] = max_age_s
        self._set_tables({**self.routes, camera_id: routes}, ages)
        self.fanin.add(queue)

    def serves(self, camera_id: str) -> bool:
        """Whether any stage still expects the camera's end of stream."""
        return any(camera_id in s for s in self.camera_sets)

    def leave(self, camera_id: str) -> None:
        """Forgets a camera whose end of stream has passed every stage."""
        self._set_tables({cid: r for cid, r in self.routes.items() if cid != camera_id},
                         {cid: age for cid, age in self.max_age_s.items() if cid != camera_id})

    def _set_tables(self, routes: dict[str, list[BoundedQueue]], max_age_s: dict[str, float]) -> None:
        # One attribute store each: a stage sees the old table or the new one, never a half-changed one.
        self.postprocess.routes = routes
        self.postprocess.max_age_s = max_age_s
        self.preprocess.max_age_s = max_age_s


@dataclass(slots=True)
class SinkLane:
    """One sink with its queue and stage, and the cameras it still expects an end of stream from.

    Args:
        index: the sink's position in the config.
        config: its config entry.
        sink: the sink.
        queue: its input (frames or events, and ends of streams).
        cameras: the cameras routed to it.
    """

    index: int
    config: SinkConfig
    sink: Sink
    queue: BoundedQueue
    cameras: CameraSet

    def wants(self, cam: CameraConfig) -> bool:
        """Whether `cam` feeds this sink: listed (or no list), and, for an event sink, has rules or
        is live (a live camera can go down: its camera_down events go to every event sink)."""
        if self.config.cameras is not None and cam.id not in self.config.cameras:
            return False
        return self.sink.wants_frames or bool(cam.rules) or cam.live

    def make_stage(self) -> SinkStage:
        """The stage that feeds the sink (one per lane, made once at build time)."""
        return SinkStage(self.index, self.sink, self.queue, self.cameras)
