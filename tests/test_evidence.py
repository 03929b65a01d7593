"""The evidence stage on its own: snapshots, clips and the disk cap, fed through its real queue."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from pipeline.config import EvidenceConfig
from pipeline.evidence import EvidenceStage
from pipeline.frames import Detections, EndOfStream, Event, Frame, FrameResult
from pipeline.queues import BoundedQueue
from pipeline.stage import StageContext
from tests.helpers import count_video_frames

FPS = 10.0


def frame_result(seq: int, rng: np.random.Generator) -> FrameResult:
    # Noise does not compress: each snapshot is ~100 kB, so a small cap is crossed in a few events.
    image = rng.integers(0, 255, (240, 320, 3), np.uint8)
    frame = Frame("cam", seq, image, seq / FPS, 1_700_000_000 + seq / FPS, "src.mp4", pts=seq / FPS)
    det = Detections(np.array([[10, 20, 100, 200]], np.float32), np.array([0.9], np.float32), np.array([0], np.int64),
                     track_id=np.array([1], np.int64))
    return FrameResult(frame, det, {0: "person"})


def start_event(seq: int) -> Event:
    return Event(event_id=uuid.uuid4().hex, kind="start", rule="intrusion", rule_type="zone_intrusion", camera="cam",
                 track_ids=[1], classes=["person"], zone="danger", line=None, ts=1_700_000_000 + seq / FPS,
                 started_ts=1_700_000_000 + seq / FPS, seq=seq, boxes=[[10, 20, 100, 200]], confidence=[0.9])


def run_stage(config: EvidenceConfig, items: list[object]) -> list[Event]:
    """Feeds `items` and the camera's end through the stage's input queue, runs it on this thread
    until it returns, and gives back the events it published."""
    ctx = StageContext()
    inp: BoundedQueue = BoundedQueue("evidence", len(items) + 2, "block")
    out: BoundedQueue = BoundedQueue("events", 4 * len(items) + 2, "block")
    stage = EvidenceStage(config, inp, ["cam"], {"cam": [out]})
    for item in [*items, EndOfStream("cam")]:
        inp.put(item, ctx.stop)
    stage.run(ctx)
    published = []
    while len(out):
        item = out.get(0.1)
        if isinstance(item, Event):
            published.append(item)
    return published


def incidents(n: int, every: int = 3, seed: int = 0) -> list[object]:
    """n start events, each on its own frame `every` frames apart."""
    rng = np.random.default_rng(seed)
    items: list[object] = []
    for seq in range(n * every):
        items.append(frame_result(seq, rng))
        if seq % every == every - 1:
            items.append(start_event(seq))
    return items


def own_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("cam_intrusion_"))


def test_cap_keeps_files_the_stage_did_not_write(tmp_path):
    snapshots, clips = tmp_path / "snapshots", tmp_path / "clips"
    snapshots.mkdir()
    clips.mkdir()
    # Older than anything the stage writes, and big: the first candidates for an mtime-ordered cap.
    foreign = {snapshots / "site_plan.jpg": 300_000, clips / "frames.jsonl": 200_000, clips / "floor.mp4": 200_000}
    for path, size in foreign.items():
        path.write_bytes(b"x" * size)
        os.utime(path, (1_000_000, 1_000_000))
    config = EvidenceConfig(dir=tmp_path, clips=False, max_disk_mb=0.5)
    events = run_stage(config, incidents(8))
    assert all(path.exists() and path.stat().st_size == size for path, size in foreign.items()), \
        sorted(p.name for p in snapshots.iterdir()) + sorted(p.name for p in clips.iterdir())
    kept = own_files(snapshots)
    assert sum(p.stat().st_size for p in kept) <= 0.5 * 1024 * 1024
    assert 0 < len(kept) < 8, "the stage's own oldest snapshots went"
    assert Path(events[-1].snapshot).exists(), "the newest is kept"


def test_cap_counts_the_evidence_of_earlier_runs_and_deletes_it_first(tmp_path):
    config = EvidenceConfig(dir=tmp_path, clips=False, max_disk_mb=0.5)
    first = run_stage(config, incidents(5, seed=1))
    earlier = [Path(e.snapshot) for e in first if e.kind == "start"]
    for path in earlier:
        os.utime(path, (1_000_000, 1_000_000))  # an earlier run's files: older than this run's
    second = run_stage(config, incidents(5, seed=2))
    now = [Path(e.snapshot) for e in second if e.kind == "start"]
    assert sum(p.stat().st_size for p in own_files(tmp_path / "snapshots")) <= 0.5 * 1024 * 1024
    assert not earlier[0].exists(), "an earlier run's snapshot is the stage's own, oldest first"
    assert now[-1].exists()


def test_cap_does_not_rescan_the_folder_on_every_event(tmp_path, monkeypatch):
    scans: list[str] = []
    real_scandir = os.scandir

    def counting_scandir(path):
        scans.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    run_stage(EvidenceConfig(dir=tmp_path, clips=False, max_disk_mb=0.5), incidents(8))
    assert len(scans) <= 2, f"scanned {len(scans)} times for 8 events: {scans}"


def test_cap_tolerates_files_someone_else_deleted(tmp_path, monkeypatch):
    """A cleanup job (or a person) deletes evidence while the stage runs: during a scan of the
    folder, and before the cap comes to a file the stage wrote."""
    real_scandir = os.scandir

    class ScanThenDelete:
        """os.scandir whose first listed evidence file is deleted right after the listing."""

        def __init__(self, path):
            with real_scandir(path) as it:
                self.entries = list(it)
            own = [e for e in self.entries if e.name.startswith("cam_intrusion_")]
            if own:
                os.remove(own[0].path)

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *exc):
            return False

        def __iter__(self):
            return iter(self.entries)

    config = EvidenceConfig(dir=tmp_path, clips=False, max_disk_mb=0.5)
    run_stage(config, incidents(3, seed=3))  # evidence of an earlier run, seen by the next one's scan
    monkeypatch.setattr(os, "scandir", ScanThenDelete)
    events = run_stage(config, incidents(8, seed=4))
    assert Path(events[-1].snapshot).exists()

    # The stage's own files deleted by hand before the cap reaches them.
    monkeypatch.setattr(os, "scandir", real_scandir)
    items = incidents(8, seed=5)
    deleted: list[Path] = []

    class DeleteOwnFiles(BoundedQueue):
        def get(self, timeout):
            item = super().get(timeout)
            for path in own_files(tmp_path / "snapshots")[:2]:
                path.unlink(missing_ok=True)
                deleted.append(path)
            return item

    ctx = StageContext()
    inp: DeleteOwnFiles = DeleteOwnFiles("evidence", len(items) + 2, "block")
    out: BoundedQueue = BoundedQueue("events", 4 * len(items) + 2, "block")
    for item in [*items, EndOfStream("cam")]:
        inp.put(item, ctx.stop)
    EvidenceStage(config, inp, ["cam"], {"cam": [out]}).run(ctx)
    assert deleted


def test_clips_are_fragmented_so_a_crash_keeps_them_readable(tmp_path):
    config = EvidenceConfig(dir=tmp_path, snapshots=False, pre_seconds=1.0, post_seconds=1.0)
    events = run_stage(config, incidents(1, every=20))
    clip = Path(next(e.clip for e in events if e.clip))
    assert b"moof" in clip.read_bytes(), "a fragmented MP4: each fragment carries its own index"
    assert count_video_frames(clip) >= 10


def test_a_full_disk_fails_the_stage_naming_the_snapshot(full_disk):
    import errno

    import pytest

    with pytest.raises(OSError) as failed:
        run_stage(EvidenceConfig(dir=full_disk, clips=False), incidents(3))
    assert failed.value.errno == errno.ENOSPC and "cannot write snapshot" in str(failed.value), failed.value
    left = list((full_disk / "snapshots").iterdir())
    assert all(p.read_bytes().endswith(b"\xff\xd9") for p in left), "whole JPEGs only, no cut one left"
