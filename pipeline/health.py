"""Health and metrics over HTTP, on 127.0.0.1 by default (the endpoint has no authentication):

- GET /healthz: JSON, per camera: state, fps in and out, drops by reason, reconnects, age of the
  newest frame: `{"status": "ok"|"degraded", "cameras": {"<id>": {...}}}`. Always 200 while the
  process runs: one dead camera is the camera's problem, not a reason to restart the others.
- GET /metrics: the same and per-stage figures in the Prometheus text format.
- POST /reload: re-reads the config and adds/removes/restarts cameras (as SIGHUP does).

Everything is read from the pipeline's own Metrics when asked, so serving costs nothing per frame.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pipeline.metrics import CameraState, Metrics

log = logging.getLogger(__name__)


def camera_health(metrics: Metrics, now_mono: float | None = None) -> dict[str, Any]:
    """The /healthz document."""
    now = time.monotonic() if now_mono is None else now_mono
    cameras: dict[str, Any] = {}
    for cam in metrics.cameras():
        cameras[cam.camera_id] = {
            "state": cam.state.value,
            "fps_in": round(cam.in_rate.rate(now), 3),
            "fps_out": round(cam.out_rate.rate(now), 3),
            "drops": dict(cam.drops),
            "reconnects": cam.reconnects,
            "last_frame_age_ms": round((now - cam.last_in_mono) * 1000.0, 1) if cam.last_in_mono is not None else None,
            "state_reason": cam.state_reason,
            "state_for_s": round(now - cam.state_since_mono, 3),
            "frames_in": cam.frames_in,
            "frames_out": cam.frames_out,
            "detect_fps": cam.detect_fps,
            "detections_per_s": round(cam.detect_rate.rate(now), 3),
            "skipped": dict(cam.skipped),
            "capacity": "behind" if cam.update_capacity(now) else "ok",
        }
    healthy = all(c["state"] in (CameraState.STREAMING.value, CameraState.ENDED.value) for c in cameras.values())
    return {"status": "ok" if healthy else "degraded", "cameras": cameras}


class _Collector:
    """Builds Prometheus metric families from Metrics at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        cams = self.metrics.cameras()
        state = GaugeMetricFamily("vigil_camera_state", "1 for the camera's current state", labels=["camera", "state"])
        up = GaugeMetricFamily("vigil_camera_up", "1 while the camera is streaming", labels=["camera"])
        frames_in = CounterMetricFamily("vigil_camera_frames_in", "Frames captured", labels=["camera"])
        frames_out = CounterMetricFamily("vigil_camera_frames_out", "Frames with detections handed to sinks", labels=["camera"])
        drops = CounterMetricFamily("vigil_camera_drops", "Frames dropped, by reason", labels=["camera", "reason"])
        reconnects = CounterMetricFamily("vigil_camera_reconnects", "Reconnect attempts", labels=["camera"])
        fps_in = GaugeMetricFamily("vigil_camera_fps_in", "Capture rate over the last seconds", labels=["camera"])
        fps_out = GaugeMetricFamily("vigil_camera_fps_out", "Output rate over the last seconds", labels=["camera"])
        last_age = GaugeMetricFamily("vigil_camera_last_frame_age_seconds", "Time since the newest captured frame",
                                     labels=["camera"])
        age = GaugeMetricFamily("vigil_camera_frame_age_seconds", "Capture-to-output frame age (recent frames)",
                                labels=["camera", "quantile"])
        detections = CounterMetricFamily("vigil_camera_detections", "Frames the model ran on", labels=["camera"])
        det_rate = GaugeMetricFamily("vigil_camera_detections_per_second", "Frames the model ran on per second, recently",
                                     labels=["camera"])
        det_asked = GaugeMetricFamily("vigil_camera_detect_fps", "Detections per second asked (detect_fps; absent: every frame)",
                                      labels=["camera"])
        skipped = CounterMetricFamily("vigil_camera_skipped", "Frames the model skipped on purpose, by reason (rate, motion)",
                                      labels=["camera", "reason"])
        behind = GaugeMetricFamily("vigil_camera_behind", "1 while the model runs on fewer frames than the camera's gate chose",
                                   labels=["camera"])
        for cam in cams:
            cid = cam.camera_id
            for s in CameraState:
                state.add_metric([cid, s.value], 1.0 if cam.state is s else 0.0)
            up.add_metric([cid], 1.0 if cam.state is CameraState.STREAMING else 0.0)
            frames_in.add_metric([cid], cam.frames_in)
            frames_out.add_metric([cid], cam.frames_out)
            for reason, count in dict(cam.drops).items():
                drops.add_metric([cid, reason], count)
            reconnects.add_metric([cid], cam.reconnects)
            fps_in.add_metric([cid], cam.in_rate.rate(now))
            fps_out.add_metric([cid], cam.out_rate.rate(now))
            if cam.last_in_mono is not None:
                last_age.add_metric([cid], now - cam.last_in_mono)
            detections.add_metric([cid], cam.detections)
            det_rate.add_metric([cid], cam.detect_rate.rate(now))
            if cam.detect_fps is not None:
                det_asked.add_metric([cid], cam.detect_fps)
            for reason, count in dict(cam.skipped).items():
                skipped.add_metric([cid, reason], count)
            behind.add_metric([cid], 1.0 if cam.update_capacity(now) else 0.0)
            if cam.output_ages.count:
                p50, p99 = cam.output_ages.percentiles(50, 99)
                age.add_metric([cid, "0.5"], p50 / 1000.0)
                age.add_metric([cid, "0.99"], p99 / 1000.0)
        busy = CounterMetricFamily("vigil_stage_busy_seconds", "Time each stage spent working", labels=["stage"])
        items = CounterMetricFamily("vigil_stage_items", "Items each stage processed", labels=["stage"])
        for st in self.metrics.stages():
            busy.add_metric([st.name], st.busy_s)
            items.add_metric([st.name], st.items)
        yield from (state, up, frames_in, frames_out, drops, reconnects, fps_in, fps_out, last_age, age, detections, det_rate,
                    det_asked, skipped, behind, busy, items)


class HealthServer:
    """Serves /healthz, /metrics and (when given `reload`) POST /reload in a daemon thread."""

    def __init__(self, metrics: Metrics, *, host: str = "127.0.0.1", port: int = 0,
                 reload: Callable[[], dict[str, Any]] | None = None) -> None:
        self.metrics = metrics
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(metrics))  # type: ignore[arg-type]
        self._reload = reload
        handler = _make_handler(self)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                          f"(port in use? choose another with metrics.port / --metrics-port)") from exc
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="health-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("health on %s/healthz, metrics on %s/metrics", self.url, self.url)
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            # shutdown() waits for serve_forever to notice (within its poll_interval) and has no
            # timeout of its own: run it aside and wait a bounded time.
            stopper = threading.Thread(target=self._server.shutdown, name="health-http-stop", daemon=True)
            stopper.start()
            stopper.join(timeout=2.0)
            self._thread.join(timeout=2.0)
        self._server.server_close()


def _make_handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, "application/json", json.dumps(camera_health(server.metrics)).encode())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(server.registry))
            else:
                self._send(404, "application/json", json.dumps({"error": f"no such endpoint {path!r}; try /healthz or /metrics"}).encode())

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            if path != "/reload" or server._reload is None:  # noqa: SLF001 - the handler is part of the server
                self._send(404, "application/json", json.dumps({"error": f"no such endpoint POST {path!r}"}).encode())
                return
            result = server._reload()  # noqa: SLF001 - the handler is part of the server
            # 400: the new config is invalid (nothing changed); 500: some camera could not be changed
            # (named in `failed`, retried by the next reload) while the others were.
            status = 200 if result.get("ok") else 400 if "errors" in result else 500
            self._send(status, "application/json", json.dumps(result).encode())

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # signature of the base class
            log.debug("http %s", format % args)

    return Handler
