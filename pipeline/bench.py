"""`run.py bench`: the pipeline against the raw backend on the same model, video and machine.

Measured in one process, one after the other:
  1. raw backend: the same ONNX Runtime session on pre-made (already letterboxed) tensors, no
     decode, no pre/postprocess: the limit a pipeline can reach;
  2. the threaded pipeline on the video (decode → preprocess → inference → postprocess → JSONL);
  3. a naive sequential loop (decode, preprocess, infer, decode boxes, write; one after the other),
     the shape most hand-written scripts have;
  4. the raw backend again, so drift of a noisy machine shows up in the two raw figures.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from pipeline.config import config_from_data
from pipeline.frames import Frame
from pipeline.graph import LoadedModel, build_graph, load_models
from pipeline.preprocess import LetterboxScratch, SlotRing, letterbox_into
from pipeline.runner import RunSummary, execute, format_summary
from pipeline.sinks.jsonl import frame_record
from pipeline.frames import FrameResult


@dataclass(frozen=True, slots=True)
class BenchResult:
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


def _video_frame_count(video: Path) -> int:
    cap = cv2.VideoCapture(str(video))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def _raw_fps(model: LoadedModel, video: Path, frames: int) -> float:
    """Backend alone on pre-made tensors: the same real frames letterboxed once, then only infer()."""
    info = model.backend.info
    ring = SlotRing.allocate(2, model.batch, {info.input.name: (info.input.shape, info.input.dtype)},
                             {o.name: (o.shape, o.dtype) for o in info.outputs})
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
    return calls * model.batch / (time.perf_counter() - t0)


def _sequential_fps(model: LoadedModel, video: Path, frames: int, out: Path) -> float:
    """The naive loop: every step waits for the previous one (batch 1)."""
    info = model.backend.info
    ring = SlotRing.allocate(2, 1, {info.input.name: (info.input.shape, info.input.dtype)},
                             {o.name: (o.shape, o.dtype) for o in info.outputs})
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
            dets = model.decoder.decode(slot.outputs[info.outputs[0].name], [frame])[0]
            f.write(json.dumps(frame_record(FrameResult(frame, dets, info.class_names), time.monotonic())) + "\n")
            done += 1
    cap.release()
    return done / (time.perf_counter() - t0)


def run_bench(model_path: Path, video: Path, *, frames: int = 0, batch: int = 1, threads: int | None = None,
              rounds: int = 2, sequential: bool = True, gil_switch_ms: float = 0.2) -> BenchResult:
    """Alternates raw and pipeline runs (raw, pipe, raw, pipe, ..., raw) so that a machine whose
    speed drifts during the benchmark affects both sides alike."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    frames = frames or _video_frame_count(video)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        data = {
            "cameras": [{"id": "cam0", "model": "model",
                         "source": {"type": "file", "path": str(video), "max_frames": frames}}],
            "models": [{"id": "model", "path": str(model_path), "batch": batch, "threads": threads}],
            "sinks": [{"type": "jsonl", "path": str(Path(tmp) / "bench.jsonl")}],
        }
        loaded = config_from_data(data, origin="error", base_dir=Path.cwd(), key_names={
            ("models", 0, "batch"): "--batch", ("models", 0, "threads"): "--threads", ("models", 0, "path"): "--model",
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
