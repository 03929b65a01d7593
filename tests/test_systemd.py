"""systemd's notify protocol (pipeline/systemd.py) over a notify socket the test owns: READY=1,
WATCHDOG=1 only while frames flow, STOPPING=1; and the unit file in deploy/systemd."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from pipeline.metrics import Metrics
from pipeline.systemd import SystemdNotifier

from conftest import start_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield path, sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


class Listener:
    """Reads the notify socket as it fills, as systemd does (a datagram socket holds few messages)."""

    def __init__(self, sock: socket.socket) -> None:
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()

    def _run(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            self.messages.extend(received(sock))

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(5)
        return self.messages


def test_pings_only_while_frames_flow(notify_socket):
    path, sock = notify_socket
    metrics = Metrics()
    cam = metrics.camera("dock")
    notifier = SystemdNotifier(str(path), watchdog_s=2.0)
    t = 1000.0
    notifier.tick(metrics, t)
    assert received(sock) == ["READY=1\nSTATUS=running", "WATCHDOG=1"]
    for step in range(1, 4):  # frames in and out: a ping every watchdog_s / 2
        cam.frames_in += 25
        cam.frames_out += 25
        notifier.tick(metrics, t + step * 1.0)
        notifier.tick(metrics, t + step * 1.0 + 0.3)  # between pings: nothing
        assert received(sock) == ["WATCHDOG=1"], step
    cam.frames_in += 25  # captured, none out: stuck
    notifier.tick(metrics, t + 4.0)
    assert received(sock) == ["STATUS=stuck: frames captured, none out"]
    notifier.tick(metrics, t + 5.0)  # no frame at all (the camera is down): not the pipeline's fault
    assert received(sock) == ["WATCHDOG=1"]
    notifier.stopping()
    assert received(sock) == ["STOPPING=1"]


def test_without_notify_socket_nothing_happens():
    notifier = SystemdNotifier.from_env({})
    assert not notifier.active
    notifier.tick(Metrics())  # no error, nothing sent


def test_the_watchdog_is_for_us_only():
    assert SystemdNotifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000"}).watchdog_s == 4.0
    assert SystemdNotifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_s is None


def test_run_notifies_ready_watchdog_and_stopping(notify_socket, tmp_path, model_path, media):
    path, sock = notify_socket
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
cameras:
  - id: cam
    source: {{type: file, path: {media / 'crowd_overhead.mp4'}, max_frames: 40}}
    model: yolo
models:
  - {{id: yolo, path: {model_path}}}
""")
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    listener = Listener(sock)
    proc = start_cli("run", str(cfg), "--no-progress", env=env)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    messages = listener.stop()
    assert messages[0] == "READY=1\nSTATUS=running" and messages[-1] == "STOPPING=1", messages
    assert "WATCHDOG=1" in messages


def test_the_unit_file_verifies(tmp_path):
    unit = REPO / "deploy" / "systemd" / "vigil.service"
    text = unit.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "NotifyAccess=main"):
        assert line in text, line
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze on this machine (systemd is not installed)")
    # The unit names the paths of an installed box; here they are made to exist (the real binary
    # stands in for /opt/vigil/.venv/bin/vigil) in a copy of the unit, so that verify checks the rest.
    exe = shutil.which("vigil") or str(REPO / ".venv" / "bin" / "vigil")
    copy = tmp_path / "vigil.service"
    copy.write_text(text.replace("/opt/vigil/.venv/bin/vigil", exe))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "vigil.service" not in result.stderr, result.stderr
