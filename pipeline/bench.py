"""`run.py bench`: the pipeline against the raw backend on the same model, video and machine.

Measured in one process, one after the other:
  1. raw backend: the same ONNX Runtime session on pre-made (already letterboxed) tensors, no
     decode, no pre/postprocess: the limit a pipeline can reach;
  2. the threaded pipeline on the video (decode → preprocess → inference → postprocess → JSONL);
  3. a naive sequential loop (decode, preprocess, infer, decode boxes, write; one after the other),
     the shape most hand-written scripts have;
  4. the raw backend again, so drift of a noisy machine shows up in the two raw figures.
`--live` instead offers N paced, looped copies of the video as live cameras to one model.

It measures the graph that `run` builds (build_graph + execute), and must not tune it for the
benchmark beyond what a config can set.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from pipeline.backends import Backend
from pipeline.config import config_from_data
from pipeline.frames import Frame, FrameResult
from pipeline.graph import LoadedModel, build_graph, load_models
from pipeline.preprocess import LetterboxScratch, letterbox_into
from pipeline.runner import RunSummary, execute, format_summary
from pipeline.sinks.jsonl import frame_record
from pipeline.slots import SlotRing


@dataclass(frozen=True, slots=True)
class BenchResult:
    """The figures of `run_bench`: raw and pipeline fps per run, the sequential loop's, and the
    last pipeline run's summary."""

    model: Path
    video: Path
    frames: int
    batch: int
    raw_fps_runs: tuple[float, ...]  # rounds + 1 runs, bracketing the pipeline runs
    pipeline_fps_runs: tuple[float, ...]
    sequential_fps: float | None
    pipeline: RunSummary  # the last pipeline run

    @property
    def raw_fps(self) -> float:
        return statistics.fmean(self.raw_fps_runs)

    @property
    def pipeline_fps(self) -> float:
        return statistics.fmean(self.pipeline_fps_runs)

    @property
    def ratio(self) -> float:
        return self.pipeline_fps / self.raw_fps

    @property
    def round_ratios(self) -> list[float]:
        """Each pipeline run against the mean of the raw runs just before and after it."""
        r = self.raw_fps_runs
        return [p / ((r[i] + r[i + 1]) / 2) for i, p in enumerate(self.pipeline_fps_runs)]


def video_problem(video: Path) -> str | None:
    """None when `video` opens and yields a first frame, else why not (for `bench --video`).

    Args:
        video: the benchmark's video file.
    """
    if not video.is_file():
        return f"video file not found: {video}"
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            return f"OpenCV/FFmpeg cannot open {video}" + (": the file is empty" if video.stat().st_size == 0 else
                                                            ": not a video or an unsupported codec")
        if not cap.read()[0]:
            return f"{video} has no frame OpenCV can decode"
    finally:
        cap.release()
    return None


def _video_frame_count(video: Path) -> int:
    cap = cv2.VideoCapture(str(video))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def backend_ring(backend: Backend, count: int, batch: int) -> SlotRing:
    """`count` slots of `batch` rows of the backend's own kind: pinned, with device buffers, where the
    backend allocates its own (TensorRT: its `infer` needs them), else plain numpy. Read a slot's
    outputs only after `ring.ready(slot)`: a GPU backend's `infer` returns before they are copied back.

    Args:
        backend: the loaded backend.
        count: slots in the ring.
        batch: rows per slot.
    """
    allocate_ring = getattr(backend, "allocate_ring", None)
    if allocate_ring is not None:
        return allocate_ring(count, batch)
    info = backend.info
    return SlotRing.allocate(count, batch, {info.input.name: (info.input.shape, info.input.dtype)},
                             {o.name: (o.shape, o.dtype) for o in info.outputs})


def _raw_fps(model: LoadedModel, video: Path, frames: int) -> float:
    """Backend alone on pre-made tensors: the same real frames letterboxed once, then only infer()."""
    info = model.backend.info
    ring = backend_ring(model.backend, 2, model.batch)
    slot = ring.acquire(threading.Event())
    scratch = LetterboxScratch(*info.input_hw)
    cap = cv2.VideoCapture(str(video))
    for row in range(model.batch):
        ok, image = cap.read()
        if not ok:
            raise RuntimeError(f"cannot read {model.batch} frames from {video} for the raw benchmark")
        letterbox_into(image, slot.inputs[info.input.name][row], scratch)
    cap.release()
    calls = math.ceil(frames / model.batch)
    model.backend.infer(slot, model.batch)  # warm
    t0 = time.perf_counter()
    for _ in range(calls):
        model.backend.infer(slot, model.batch)
    ring.ready(slot)  # a GPU backend only enqueued the work: the time is until its last result is back
    return calls * model.batch / (time.perf_counter() - t0)


def _sequential_fps(model: LoadedModel, video: Path, frames: int, out: Path) -> float:
    """The naive loop: every step waits for the previous one (batch 1)."""
    info = model.backend.info
    ring = backend_ring(model.backend, 2, 1)
    slot = ring.acquire(threading.Event())
    scratch = LetterboxScratch(*info.input_hw)
    cap = cv2.VideoCapture(str(video))
    done = 0
    t0 = time.perf_counter()
    with out.open("w", encoding="utf-8") as f:
        while done < frames:
            ok, image = cap.read()
            if not ok:
                break
            frame = Frame("cam0", done, image, time.monotonic(), time.time(), video.name)
            frame.letterbox, _ = letterbox_into(image, slot.inputs[info.input.name][0], scratch)
            model.backend.infer(slot, 1)
            ring.ready(slot)
            dets = model.decoder.decode(slot.outputs[info.outputs[0].name], [frame])[0]
            f.write(json.dumps(frame_record(FrameResult(frame, dets, info.class_names), time.monotonic())) + "\n")
            done += 1
    cap.release()
    return done / (time.perf_counter() - t0)


def run_bench(model_path: Path, video: Path, *, frames: int = 0, batch: int = 1, threads: int | None = None,
              rounds: int = 2, sequential: bool = True, gil_switch_ms: float = 0.2,
              model_options: dict[str, Any] | None = None) -> BenchResult:
    """Alternates raw and pipeline runs (raw, pipe, raw, pipe, ..., raw) so that a machine whose
    speed drifts during the benchmark affects both sides alike. `model_options` are more keys of
    the model's config (`backend`, and for triton `url`, `model_name`, `protocol`, `input_dtype`,
    `in_flight`)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    frames = frames or _video_frame_count(video)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        data = {
            "cameras": [{"id": "cam0", "model": "model",
                         "source": {"type": "file", "path": str(video), "max_frames": frames}}],
            "models": [{"id": "model", "path": str(model_path), "batch": batch, "threads": threads, **(model_options or {})}],
            "sinks": [{"type": "jsonl", "path": str(Path(tmp) / "bench.jsonl")}],
        }
        loaded = config_from_data(data, origin="error", base_dir=Path.cwd(), key_names={
            ("models", 0, "batch"): "--batch", ("models", 0, "threads"): "--threads", ("models", 0, "path"): "--model",
            ("models", 0, "backend"): "--backend", ("models", 0, "url"): "--url", ("models", 0, "model_name"): "--model-name",
            ("models", 0, "in_flight"): "--in-flight",
            ("cameras", 0, "source", "max_frames"): "--frames"})
        models = load_models(loaded)
        model = models["model"]
        raw_runs = [_raw_fps(model, video, frames)]
        pipe_runs = []
        summaries = []
        for _ in range(rounds):
            summary = execute(build_graph(loaded, models), handle_signals=False, close_backends=False,
                              gil_switch_interval_s=gil_switch_ms / 1000.0)
            pipe_runs.append(summary.fps)
            summaries.append(summary)
            raw_runs.append(_raw_fps(model, video, frames))
        seq = _sequential_fps(model, video, frames, Path(tmp) / "sequential.jsonl") if sequential else None
        model.backend.close()
    last = summaries[-1]
    return BenchResult(Path(model_path), video, last.frames_out, batch, tuple(raw_runs), tuple(pipe_runs), seq, last)


def format_bench(r: BenchResult) -> str:
    """The `bench` report: raw, pipeline and sequential fps with their ratios, the last pipeline
    run's summary, and a final `pipeline_fps=... raw_fps=... ratio=...` line for scripts."""
    lines = [
        f"model {r.model.name}, video {r.video.name}, {r.frames} frames, batch {r.batch}",
        f"raw backend (pre-made tensors): {r.raw_fps:.2f} fps  (runs: {', '.join(f'{x:.2f}' for x in r.raw_fps_runs)})",
        f"pipeline (threaded):            {r.pipeline_fps:.2f} fps  (runs: {', '.join(f'{x:.2f}' for x in r.pipeline_fps_runs)})"
        f" = {r.ratio:.3f} x raw (per round: {', '.join(f'{x:.3f}' for x in r.round_ratios)})",
    ]
    if r.sequential_fps is not None:
        lines.append(f"sequential loop (naive):        {r.sequential_fps:.2f} fps = {r.sequential_fps / r.raw_fps:.3f} x raw")
    lines += ["", "pipeline run:", format_summary(r.pipeline), "",
              f"pipeline_fps={r.pipeline_fps:.2f} raw_fps={r.raw_fps:.2f} ratio={r.ratio:.3f}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# N live cameras into one model


@dataclass(frozen=True, slots=True)
class LiveBenchRow:
    """One camera count of `run_live_bench`: offered and delivered fps, output ages and drops."""

    cameras: int
    batch: int
    seconds: float
    camera_fps: float  # each camera's paced rate
    raw_fps: float  # backend alone at this batch (mean of the runs before and after)
    total_fps: float  # frames out of the graph per second, all cameras
    age_p50_ms: float  # over all cameras' output frames
    age_p99_ms: float
    drops: dict[str, dict[str, int]]  # camera -> reason -> count
    frames_in: int
    frames_out: int
    detect_fps: float | None = None  # asked per camera; None: every frame
    detections_per_s: dict[str, float] = field(default_factory=dict)  # camera -> achieved
    camera_age_p99_ms: dict[str, float] = field(default_factory=dict)  # camera -> p99 output age
    backend: str = ""

    @property
    def ratio(self) -> float:
        return self.total_fps / self.raw_fps

    @property
    def offered_fps(self) -> float:
        return self.cameras * self.camera_fps


def run_live_bench(model_path: Path, video: Path, counts: list[int], *, seconds: float = 20.0,
                   batch: int | None = None, fps: float | None = None, threads: int | None = None,
                   max_frame_age_ms: float | None = None, gil_switch_ms: float = 0.2, detect_fps: float | None = None,
                   backend: str | None = None, precision: str | None = None) -> list[LiveBenchRow]:
    """For each N in `counts`: N cameras, each the video paced at its native rate (or `fps`) and
    looped, as live cameras (drop_oldest, frame-age bound) into one model with cross-camera
    batching (batch N unless given), for `seconds`; the raw backend at the same batch before and
    after. Frame age is capture → postprocess output."""
    import numpy as np

    rows = []
    for n in counts:
        b = batch or n
        camera: dict = {"source": {"type": "file", "path": str(video), "realtime": True, "loop": True}, "model": "model"}
        if fps is not None:
            camera["source"]["fps"] = fps
        if max_frame_age_ms is not None:
            camera["max_frame_age_ms"] = max_frame_age_ms
        if detect_fps is not None:
            camera["detect_fps"] = detect_fps
        model_cfg: dict = {"id": "model", "path": str(model_path), "batch": b, "threads": threads, "max_wait_ms": 20}
        if backend is not None:
            model_cfg["backend"] = backend
        if precision is not None:
            model_cfg["precision"] = precision
        data = {"cameras": [{**camera, "id": f"cam{i}"} for i in range(n)], "models": [model_cfg], "sinks": []}
        loaded = config_from_data(data, origin="error", base_dir=Path.cwd(), key_names={
            ("models", 0, "batch"): "--batch", ("models", 0, "threads"): "--threads", ("models", 0, "path"): "--model",
            ("models", 0, "backend"): "--backend", ("models", 0, "precision"): "--precision",
            ("cameras", 0, "detect_fps"): "--detect-fps"})
        models = load_models(loaded)
        model = models["model"]
        raw_before = _raw_fps(model, video, max(2 * b, 24))
        graph = build_graph(loaded, models, reloadable=False)
        timer = threading.Timer(seconds, graph.runner.drain)
        timer.start()
        try:
            summary = execute(graph, handle_signals=False, close_backends=False, gil_switch_interval_s=gil_switch_ms / 1000.0)
        finally:
            timer.cancel()
        raw_after = _raw_fps(model, video, max(2 * b, 24))
        model.backend.close()
        ages = np.concatenate([c.output_ages.recent() for c in graph.ctx.metrics.cameras()])
        p50, p99 = (float(v) for v in np.percentile(ages, [50, 99])) if ages.size else (float("nan"),) * 2
        cam_fps = next(iter(graph.ctx.metrics.cameras())).source_fps or 0.0
        rows.append(LiveBenchRow(
            cameras=n, batch=b, seconds=summary.seconds, camera_fps=cam_fps, raw_fps=(raw_before + raw_after) / 2,
            total_fps=summary.frames_out / summary.seconds, age_p50_ms=p50, age_p99_ms=p99,
            drops={c.camera_id: c.drops for c in summary.cameras},
            frames_in=sum(c.frames_in for c in summary.cameras), frames_out=summary.frames_out, detect_fps=detect_fps,
            detections_per_s={c.camera_id: c.detections_per_s for c in summary.cameras},
            camera_age_p99_ms={c.camera_id: c.age_p99_ms for c in summary.cameras},
            backend=type(model.backend).__name__))
    return rows


def format_live_bench(model: Path, video: Path, rows: list[LiveBenchRow]) -> str:
    """The `bench --live` report: one table row per camera count, a legend, and a one-line summary."""
    lines = [f"model {model.name}, {video.name} as N live cameras (paced, looped, drop_oldest), one model",
             "",
             f"{'N':>3}{'batch':>6}{'offered':>9}{'raw':>8}{'out':>8}{'out/raw':>9}{'age p50':>10}{'age p99':>10}"
             f"{'in':>7}{'out':>7}  drops per camera (reason: count)"]
    for r in rows:
        drops = "; ".join(f"{cid} " + ",".join(f"{k}:{v}" for k, v in sorted(d.items())) for cid, d in r.drops.items() if d)
        lines.append(f"{r.cameras:>3}{r.batch:>6}{r.offered_fps:>9.1f}{r.raw_fps:>8.2f}{r.total_fps:>8.2f}{r.ratio:>9.3f}"
                     f"{r.age_p50_ms:>8.0f}ms{r.age_p99_ms:>8.0f}ms{r.frames_in:>7}{r.frames_out:>7}  {drops or '-'}")
    lines += ["", "offered: frames/s the cameras deliver; raw: backend alone at that batch on pre-made tensors; "
                  "out: frames/s out of the graph (all cameras); age: capture → postprocess output"]
    for r in rows:
        asked = f"{r.detect_fps:g}/s" if r.detect_fps is not None else "every frame"
        lines += ["", f"N={r.cameras} ({r.backend}), per camera, detections asked: {asked}"]
        lines += [f"camera {cid} detections_per_s={r.detections_per_s[cid]:.2f} age_p99_ms={r.camera_age_p99_ms[cid]:.0f}"
                  for cid in r.detections_per_s]
    lines += [" ".join(f"N={r.cameras}:out/raw={r.ratio:.3f},p99={r.age_p99_ms:.0f}ms" for r in rows)]
    return "\n".join(lines)
