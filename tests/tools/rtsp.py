"""Test helpers for live sources: a real GStreamer RTSP server in a subprocess, and a TCP proxy
that can freeze its connections (connection open, no data) to make a stalled stream for real."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.tools import process

SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"
_PACKAGES = ("gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base "
             "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav")


def rtsp_server_missing() -> str | None:
    """Why the GStreamer RTSP server cannot run here, or None if it can."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"no {SYSTEM_PYTHON} (the Debian python3 that python3-gi belongs to)"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); gi.require_version('Gst', '1.0');"
         "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
         "assert Gst.ElementFactory.find('x264enc'), 'x264enc'; assert Gst.ElementFactory.find('rtph264pay'), 'rtph264pay'"],
        capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"GStreamer RTSP server not usable ({last}); apt-get install {_PACKAGES}"
    return None


class RtspServer:
    """tests/tools/rtsp_server.py as a subprocess; `kill()` and `start()` again on the same port."""

    def __init__(self, video: Path, *, port: int | None = None, path: str = "/cam", fps: float = 25.0,
                 user: str | None = None, password: str | None = None, freeze_after_s: float | None = None,
                 width: int = 640, height: int = 360) -> None:
        self.video, self.port, self.path, self.fps = video, port or free_port(), path, fps
        self.user, self.password, self.freeze_after_s = user, password, freeze_after_s
        self.width, self.height = width, height
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    def start(self, timeout: float = 20.0) -> RtspServer:
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--path", self.path, "--video",
               str(self.video), "--fps", str(self.fps), "--width", str(self.width), "--height", str(self.height)]
        if self.user:
            cmd += ["--user", self.user, "--password", self.password or ""]
        if self.freeze_after_s is not None:
            cmd += ["--freeze-after", str(self.freeze_after_s)]
        deadline = time.monotonic() + timeout
        while True:  # the port of a killed server can take a moment to be free again
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.1, deadline - time.monotonic()))
            line = self.proc.stdout.readline() if ready else ""
            if line.startswith("READY"):
                return self
            err = self._stop_and_read_stderr()
            if time.monotonic() > deadline or "cannot listen" not in err:
                raise RuntimeError(f"RTSP server did not start on port {self.port}: {line!r} {err[-800:]}")
            time.sleep(0.2)

    def _stop_and_read_stderr(self) -> str:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            _, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            err = ""
        return err or ""

    def kill(self) -> None:
        """SIGKILL: the server vanishes as a crashed or unplugged camera does."""
        process.kill(self.proc)
        self.proc = None

    def stop(self) -> None:
        process.stop(self.proc)
        self.proc = None


class FreezableProxy:
    """Forwards 127.0.0.1:port → target_port. `freeze()` stops forwarding on the connections open
    now while keeping them open (a stalled stream); new connections are forwarded normally."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._frozen: set[int] = set()
        self._pairs: list[tuple[socket.socket, socket.socket, int]] = []
        self._next_id = 0
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> int:
        """Freezes the open connections; returns how many."""
        with self._lock:
            ids = {pid for _, _, pid in self._pairs}
            self._frozen |= ids
            return len(ids)

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                pid = self._next_id
                self._next_id += 1
                self._pairs.append((client, upstream, pid))
            threading.Thread(target=self._pump, args=(client, upstream, pid), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, pid: int) -> None:
        try:
            while not self._closed.is_set():
                if pid in self._frozen:
                    time.sleep(0.05)  # hold both ends open, move nothing
                    continue
                readable, _, _ = select.select([a, b], [], [], 0.1)
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        return
                    (b if src is a else a).sendall(data)
        except OSError:
            return
        finally:
            if pid not in self._frozen or self._closed.is_set():
                a.close()
                b.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for a, b, _ in self._pairs:
                a.close()
                b.close()


def need_rtsp_server() -> None:
    """Skips the test when the RTSP server cannot run here, naming what is missing; fails it
    instead where VIGIL_REQUIRE_RTSP_SERVER=1 (CI, which installs the packages)."""
    reason = rtsp_server_missing()
    if reason:
        if os.environ.get("VIGIL_REQUIRE_RTSP_SERVER") == "1":
            pytest.fail(f"VIGIL_REQUIRE_RTSP_SERVER=1 but {reason}")
        pytest.skip(reason)

