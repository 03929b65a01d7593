"""The status page: `/`, a tile per camera; `/cameras/ID`, one camera with a live MJPEG stream and
the zone helper; their JSON and pictures. Served by the health server (pipeline/health.py) on the
metrics port; plain HTML, CSS and JavaScript from this package (nothing is fetched at run time).

Routes (GET):
- `/`, `/cameras/ID`: the pages; `/static/NAME`: their CSS and JavaScript.
- `/api/status`: every camera's state and rates, and the recent events (newest first).
- `/api/cameras/ID/tracks`: the camera's current detections and frame size (zone helper).
- `/cameras/ID/latest.jpg`: the newest annotated frame, at the camera's frame size.
- `/cameras/ID/stream.mjpeg`: the same as a multipart stream, at most STREAM_FPS per viewer.
- `/evidence?path=P`: a snapshot or clip, only when a recent event named it.

With `metrics.token` set, every route here needs it (`Authorization: Bearer TOKEN`, the cookie set
by opening `/?token=TOKEN`, or `?token=`); /healthz and /metrics stay open for probes and scrapers.
"""

from __future__ import annotations

import hmac
import json
import mimetypes
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any

from pipeline.metrics import Metrics
from pipeline.preview import Previews

STREAM_FPS = 5.0  # per MJPEG viewer: enough to watch, cheap for the box
STATIC = {"style.css": "text/css", "index.js": "text/javascript", "camera.js": "text/javascript"}
PAGES = {"/": "index.html"}
COOKIE = "vigil_token"
_SECURITY_HEADERS = {
    # Our own files only, nothing inline: names from the config can never run as script.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _static(name: str) -> bytes:
    return resources.files("pipeline.web").joinpath("static", name).read_bytes()


class StatusPage:
    """Answers the status page's routes for the health server's request handler.

    Args:
        metrics: the run's counters (camera states and rates).
        previews: the cameras' newest frames and the recent events.
        token: when set, required on every route here.
        closing: set when the server stops (ends the MJPEG streams).
    """

    def __init__(self, metrics: Metrics, previews: Previews, token: str | None, closing: threading.Event) -> None:
        self.metrics = metrics
        self.previews = previews
        self.token = token
        self.closing = closing

    def handle(self, req: BaseHTTPRequestHandler, send: Any) -> bool:
        """Answers a GET if it is one of the page's routes (True), else leaves it (False).
        `send(code, content_type, body, headers)` writes a whole response."""
        url = urllib.parse.urlsplit(req.path)
        path, query = url.path, urllib.parse.parse_qs(url.query)
        parts = [urllib.parse.unquote(p) for p in path.split("/")[1:]]
        if not (path in PAGES or path.startswith(("/static/", "/api/", "/cameras/", "/evidence"))):
            return False
        if not self._authorized(req, query):
            send(401, "text/plain; charset=utf-8", b"this page needs the token: open /?token=TOKEN (metrics.token)\n",
                 {"WWW-Authenticate": 'Bearer realm="vigil"', **_SECURITY_HEADERS})
            return True
        headers = dict(_SECURITY_HEADERS)
        if "token" in query and self.token is not None:
            # The browser keeps it for the images and the API; HttpOnly: no script can read it.
            headers["Set-Cookie"] = f"{COOKIE}={urllib.parse.quote(self.token, safe='')}; Path=/; HttpOnly; SameSite=Strict"
        if path in PAGES:
            send(200, "text/html; charset=utf-8", _static(PAGES[path]), headers)
        elif len(parts) == 2 and parts[0] == "static" and parts[1] in STATIC:
            send(200, STATIC[parts[1]], _static(parts[1]), headers)
        elif parts == ["api", "status"]:
            send(200, "application/json", json.dumps(self.status()).encode(), headers)
        elif len(parts) == 4 and parts[:2] == ["api", "cameras"] and parts[3] == "tracks" and self._known(parts[2]):
            tracks = self.previews.tracks(parts[2])
            send(200 if tracks else 503, "application/json", json.dumps(tracks or {"error": "no frame yet"}).encode(), headers)
        elif len(parts) == 2 and parts[0] == "cameras" and self._known(parts[1]):
            send(200, "text/html; charset=utf-8", _static("camera.html"), headers)
        elif len(parts) == 3 and parts[0] == "cameras" and parts[2] == "latest.jpg" and self._known(parts[1]):
            jpeg = self.previews.jpeg(parts[1])
            if jpeg is None:
                send(503, "text/plain; charset=utf-8", b"no frame yet\n", {**headers, "Retry-After": "1"})
            else:
                send(200, "image/jpeg", jpeg.data, headers)
        elif len(parts) == 3 and parts[0] == "cameras" and parts[2] == "stream.mjpeg" and self._known(parts[1]):
            self._stream(req, parts[1], headers)
        elif parts == ["evidence"]:
            file = self.previews.evidence_file(query.get("path", [""])[0])
            if file is None:
                send(404, "text/plain; charset=utf-8", b"no such evidence file among the recent events\n", headers)
            else:
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                send(200, kind, file.read_bytes(), headers)
        else:
            send(404, "text/plain; charset=utf-8", b"no such camera or page\n", headers)
        return True

    def _known(self, camera_id: str) -> bool:
        """Only the ids of this run's cameras name anything (no path is built from an id)."""
        return any(c.camera_id == camera_id for c in self.metrics.cameras())

    def _authorized(self, req: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> bool:
        if self.token is None:
            return True
        offered = [req.headers.get("Authorization", "").removeprefix("Bearer ").strip(), *query.get("token", [])]
        for cookie in req.headers.get("Cookie", "").split(";"):
            name, _, value = cookie.strip().partition("=")
            if name == COOKIE:
                offered.append(urllib.parse.unquote(value))
        return any(o and hmac.compare_digest(o.encode(), self.token.encode()) for o in offered)

    def status(self) -> dict[str, Any]:
        """Every camera's state and rates, and the recent events (newest first)."""
        now = time.monotonic()
        cameras = []
        for cam in sorted(self.metrics.cameras(), key=lambda c: c.camera_id):
            latest = self.previews.latest(cam.camera_id)
            p99 = cam.output_ages.percentiles(99)[0] if cam.output_ages.count else None
            cameras.append({
                "id": cam.camera_id, "state": cam.state.value, "state_reason": cam.state_reason,
                "fps_in": round(cam.in_rate.rate(now), 2), "fps_out": round(cam.out_rate.rate(now), 2),
                "detections_per_s": round(cam.detect_rate.rate(now), 2),
                "frame_age_ms": round((now - cam.last_in_mono) * 1000.0) if cam.last_in_mono is not None else None,
                "age_p99_ms": round(p99) if p99 is not None else None,
                "drops": int(sum(cam.drops.values())), "reconnects": cam.reconnects,
                "seq": latest.frame.seq if latest is not None else None,
                "alerts": list(latest.alerts) if latest is not None else [],
                "zone_counts": dict(cam.zone_counts),
            })
        events = [dict(e) for e in reversed(self.previews.events)]
        for e in events:
            for key in ("snapshot", "clip"):
                e[f"{key}_url"] = f"/evidence?path={urllib.parse.quote(e[key])}" if e.get(key) else None
        return {"cameras": cameras, "events": events}

    def _stream(self, req: BaseHTTPRequestHandler, camera_id: str, headers: dict[str, str]) -> None:
        """multipart/x-mixed-replace: each new frame as a JPEG part, at most STREAM_FPS, until the
        viewer goes away or the server stops. A slow viewer only holds up its own thread: its
        socket's timeout (the server's request timeout) ends it."""
        req.send_response(200)
        req.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        for name, value in headers.items():
            req.send_header(name, value)
        req.end_headers()
        last_seq = None
        period = 1.0 / STREAM_FPS
        try:
            while not self.closing.is_set() and self._known(camera_id):
                started = time.monotonic()
                jpeg = self.previews.jpeg(camera_id)
                if jpeg is not None and jpeg.seq != last_seq:
                    last_seq = jpeg.seq
                    req.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                    + str(len(jpeg.data)).encode() + b"\r\n\r\n" + jpeg.data + b"\r\n")
                    req.wfile.flush()
                self.closing.wait(max(0.0, period - (time.monotonic() - started)))
        except OSError:
            pass  # the viewer went away (or was too slow): only this stream ends
