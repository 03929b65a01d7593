"""Checks and timings of the CUDA layer on a real GPU, for benchmarks/gpu_check.py and the GPU tests.

(a) ring_roundtrip: pinned ring, async copies and events with fresh random data each round,
    outputs poisoned first, every element compared.
(b) kernel_vs_cpu: the letterbox kernel against the numpy reference of its arithmetic (exact up to
    float rounding) and, where OpenCV is installed, against the CPU letterbox (<= 1/255).
(c) overlap: a stream of batches (H2D, kernel, D2H) on one stream, synchronised after each batch,
    against two streams alternating so that one batch's copies overlap the other's kernel; the
    timeline comes from CUDA events.
(d) preprocess_throughput: 1080p → 640 letterbox, frames/s, CPU (OpenCV) vs the GPU kernel.
Needs cuda-python and a GPU; not TensorRT.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from pipeline.cuda.kernels import LetterboxArgs, LetterboxKernel, reference_letterbox
from pipeline.cuda.memory import DeviceBuffer, Event, PinnedBuffer, Stream, copy_async
from pipeline.cuda.ring import PinnedSlotRing
from pipeline.preprocess import letterbox_geometry

WAIT_S = 30.0


def ring_roundtrip(rounds: int = 20, batch: int = 4, shape: tuple[int, ...] = (3, 640, 640), seed: int = 0) -> dict:
    """H2D of each slot's input, D2D into the output's device buffer, D2H into the output: the
    output must equal the input, element for element, every round."""
    rng = np.random.default_rng(seed)
    n_elems = int(np.prod(shape))
    ring = PinnedSlotRing.allocate_pinned(3, batch, {"in": (shape, np.float32)}, {"out": (shape, np.float32)})
    stream = Stream()
    stop = threading.Event()
    checked = 0
    try:
        for r in range(rounds):
            slot = ring.acquire(stop)
            dev = slot.bindings["cuda"]
            data = rng.standard_normal((batch, *shape), dtype=np.float32)
            np.copyto(slot.inputs["in"], data)
            slot.outputs["out"].fill(np.nan)  # poisoned host output
            dev.device["out"].fill_async(0xFF, stream)  # poisoned device output (NaN)
            copy_async(dev.device["in"].ptr, dev.host["in"].ptr, dev.host["in"].nbytes, "h2d", stream)
            dev.h2d_done.record(stream)
            copy_async(dev.device["out"].ptr, dev.device["in"].ptr, dev.host["in"].nbytes, "d2d", stream)
            copy_async(dev.host["out"].ptr, dev.device["out"].ptr, dev.host["out"].nbytes, "d2h", stream)
            dev.d2h_done.record(stream)
            dev.d2h_done.wait(WAIT_S)
            if not np.array_equal(slot.outputs["out"], data):
                bad = int(np.count_nonzero(slot.outputs["out"] != data))
                raise AssertionError(f"round {r}: {bad} of {data.size} elements differ after H2D → D2D → D2H")
            checked += data.size
            ring.release(slot)
    finally:
        stream.synchronize()
        stream.close()
        ring.close()
    return {"rounds": rounds, "elements_checked": checked, "elements_per_round": batch * n_elems}


def _run_kernel(kernel: LetterboxKernel, image: np.ndarray, dst_h: int, dst_w: int, half: bool = False) -> np.ndarray:
    h, w = image.shape[:2]
    lb, new_w, new_h = letterbox_geometry(w, h, dst_w, dst_h)
    stream = Stream()
    src_host = PinnedBuffer(image.shape, np.uint8)
    src_dev = DeviceBuffer(image.nbytes)
    out_dtype = np.float16 if half else np.float32
    out_host = PinnedBuffer((3, dst_h, dst_w), out_dtype)
    out_dev = DeviceBuffer(out_host.nbytes)
    try:
        np.copyto(src_host.array, image)
        out_dev.fill_async(0xFF, stream)  # poisoned: every element must be written
        copy_async(src_dev.ptr, src_host.ptr, image.nbytes, "h2d", stream)
        kernel.launch(LetterboxArgs(src_dev.ptr, w, h, w * 3, out_dev.ptr, dst_w, dst_h, lb.pad_x, lb.pad_y, new_w, new_h),
                      stream, half=half)
        copy_async(out_host.ptr, out_dev.ptr, out_host.nbytes, "d2h", stream)
        stream.synchronize()
        return out_host.array.astype(np.float32)
    finally:
        for b in (src_host, src_dev, out_host, out_dev):
            b.close()
        stream.close()


def kernel_vs_cpu(images: list[np.ndarray], dst: tuple[int, int] = (640, 640)) -> list[dict]:
    """Per image: max |kernel − numpy reference| and, with OpenCV, max |kernel − CPU letterbox|."""
    try:
        from pipeline.preprocess import LetterboxScratch, letterbox_into
    except ImportError:  # no OpenCV on this machine
        letterbox_into = None  # type: ignore[assignment]
    kernel = LetterboxKernel()
    out = []
    try:
        for image in images:
            gpu = _run_kernel(kernel, image, *dst)
            gpu16 = _run_kernel(kernel, image, *dst, half=True)
            if np.isnan(gpu).any() or np.isnan(gpu16).any():
                raise AssertionError(f"kernel left unwritten (NaN) elements for a {image.shape} image")
            ref = reference_letterbox(image, *dst)
            row = {"shape": image.shape, "max_diff_reference": float(np.abs(gpu - ref).max()),
                   "max_diff_fp16_reference": float(np.abs(gpu16 - ref).max())}
            if letterbox_into is not None:
                cpu = np.empty((3, *dst), np.float32)
                letterbox_into(image, cpu, LetterboxScratch(*dst))
                row["max_diff_cpu"] = float(np.abs(gpu - cpu).max())
            out.append(row)
    finally:
        kernel.close()
    return out


@dataclass(frozen=True, slots=True)
class OverlapResult:
    """The timings of `overlap`: wall time synchronised vs on two streams, and per-batch copy and
    kernel times from CUDA events."""

    batches: int
    sync_ms: float  # wall, one stream, synchronised after each batch
    overlapped_ms: float  # wall, two streams alternating
    h2d_ms: float  # per batch, from events
    kernel_ms: float
    d2h_ms: float

    @property
    def speedup(self) -> float:
        return self.sync_ms / self.overlapped_ms

    @property
    def efficiency(self) -> float:
        """How much of the shorter of copy and compute was hidden: 1.0 = the ideal pipelined time
        max(copies, kernel) per batch; 0.0 = no better than running them one after another."""
        serial = self.h2d_ms + self.kernel_ms + self.d2h_ms
        ideal = max(self.h2d_ms + self.d2h_ms, self.kernel_ms)
        per_batch = self.overlapped_ms / self.batches
        return max(0.0, min(1.0, (serial - per_batch) / (serial - ideal))) if serial > ideal else 1.0


def overlap(batches: int = 50, batch: int = 8, frame_hw: tuple[int, int] = (1080, 1920),
            dst: tuple[int, int] = (640, 640)) -> OverlapResult:
    """Raw 1080p frames in (H2D), letterboxed by the kernel into float32 input tensors, tensors out
    (D2H, standing in for the model's outputs): sync vs two alternating streams."""
    h, w = frame_hw
    frame_bytes = h * w * 3
    out_row = 3 * dst[0] * dst[1]
    kernel = LetterboxKernel()
    lb, new_w, new_h = letterbox_geometry(w, h, dst[1], dst[0])
    streams = [Stream(), Stream()]
    hosts = [PinnedBuffer((batch, frame_bytes), np.uint8) for _ in range(2)]
    outs = [PinnedBuffer((batch, out_row), np.float32) for _ in range(2)]
    devs_in = [DeviceBuffer(batch * frame_bytes) for _ in range(2)]
    devs_out = [DeviceBuffer(batch * out_row * 4) for _ in range(2)]
    marks = [Event(timing=True) for _ in range(4)]
    rng = np.random.default_rng(1)
    for host in hosts:
        host.array[:] = rng.integers(0, 256, host.array.shape, dtype=np.uint8)

    def enqueue(i: int, s: Stream, timed: bool = False) -> None:
        if timed:
            marks[0].record(s)
        copy_async(devs_in[i].ptr, hosts[i].ptr, batch * frame_bytes, "h2d", s)
        if timed:
            marks[1].record(s)
        for row in range(batch):
            kernel.launch(LetterboxArgs(devs_in[i].ptr + row * frame_bytes, w, h, w * 3,
                                        devs_out[i].ptr + row * out_row * 4, dst[1], dst[0], lb.pad_x, lb.pad_y,
                                        new_w, new_h), s)
        if timed:
            marks[2].record(s)
        copy_async(outs[i].ptr, devs_out[i].ptr, batch * out_row * 4, "d2h", s)
        if timed:
            marks[3].record(s)

    try:
        for _ in range(3):  # warm up
            enqueue(0, streams[0])
        streams[0].synchronize()
        enqueue(0, streams[0], timed=True)
        streams[0].synchronize()
        h2d, k, d2h = marks[1].elapsed_ms(marks[0]), marks[2].elapsed_ms(marks[1]), marks[3].elapsed_ms(marks[2])
        t0 = time.perf_counter()
        for b in range(batches):
            enqueue(b % 2, streams[0])
            streams[0].synchronize()
        sync_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        for b in range(batches):
            enqueue(b % 2, streams[b % 2])  # buffers alternate with streams: no hazards between them
        for s in streams:
            s.synchronize()
        overlapped_ms = (time.perf_counter() - t0) * 1000
        return OverlapResult(batches, sync_ms, overlapped_ms, h2d, k, d2h)
    finally:
        for s in streams:
            s.synchronize()
        for obj in (*hosts, *outs, *devs_in, *devs_out, *marks, *streams):
            obj.close()
        kernel.close()


def preprocess_throughput(frames: int = 200, frame_hw: tuple[int, int] = (1080, 1920), dst: tuple[int, int] = (640, 640)) -> dict:
    """Frames/s of 1080p → 640 letterbox: CPU (OpenCV, this process, 1 thread and default threads)
    and GPU (kernel only, and H2D of the raw frame + kernel)."""
    h, w = frame_hw
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    result: dict = {}
    try:
        import cv2

        from pipeline.preprocess import LetterboxScratch, letterbox_into

        out = np.empty((3, *dst), np.float32)
        scratch = LetterboxScratch(*dst)
        for threads in (1, -1):
            cv2.setNumThreads(threads)
            letterbox_into(image, out, scratch)
            t0 = time.perf_counter()
            for _ in range(frames // 4):
                letterbox_into(image, out, scratch)
            result[f"cpu_fps_{'1thread' if threads == 1 else 'default_threads'}"] = (frames // 4) / (time.perf_counter() - t0)
    except ImportError:
        result["cpu_fps"] = None  # no OpenCV here
    kernel = LetterboxKernel()
    stream = Stream()
    src_host = PinnedBuffer(image.shape, np.uint8)
    src_dev = DeviceBuffer(image.nbytes)
    out_dev = DeviceBuffer(3 * dst[0] * dst[1] * 4)
    start, end = Event(timing=True), Event(timing=True)
    lb, new_w, new_h = letterbox_geometry(w, h, dst[1], dst[0])
    args = LetterboxArgs(src_dev.ptr, w, h, w * 3, out_dev.ptr, dst[1], dst[0], lb.pad_x, lb.pad_y, new_w, new_h)
    try:
        np.copyto(src_host.array, image)
        copy_async(src_dev.ptr, src_host.ptr, image.nbytes, "h2d", stream)
        kernel.launch(args, stream)
        stream.synchronize()
        start.record(stream)
        for _ in range(frames):
            kernel.launch(args, stream)
        end.record(stream)
        stream.synchronize()
        result["gpu_kernel_fps"] = frames / (end.elapsed_ms(start) / 1000)
        start.record(stream)
        for _ in range(frames):
            copy_async(src_dev.ptr, src_host.ptr, image.nbytes, "h2d", stream)
            kernel.launch(args, stream)
        end.record(stream)
        stream.synchronize()
        result["gpu_h2d_plus_kernel_fps"] = frames / (end.elapsed_ms(start) / 1000)
    finally:
        for obj in (src_host, src_dev, out_dev, start, end, stream):
            obj.close()
        kernel.close()
    return result
