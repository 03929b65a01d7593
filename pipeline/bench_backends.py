"""`vigil bench --compare-backends`: every backend and precision this machine has, on the same input.

Speed: each backend alone (raw `infer`, no decode, no pre/postprocess) on the same pre-made
letterboxed tensors from the video, measured round-robin over the backends for several rounds (every
other round in reverse order), so that a machine whose speed drifts (other work on shared cores)
slows every backend alike.
Agreement: each backend's detections on the shared images against ONNX Runtime f32 through the real
letterbox, decoder and NMS: the reference boxes matched by a box of the same class at IoU >= 0.9,
and the largest confidence difference among the matched pairs.

It loads backends through `create_backend` with the config a user would write (`backend:`,
`precision:`), so what it measures is what `run` would run.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.backends import Backend, ModelLoadError, create_backend
from pipeline.backends.auto import machine_facts
from pipeline.bench import backend_ring
from pipeline.config import ConfigError, ConfigIssue, ModelConfig
from pipeline.frames import Detections, Frame
from pipeline.paths import shared_dir
from pipeline.postprocess.nms import box_iou
from pipeline.postprocess.yolo import DecodeParams, YoloDecoder
from pipeline.preprocess import LetterboxScratch, letterbox_into
from pipeline.slots import Slot, SlotRing

log = logging.getLogger(__name__)

# (label, backend, precision): the label is the key of the last output line.
VARIANTS = (
    ("onnxruntime", "onnxruntime", "f32"),
    ("openvino-f32", "openvino", "f32"),
    ("openvino-bf16", "openvino", "bf16"),
    ("tensorrt-fp16", "tensorrt", "fp16"),
)
MATCH_IOU = 0.9
SLOTS = 4  # slots of distinct pre-made frames each backend cycles through
IMAGE_SUFFIXES = (".jpg", ".png")


@dataclass(frozen=True, slots=True)
class Agreement:
    """Detections of one backend against the reference's on the same images.

    Args:
        matched: reference boxes with a same-class box at IoU >= MATCH_IOU (one-to-one).
        total: reference boxes.
        found: the backend's own boxes (more than `matched`: boxes the reference does not have).
        max_conf_diff: the largest |confidence difference| among the matched pairs (0 if none).
    """

    matched: int
    total: int
    found: int
    max_conf_diff: float

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(self.matched + other.matched, self.total + other.total, self.found + other.found,
                         max(self.max_conf_diff, other.max_conf_diff))


@dataclass(frozen=True, slots=True)
class BackendRun:
    """One backend/precision's figures: raw fps per round, what it actually ran, and its agreement.

    Args:
        label: e.g. `openvino-bf16`.
        runs: raw fps of each round.
        runs_as: the precision the backend reports it executes (OpenVINO: its inference precision).
        agreement: against ONNX Runtime f32; None for the reference itself.
    """

    label: str
    runs: tuple[float, ...]
    runs_as: str
    agreement: Agreement | None

    @property
    def fps(self) -> float:
        return statistics.fmean(self.runs)


@dataclass(frozen=True, slots=True)
class CompareResult:
    """Everything `format_compare` prints."""

    model: Path
    video: Path
    frames: int
    batch: int
    images: tuple[str, ...]
    rows: tuple[BackendRun, ...]
    skipped: tuple[tuple[str, str], ...]  # (label, why)


def match_detections(ref: Detections, other: Detections, iou: float = MATCH_IOU) -> Agreement:
    """How many of `ref`'s boxes `other` has: greedy one-to-one, reference boxes by confidence,
    each to the unmatched same-class box it overlaps most, if at IoU >= `iou`.

    Args:
        ref: the reference detections (one image).
        other: the detections to check (same image).
        iou: the least IoU of a match.

    Returns:
        The agreement for this image.
    """
    if len(ref) == 0 or len(other) == 0:
        return Agreement(0, len(ref), len(other), 0.0)
    ious = box_iou(ref.xyxy, other.xyxy)
    ious[ref.class_id[:, None] != other.class_id[None, :]] = 0.0
    taken = np.zeros(len(other), bool)
    matched, worst = 0, 0.0
    for i in np.argsort(-ref.confidence, kind="stable"):
        candidates = np.where(taken, -1.0, ious[i])
        j = int(np.argmax(candidates))
        if candidates[j] >= iou:
            taken[j] = True
            matched += 1
            worst = max(worst, abs(float(ref.confidence[i]) - float(other.confidence[j])))
    return Agreement(matched, len(ref), len(other), worst)


def shared_images(folder: Path) -> list[Path]:
    """The .jpg and .png images in `folder`, by name (none when the folder is missing)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def compare_backends(model: Path, video: Path, frames: int, batch: int | None, rounds: int, threads: int | None) -> str:
    """`bench --compare-backends`: checks the options, runs `run_compare` on the shared images and
    returns the report (`format_compare`).

    Args:
        model: the .onnx model.
        video: the video the pre-made tensors come from.
        frames: `--frames` (0: 100).
        batch: `--batch` (None: 1).
        rounds: `--rounds`.
        threads: `--threads` (None: all cores).

    Returns:
        The report text. Raises ConfigError naming the option that is out of bounds.
    """
    issues = [ConfigIssue("error", 0, option, f"must be at least {low}, got {value}")
              for option, value, low in (("--frames", frames, 0), ("--batch", batch, 1), ("--rounds", rounds, 1))
              if value is not None and value < low]
    images = shared_images(shared_dir() / "media")
    if not images:
        issues.append(ConfigIssue("error", 0, "--compare-backends",
                                  f"no .jpg/.png images to compare on in {shared_dir() / 'media'} (set VIGIL_SHARED)"))
    if issues:
        raise ConfigError(issues)
    return format_compare(run_compare(model, video, images, frames=frames or 100, batch=batch or 1, rounds=rounds,
                                      threads=threads))


def run_compare(model_path: Path, video: Path, images: list[Path], *, frames: int = 100, batch: int = 1,
                rounds: int = 3, threads: int | None = None) -> CompareResult:
    """Loads every backend/precision this machine has, measures them round-robin and checks each
    against ONNX Runtime f32.

    Args:
        model_path: the .onnx model.
        video: frames for the pre-made tensors.
        images: the images detections are compared on.
        frames: frames per backend per round.
        batch: rows per inference call.
        rounds: rounds over all backends.
        threads: CPU threads per call for every backend (default: all cores).

    Returns:
        The figures; backends that cannot load here are listed in `skipped` with the reason.
    """
    if rounds < 1 or frames < 1 or batch < 1:
        raise ValueError(f"frames, batch and rounds must be at least 1, got {frames}, {batch}, {rounds}")
    backends, skipped = _load(model_path, batch, threads)
    if "onnxruntime" not in backends:
        raise ModelLoadError(f"the reference backend onnxruntime did not load: {dict(skipped)['onnxruntime']}")
    try:
        info = backends["onnxruntime"][0].info
        premade = _premade(video, info.input_hw, SLOTS * batch)
        rings = {label: _ring(backend, batch, premade) for label, (backend, _) in backends.items()}
        calls = math.ceil(frames / batch)
        runs: dict[str, list[float]] = {label: [] for label in backends}
        for label, (backend, _) in backends.items():  # warm: each slot's binding made, first-run costs paid
            ring, slots = rings[label]
            for slot in slots:
                backend.infer(slot, batch)
            ring.ready(slots[-1])
        for r in range(rounds):
            # Every other round in reverse order, so that no backend always runs right after another
            # (a drift within a round then evens out over two rounds).
            for label, (backend, _) in (list(backends.items()) if r % 2 == 0 else list(backends.items())[::-1]):
                ring, slots = rings[label]
                t0 = time.perf_counter()
                for i in range(calls):
                    backend.infer(slots[i % len(slots)], batch)
                # A GPU backend only enqueued the work (one stream, in order): time it until the last result is back.
                ring.ready(slots[(calls - 1) % len(slots)])
                runs[label].append(calls * batch / (time.perf_counter() - t0))
        detections = {label: _detect(backend, config, images) for label, (backend, config) in backends.items()}
    finally:
        for backend, _ in backends.values():
            backend.close()
    reference = detections["onnxruntime"]
    rows = []
    for label, (backend, _) in backends.items():
        agreement = None
        if label != "onnxruntime":
            agreement = Agreement(0, 0, 0, 0.0)
            for name, ref in reference.items():
                agreement = agreement + match_detections(ref, detections[label][name])
        runs_as = str(getattr(backend, "precision", None) or backends[label][1].precision)
        rows.append(BackendRun(label, tuple(runs[label]), runs_as, agreement))
    return CompareResult(Path(model_path), Path(video), calls * batch, batch, tuple(p.name for p in images), tuple(rows),
                         tuple(skipped))


def _load(model_path: Path, batch: int, threads: int | None) -> tuple[dict[str, tuple[Backend, ModelConfig]], list[tuple[str, str]]]:
    """The variants that load here, by label, and the ones that do not, with why."""
    facts = machine_facts(Path(model_path))
    loaded: dict[str, tuple[Backend, ModelConfig]] = {}
    skipped: list[tuple[str, str]] = []
    for label, backend, precision in VARIANTS:
        if backend == "tensorrt" and not (facts.tensorrt and facts.cuda_devices):
            skipped.append((label, "needs TensorRT and a CUDA GPU"))
            continue
        config = ModelConfig.model_validate({"id": label, "path": str(model_path), "backend": backend,
                                             "precision": precision, "batch": batch, "threads": threads})
        try:
            loaded[label] = (create_backend(config), config)
        except ModelLoadError as exc:
            skipped.append((label, str(exc)))
    return loaded, skipped


def _premade(video: Path, input_hw: tuple[int, int], count: int) -> np.ndarray:
    """`count` frames of `video` (looped if it is shorter), letterboxed once: (count, 3, H, W) float32."""
    out = np.zeros((count, 3, *input_hw), np.float32)
    scratch = LetterboxScratch(*input_hw)
    cap = cv2.VideoCapture(str(video))
    try:
        for row in range(count):
            ok, image = cap.read()
            if not ok:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, image = cap.read()
            if not ok:
                raise RuntimeError(f"cannot read frames from {video} for the benchmark")
            letterbox_into(image, out[row], scratch)
    finally:
        cap.release()
    return out


def _ring(backend: Backend, batch: int, premade: np.ndarray) -> tuple[SlotRing, list[Slot]]:
    """SLOTS slots of this backend's own kind (pinned for TensorRT), filled with the pre-made rows,
    and their ring (whose `ready(slot)` says when a slot's outputs are back)."""
    info = backend.info
    ring = backend_ring(backend, SLOTS, batch)
    slots = [ring.acquire(threading.Event()) for _ in range(SLOTS)]
    for k, slot in enumerate(slots):
        slot.inputs[info.input.name][:] = premade[k * batch:(k + 1) * batch]  # (casts for an fp16 input)
    return ring, slots


def _detect(backend: Backend, config: ModelConfig, images: list[Path]) -> dict[str, Detections]:
    """Each image through letterbox, this backend (batch 1) and the real decoder with NMS."""
    info = backend.info
    ring, slots = _ring(backend, 1, np.zeros((SLOTS, *info.input.shape), np.float32))
    slot = slots[0]
    decoder = YoloDecoder(config.family, info.outputs[0].shape, len(info.class_names) or None,
                          DecodeParams(conf=config.conf, iou=config.iou, max_det=config.max_det))
    scratch = LetterboxScratch(*info.input_hw)
    row = np.zeros(info.input.shape, np.float32)
    out = {}
    for path in images:
        image = cv2.imread(str(path))
        if image is None:
            raise RuntimeError(f"cannot read image {path}")
        frame = Frame("bench", 0, image, 0.0, 0.0, path.name)
        frame.letterbox, _ = letterbox_into(image, row, scratch)
        slot.inputs[info.input.name][0] = row
        backend.infer(slot, 1)
        ring.ready(slot)  # a GPU backend's outputs are copied back after infer() returns
        out[path.name] = decoder.decode(slot.outputs[info.outputs[0].name], [frame])[0]
    return out


def format_compare(r: CompareResult) -> str:
    """The `bench --compare-backends` report: a table, the skipped backends, and a last line
    `onnxruntime=F openvino-f32=F openvino-bf16=F` (fps of those that ran) for scripts."""
    ref_total = next((row.agreement.total for row in r.rows if row.agreement is not None), None)
    lines = [f"model {r.model.name}, video {r.video.name}: {r.frames} frames per backend per round, batch {r.batch}, "
             f"{len(r.rows[0].runs)} rounds interleaved (raw infer on pre-made letterboxed tensors)",
             f"agreement with onnxruntime f32 on {len(r.images)} images ({', '.join(r.images)}): reference boxes matched "
             f"at IoU >= {MATCH_IOU} (same class), largest confidence difference among them",
             "",
             f"{'backend':<15}{'runs as':<9}{'fps':>8}{'x ort':>7}  {'rounds':<24}agreement"]
    ort = r.rows[0].runs
    for row in r.rows:
        if row.agreement is None:
            agree = f"reference ({ref_total if ref_total is not None else '?'} boxes)"
        else:
            a = row.agreement
            agree = f"{a.matched}/{a.total} matched ({a.found} found), max |dconf| {a.max_conf_diff:.4f}"
        rounds = ", ".join(f"{x:.2f}" for x in row.runs)
        ratio = statistics.fmean(x / o for x, o in zip(row.runs, ort, strict=True))
        lines.append(f"{row.label:<15}{row.runs_as:<9}{row.fps:>8.2f}{ratio:>7.2f}  {rounds:<24}{agree}")
    for label, why in r.skipped:
        lines.append(f"{label}: not here ({why})")
    lines.append("fps: mean of the rounds; x ort: mean of each round's ratio to onnxruntime (same minute, same noise)")
    lines.append(" ".join(f"{row.label}={row.fps:.2f}" for row in r.rows))
    return "\n".join(lines)
