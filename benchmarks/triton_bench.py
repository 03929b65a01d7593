"""`backend: triton` against the local ONNX Runtime backend: the whole pipeline (decode, letterbox,
inference, decode + NMS, JSON Lines sink) on one video file, read as fast as it goes.

Prints, per variant: frames, fps and frame age (p50/p99, capture to output). Variants: local
onnxruntime; Triton over gRPC with float32 and with uint8 input, with 1 and 2 batches in flight
(`in_flight`: the inference stage keeps that many batches at the server and hands them on in order);
HTTP with uint8.

Starts its own test server (tests/tools/triton_server.py, needs .venv-triton) unless --url is given
(then the server must serve yolov8n (FP32) and yolov8n_u8 (UINT8)). On one machine the server's
ONNX Runtime and the pipeline share the cores: the figures show the protocol's cost, not a GPU
server's speed.

    .venv/bin/python benchmarks/triton_bench.py --video ../shared/media/office_walk.mp4 --batch 4
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402 - needs REPO on sys.path
from pipeline.graph import build_graph  # noqa: E402
from pipeline.paths import shared_dir  # noqa: E402
from pipeline.runner import execute  # noqa: E402


def run_once(model_yaml: str, video: Path, batch: int, slots: int, out: Path) -> tuple[int, float, float, float]:
    cfg = out / "bench.yaml"
    cfg.write_text(f"""
cameras:
  - {{id: cam, source: {{type: file, path: {video}}}, model: m}}
models:
  - {{id: m, batch: {batch}, {model_yaml}}}
sinks:
  - {{type: jsonl, path: {out / 'out.jsonl'}}}
pipeline: {{slots: {slots}}}
""")
    summary = execute(build_graph(load_config(cfg)), handle_signals=False)
    cam = summary.cameras[0]
    return cam.frames_out, cam.fps_out, cam.age_p50_ms, cam.age_p99_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=shared_dir() / "media" / "office_walk.mp4")
    parser.add_argument("--model", type=Path, default=shared_dir() / "models" / "yolov8n.onnx")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--slots", type=int, default=4, help="pipeline.slots: in_flight + 2 keeps preprocess and postprocess busy")
    parser.add_argument("--url", default=None, help="a running server's gRPC host:port (default: start a test server)")
    args = parser.parse_args()
    args.video, args.model = args.video.resolve(), args.model.resolve()  # the config lives in a temporary folder
    logging.basicConfig(level=logging.WARNING)
    server = None
    url = args.url
    if url is None:
        from tests.tools.triton_server import TritonTestServer

        server = TritonTestServer(args.model)
        server.start()
        url = server.grpc_url
    variants = [
        ("onnxruntime (local)", f"path: {args.model}, backend: onnxruntime"),
        ("triton grpc float32 x1", f"backend: triton, url: '{url}', model_name: yolov8n, path: {args.model}, in_flight: 1"),
        ("triton grpc float32 x2", f"backend: triton, url: '{url}', model_name: yolov8n, path: {args.model}, in_flight: 2"),
        ("triton grpc uint8 x1", f"backend: triton, url: '{url}', model_name: yolov8n_u8, input_dtype: uint8, "
                                 f"path: {args.model}, in_flight: 1"),
        ("triton grpc uint8 x2", f"backend: triton, url: '{url}', model_name: yolov8n_u8, input_dtype: uint8, "
                                 f"path: {args.model}, in_flight: 2"),
        ("triton http uint8 x2", f"backend: triton, url: '{server.http_url if server else url}', protocol: http, "
                                 f"model_name: yolov8n_u8, input_dtype: uint8, path: {args.model}, in_flight: 2"),
    ]
    if server is None:
        variants.pop()  # --url is a gRPC port
    print(f"video {args.video.name}, batch {args.batch}, slots {args.slots}; xN: N batches in flight")
    print(f"{'variant':24} {'frames':>6} {'fps':>7} {'age p50 ms':>11} {'age p99 ms':>11}")
    try:
        for name, model_yaml in variants:
            with tempfile.TemporaryDirectory() as tmp:
                frames, fps, p50, p99 = run_once(model_yaml, args.video, args.batch, args.slots, Path(tmp))
            print(f"{name:24} {frames:6d} {fps:7.2f} {p50:11.0f} {p99:11.0f}", flush=True)
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
