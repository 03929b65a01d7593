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
import errno
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import EvidenceConfig
from pipeline.draw import annotate
from pipeline.frames import EndOfStream, Event, FrameResult
from pipeline.queues import BoundedQueue
from pipeline.sinks.mp4 import VideoFile
from pipeline.stage import CameraSet, Stage, StageContext, consume

log = logging.getLogger(__name__)

# The names this stage gives its files (`_on_event`): CAMERA_RULE_YYYYmmdd-HHMMSS_EVENTID8.jpg|.mp4.
# The disk cap deletes only files named so: anything else in the folders (a person's file, a sink's
# output written there) is not evidence and is never touched.
_EVIDENCE_NAME = re.compile(r"[\w.-]+_\d{8}-\d{6}_[0-9a-f]{8}\.(jpg|mp4)")


def _write_snapshot(path: Path, image: np.ndarray) -> None:
    """Writes a JPEG, checked: cv2.imwrite can report success for a file a full disk cut short.
    A failed write leaves no partial file behind."""
    ok, jpeg = cv2.imencode(".jpg", image)
    if not ok:
        raise OSError(errno.EINVAL, f"OpenCV cannot encode snapshot {path} ({image.shape})")
    try:
        path.write_bytes(jpeg.tobytes())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise OSError(exc.errno, f"cannot write snapshot {path}: {exc.strerror}") from exc


class EvidenceFiles:
    """The evidence files the disk cap may delete, oldest first, with their total size: a running
    index of what the stage wrote, seeded once by a scan of its folders for evidence that earlier
    runs left (by name, see `_EVIDENCE_NAME`), so the cap never rescans a folder per event.

    Files may vanish at any time (a cleanup job, a person): a file gone when it is scanned, sized
    or deleted is simply gone, never an error.

    Args:
        folders: the folders the stage writes evidence into.
    """

    def __init__(self, folders: list[Path]) -> None:
        self._sizes: dict[str, int] = {}  # path -> bytes, in order of writing (oldest first)
        self.total = 0
        found = []
        for folder in folders:
            try:
                with os.scandir(folder) as entries:
                    listed = [e for e in entries if _EVIDENCE_NAME.fullmatch(e.name)]
            except FileNotFoundError:
                continue
            for entry in listed:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted since the listing
                found.append((st.st_mtime, entry.path, st.st_size))
        for _mtime, path, size in sorted(found):
            self._sizes[path] = size
            self.total += size

    def __len__(self) -> int:
        return len(self._sizes)

    def add(self, path: Path) -> None:
        """Counts a file the stage has just written (as the newest)."""
        key = str(path)
        self.total -= self._sizes.pop(key, 0)
        try:
            size = os.stat(key).st_size
        except FileNotFoundError:
            return
        self._sizes[key] = size
        self.total += size

    def enforce(self, cap_bytes: float, keep: Path) -> list[str]:
        """Deletes the oldest files while the total is over `cap_bytes`, never `keep`.

        Returns:
            The paths deleted (or found gone).
        """
        deleted = []
        for path in list(self._sizes):
            if self.total <= cap_bytes:
                break
            if path == str(keep):
                continue
            self.total -= self._sizes.pop(path)
            try:
                os.remove(path)
            except FileNotFoundError:
                pass  # someone else deleted it first: gone either way
            deleted.append(path)
        return deleted


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

    # The files the disk cap may delete; made at the first file written (on this stage's thread),
    # when the folders exist and a scan for earlier runs' evidence is worth its cost.
    _files: EvidenceFiles | None = None

    def __init__(self, config: EvidenceConfig, inp: BoundedQueue, cameras: CameraSet | list[str],
                 event_routes: dict[str, list[BoundedQueue]]) -> None:
        super().__init__("evidence")
        self.config = config
        self.inp = inp
        self.cameras = cameras if isinstance(cameras, CameraSet) else CameraSet(cameras)
        # Camera -> the event sinks' queues. Replaced, never changed in place, by `add_camera` (on
        # the thread adding a camera), so this stage's thread never sees it change under it.
        self.event_routes = dict(event_routes)
        # Per-camera state, created and dropped on this stage's thread only: a camera's ring and
        # clips appear with its first item and go with its end of stream.
        self._ring: dict[str, collections.deque[FrameResult]] = {}
        self._pending: dict[str, list[_PendingClip]] = {}
        self.snapshot_dir = Path(config.dir) / "snapshots"
        self.clip_dir = Path(config.dir) / "clips"

    def add_camera(self, camera_id: str, event_routes: list[BoundedQueue] | None = None) -> bool:
        """A camera with rules joins (before its first frame can arrive).

        Args:
            camera_id: the camera.
            event_routes: the queues of the event sinks that take its events; None: keep what it had.

        Returns:
            False (and nothing joined) when the stage no longer takes cameras (the graph is finishing).
        """
        if event_routes is not None:
            self.event_routes = {**self.event_routes, camera_id: list(event_routes)}
        return self.cameras.add(camera_id)

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
                    # A camera added again later starts a new stream (its pts restart at 0). It
                    # can only be added again once this item is handled (see `consume`).
                    self._ring.pop(item.camera_id, None)
                    for q in self.event_routes.get(item.camera_id, ()):
                        q.put(item, ctx.stop)
                else:
                    camera_id = item.camera if isinstance(item, Event) else item.frame.camera_id
                    if camera_id not in self._ring:  # the camera's first item (of this stream)
                        self._ring[camera_id] = collections.deque()
                        self._pending[camera_id] = []
                    if isinstance(item, Event):
                        self._on_event(item, ctx)
                    else:
                        self._on_frame(item, ctx)
                stats.add_work(time.perf_counter() - t0, 1)
        finally:
            for ring in self._ring.values():
                ring.clear()

    def _publish(self, event: Event, ctx: StageContext) -> None:
        ctx.previews.add_event(event)  # with its snapshot and clip paths, for the status page
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
            _write_snapshot(path, annotate(ring[-1]))
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
        # Fragmented MP4 with every write checked (see pipeline/sinks/mp4.py): a crash while
        # encoding keeps the clip's first fragments, and a full disk fails the run naming the file.
        writer = VideoFile(clip.path, fps=fps, width=first.width, height=first.height)
        canvas = np.empty_like(first.image)  # one canvas for the clip: the writer encodes it before the next frame
        try:
            for result in frames:
                if result.frame.image.shape == first.image.shape:
                    writer.write(annotate(result, out=canvas))
        finally:
            writer.close()
        self._enforce_cap(keep=clip.path)
        self._publish(dataclasses.replace(clip.event, kind="update", clip=str(clip.path),
                                          data={**clip.event.data, "clip_start_pts": round(first.pts, 3),
                                                "clip_end_pts": round(frames[-1].frame.pts, 3)}), ctx)
        if clip.held_end is not None:
            self._publish(clip.held_end, ctx)

    def _enforce_cap(self, keep: Path) -> None:
        """Counts `keep` (the file an event is about to name, just written) and deletes the oldest
        evidence files while they are over max_disk_mb, never `keep` and never a file that is not
        the stage's own (see `EvidenceFiles`)."""
        if self._files is None:  # first file of the run: one scan for what earlier runs left
            self._files = EvidenceFiles([self.snapshot_dir, self.clip_dir])
        self._files.add(keep)
        for path in self._files.enforce(self.config.max_disk_mb * 1024 * 1024, keep):
            log.info("evidence over %.0f MB: deleted %s", self.config.max_disk_mb, path)
