"""Stopping the servers the tests start (RTSP, MQTT, ...) as subprocesses."""

from __future__ import annotations

import signal
import subprocess


def kill(proc: subprocess.Popen | None) -> None:
    """SIGKILL: the server vanishes as a crashed or unplugged one does."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)


def stop(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
