"""Health and metrics over HTTP, on 127.0.0.1 by default (/healthz and /metrics have no authentication):

- GET /healthz: JSON, per camera: state, fps in and out, drops by reason, reconnects, age of the
  newest frame: `{"status": "ok"|"degraded", "cameras": {"<id>": {...}}}`. Always 200 while the
  process runs: one dead camera is the camera's problem, not a reason to restart the others.
- GET /metrics: the same and per-stage figures in the Prometheus text format.
- GET /livez: 200, or 503 when the cameras captured frames but none came out over the last
  LIVENESS_WINDOW_S (a stuck pipeline: for a Kubernetes liveness probe; see pipeline/liveness.py).
- POST /reload: re-reads the config and adds/removes/restarts cameras (as SIGHUP does); with a
  token (`metrics.token`) only for `Authorization: Bearer TOKEN`, else 401.
- GET /, /cameras/ID, ...: the status page (pipeline/web), behind the token when one is set.

Everything is read from the pipeline's own Metrics when asked, so serving costs nothing per frame.

Hardening, since the endpoint lives as long as the pipeline: each connection has a socket timeout
(a client that sends nothing is dropped), at most `max_connections` are served at once (one thread
each; the next ones get 503 at once), and a Host header naming neither this machine (localhost, an
IP address, the bound host) nor one of `allowed_hosts` gets 403, so a web page cannot read /healthz
through DNS rebinding. Binding beyond loopback logs a warning.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pipeline.liveness import FlowCheck
from pipeline.metrics import CameraState, Metrics
from pipeline.preview import Previews
from pipeline.web import StatusPage

log = logging.getLogger(__name__)

LIVENESS_WINDOW_S = 20.0  # /livez: captured frames but none out for this long is stuck


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
            "zone_counts": dict(cam.zone_counts),
        }
    healthy = all(c["state"] in (CameraState.STREAMING.value, CameraState.ENDED.value) for c in cameras.values())
    # A broker or webhook that is away does not make the box unhealthy (a restart would not bring it
    # back, and the outbox keeps the events): it is reported beside the status, not in it.
    sinks = {d.sink: {"state": d.state, "state_reason": d.state_reason, "backlog": d.backlog, "sent": d.sent,
                      "failed": d.failed, "retries": d.retries, "dropped": d.dropped, "expired": d.expired}
             for d in metrics.deliveries()}
    # A model lane whose server is away (backend triton) drops its cameras' frames: degraded.
    models = {m.model_id: {"state": m.state, "state_reason": m.state_reason, "state_for_s": round(now - m.state_since_mono, 3),
                           "dropped": m.dropped, "outages": m.outages} for m in metrics.models()}
    healthy = healthy and all(m["state"] == "ready" for m in models.values())
    return {"status": "ok" if healthy else "degraded", "shard": metrics.shard, "cameras": cameras, "sinks": sinks,
            "models": models}


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
        zone_count = GaugeMetricFamily("vigil_zone_count", "Objects in each zone that has a rule (last detected frame)",
                                       labels=["camera", "zone"])
        for cam in self.metrics.cameras():
            for zone, count in dict(cam.zone_counts).items():
                zone_count.add_metric([cam.camera_id, zone], count)
        yield zone_count
        if self.metrics.shard is not None:  # this instance runs one shard of the site's cameras
            shard = GaugeMetricFamily("vigil_shard_info", "The shard (I/N) this instance runs", labels=["shard"])
            shard.add_metric([self.metrics.shard], 1.0)
            yield shard
        yield from self._deliveries()
        model_up = GaugeMetricFamily("vigil_model_up", "1 while the model lane runs batches (0: its server is unavailable)",
                                     labels=["model"])
        model_dropped = CounterMetricFamily("vigil_model_unavailable_drops", "Frames dropped while the model was unavailable",
                                            labels=["model"])
        for m in self.metrics.models():
            model_up.add_metric([m.model_id], 1.0 if m.state == "ready" else 0.0)
            model_dropped.add_metric([m.model_id], m.dropped)
        yield from (model_up, model_dropped)
        busy = CounterMetricFamily("vigil_stage_busy_seconds", "Time each stage spent working", labels=["stage"])
        items = CounterMetricFamily("vigil_stage_items", "Items each stage processed", labels=["stage"])
        for st in self.metrics.stages():
            busy.add_metric([st.name], st.busy_s)
            items.add_metric([st.name], st.items)
        yield from (state, up, frames_in, frames_out, drops, reconnects, fps_in, fps_out, last_age, age, detections, det_rate,
                    det_asked, skipped, behind, busy, items)


    def _deliveries(self) -> Iterator[Metric]:
        """The network sinks (mqtt, webhook): connection, backlog in the outbox, outcomes."""
        connected = GaugeMetricFamily("vigil_sink_connected", "1 while the sink's server confirms deliveries", labels=["sink"])
        backlog = GaugeMetricFamily("vigil_sink_backlog", "Events waiting in the outbox for the sink", labels=["sink"])
        sent = CounterMetricFamily("vigil_sink_sent", "Events the server confirmed", labels=["sink"])
        failed = CounterMetricFamily("vigil_sink_failed", "Events the server refused for good (not retried)", labels=["sink"])
        retries = CounterMetricFamily("vigil_sink_retries", "Delivery attempts that failed and were retried", labels=["sink"])
        dropped = CounterMetricFamily("vigil_sink_dropped", "Events that fell out of the outbox, by reason (full, expired)",
                                      labels=["sink", "reason"])
        for d in self.metrics.deliveries():
            connected.add_metric([d.sink], 1.0 if d.state == "connected" else 0.0)
            backlog.add_metric([d.sink], d.backlog)
            sent.add_metric([d.sink], d.sent)
            failed.add_metric([d.sink], d.failed)
            retries.add_metric([d.sink], d.retries)
            dropped.add_metric([d.sink, "full"], d.dropped)
            dropped.add_metric([d.sink, "expired"], d.expired)
        yield from (connected, backlog, sent, failed, retries, dropped)


class HealthServer:
    """Serves /healthz, /metrics and (when given `reload`) POST /reload in a daemon thread.

    Args:
        metrics: the pipeline's counters, read at each request.
        host, port: where to listen (port 0: any free port, see `.port`).
        reload: what POST /reload runs; None: no /reload endpoint.
        token: when set, POST /reload needs `Authorization: Bearer TOKEN` (else 401), and so does the
            status page (pipeline/web); /healthz and /metrics stay open.
        allowed_hosts: Host header names answered beside localhost, IP addresses and `host`.
        request_timeout_s: a connection silent this long (mid-request or idle) is closed.
        max_connections: connections served at once; more get 503 at once.
        previews: the cameras' newest frames and recent events: serves the status page at `/`.
    """

    def __init__(self, metrics: Metrics, *, host: str = "127.0.0.1", port: int = 0,
                 reload: Callable[[], dict[str, Any]] | None = None, token: str | None = None,
                 allowed_hosts: Iterable[str] = (), request_timeout_s: float = 5.0, max_connections: int = 32,
                 previews: Previews | None = None) -> None:
        self.metrics = metrics
        self.closing = threading.Event()  # ends the status page's MJPEG streams
        self.flow = FlowCheck(LIVENESS_WINDOW_S)  # GET /livez: 503 while the pipeline is stuck
        # The status page (/, /cameras/ID, ...) when there are previews to show (pipeline/web).
        self.page = StatusPage(metrics, previews, token, self.closing) if previews is not None else None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(metrics))  # type: ignore[arg-type]
        self._reload = reload
        self._token = token
        self.allowed_hosts = frozenset(_host_name(h) for h in (*allowed_hosts, host, "localhost", socket.gethostname()))
        handler = _make_handler(self)
        handler.timeout = request_timeout_s  # StreamRequestHandler sets it on each connection's socket
        try:
            self._server = _BoundedServer((host, port), handler, max_connections)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                          f"(port in use? choose another with metrics.port / --metrics-port)") from exc
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="health-http", daemon=True)
        if not _is_loopback(host):
            log.warning("metrics endpoint on %s:%s is reachable from other machines: /healthz and /metrics have no "
                        "authentication%s", host, self.port,
                        "" if reload is None or token else "; nor has POST /reload (set metrics.token)")

    @property
    def url(self) -> str:
        """http://HOST:PORT of the endpoint (IPv6 hosts in brackets)."""
        return f"http://[{self.host}]:{self.port}" if ":" in str(self.host) else f"http://{self.host}:{self.port}"

    def start(self) -> HealthServer:
        """Starts serving in a daemon thread; returns self."""
        self._thread.start()
        log.info("health on %s/healthz, metrics on %s/metrics", self.url, self.url)
        return self

    def close(self) -> None:
        """Stops serving (bounded waits) and closes the socket."""
        self.closing.set()
        if self._thread.is_alive():
            # shutdown() waits for serve_forever to notice (within its poll_interval) and has no
            # timeout of its own: run it aside and wait a bounded time.
            stopper = threading.Thread(target=self._server.shutdown, name="health-http-stop", daemon=True)
            stopper.start()
            stopper.join(timeout=2.0)
            self._thread.join(timeout=2.0)
        self._server.server_close()

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request with this Host header is answered: no header (not a browser), an IP
        address, or a name in `allowed_hosts` (which holds localhost and the bound host)."""
        if header is None:
            return True
        name = _host_name(header)
        return name in self.allowed_hosts or _is_ip(name)

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header may reload: always without a token."""
        if self._token is None:
            return True
        return header is not None and hmac.compare_digest(header.encode(), f"Bearer {self._token}".encode())


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once: one more is answered 503 and
    closed by the accepting thread itself, which never waits on it (the client may be the attacker)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        body = b'{"error": "too many connections; try again"}'
        try:
            request.setblocking(False)  # never wait on this client: whatever fits now, else nothing
            request.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            request.recv(65536)  # what the client sent already: closing on unread data would reset the connection
        except OSError:
            pass
        self.shutdown_request(request)


def _host_name(header: str) -> str:
    """The name in a Host header, without the port or the brackets of an IPv6 address, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return (header.rpartition(":")[0] if header.count(":") == 1 else header).rstrip(".")


def _is_ip(name: str) -> bool:
    # A browser sends an IP address as Host only when the page itself came from that address, so
    # it cannot be DNS rebinding (which needs the attacker's name); and Prometheus scrapes by IP.
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve beyond this machine


def _make_handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's naming
            path = self.path.split("?", 1)[0]
            if not self._host_ok():
                return
            if path == "/healthz":
                self._send(200, "application/json", json.dumps(camera_health(server.metrics)).encode())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(server.registry))
            elif path == "/livez":
                stuck = server.flow.look(server.metrics, time.monotonic())
                self._send(503 if stuck else 200, "application/json", json.dumps(
                    {"status": "stuck: frames captured, none out" if stuck else "ok"}).encode())
            elif server.page is not None and server.page.handle(self, self._send):
                pass
            else:
                self._send(404, "application/json", json.dumps({"error": f"no such endpoint {path!r}; try /healthz or /metrics"}).encode())

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            if not self._host_ok():
                return
            if path != "/reload" or server._reload is None:  # noqa: SLF001 - the handler is part of the server
                self._send(404, "application/json", json.dumps({"error": f"no such endpoint POST {path!r}"}).encode())
                return
            if not server.authorized(self.headers.get("Authorization")):
                self._send(401, "application/json", json.dumps({"error": "POST /reload needs Authorization: Bearer TOKEN "
                                                                         "(metrics.token)"}).encode(),
                           {"WWW-Authenticate": 'Bearer realm="vigil"'})
                return
            result = server._reload()  # noqa: SLF001 - the handler is part of the server
            # 400: the new config is invalid (nothing changed); 500: some camera could not be changed
            # (named in `failed`, retried by the next reload) while the others were.
            status = 200 if result.get("ok") else 400 if "errors" in result else 500
            self._send(status, "application/json", json.dumps(result).encode())

        def _host_ok(self) -> bool:
            if server.host_allowed(self.headers.get("Host")):
                return True
            # The name is not echoed back: it is the attacker's, and the page may read this answer.
            self._send(403, "application/json", json.dumps({"error": "Host header not allowed: add the name this endpoint "
                                                                     "is reached by to metrics.allowed_hosts"}).encode())
            return False

        def _send(self, code: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            try:
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (a browser leaving the page drops its image requests)

        def log_message(self, format: str, *args: Any) -> None:  # signature of the base class
            log.debug("http %s", format % args)

    return Handler
