"""Soak and churn: a live run under constant change, watched for leaks.

Four realtime cameras (two RTSP from the test server, two looped files) with rules and evidence
run in a `vigil run` subprocess. Every 10 s a reload removes, re-adds or changes a camera; every
30 s one RTSP server is killed and restarted. Every minute it prints the process's RSS, thread
count, open fds, the number of /metrics series, the worst camera's frame age p99 and the events so
far; at the end, the growth of each after the warm-up (between samples taken with the starting
set of cameras, which the reload cycle restores every 40 s), and whether the run crashed.

    python benchmarks/soak.py --minutes 60

Last line: `rss_growth_pct=F threads_growth=N fds_growth=N series_growth=N crashed=0|1`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.paths import default_model, shared_dir  # noqa: E402 - after the path set-up above
from tests.helpers import free_port  # noqa: E402
from tests.tools.rtsp import RtspServer, rtsp_server_missing  # noqa: E402

RELOAD_EVERY_S = 10.0
KILL_EVERY_S = 30.0
SAMPLE_EVERY_S = 5.0
ZONE = [[0.3, 0.45], [0.7, 0.45], [0.7, 0.95], [0.3, 0.95]]


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the process."""

    t: float  # seconds since the start
    rss_mb: float
    threads: int
    fds: int
    series: int
    age_p99_ms: float
    events: int
    baseline: bool  # the cameras are as at the start (the reload cycle came round), settled for a few seconds


def camera_yaml(cid: str, source: str, detect_fps: float) -> str:
    """One camera with a zone rule, as YAML."""
    return f"""
  - id: {cid}
    model: yolo
    source: {source}
    detect_fps: {detect_fps}
    stall_timeout_s: 2
    reconnect: {{initial_delay_s: 0.5, max_delay_s: 2}}
    zones: [{{id: floor, units: normalized, points: {ZONE}}}]
    rules: [{{id: on_floor, type: zone_intrusion, zone: floor, classes: [person], min_seconds: 0.3, clear_seconds: 1}}]
"""


def config_yaml(out: Path, rtsp_urls: list[str], *, with_b: bool, fps_a: float, port: int) -> str:
    """The whole config: rtsp0, rtsp1, file_a (its detect_fps changes), file_b (comes and goes)."""
    media = shared_dir() / "media"
    cams = [camera_yaml(f"rtsp{i}", f"{{type: rtsp, url: '{url}'}}", 2) for i, url in enumerate(rtsp_urls)]
    cams.append(camera_yaml("file_a", f"{{type: file, path: {media / 'crowd_overhead.mp4'}, realtime: true, loop: true}}", fps_a))
    if with_b:
        cams.append(camera_yaml("file_b", f"{{type: file, path: {media / 'office_walk.mp4'}, realtime: true, loop: true}}", 2))
    return f"""cameras:{''.join(cams)}
models:
  - {{id: yolo, path: {default_model()}, batch: 2}}
sinks:
  - {{type: events, path: {out / 'events.jsonl'}}}
evidence: {{dir: {out / 'evidence'}, pre_seconds: 1, post_seconds: 1, max_disk_mb: 20}}
metrics: {{port: {port}}}
"""


def proc_stats(pid: int) -> tuple[float, int, int]:
    """RSS (MB), threads and open fds of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = int(fields["VmRSS"].split()[0])
    return rss_kb / 1024.0, int(fields["Threads"]), len(os.listdir(f"/proc/{pid}/fd"))


def metrics_stats(port: int) -> tuple[int, float]:
    """(series count, worst camera's frame age p99 in ms) from /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    ages = [float(line.rsplit(" ", 1)[1]) * 1000.0 for line in series
            if line.startswith("vigil_camera_frame_age_seconds{") and 'quantile="0.99"' in line]
    return len(series), max(ages, default=float("nan"))


def reload(port: int) -> dict:
    """POST /reload; the JSON answer (also for 400/500)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/reload", method="POST")
    try:
        return json.loads(urllib.request.urlopen(request, timeout=60).read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}")


def count_lines(path: Path) -> int:
    return sum(1 for _ in path.open()) if path.exists() else 0


def main() -> int:
    """Runs the soak; prints a line a minute and the growth line last. Exit 0 unless it crashed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--warmup-minutes", type=float, default=None,
                   help="growth is measured from here (default: a third of the run, at most 5 minutes)")
    args = p.parse_args()
    if args.minutes <= 0:
        print(f"error: --minutes must be > 0, got {args.minutes:g}", file=sys.stderr)
        return 2
    missing = rtsp_server_missing()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    total_s = args.minutes * 60.0
    warmup_s = 60.0 * args.warmup_minutes if args.warmup_minutes is not None else min(300.0, total_s / 3)
    video = shared_dir() / "media" / "crowd_overhead.mp4"
    servers = [RtspServer(video, fps=10, width=480, height=270).start() for _ in range(2)]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="vigil-soak-") as tmp:
        out = Path(tmp)
        cfg = out / "soak.yaml"
        urls = [s.url for s in servers]
        state = {"with_b": True, "fps_a": 2.0}
        cfg.write_text(config_yaml(out, urls, port=port, **state))
        log = (out / "vigil.log").open("w")
        proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "run", str(cfg), "--no-progress"],
                                cwd=out, stdout=log, stderr=subprocess.STDOUT, text=True)
        samples: list[Sample] = []
        reloads_ok = reloads_failed = kills = 0
        crashed = False
        start = time.monotonic()
        next_reload, next_kill, next_sample, next_print = RELOAD_EVERY_S, KILL_EVERY_S, SAMPLE_EVERY_S, 60.0
        step = 0
        try:
            while (now := time.monotonic() - start) < total_s:
                if proc.poll() is not None:
                    crashed = True
                    break
                if now >= next_reload:
                    next_reload += RELOAD_EVERY_S
                    step += 1
                    # remove file_b, add it back, change file_a's rate, change it back, ...
                    if step % 2 == 1:
                        state["with_b"] = not state["with_b"]
                    else:
                        state["fps_a"] = 1.0 if state["fps_a"] == 2.0 else 2.0
                    cfg.write_text(config_yaml(out, urls, port=port, **state))
                    answer = reload(port)
                    reloads_ok += bool(answer.get("ok"))
                    reloads_failed += not answer.get("ok")
                if now >= next_kill:
                    next_kill += KILL_EVERY_S
                    server = servers[kills % 2]
                    server.kill()
                    time.sleep(3.0)
                    server.start()
                    kills += 1
                if now >= next_sample:
                    next_sample += SAMPLE_EVERY_S
                    try:
                        rss, threads, fds = proc_stats(proc.pid)
                        series, age = metrics_stats(port)
                    except (OSError, ValueError, KeyError):
                        continue  # the endpoint is not up yet (or the process just ended: seen above)
                    # Every 4th reload restores the starting cameras; compare like with like.
                    settled = now - (next_reload - RELOAD_EVERY_S) >= 4.0
                    baseline = state == {"with_b": True, "fps_a": 2.0} and settled
                    samples.append(Sample(now, rss, threads, fds, series, age, count_lines(out / "events.jsonl"), baseline))
                if now >= next_print and samples:
                    next_print += 60.0
                    s = samples[-1]
                    print(f"minute={now / 60:.0f} rss_mb={s.rss_mb:.1f} threads={s.threads} fds={s.fds} series={s.series} "
                          f"age_p99_ms={s.age_p99_ms:.0f} events={s.events} reloads_ok={reloads_ok} "
                          f"reloads_failed={reloads_failed} server_kills={kills}", flush=True)
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    code = proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait(timeout=10)
            else:
                code = proc.returncode
            for server in servers:
                server.stop()
            log.close()
            if code != 0:
                crashed = True
                tail = (out / "vigil.log").read_text().splitlines()[-15:]
                print(f"vigil exited with {code}; last log lines:\n" + "\n".join(tail), file=sys.stderr)
    # Growth between the first and the last samples after the warm-up that have the starting cameras.
    after = [s for s in samples if s.t >= warmup_s and s.baseline]
    if len(after) < 2:
        print(f"error: too few samples after the {warmup_s:.0f} s warm-up ({len(after)})", file=sys.stderr)
        print(f"rss_growth_pct=nan threads_growth=0 fds_growth=0 series_growth=0 crashed={int(crashed)}")
        return 1
    first, last = after[0], after[-1]
    print(f"from minute {first.t / 60:.1f} to {last.t / 60:.1f}: rss {first.rss_mb:.1f} -> {last.rss_mb:.1f} MB, "
          f"threads {first.threads} -> {last.threads}, fds {first.fds} -> {last.fds}, series {first.series} -> {last.series}; "
          f"reloads ok {reloads_ok}, failed {reloads_failed}; RTSP server kills {kills}; events {last.events}")
    print(f"rss_growth_pct={100.0 * (last.rss_mb - first.rss_mb) / first.rss_mb:.1f} threads_growth={last.threads - first.threads} "
          f"fds_growth={last.fds - first.fds} series_growth={last.series - first.series} crashed={int(crashed)}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
