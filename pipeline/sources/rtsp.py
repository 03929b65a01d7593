"""RTSP camera source (OpenCV's FFmpeg backend), with bounded open/read times and a diagnosis of
why a camera cannot be opened (refused, no answer, 401, 404) that OpenCV itself does not give.

One RtspSource is one connection; the live capture (sources/live.py) makes a new one for every
(re)connect, so a connection stuck in a native call can be abandoned without blocking the next.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import cv2

from pipeline.config.fields import rtsp_url_problem
from pipeline.redact import mask_url
from pipeline.sources.base import Source, SourceError, SourceFrame, SourceInfo, read_or_grab

if TYPE_CHECKING:
    from pipeline.config import RtspSourceConfig

_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


class _CaptureOptions:
    """OpenCV reads FFmpeg options (the RTSP transport) from one process-wide environment
    variable when a capture opens. Opens that want the same options run concurrently; one that
    wants other options waits until those have finished opening (bounded by their open timeout)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._current: str | None = None
        self._users = 0

    @contextlib.contextmanager
    def using(self, options: str, timeout: float) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._users and self._current != options:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SourceError(f"timed out after {timeout:.0f} s waiting for other cameras to finish opening")
                self._cond.wait(remaining)
            if self._current != options:
                os.environ[_OPTIONS_ENV] = options
                self._current = options
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()


_OPTIONS = _CaptureOptions()


class RtspSource(Source):
    """An RTSP stream through OpenCV/FFmpeg (`type: rtsp`); one object per connection."""

    @classmethod
    def from_config(cls, config: RtspSourceConfig, *, camera_id: str, read_timeout_s: float) -> RtspSource:
        return cls(config.url, transport=config.transport, open_timeout_s=config.open_timeout_s,
                   read_timeout_s=read_timeout_s)

    def __init__(self, url: str, *, transport: str = "tcp", open_timeout_s: float = 5.0,
                 read_timeout_s: float = 3.0) -> None:
        self.url = url
        self.masked_url = mask_url(url)
        self.transport = transport
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self._cap: cv2.VideoCapture | None = None

    @property
    def name(self) -> str:
        return self.masked_url

    def open(self) -> SourceInfo:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000)]
        with _OPTIONS.using(f"rtsp_transport;{self.transport}", self.open_timeout_s * 2):
            cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.masked_url}: {diagnose(self.url, timeout_s=min(self.open_timeout_s, 3.0))}")
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        # FFmpeg reports 90000 or 180000 (the RTP clock) for streams that do not state a rate.
        return SourceInfo(fps=fps if 0 < fps <= 240 else None, total_frames=None)

    def read(self, decode: bool = True) -> SourceFrame:
        if self._cap is None:
            raise SourceError(f"{self.masked_url} read before open()")
        ok, image = read_or_grab(self._cap, decode)
        if not ok or (decode and image is None):
            raise SourceError(f"{self.masked_url}: no frame within {self.read_timeout_s:g} s or connection lost")
        return SourceFrame(image, self.masked_url, self._cap.get(cv2.CAP_PROP_POS_MSEC))

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def diagnose(url: str, *, timeout_s: float = 3.0) -> str:
    """Why an RTSP URL cannot be opened, found by one DESCRIBE over TCP: a cause and what to do.
    Never contains the credentials."""
    parts = urlsplit(url)
    try:
        port = parts.port or (322 if parts.scheme == "rtsps" else 554)
    except ValueError:
        # urlsplit's own message quotes the "port", which is the password when the password holds
        # an unescaped '/' (rtsp://admin:pw/x@host): say what is wrong without it.
        return rtsp_url_problem(url) or "the URL's port is not a number"
    host = parts.hostname
    if not host:
        return "the URL has no host"
    if parts.scheme == "rtsps":
        return "could not connect over TLS (check host, port and certificate)"
    try:
        addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
    except OSError as exc:
        return f"cannot resolve host {host!r}: {exc}"
    try:
        with socket.create_connection(addr[:2], timeout=timeout_s) as sock:
            clean = parts._replace(netloc=f"{host}:{port}").geturl()
            request = f"DESCRIBE {clean} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\nUser-Agent: vigil\r\n"
            if parts.username is not None:
                token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
                request += f"Authorization: Basic {token}\r\n"
            sock.sendall((request + "\r\n").encode())
            status = sock.recv(4096).split(b"\r\n", 1)[0].decode("latin-1", "replace")
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port} (server down or wrong port)"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout_s:g} s (host down, firewall, or wrong address)"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    fields = status.split(" ", 2)
    code = fields[1] if len(fields) > 1 else ""
    if code == "401":
        return ("401 Unauthorized: wrong user name or password" if parts.username is not None
                else "401 Unauthorized: the camera needs a user name and password in the URL")
    if code == "404":
        return f"404 Not Found: no stream at path {parts.path or '/'!r} (check the camera's stream path)"
    if code == "200":
        return "the server answers but FFmpeg could not read the stream (codec not supported, or no frame in time)"
    return f"server answered {status!r}" if status else "the server closed the connection without answering"
