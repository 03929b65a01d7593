"""Where RSS goes on a long run with camera churn: live Python memory (tracemalloc) against RSS.

Three realtime rule cameras with evidence run in this process; every 5 s a reload removes,
re-adds or changes a camera. Each time the starting cameras are back, it prints RSS, the memory
Python objects hold (tracemalloc) and the difference, which is native memory: frame buffers kept
by glibc's heap arenas show up there as growth.

    python benchmarks/memory_churn.py --minutes 5            # as `vigil` runs (glibc mmap threshold fixed)
    python benchmarks/memory_churn.py --minutes 5 --no-fix   # glibc's default dynamic threshold
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import config_from_data  # noqa: E402 - after the path set-up above
from pipeline.graph import build_graph  # noqa: E402
from pipeline.memory import keep_frames_off_the_heap  # noqa: E402
from pipeline.paths import default_model, shared_dir  # noqa: E402
from pipeline.runner import execute  # noqa: E402

ZONE = [[0.3, 0.45], [0.7, 0.45], [0.7, 0.95], [0.3, 0.95]]


def camera(cid: str, video: str, detect_fps: float) -> dict:
    """A looped realtime file camera with one zone rule."""
    return {"id": cid, "model": "m", "detect_fps": detect_fps,
            "source": {"type": "file", "path": str(shared_dir() / "media" / video), "realtime": True, "loop": True},
            "zones": [{"id": "floor", "units": "normalized", "points": ZONE}],
            "rules": [{"id": "on", "type": "zone_intrusion", "zone": "floor", "classes": ["person"],
                       "min_seconds": 0.3, "clear_seconds": 1}]}


def config(out: Path, *, with_b: bool, fps_a: float) -> dict:
    """Cameras a (its rate changes), c, and b (comes and goes)."""
    cams = [camera("a", "crowd_overhead.mp4", fps_a), camera("c", "crowd_overhead.mp4", 2)]
    if with_b:
        cams.append(camera("b", "office_walk.mp4", 2))
    return {"cameras": cams, "models": [{"id": "m", "path": str(default_model()), "batch": 2}],
            "sinks": [{"type": "events", "path": str(out / "events.jsonl")}],
            "evidence": {"dir": str(out / "evidence"), "pre_seconds": 1, "post_seconds": 1, "max_disk_mb": 20}}


def rss_mb() -> float:
    """This process's resident memory."""
    line = next(line for line in open("/proc/self/status") if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def main() -> int:
    """Runs the churn and prints one line per full reload cycle, then the first and last."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--no-fix", action="store_true", help="leave glibc's dynamic mmap threshold (what `vigil` changes)")
    args = p.parse_args()
    if not args.no_fix:
        keep_frames_off_the_heap()
    tracemalloc.start()
    out = Path(tempfile.mkdtemp(prefix="vigil-churn-"))
    state = {"with_b": True, "fps_a": 2.0}
    graph = build_graph(config_from_data(config(out, **state), origin="benchmark", base_dir=out))
    runner = threading.Thread(target=lambda: execute(graph, handle_signals=False), daemon=True)
    runner.start()
    rows: list[tuple[float, float, float]] = []
    step, start = 0, time.monotonic()
    while time.monotonic() - start < args.minutes * 60:
        time.sleep(5)
        step += 1
        if step % 2:
            state["with_b"] = not state["with_b"]
        else:
            state["fps_a"] = 1.0 if state["fps_a"] == 2.0 else 2.0
        graph.apply(config_from_data(config(out, **state), origin="benchmark", base_dir=out))
        if state == {"with_b": True, "fps_a": 2.0}:
            gc.collect()
            rss, traced = rss_mb(), tracemalloc.get_traced_memory()[0] / 2**20
            rows.append((time.monotonic() - start, rss, traced))
            print(f"t={rows[-1][0]:.0f}s rss_mb={rss:.0f} python_mb={traced:.0f} native_mb={rss - traced:.0f}", flush=True)
    graph.runner.drain()
    runner.join(60)
    if len(rows) >= 2:
        (t0, r0, p0), (t1, r1, p1) = rows[0], rows[-1]
        print(f"glibc mmap threshold {'default' if args.no_fix else 'fixed'}: native memory {r0 - p0:.0f} -> "
              f"{r1 - p1:.0f} MB from {t0:.0f} s to {t1:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
