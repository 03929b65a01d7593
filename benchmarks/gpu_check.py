#!/usr/bin/env python3
"""The GPU check: run on a machine with an NVIDIA GPU and cuda-python (TensorRT not needed).

    python benchmarks/gpu_check.py [--quick]

(a) pinned ring + async copies + events: fresh random data each round, outputs poisoned, every
    element compared; (b) the CUDA letterbox kernel against the CPU letterbox (max abs difference
    <= 1/255) and against the numpy reference of its own arithmetic: the comparison on the GPU that
    the tests can only make with the kernel's source built for the CPU; (c) copy/compute overlap
    from CUDA events, two streams against a synchronous loop; (d) 1080p → 640 preprocess
    throughput, CPU vs GPU; (e) only where TensorRT is installed: the TensorRT backend against ONNX
    Runtime on two real images, outputs poisoned first (engine built in a temporary folder).
Prints the card and every figure; exit 1 if a check fails, 2 (one line) without a usable GPU.
Under 5 minutes, plus the engine build for (e).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="fewer rounds (about 30 s)")
    args = p.parse_args()
    from pipeline.cuda import selfcheck
    from pipeline.cuda.runtime import CudaError, CudaUnavailable, compute_capability, device_count, device_name
    from pipeline.paths import shared_dir

    started = time.perf_counter()
    try:  # a setup problem: one line, exit 2
        if device_count() < 1:
            raise CudaUnavailable("no usable CUDA device: cudaGetDeviceCount found none")
    except (CudaUnavailable, CudaError) as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    print(f"GPU 0: {device_name(0)}, compute capability {'.'.join(map(str, compute_capability(0)))}")
    failures = []

    rounds = 5 if args.quick else 20
    r = selfcheck.ring_roundtrip(rounds=rounds)
    print(f"(a) ring round trip: {r['rounds']} rounds, {r['elements_checked']} elements checked, all equal")

    rng = np.random.default_rng(3)
    sizes = ((1080, 1920), (720, 1280), (480, 854), (240, 320), (2160, 3840), (641, 333))
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    shared = shared_dir() / "media"
    try:
        import cv2

        for name in ("bus.jpg", "street.png"):
            img = cv2.imread(str(shared / name))
            if img is not None:
                images.append(img)
    except ImportError:
        print("    (OpenCV not installed: the CPU letterbox comparison is skipped, the numpy reference is used)")
    for row in selfcheck.kernel_vs_cpu(images):
        ok_ref = row["max_diff_reference"] <= 1e-5
        ok_cpu = row.get("max_diff_cpu", 0.0) <= 1 / 255 + 1e-6
        ok_16 = row["max_diff_fp16_reference"] <= 1e-3
        mark = "ok" if ok_ref and ok_cpu and ok_16 else "FAIL"
        print(f"(b) kernel {row['shape']}: |gpu-ref| {row['max_diff_reference']:.2e}, fp16 {row['max_diff_fp16_reference']:.2e}"
              + (f", |gpu-cpu| {row['max_diff_cpu']:.5f} (<= {1/255:.5f})" if "max_diff_cpu" in row else "") + f" {mark}")
        if mark != "ok":
            failures.append(f"kernel {row['shape']}")

    o = selfcheck.overlap(batches=20 if args.quick else 60)
    print(f"(c) {o.batches} batches of 8 × 1080p: per batch H2D {o.h2d_ms:.2f} ms, kernel {o.kernel_ms:.2f} ms, "
          f"D2H {o.d2h_ms:.2f} ms; sync {o.sync_ms:.1f} ms, two streams {o.overlapped_ms:.1f} ms "
          f"= {o.speedup:.2f}x, overlap efficiency {o.efficiency:.2f}")

    t = selfcheck.preprocess_throughput(frames=100 if args.quick else 400)
    print("(d) preprocess 1080p → 640, frames/s: " + json.dumps({k: (round(v, 1) if v else v) for k, v in t.items()}))
    failures.extend(tensorrt_vs_onnxruntime(shared))
    print(f"done in {time.perf_counter() - started:.1f} s" + (f"; FAILED: {failures}" if failures else "; all checks passed"))
    return 1 if failures else 0


def tensorrt_vs_onnxruntime(shared: Path) -> list[str]:
    """(e): two different real images through the TensorRT backend (fp32 engine in a temporary
    folder, outputs poisoned with NaN) and through ONNX Runtime; returns the failures."""
    import tempfile
    import threading

    try:
        import cv2
        import tensorrt  # noqa: F401 - only probing that it imports
    except ImportError as exc:
        print(f"(e) TensorRT vs ONNX Runtime: skipped ({exc})")
        return []
    from pipeline.backends.engine_build import build_engine
    from pipeline.backends.onnxruntime import OnnxRuntimeBackend
    from pipeline.backends.tensorrt import TensorRTBackend
    from pipeline.preprocess import LetterboxScratch, letterbox_into
    from pipeline.slots import SlotRing

    model = shared.parent / "models" / "yolov8n.onnx"
    rows = np.empty((2, 3, 640, 640), np.float32)
    for row, name in enumerate(("bus.jpg", "street.png")):
        letterbox_into(cv2.imread(str(shared / name)), rows[row], LetterboxScratch(640, 640))
    ort = OnnxRuntimeBackend(model)
    info = ort.info
    ring = SlotRing.allocate(2, 2, {info.input.name: (info.input.shape, info.input.dtype)},
                             {o.name: (o.shape, o.dtype) for o in info.outputs})
    slot = ring.acquire(threading.Event())
    slot.inputs[info.input.name][:] = rows
    ort.infer(slot, 2)
    want = slot.outputs[info.outputs[0].name].copy()
    with tempfile.TemporaryDirectory() as engines:
        engine, _ = build_engine(model, fp16=False, max_batch=2, engine_dir=Path(engines))
        backend = TensorRTBackend(engine, gpu_preprocess=False)
        try:
            gpu_ring = backend.allocate_ring(3, 2)
            gpu_slot = gpu_ring.acquire(threading.Event())
            out = gpu_slot.outputs[backend.info.outputs[0].name]
            out.fill(np.nan)
            gpu_slot.inputs[backend.info.input.name][:] = rows
            backend.infer(gpu_slot, 2)
            gpu_ring.ready(gpu_slot)
            got = out.copy()
            gpu_ring.release(gpu_slot)
        finally:
            backend.close()
    boxes, scores = float(np.abs(got[:, :4] - want[:, :4]).max()), float(np.abs(got[:, 4:] - want[:, 4:]).max())
    ok = not np.isnan(got).any() and boxes <= 1.0 and scores <= 0.02
    print(f"(e) TensorRT fp32 vs ONNX Runtime, 2 images: max |box| diff {boxes:.3f} px, max |score| diff {scores:.4f} "
          f"{'ok' if ok else 'FAIL'}")
    return [] if ok else ["TensorRT vs ONNX Runtime"]


if __name__ == "__main__":
    sys.exit(main())
