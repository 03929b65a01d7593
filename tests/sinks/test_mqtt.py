"""The mqtt sink against a real Mosquitto broker: events through the outbox, retained state and
zone counts, the last will; a broker killed mid-run; Vigil killed while the broker is down."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.graph import build_graph
from pipeline.runner import execute
from tests.helpers import dedupe_events, wait_for
from tests.tools.mqtt import Mosquitto, Subscriber

from conftest import start_cli

ZONE = "[[0.3, 0.45], [0.7, 0.45], [0.7, 0.95], [0.3, 0.95]]"


def site(tmp_path: Path, model_path: Path, video: Path, port: int, *, realtime: bool = False, max_frames: int = 150,
         extra: str = "") -> Path:
    """A config: one camera on `video` with a zone rule that gives several incidents, its events to
    a JSONL file and to the broker on `port`."""
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"""
cameras:
  - id: floor
    source: {{type: file, path: {video}, max_frames: {max_frames}, realtime: {str(realtime).lower()}}}
    model: yolo
    zones: [{{id: danger, units: normalized, points: {ZONE}}}]
    rules: [{{id: intrusion, type: zone_intrusion, zone: danger, classes: [person], min_seconds: 0, clear_seconds: 0.2}}]
models:
  - {{id: yolo, path: {model_path}, classes: [person]}}
sinks:
  - {{type: events, path: {tmp_path / 'events.jsonl'}}}
  - {{type: mqtt, host: 127.0.0.1, port: {port}, topic_prefix: vigil, client_id: vigil-test, qos: 1}}
outbox: {{path: {tmp_path / 'outbox.db'}}}
{extra}
""")
    return cfg


def jsonl_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def keys(events: list[dict]) -> list[tuple[str, str, int]]:
    return [(e["event_id"], e["kind"], e["seq"]) for e in events]


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


def test_events_reach_the_broker_in_order_with_retained_state_and_counts(tmp_path, model_path, media, broker):
    sub = Subscriber(broker.port)
    try:
        execute(build_graph(load_config(site(tmp_path, model_path, media / "crowd_overhead.mp4", broker.port))),
                handle_signals=False)
        written = jsonl_events(tmp_path / "events.jsonl")
        assert len(written) >= 2, "the config should give incidents"
        assert wait_for(lambda: len(dedupe_events(sub.events())) >= len(written), 10), (len(sub.events()), len(written))
        assert keys(dedupe_events(sub.events())) == keys(written)  # every event, once, in order
        assert sub.events()[0]["rule"] == "intrusion" and sub.events()[0]["camera"] == "floor"
        assert wait_for(lambda: sub.last("vigil/floor/state") == "ended", 5), sub.last("vigil/floor/state")
        assert sub.last("vigil/floor/danger/count") is not None and sub.last("vigil/floor/danger/count").isdigit()
        assert sub.last("vigil/status") == "offline"  # a clean end says so
        topics = {t for t, _, _ in sub.messages}
        assert "vigil/floor/events/intrusion" in topics
    finally:
        sub.close()
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0, "confirmed events left the outbox"


def test_a_broker_killed_mid_run_loses_no_event(tmp_path, model_path, media, broker):
    """SIGKILL the broker for a few seconds while a realtime camera gives events: after the restart
    the subscriber (persistent session, QoS 1) has every event of the run exactly once after
    de-duplication, and the same ones as the events JSONL."""
    sub = Subscriber(broker.port)
    cfg = site(tmp_path, model_path, media / "crowd_overhead.mp4", broker.port, realtime=True, max_frames=300)
    proc = start_cli("run", str(cfg))
    try:
        assert wait_for(lambda: (tmp_path / "events.jsonl").exists() and sub.events(), 60), "no event reached the broker"
        broker.kill()
        time.sleep(4)
        broker.start()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        written = jsonl_events(tmp_path / "events.jsonl")
        assert wait_for(lambda: len(dedupe_events(sub.events())) >= len(written), 20)
        assert sorted(keys(dedupe_events(sub.events()))) == sorted(keys(written))
        per_camera_order = [k for k in keys(dedupe_events(sub.events()))]
        assert per_camera_order == keys(written), "events arrived out of order"
        assert "disconnected" in err, "the lost connection should be logged"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        sub.close()


def test_events_of_a_killed_run_are_sent_by_the_next_start(tmp_path, model_path, media):
    """Vigil SIGKILLed while the broker is down: its events wait in the outbox; the next start, with
    the broker up, delivers them."""
    broker = Mosquitto(tmp_path / "broker")  # not started: the broker is down
    cfg = site(tmp_path, model_path, media / "crowd_overhead.mp4", broker.port, realtime=True, max_frames=10_000)
    proc = start_cli("run", str(cfg))
    try:
        assert wait_for(lambda: (tmp_path / "events.jsonl").exists() and len(jsonl_events(tmp_path / "events.jsonl")) >= 2, 90)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    first_run = jsonl_events(tmp_path / "events.jsonl")
    broker.start()
    sub = Subscriber(broker.port)
    try:
        # The second start: a camera that gives no events (its first frames only).
        (tmp_path / "events.jsonl").rename(tmp_path / "first_run.jsonl")
        cfg2 = site(tmp_path, model_path, media / "crowd_overhead.mp4", broker.port, max_frames=1)
        result = start_cli("run", str(cfg2))
        _, err = result.communicate(timeout=120)
        assert result.returncode == 0, err[-3000:]
        assert "from the previous run" in err
        got = {k for k in keys(dedupe_events(sub.events()))}
        assert wait_for(lambda: set(keys(first_run)) <= {k for k in keys(dedupe_events(sub.events()))}, 10), \
            (len(first_run), len(got))
    finally:
        sub.close()
        broker.stop()


def test_the_last_will_says_offline_when_vigil_is_killed(tmp_path, model_path, media, broker):
    sub = Subscriber(broker.port, topic="vigil/status")
    cfg = site(tmp_path, model_path, media / "crowd_overhead.mp4", broker.port, realtime=True, max_frames=10_000,
               extra="")
    proc = start_cli("run", str(cfg))
    try:
        assert wait_for(lambda: sub.last("vigil/status") == "online", 60), sub.messages
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        # The broker notices the dead connection at the latest after 1.5 x keepalive; a killed
        # process's socket is closed by the kernel at once, so it is sooner.
        assert wait_for(lambda: sub.last("vigil/status") == "offline", 60), sub.messages
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
