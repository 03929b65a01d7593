"""The status page's cost to the pipeline: fps with N MJPEG viewers against none, side by side.

One camera (a file, not paced: the pipeline runs as fast as the model allows) through the real
model with the metrics port on. The viewers are in a separate process (as browsers would be), each
reading `/cameras/cam/stream.mjpeg` for the whole run. Runs alternate A B B A (no viewers, viewers)
so drift on a noisy machine falls on both; medians are compared.

    python benchmarks/status_page_bench.py [--viewers 5] [--frames 300] [--repeats 2]

Last line: `fps_no_viewers=F fps_viewers=F ratio=R jpegs_per_s=F`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import config_from_data  # noqa: E402 - after the path set-up above
from pipeline.graph import build_graph  # noqa: E402
from pipeline.graph.models import load_models  # noqa: E402
from pipeline.paths import default_model, shared_dir  # noqa: E402
from pipeline.runner import execute  # noqa: E402

# The viewers: N threads, each reading the MJPEG stream and counting its parts until killed.
VIEWERS = textwrap.dedent("""
    import sys, threading, time, urllib.request
    url, n = sys.argv[1], int(sys.argv[2])
    parts = [0] * n
    def view(i):
        while True:
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    while True:
                        chunk = r.read1(65536)
                        if not chunk:
                            break
                        parts[i] += chunk.count(b"--frame")
            except OSError:
                time.sleep(0.1)
    for i in range(n):
        threading.Thread(target=view, args=(i,), daemon=True).start()
    try:
        while True:
            time.sleep(0.5)
            print(sum(parts), flush=True)
    except KeyboardInterrupt:
        pass
""")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(frames: int, viewers: int, models: dict | None) -> tuple[float, float, dict]:
    """(pipeline fps, MJPEG parts received per second by all viewers, models for the next run)."""
    port = free_port()
    data = {
        "cameras": [{"id": "cam", "model": "m",
                     "source": {"type": "file", "path": str(shared_dir() / "media" / "crowd_overhead.mp4"),
                                "max_frames": frames}}],
        "models": [{"id": "m", "path": str(default_model()), "backend": "onnxruntime"}],
        "metrics": {"port": port},
    }
    loaded = config_from_data(data, origin="status_page_bench", base_dir=REPO)
    models = models or load_models(loaded)
    graph = build_graph(loaded, models=models)
    proc = None
    if viewers:
        proc = subprocess.Popen([sys.executable, "-c", VIEWERS, f"http://127.0.0.1:{port}/cameras/cam/stream.mjpeg",
                                 str(viewers)], stdout=subprocess.PIPE, text=True)
    summary = execute(graph, handle_signals=False, close_backends=False, metrics_port=port)
    parts_per_s = 0.0
    if proc is not None:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        counts = [int(x) for x in out.split()] or [0]
        parts_per_s = counts[-1] / summary.seconds
    return summary.fps, parts_per_s, models


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--viewers", type=int, default=5)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2, help="runs of each kind, in A B B A order")
    args = p.parse_args()
    order = ([0, args.viewers, args.viewers, 0] * args.repeats)[: 2 * args.repeats]  # A B B A A B ...
    models = None
    _, _, models = one_run(60, 0, models)  # warm-up: the first run of a process is slower
    fps: dict[int, list[float]] = {0: [], args.viewers: []}
    parts: list[float] = []
    print(f"{'viewers':>8}{'fps':>9}{'mjpeg parts/s (all viewers)':>30}")
    for n in order:
        t0 = time.monotonic()
        f, per_s, models = one_run(args.frames, n, models)
        fps[n].append(f)
        if n:
            parts.append(per_s)
        print(f"{n:>8}{f:>9.2f}{per_s:>30.1f}   ({time.monotonic() - t0:.1f} s)", flush=True)
    base, viewed = statistics.median(fps[0]), statistics.median(fps[args.viewers])
    print(f"fps_no_viewers={base:.2f} fps_viewers={viewed:.2f} ratio={viewed / base:.3f} "
          f"jpegs_per_s={statistics.median(parts) if parts else 0:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
