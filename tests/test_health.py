"""Camera health: state changes, rates, the /healthz document and the Prometheus text."""

from __future__ import annotations

import json
import logging
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from pipeline.health import HealthServer, camera_health
from pipeline.metrics import CameraState, Metrics, RateMeter
from pipeline.redact import RedactingFilter


def test_rate_meter_counts_the_last_seconds_only():
    meter = RateMeter()
    for i in range(100):  # 25 fps for 4 s
        meter.add(1000.0 + i * 0.04)
    assert abs(meter.rate(1004.0) - 25.0) < 0.5
    assert meter.rate(1020.0) == 0.0  # nothing for 16 s


def test_state_changes_are_logged_and_kept(caplog):
    caplog.set_level(logging.INFO)
    cam = Metrics().camera("dock")
    cam.set_state(CameraState.STREAMING, "rtsp://cam")
    cam.set_state(CameraState.STALLED, "no frame for 3.0 s")
    cam.set_state(CameraState.RECONNECTING, "retry in 0.5 s")
    assert [s for _, s, _ in cam.history] == [CameraState.STREAMING, CameraState.STALLED, CameraState.RECONNECTING]
    assert "camera dock: streaming -> stalled (no frame for 3.0 s)" in caplog.text
    assert any(r.levelno == logging.WARNING and "stalled" in r.getMessage() for r in caplog.records)


def test_healthz_and_metrics_over_http():
    metrics = Metrics()
    cam = metrics.camera("dock")
    cam.set_state(CameraState.STREAMING)
    for i in range(10):
        cam.record_in(1.0 + i)
    cam.record_out(11.0, 120.0)
    metrics.count_drop("dock", "queue_full")
    metrics.count_drop("dock", "too_old")
    server = HealthServer(metrics, port=0).start()
    try:
        health = json.loads(urllib.request.urlopen(f"{server.url}/healthz", timeout=5).read())
        dock = health["cameras"]["dock"]
        assert health["status"] == "ok"
        assert dock["state"] == "streaming" and dock["drops"] == {"queue_full": 1, "too_old": 1}
        assert dock["reconnects"] == 0 and isinstance(dock["last_frame_age_ms"], float)
        assert isinstance(dock["fps_in"], float) and isinstance(dock["fps_out"], float)
        text = urllib.request.urlopen(f"{server.url}/metrics", timeout=5).read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        drops = {s.labels["reason"]: s.value for s in families["vigil_camera_drops"].samples}
        assert drops == {"queue_full": 1.0, "too_old": 1.0}
        assert {s.labels["state"] for s in families["vigil_camera_state"].samples if s.value == 1.0} == {"streaming"}
        try:
            urllib.request.urlopen(f"{server.url}/nope", timeout=5)
            raise AssertionError("404 expected")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    finally:
        server.close()
    assert camera_health(metrics)["cameras"]["dock"]["frames_in"] == 10


def test_log_filter_masks_credentials_in_any_record():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "cannot open %s", ("rtsp://u:pw@h/s",), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "cannot open rtsp://***:***@h/s"


def test_a_camera_the_model_cannot_keep_up_with_is_behind_and_says_so(caplog):
    caplog.set_level(logging.INFO)
    metrics = Metrics()
    cam = metrics.camera("dock")
    cam.detect_fps = 5.0
    t0 = 1000.0
    for i in range(60):  # 6 s: the gate chose 5 frames/s, the model ran on every other one
        now = t0 + i * 0.2 / 2
        cam.record_in(now)
        if i % 2 == 0:
            cam.record_gate(now, None)
            if i % 4 == 0:
                cam.record_out(now, 100.0, detected=True)
        else:
            cam.record_gate(now, "rate")
    doc = camera_health(metrics, now_mono=t0 + 6.0)["cameras"]["dock"]
    assert doc["capacity"] == "behind" and doc["detect_fps"] == 5.0 and doc["skipped"] == {"rate": 30}
    assert 2.0 <= doc["detections_per_s"] <= 3.0
    assert "camera dock: the model keeps up with" in caplog.text and "lower detect_fps" in caplog.text
    for i in range(60):  # then it keeps up
        now = t0 + 6.0 + i * 0.1
        cam.record_gate(now, None)
        cam.record_out(now, 100.0, detected=True)
    assert camera_health(metrics, now_mono=t0 + 12.0)["cameras"]["dock"]["capacity"] == "ok"
