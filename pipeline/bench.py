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
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import LoadedConfig, VigilConfig
from pipeline.frames import Frame
from pipeline.graph import LoadedModel, build_graph, load_models
from pipeline.preprocess import SlotRing, letterbox_into
from pipeline.runner import RunSummary, execute, format_summary
from pipeline.sinks.jsonl import frame_record
from pipeline.frames import FrameResult


@dataclass(frozen=True, slots=True)
class BenchResult:
    model: Path
    video: Path
    frames: int
    batch: int
    raw_fps_runs: tuple[float, float]
    pipeline_fps: float
    sequential_fps: float | None
    pipeline: RunSummary

    @property
    def raw_fps(self) -> float:
        return sum(self.raw_fps_runs) / len(self.raw_fps_runs)

    @property
    def ratio(self) -> float:
        return self.pipeline_fps / self.raw_fps


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
    canvas = np.empty((*info.input_hw, 3), np.uint8)
    cap = cv2.VideoCapture(str(video))
    for row in range(model.batch):
        ok, image = cap.read()
        if not ok:
            raise RuntimeError(f"cannot read {model.batch} frames from {video} for the raw benchmark")
        letterbox_into(image, slot.inputs[info.input.name][row], canvas)
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
    canvas = np.empty((*info.input_hw, 3), np.uint8)
    cap = cv2.VideoCapture(str(video))
    done = 0
    t0 = time.perf_counter()
    with out.open("w", encoding="utf-8") as f:
        while done < frames:
            ok, image = cap.read()
            if not ok:
                break
            frame = Frame("cam0", done, image, time.monotonic(), time.time(), video.name)
            frame.letterbox = letterbox_into(image, slot.inputs[info.input.name][0], canvas)
            model.backend.infer(slot, 1)
            dets = model.decoder.decode(slot.outputs[info.outputs[0].name], [frame])[0]
            f.write(json.dumps(frame_record(FrameResult(frame, dets, info.class_names), time.monotonic())) + "\n")
            done += 1
    cap.release()
    return done / (time.perf_counter() - t0)


def run_bench(model_path: Path, video: Path, *, frames: int = 0, batch: int = 1, threads: int | None = None,
              sequential: bool = True) -> BenchResult:
    frames = frames or _video_frame_count(video)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        data = {
            "cameras": [{"id": "cam0", "model": "model",
                         "source": {"type": "file", "path": str(video), "max_frames": frames}}],
            "models": [{"id": "model", "path": str(model_path), "batch": batch, "threads": threads}],
            "sinks": [{"type": "jsonl", "path": str(Path(tmp) / "bench.jsonl")}],
        }
        loaded = LoadedConfig(VigilConfig.model_validate(data, context={"base_dir": Path.cwd()}), "<bench>", {})
        models = load_models(loaded, intra_op_threads=threads)
        model = models["model"]
        raw_first = _raw_fps(model, video, frames)
        graph = build_graph(loaded, models)
        summary = execute(graph, handle_signals=False)
        pipeline_fps = summary.fps
        seq = _sequential_fps(model, video, frames, Path(tmp) / "sequential.jsonl") if sequential else None
        raw_second = _raw_fps(model, video, frames)
        model.backend.close()
    return BenchResult(Path(model_path), video, summary.frames_out, batch, (raw_first, raw_second), pipeline_fps, seq, summary)


def format_bench(r: BenchResult) -> str:
    lines = [
        f"model {r.model.name}, video {r.video.name}, {r.frames} frames, batch {r.batch}",
        f"raw backend (pre-made tensors): {r.raw_fps_runs[0]:.2f} fps before, {r.raw_fps_runs[1]:.2f} fps after",
        f"pipeline (threaded):            {r.pipeline_fps:.2f} fps = {r.ratio:.3f} x raw",
    ]
    if r.sequential_fps is not None:
        lines.append(f"sequential loop (naive):        {r.sequential_fps:.2f} fps = {r.sequential_fps / r.raw_fps:.3f} x raw")
    lines += ["", "pipeline run:", format_summary(r.pipeline), "",
              f"pipeline_fps={r.pipeline_fps:.2f} raw_fps={r.raw_fps:.2f} ratio={r.ratio:.3f}"]
    return "\n".join(lines)
