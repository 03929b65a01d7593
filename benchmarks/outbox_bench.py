"""What the durable outbox costs: per append, end to end through MQTT, and on the pipeline's fps.

1. `Outbox.append` of one ~1 KB event JSON (SQLite WAL, synchronous=FULL: an fsync per append),
   p50/p99 per event, with one sink and with two (two rows per event), on a file in the
   repository's filesystem (out/, not tmpfs).
2. MqttSink against a local Mosquitto broker started here: --events events written from one
   thread as fast as it goes, then waited for until the broker has PUBACKed them all; appends/s,
   confirmed/s and the time to drain the backlog once the last append returned.
3. The real pipeline in this process on crowd_overhead.mp4 (non-realtime, --frames frames)
   without and with an mqtt sink, --repeats times each in A B B A order, after an unmeasured
   warm-up run. A zone rule over the whole frame (min/clear/cooldown 0) with an `update` every k
   frames per person makes about --rate events/s (k is chosen from the warm-up run's event rate,
   or set --update-seconds); every run has it and an events JSONL sink, so the mqtt
   sink is the only difference. Prints the events/s reached (events in the JSONL / run seconds),
   each run's fps and CPU ms per frame, the medians and the fps ratio.

    .venv/bin/python benchmarks/outbox_bench.py [--events 2000] [--frames 300] [--rate 100] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import MqttSinkConfig, config_from_data  # noqa: E402 - after the path set-up above
from pipeline.frames import Event  # noqa: E402
from pipeline.graph import build_graph  # noqa: E402
from pipeline.metrics import Metrics  # noqa: E402
from pipeline.outbox import Outbox, SharedOutbox  # noqa: E402
from pipeline.paths import default_model, shared_dir  # noqa: E402
from pipeline.runner import execute  # noqa: E402
from pipeline.sinks.mqtt import MqttSink  # noqa: E402
from pipeline.sinks.network import event_payload  # noqa: E402

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")
WHOLE_FRAME = [[0, 0], [1, 0], [1, 1], [0, 1]]
DRAIN_TIMEOUT_S = 120.0
VIDEO = shared_dir() / "media" / "crowd_overhead.mp4"


# ------------------------------------------------------------------------------------- helpers

def make_event(i: int, boxes: int = 11) -> Event:
    """A zone event like the pipeline's; 11 boxes make its JSON about 1 KB."""
    rng = np.random.default_rng(i)
    xy = rng.uniform(0, 800, size=(boxes, 4)).round(1).tolist()
    now = time.time()
    return Event(event_id=f"bench-{i:08d}-3f9a1c2e", kind="update", rule="on_floor", rule_type="zone_intrusion",
                 camera="gate", track_ids=[1000 + k for k in range(boxes)], classes=["person"] * boxes, zone="floor",
                 line=None, ts=now, started_ts=now - 3.5, seq=i, boxes=xy,
                 confidence=rng.uniform(0.3, 0.95, size=boxes).round(3).tolist(),
                 data={"count": boxes}, snapshot=f"evidence/snapshots/gate/bench-{i:08d}.jpg",
                 clip=f"evidence/clips/gate/bench-{i:08d}.mp4")


def percentiles_us(samples: list[float]) -> tuple[float, float, float]:
    """p50, p99 and mean of durations in seconds, as µs."""
    a = np.asarray(samples) * 1e6
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.mean())


def filesystem_of(path: Path) -> str:
    """The mount (device, type) a path lives on, from /proc/mounts."""
    best = ("?", "?", "")
    try:
        for line in open("/proc/mounts"):
            dev, mnt, fstype = line.split()[:3]
            if str(path).startswith(mnt) and len(mnt) >= len(best[2]):
                best = (dev, fstype, mnt)
    except OSError:
        pass
    return f"{best[0]} ({best[1]}) on {best[2] or '?'}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A Mosquitto broker on a free 127.0.0.1 port, configured in `workdir`; stopped by `stop()`."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("mosquitto") or next((p for p in MOSQUITTO_PATHS if os.path.exists(p)), None)
        if exe is None:
            raise SystemExit("no mosquitto broker: apt-get install mosquitto")
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"mosquitto exited at start ({self.proc.returncode})")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SystemExit("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def mqtt_config(port: int, client_id: str) -> dict:
    return {"type": "mqtt", "host": "127.0.0.1", "port": port, "client_id": client_id, "topic_prefix": "bench", "qos": 1}


# ------------------------------------------------------------------------------------ 1. append

def bench_append(work: Path, count: int) -> None:
    """p50/p99 of one event's appends, with one sink and with two."""
    payloads = [event_payload(make_event(i)) for i in range(count)]
    size = sum(map(len, payloads)) / len(payloads)
    print(f"1. Outbox.append: {count} events, payload {size:.0f} B mean, file on {filesystem_of(work)}")
    print(f"   {'sinks':<7}{'p50 µs':>10}{'p99 µs':>10}{'mean µs':>10}{'events/s':>10}")
    for sinks in (1, 2):
        box = Outbox(work / f"append-{sinks}.db", max_mb=100, max_age_s=86400)
        names = [f"mqtt:bench{k}@127.0.0.1:1883" for k in range(sinks)]
        for name in names:  # warm-up: the file's first pages, the statement cache
            for _ in range(20):
                box.append(name, "gate", "bench/gate/events/on_floor", payloads[0])
        times: list[float] = []
        for payload in payloads:
            t0 = time.perf_counter()
            for name in names:  # the graph's sink lanes append an event once per network sink
                box.append(name, "gate", "bench/gate/events/on_floor", payload)
            times.append(time.perf_counter() - t0)
        box.close()
        p50, p99, mean = percentiles_us(times)
        print(f"   {sinks:<7}{p50:>10.0f}{p99:>10.0f}{mean:>10.0f}{1e6 / mean:>10.0f}")


# -------------------------------------------------------------------------------- 2. end to end

def bench_mqtt(work: Path, port: int, count: int) -> None:
    """`count` events through MqttSink to the broker, confirmed by PUBACK."""
    events = [make_event(i) for i in range(count)]
    sink = MqttSink(MqttSinkConfig(**mqtt_config(port, "bench-e2e")), SharedOutbox(work / "e2e.db", 100, 86400), Metrics())
    sink.open()
    deadline = time.monotonic() + 10
    while sink.stats.state != "connected" and time.monotonic() < deadline:
        time.sleep(0.01)
    if sink.stats.state != "connected":
        sink.close()
        raise SystemExit(f"the mqtt sink did not connect: {sink.stats.state} {sink.stats.state_reason}")
    t0 = time.perf_counter()
    for event in events:
        sink.write_event(event)
    t_appended = time.perf_counter()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while sink.stats.sent < count and time.monotonic() < deadline:
        time.sleep(0.001)
    t_done = time.perf_counter()
    sent = sink.stats.sent
    sink.close()
    append_s, total_s = t_appended - t0, t_done - t0
    print(f"2. MqttSink → mosquitto 127.0.0.1:{port}, QoS 1, max_inflight {sink.config.max_inflight}: {count} events from one thread")
    print(f"   appended   {count:>6} in {append_s:6.2f} s = {count / append_s:8.0f} events/s")
    print(f"   confirmed  {sent:>6} in {total_s:6.2f} s = {sent / total_s:8.0f} events/s (PUBACKed, removed from the outbox)")
    missing = "" if sent == count else f"  (TIMED OUT: {count - sent} unconfirmed)"
    print(f"   drain after the last append: {t_done - t_appended:.3f} s{missing}")


# ------------------------------------------------------------------------------ 3. pipeline fps

def pipeline_config(out: Path, frames: int, update_s: float, mqtt_port: int | None) -> dict:
    rule = {"id": "on_floor", "type": "zone_intrusion", "zone": "all", "classes": ["person"],
            "min_seconds": 0, "clear_seconds": 0, "cooldown_seconds": 0, "update_seconds": update_s}
    cam = {"id": "crowd", "model": "m",
           "source": {"type": "file", "path": str(VIDEO), "realtime": False,
                      "max_frames": frames},
           "zones": [{"id": "all", "units": "normalized", "points": WHOLE_FRAME}], "rules": [rule]}
    sinks: list[dict] = [{"type": "events", "path": str(out / "events.jsonl")}]
    if mqtt_port is not None:
        sinks.append(mqtt_config(mqtt_port, "bench-pipeline"))
    return {"cameras": [cam], "models": [{"id": "m", "path": str(default_model())}], "sinks": sinks,
            "outbox": {"path": str(out / "outbox.db"), "max_mb": 100, "max_age_s": 86400}}


def count_lines(path: Path) -> int:
    with open(path) as f:
        return sum(1 for line in f if line.strip())


def calibrate(work: Path, frames: int, rate: float) -> tuple[float, str]:
    """An unmeasured warm-up run (the first run in a process is slower: the video's pages,
    onnxruntime's first calls) with an update on every frame; returns the update_seconds that
    makes about `rate` events/s at that speed (an update every k frames), and what it measured."""
    out = work / "warmup"
    out.mkdir()
    summary = execute(build_graph(config_from_data(pipeline_config(out, frames, 1e-3, None), origin="benchmark", base_dir=out)),
                      handle_signals=False)
    per_s = count_lines(out / "events.jsonl") / summary.seconds
    cap = cv2.VideoCapture(str(VIDEO))
    video_fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    cap.release()
    k = max(1, round(per_s / rate))
    note = (f"warm-up: {summary.frames_out} frames at {summary.fps:.2f} fps, {per_s:.0f} events/s with an update every frame "
            f"-> an update every {k} frame(s) for ~{rate:g} events/s")
    return (k - 0.5) / video_fps, note


def bench_pipeline(work: Path, port: int, frames: int, update_s: float | None, rate: float, warmup: int, repeats: int) -> None:
    """The same run without and with the mqtt sink (`repeats` times each), after an unmeasured warm-up run."""
    note = ""
    if update_s is None:
        update_s, note = calibrate(work, warmup, rate)
    elif warmup > 0:
        out = work / "warmup"
        out.mkdir()
        execute(build_graph(config_from_data(pipeline_config(out, warmup, update_s, None), origin="benchmark", base_dir=out)),
                handle_signals=False)
    rows = []
    order = [("no mqtt", None), ("mqtt", port)]
    for rep in range(repeats):  # A B B A ...: a drift of the machine's speed hits both alike
        for name, mqtt_port in (order if rep % 2 == 0 else order[::-1]):
            out = work / f"{name.replace(' ', '_')}-{rep}"
            out.mkdir()
            graph = build_graph(config_from_data(pipeline_config(out, frames, update_s, mqtt_port), origin="benchmark",
                                                 base_dir=out))
            cpu0 = time.process_time()
            summary = execute(graph, handle_signals=False)
            cpu = time.process_time() - cpu0
            events = count_lines(out / "events.jsonl")
            delivery = graph.ctx.metrics.deliveries() if mqtt_port is not None else []
            sent = f"{delivery[0].sent} confirmed, {delivery[0].backlog} left" if delivery else "-"
            stage = next((st for st in summary.stages if "mqtt:" in st.name), None)
            if stage is not None:  # the sink's stage thread: the append (fsync) per event, and how long events waited for it
                sent += (f"; sink stage {stage.mean_ms_per_item:.2f} ms/event, "
                         f"event age p50/p99 {stage.age_p50_ms:.0f}/{stage.age_p99_ms:.0f} ms")
            rows.append((name, summary.frames_out, summary.seconds, summary.fps, cpu, events, sent))
    print(f"3. pipeline: crowd_overhead.mp4, {frames} frames, non-realtime, {default_model().name}; zone rule over the "
          f"whole frame, update_seconds {update_s:.3f}; {repeats} run(s) each, in the order shown")
    if note:
        print(f"   {note}")
    print(f"   {'run':<9}{'frames':>7}{'seconds':>9}{'fps':>8}{'cpu ms/frame':>14}{'events':>8}{'events/s':>10}  mqtt")
    for name, n, secs, fps, cpu, events, sent in rows:
        print(f"   {name:<9}{n:>7}{secs:>9.2f}{fps:>8.2f}{1000 * cpu / n:>14.1f}{events:>8}{events / secs:>10.1f}  {sent}")
    fps = {name: float(np.median([r[3] for r in rows if r[0] == name])) for name, _ in order}
    cpu = {name: float(np.median([1000 * r[4] / r[1] for r in rows if r[0] == name])) for name, _ in order}
    print(f"   median fps: no mqtt {fps['no mqtt']:.2f}, mqtt {fps['mqtt']:.2f}; "
          f"median cpu ms/frame: no mqtt {cpu['no mqtt']:.1f}, mqtt {cpu['mqtt']:.1f}")
    print(f"   fps with mqtt / without: {fps['mqtt'] / fps['no mqtt']:.3f}")


def main() -> int:
    """Runs the three measurements in one process and prints them."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=2000, help="appends in 1 and events through MQTT in 2 (default 2000)")
    p.add_argument("--frames", type=int, default=300, help="frames per pipeline run in 3 (default 300)")
    p.add_argument("--rate", type=float, default=100.0, help="events/s to aim at in 3 (default 100)")
    p.add_argument("--update-seconds", type=float, default=None,
                   help="the zone rule's update period in 3, in stream seconds (default: from the warm-up run, for --rate)")
    p.add_argument("--warmup-frames", type=int, default=100,
                   help="frames of the unmeasured pipeline run before 3 (default 100)")
    p.add_argument("--repeats", type=int, default=2, help="pipeline runs per variant in 3, alternated (default 2)")
    p.add_argument("--dir", type=Path, default=REPO / "out", help="where the temp folder goes (default out/ in the repo)")
    args = p.parse_args()
    if args.update_seconds is None and args.warmup_frames < 1:
        p.error("--warmup-frames 0 needs --update-seconds (the warm-up run chooses it)")
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="outbox-bench-", dir=args.dir)).resolve()
    broker = Broker(work)
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}, "
          f"mosquitto pid {broker.proc.pid} on port {broker.port}")
    try:
        bench_append(work, args.events)
        bench_mqtt(work, broker.port, args.events)
        bench_pipeline(work, broker.port, args.frames, args.update_seconds, args.rate, args.warmup_frames,
                       args.repeats)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
