"""Camera-down alarms (pipeline/camera_health.py): the decision on a camera's recorded states, and
a real RTSP camera killed and restarted: `camera_down` and `camera_restored` reach the events
file, ZeroMQ and MQTT."""

from __future__ import annotations

import json
import time

import pytest
import zmq

from pipeline.camera_health import RULE, CameraWatch
from pipeline.config import load_config
from pipeline.graph import build_graph
from pipeline.metrics import CameraMetrics, CameraState
from tests.helpers import Running, free_port, read_jsonl, wait_for
from tests.tools.mqtt import Mosquitto, Subscriber
from tests.tools.rtsp import RtspServer, need_rtsp_server


def test_down_only_after_down_after_s_then_restored_with_the_same_event_id():
    stats = CameraMetrics("gate")
    watch = CameraWatch("gate", 10.0, stats)
    t0 = time.monotonic()
    stats.set_state(CameraState.STREAMING)
    assert watch.check(5, t0) is None
    stats.set_state(CameraState.STALLED, "no frame for 3 s")
    assert watch.check(5, t0 + 1) is None
    stats.set_state(CameraState.RECONNECTING, "connection refused")
    assert watch.check(5, t0 + 9) is None  # a reconnect within down_after_s is no incident
    down = watch.check(5, t0 + 11.5)
    assert down is not None and down.kind == "camera_down" and down.rule == RULE and down.rule_type == RULE
    assert down.camera == "gate" and down.track_ids == [] and down.data["state"] == "reconnecting"
    assert down.data["down_s"] >= 10
    assert watch.check(5, t0 + 20) is None  # once per incident
    stats.set_state(CameraState.STREAMING)
    restored = watch.check(6, t0 + 21)
    assert restored is not None and restored.kind == "camera_restored" and restored.event_id == down.event_id
    assert set(down.to_dict()) == set(restored.to_dict())  # the published event schema


def test_a_short_outage_or_a_removed_camera_gives_no_alarm():
    stats = CameraMetrics("gate")
    watch = CameraWatch("gate", 2.0, stats)
    t0 = time.monotonic()
    stats.set_state(CameraState.STALLED)
    assert watch.check(1, t0) is None
    stats.set_state(CameraState.STREAMING)
    assert watch.check(1, t0 + 1) is None
    stats.set_state(CameraState.STALLED)
    assert watch.check(1, t0 + 1.5) is None  # the clock starts again
    stats.set_state(CameraState.ENDED, "removed")
    assert watch.check(1, t0 + 30) is None


def test_a_camera_that_never_connects_is_down(tmp_path):
    stats = CameraMetrics("gate")  # STARTING since now
    watch = CameraWatch("gate", 1.0, stats)
    assert watch.check(-1, stats.state_since_mono + 0.5) is None
    down = watch.check(-1, stats.state_since_mono + 1.2)
    assert down is not None and down.data["state"] == "starting"


def test_a_killed_rtsp_camera_is_reported_down_and_restored_on_every_event_sink(tmp_path, model_path, media):
    need_rtsp_server()
    server = RtspServer(media / "crowd_overhead.mp4").start()
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port)
    zmq_port = free_port()
    ctx = zmq.Context()
    zsub = ctx.socket(zmq.SUB)
    zsub.setsockopt(zmq.SUBSCRIBE, b"")
    zsub.setsockopt(zmq.LINGER, 0)
    zsub.connect(f"tcp://127.0.0.1:{zmq_port}")
    cfg = tmp_path / "live.yaml"
    cfg.write_text(f"""
cameras:
  - id: dock
    source: {{type: rtsp, url: "{server.url}", open_timeout_s: 2}}
    model: yolo
    down_after_s: 2
    detect_fps: 2
    reconnect: {{initial_delay_s: 0.2, max_delay_s: 0.5}}
    zones: [{{id: floor, units: normalized, points: [[0, 0], [1, 0], [1, 1], [0, 1]]}}]
    rules: [{{id: on_floor, type: zone_intrusion, zone: floor, classes: [person], min_seconds: 1000}}]
models:
  - {{id: yolo, path: {model_path}, classes: [person]}}
sinks:
  - {{type: events, path: {tmp_path / 'events.jsonl'}}}
  - {{type: zmq, endpoint: "tcp://127.0.0.1:{zmq_port}"}}
  - {{type: mqtt, port: {broker.port}, client_id: vigil-health}}
outbox: {{path: {tmp_path / 'outbox.db'}}}
""")
    events = tmp_path / "events.jsonl"
    kinds = lambda: [e["kind"] for e in read_jsonl(events)] if events.exists() else []  # noqa: E731
    run = Running(build_graph(load_config(cfg)))
    try:
        metrics = run.graph.ctx.metrics.camera("dock")
        assert wait_for(lambda: metrics.state is CameraState.STREAMING, 30), metrics.state
        server.kill()
        killed = time.monotonic()
        assert wait_for(lambda: "camera_down" in kinds(), 15), kinds()
        assert time.monotonic() - killed >= 2.0, [(round(t - killed, 2), s.value, r) for t, s, r in metrics.history]
        server.start()
        assert wait_for(lambda: "camera_restored" in kinds(), 30), (kinds(), metrics.state)
        assert wait_for(lambda: [e["kind"] for e in sub.events()] == ["camera_down", "camera_restored"], 10), sub.events()
        assert {t for t, _, _ in sub.messages if "/events/" in t} == {"vigil/dock/events/camera_health"}
        assert wait_for(lambda: sub.last("vigil/dock/state") == "streaming", 10)
        states = [p.decode() for t, p, _ in sub.messages if t == "vigil/dock/state"]
        assert "streaming" in states and any(s in states for s in ("stalled", "reconnecting")), states
    finally:
        run.finish()
        server.stop()
        sub.close()
        broker.stop()
    down, restored = [e for e in read_jsonl(events) if e["rule"] == "camera_health"]
    assert (down["kind"], restored["kind"]) == ("camera_down", "camera_restored")
    assert down["event_id"] == restored["event_id"] and restored["data"]["down_s"] >= 2
    received = []
    while zsub.poll(100):
        topic, payload = zsub.recv_multipart()
        received.append((topic.decode(), json.loads(payload)["kind"]))
    zsub.close()
    ctx.term()
    assert received == [("dock/camera_health", "camera_down"), ("dock/camera_health", "camera_restored")]


@pytest.mark.parametrize("value", [0, -1])
def test_down_after_s_must_be_positive(tmp_path, value, model_path):
    from pipeline.config import ConfigError

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
cameras:
  - id: dock
    source: {{type: rtsp, url: "rtsp://127.0.0.1:9/cam"}}
    model: yolo
    down_after_s: {value}
models:
  - {{id: yolo, path: {model_path}}}
""")
    with pytest.raises(ConfigError, match=r"c.yaml:6: cameras\[0\].down_after_s"):
        load_config(cfg)


def test_a_live_camera_without_rules_that_never_connects_is_reported_down(tmp_path, model_path):
    """Health events need no rules: a plain live camera feeding an event sink is watched too."""
    cfg = tmp_path / "plain.yaml"
    cfg.write_text(f"""
cameras:
  - id: yard
    source: {{type: rtsp, url: "rtsp://127.0.0.1:{free_port()}/cam", open_timeout_s: 1}}
    model: yolo
    down_after_s: 1
models:
  - {{id: yolo, path: {model_path}}}
sinks:
  - {{type: events, path: {tmp_path / 'events.jsonl'}}}
  - {{type: jsonl, path: {tmp_path / 'frames.jsonl'}}}
""")
    events = tmp_path / "events.jsonl"
    run = Running(build_graph(load_config(cfg)))
    try:
        assert wait_for(lambda: events.exists() and read_jsonl(events), 15)
    finally:
        run.finish()
    [down] = read_jsonl(events)
    assert (down["kind"], down["rule"], down["camera"]) == ("camera_down", "camera_health", "yard")
    assert down["data"]["state"] in ("starting", "reconnecting") and down["data"]["down_s"] >= 1
