"""Evidence for events: a JPEG snapshot per `start`, and an MP4 clip from a per-camera ring buffer
covering `pre_seconds` before the start to `post_seconds` after it. Runs in its own stage, off
the hot path, between the analytics stages and the event sinks; oldest files are deleted when the
folder grows past `max_disk_mb`.

Events leave this stage in order. A `start` carries its snapshot's path; once its clip is written,
an `update` event of the same incident (same event_id) carries the clip's path, and an `end` that
came sooner is held back until then (start → update → end). Clips are encoded on this stage's
thread: a long clip can hold up the rule cameras' frames behind it (the queue into this stage
blocks), which a worker pool for encoding would remove. The ring holds
references to frames that already exist (no copies); its memory is about pre_seconds x fps
decoded frames per camera."""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from pipeline.config import EvidenceConfig
from pipeline.draw import annotate
from pipeline.frames import EndOfStream, Event, FrameResult
from pipeline.queues import BoundedQueue
from pipeline.stage import CameraSet, Stage, StageContext, consume

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _PendingClip:
    event: Event
    path: Path
    until_pts: float
    frames: list[FrameResult] = field(default_factory=list)
    held_end: Event | None = None  # the incident ended before its clip: published after the clip


class EvidenceStage(Stage):
    """Writes snapshots and clips for the rule cameras' incidents and passes their events on to the
    event sinks, in order (see the module docstring).

    Args:
        config: the `evidence:` section (folder, what to write, clip span, disk budget).
        inp: frames and events of the rule cameras, from their analytics stages.
        cameras: the cameras whose EndOfStream the stage waits for; grows with `add_camera`.
        event_routes: camera id -> the queues of the event sinks that take its events.
    """

    def __init__(self, config: EvidenceConfig, inp: BoundedQueue, cameras: CameraSet | list[str],
                 event_routes: dict[str, list[BoundedQueue]]) -> None:
        super().__init__("evidence")
        self.config = config
        self.inp = inp
        self.cameras = cameras if isinstance(cameras, CameraSet) else CameraSet(cameras)
        self.event_routes = event_routes  # camera -> the event sinks' queues
        ids = self.cameras.snapshot()
        self._ring: dict[str, collections.deque[FrameResult]] = {c: collections.deque() for c in ids}
        self._pending: dict[str, list[_PendingClip]] = {c: [] for c in ids}
        self.snapshot_dir = Path(config.dir) / "snapshots"
        self.clip_dir = Path(config.dir) / "clips"

    def add_camera(self, camera_id: str) -> None:
        """A camera with rules joins (before its first frame can arrive)."""
        self._ring.setdefault(camera_id, collections.deque())
        self._pending.setdefault(camera_id, [])
        self.cameras.add(camera_id)

    def run(self, ctx: StageContext) -> None:
        stats = ctx.metrics.stage(self.name)
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        self.clip_dir.mkdir(parents=True, exist_ok=True)
        try:
            for item in consume(self.inp, self.cameras, ctx):
                t0 = time.perf_counter()
                if isinstance(item, EndOfStream):
                    for clip in self._pending.pop(item.camera_id, []):
                        self._finish_clip(clip, ctx)  # the stream ended early: a shorter clip
                    # A camera added again later starts a new stream (its pts restart at 0).
                    self._ring.pop(item.camera_id, None)
                    for q in self.event_routes[item.camera_id]:
                        q.put(item, ctx.stop)
                elif isinstance(item, Event):
                    self._on_event(item, ctx)
                else:
                    self._on_frame(item, ctx)
                stats.add_work(time.perf_counter() - t0, 1)
        finally:
            for ring in self._ring.values():
                ring.clear()

    def _publish(self, event: Event, ctx: StageContext) -> None:
        for q in self.event_routes[event.camera]:
            q.put(event, ctx.stop)

    def _on_frame(self, result: FrameResult, ctx: StageContext) -> None:
        cam = result.frame.camera_id
        ring = self._ring[cam]
        ring.append(result)
        while ring and result.frame.pts - ring[0].frame.pts > self.config.pre_seconds:
            ring.popleft()
        still_open = []
        for clip in self._pending[cam]:
            clip.frames.append(result)
            if result.frame.pts >= clip.until_pts:
                self._finish_clip(clip, ctx)
            else:
                still_open.append(clip)
        self._pending[cam] = still_open

    def _on_event(self, event: Event, ctx: StageContext) -> None:
        if event.kind != "start":
            pending = [c for c in self._pending[event.camera] if c.event.event_id == event.event_id]
            if event.kind == "end" and pending:
                pending[0].held_end = event  # keeps start → update(clip) → end in order
            else:
                self._publish(event, ctx)
            return
        stem = f"{event.camera}_{event.rule}_{time.strftime('%Y%m%d-%H%M%S', time.localtime(event.ts))}_{event.event_id[:8]}"
        ring = self._ring[event.camera]
        if self.config.snapshots and ring:
            path = self.snapshot_dir / f"{stem}.jpg"
            if not cv2.imwrite(str(path), annotate(ring[-1])):
                raise OSError(f"cannot write snapshot {path}")
            event = dataclasses.replace(event, snapshot=str(path))
            self._enforce_cap(keep=path)
        self._publish(event, ctx)
        # A line crossing is an instant (no end), so it gets a snapshot but no clip.
        if self.config.clips and ring and event.rule_type != "line_crossing":
            start_pts = ring[-1].frame.pts
            self._pending[event.camera].append(
                _PendingClip(event, self.clip_dir / f"{stem}.mp4", start_pts + self.config.post_seconds, list(ring)))

    def _finish_clip(self, clip: _PendingClip, ctx: StageContext) -> None:
        frames = clip.frames
        if not frames:
            return
        first = frames[0].frame
        span = frames[-1].frame.pts - first.pts
        fps = (len(frames) - 1) / span if span > 0 else 1.0
        writer = cv2.VideoWriter(str(clip.path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (first.width, first.height))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write clip {clip.path}")
        try:
            for result in frames:
                if result.frame.image.shape == first.image.shape:
                    writer.write(annotate(result))
        finally:
            writer.release()
        self._enforce_cap(keep=clip.path)
        self._publish(dataclasses.replace(clip.event, kind="update", clip=str(clip.path),
                                          data={**clip.event.data, "clip_start_pts": round(first.pts, 3),
                                                "clip_end_pts": round(frames[-1].frame.pts, 3)}), ctx)
        if clip.held_end is not None:
            self._publish(clip.held_end, ctx)

    def _enforce_cap(self, keep: Path) -> None:
        """Deletes the oldest evidence files while the folder is over max_disk_mb, never `keep`
        (the file an event is about to name)."""
        files = []
        for folder in (self.snapshot_dir, self.clip_dir):
            with os.scandir(folder) as entries:
                files += [(e.stat().st_mtime, e.stat().st_size, e.path) for e in entries if e.is_file()]
        total = sum(size for _, size, _ in files)
        cap = self.config.max_disk_mb * 1024 * 1024
        for _mtime, size, path in sorted(files):
            if total <= cap:
                break
            if Path(path) == keep:
                continue
            os.remove(path)
            total -= size
            log.info("evidence over %.0f MB: deleted %s", self.config.max_disk_mb, path)
