"""Motion gating on a static-then-walk scene: inference calls with and without gating, and whether
the walk's zone events are the same.

The video is made here from a shared one: office_walk.mp4's first frame held for --still seconds
(nobody there), then the walk itself. Both runs use the same model, backend and zone rule; the
only difference is `motion: {enabled: true}` on the camera.

    python benchmarks/motion_gating.py [--still 20] [--detect-fps N] [--backend B]

Last line: `static_calls_ungated=N static_calls_gated=M reduction=R events_same=True|False
motion_ms=F inference_ms=F`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import config_from_data  # noqa: E402 - after the path set-up above
from pipeline.gating import MotionDetector, MotionSettings  # noqa: E402
from pipeline.graph import build_graph  # noqa: E402
from pipeline.paths import default_model, shared_dir  # noqa: E402
from pipeline.runner import execute  # noqa: E402
from tests.helpers import read_jsonl, write_still_then_video  # noqa: E402

# A zone on office_walk.mp4's floor that the walker crosses (the same one tests/test_gating.py uses).
WALK_ZONE = [[0.45, 0.55], [0.72, 0.55], [0.72, 0.88], [0.45, 0.88]]


def run(video: Path, out: Path, *, motion: bool, detect_fps: float | None, backend: str | None) -> tuple[list, list, float]:
    """One run; returns (frame records, zone events, inference ms per call)."""
    camera: dict = {"id": "walk", "model": "m", "source": {"type": "file", "path": str(video)},
                    "zones": [{"id": "floor", "units": "normalized", "points": WALK_ZONE}],
                    "rules": [{"id": "on_floor", "type": "zone_intrusion", "zone": "floor", "classes": ["person"],
                               "min_seconds": 0.5, "clear_seconds": 1.0}]}
    if motion:
        camera["motion"] = {"enabled": True}
    if detect_fps is not None:
        camera["detect_fps"] = detect_fps
    model: dict = {"id": "m", "path": str(default_model())}
    if backend is not None:
        model["backend"] = backend
    data = {"cameras": [camera], "models": [model],
            "sinks": [{"type": "jsonl", "path": str(out / "frames.jsonl")}, {"type": "events", "path": str(out / "events.jsonl")}]}
    graph = build_graph(config_from_data(data, origin="benchmark", base_dir=out))
    summary = execute(graph, handle_signals=False)
    inference = next(s for s in summary.stages if s.name.startswith("inference["))
    return read_jsonl(out / "frames.jsonl"), read_jsonl(out / "events.jsonl"), inference.mean_ms_per_call


def motion_cost_ms(video: Path, frames: int = 200) -> float:
    """Mean time of one motion update on the video's own frames (decode not counted)."""
    cap = cv2.VideoCapture(str(video))
    images = []
    while len(images) < frames:
        ok, image = cap.read()
        if not ok:
            break
        images.append(image)
    cap.release()
    detector = MotionDetector(MotionSettings())
    t0 = time.perf_counter()
    for image in images:
        detector.update(image)
    return 1000.0 * (time.perf_counter() - t0) / max(len(images), 1)


def main() -> int:
    """Makes the video, runs ungated and gated, prints the comparison."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--still", type=float, default=20.0, help="seconds of the static scene before the walk (default 20)")
    p.add_argument("--detect-fps", type=float, default=None, help="the camera's detect_fps in both runs (default: every frame)")
    p.add_argument("--backend", default=None, help="model backend (default: auto)")
    p.add_argument("--width", type=int, default=1280, help="video width (default 1280, the source's)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        video = tmp_path / "still_then_walk.mp4"
        fps, still = write_still_then_video(shared_dir() / "media" / "office_walk.mp4", video, still_s=args.still,
                                            width=args.width)
        results = {}
        for name, motion in (("ungated", False), ("gated", True)):
            out = tmp_path / name
            out.mkdir()
            t0 = time.perf_counter()
            records, events, inference_ms = run(video, out, motion=motion, detect_fps=args.detect_fps, backend=args.backend)
            results[name] = (records, events, inference_ms, time.perf_counter() - t0)
        motion_ms = motion_cost_ms(video)
    print(f"video: {args.still:g} s static ({still} frames) + office_walk.mp4 (182 frames) at {fps:.1f} fps, "
          f"{args.width} px wide; detect_fps {args.detect_fps or 'every frame'}")
    print(f"{'run':<9}{'frames':>8}{'calls':>7}{'static calls':>14}{'walk calls':>12}{'wall s':>8}  events (kind@seq)")
    for name, (records, events, _ms, wall) in results.items():
        calls = sum(r["detected"] for r in records)
        static = sum(r["detected"] for r in records[:still])
        shown = " ".join(f"{e['kind']}@{e['seq']}" for e in events)
        print(f"{name:<9}{len(records):>8}{calls:>7}{static:>14}{calls - static:>12}{wall:>8.1f}  {shown}")
    ungated, gated = results["ungated"], results["gated"]
    kinds = [[e["kind"] for e in run_events] for run_events in (ungated[1], gated[1])]
    interval = fps / (args.detect_fps or fps)
    same = kinds[0] == kinds[1] and all(abs(a["seq"] - b["seq"]) <= interval + 1 for a, b in zip(ungated[1], gated[1], strict=False))
    static_u = sum(r["detected"] for r in ungated[0][:still])
    static_g = sum(r["detected"] for r in gated[0][:still])
    print(f"events the same (kinds, and frames within one detection interval): {same}")
    print(f"motion check: {motion_ms:.2f} ms per frame against {ungated[2]:.1f} ms per inference call "
          f"({100 * motion_ms / ungated[2]:.1f} %)")
    print(f"static_calls_ungated={static_u} static_calls_gated={static_g} reduction={static_u / max(static_g, 1):.1f} "
          f"events_same={same} motion_ms={motion_ms:.2f} inference_ms={ungated[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
