"""Test helpers for MQTT: a real Mosquitto broker in a subprocess (its own config file, a free port
on 127.0.0.1, persistence on disk so a SIGKILLed broker comes back with its sessions), and a
subscriber that collects messages with a persistent session at QoS 1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port
from tests.tools import process

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next((p for p in MOSQUITTO_PATHS if os.path.exists(p)), None)


def need_mosquitto() -> str:
    """The broker's executable; skips (fails in CI: VIGIL_REQUIRE_MQTT_BROKER=1) when it is missing."""
    path = mosquitto_path()
    if path is None:
        reason = "no mosquitto broker: apt-get install mosquitto"
        if os.environ.get("VIGIL_REQUIRE_MQTT_BROKER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class Mosquitto:
    """A Mosquitto broker on 127.0.0.1; `kill()` (SIGKILL) and `start()` again on the same port.

    Args:
        workdir: where its config, persistence file and log go.
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.exe = need_mosquitto()
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        # autosave_on_changes + interval 1: the persistence file is rewritten after every change, so
        # a SIGKILLed broker restarts with the subscribers' sessions and their queued messages.
        self.conf.write_text(f"""
listener {self.port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {workdir}/
autosave_interval 1
autosave_on_changes true
log_dest file {workdir}/mosquitto.log
max_queued_messages 100000
""")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start ({self.proc.returncode}): {err[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: the broker vanishes as a crashed or unplugged one does."""
        process.kill(self.proc)
        self.proc = None

    def stop(self) -> None:
        process.stop(self.proc)
        self.proc = None


class Subscriber:
    """A paho client that collects every message on `topic` (QoS 1, persistent session, automatic
    reconnects and re-subscription).

    Args:
        port: the broker's port.
        topic: the subscription (wildcards allowed).
        client_id: its session's name on the broker.
    """

    def __init__(self, port: int, topic: str = "vigil/#", client_id: str = "test-subscriber") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retained)
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.topic = topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *_a: self.connected.clear()
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError(f"subscriber could not connect to 127.0.0.1:{port}")

    def _on_connect(self, client: Any, _u: Any, _flags: Any, reason_code: Any, _p: Any) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)
            self.connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def events(self) -> list[dict[str, Any]]:
        """The event messages (topics PREFIX/CAMERA/events/RULE) as dicts, in arrival order."""
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t.split("/")[-2:-1] == ["events"]]

    def last(self, topic: str) -> str | None:
        """The payload last received on `topic`."""
        with self._lock:
            found = [p for t, p, _ in self.messages if t == topic]
        return found[-1].decode() if found else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
