"""systemd's notify protocol: READY=1 once the graph runs, WATCHDOG=1 only while frames flow,
STOPPING=1 when it drains (`Type=notify` with `WatchdogSec=` in deploy/systemd/vigil.service).

Owns the socket and when to ping. The pipeline counts as stuck when its cameras capture frames but
none comes out (pipeline/liveness.py): then the pings stop and systemd restarts the service after
`WatchdogSec`. Cameras that capture nothing (a camera down, a network outage) are not a stuck
pipeline (a restart would not bring them back; their own reconnects and `camera_down` events deal
with them), so the pings go on.

Does nothing when `NOTIFY_SOCKET` is not set (not started by systemd).
"""

from __future__ import annotations

import logging
import os
import socket
import time

from pipeline.liveness import FlowCheck
from pipeline.metrics import Metrics

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify messages to `NOTIFY_SOCKET`.

    Args:
        address: the socket's path (`@name`: Linux's abstract namespace); None: does nothing.
        watchdog_s: systemd's watchdog timeout (`WATCHDOG_USEC`); pings go at half of it. None: no
            watchdog.
    """

    def __init__(self, address: str | None, watchdog_s: float | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_s
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.settimeout(1.0)  # a datagram to a local socket: never blocks long
        self._ready = False
        self._next_ping = 0.0
        # Looked at once per ping: a stuck verdict covers the half watchdog period before it.
        self._flow = FlowCheck(watchdog_s / 2 if watchdog_s else 1.0)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SystemdNotifier:
        """From systemd's variables: NOTIFY_SOCKET, WATCHDOG_USEC (and WATCHDOG_PID: ours?)."""
        env = os.environ if env is None else env
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        watchdog = int(usec) / 1e6 if usec and usec.isdigit() and (not pid or pid == str(os.getpid())) else None
        return cls(env.get("NOTIFY_SOCKET"), watchdog)

    @property
    def active(self) -> bool:
        return self._sock is not None

    def send(self, message: str) -> None:
        """One notification (e.g. `READY=1`); errors are logged once and otherwise ignored."""
        if self._sock is None or self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._sock.sendto(message.encode(), target)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s; notifications are off", self.address, exc)
            self.close()

    def tick(self, metrics: Metrics, now_mono: float | None = None) -> None:
        """Called often while the graph runs: READY=1 once, then WATCHDOG=1 every watchdog_s / 2
        while frames flow (see the module's docstring)."""
        if self._sock is None:
            return
        now = time.monotonic() if now_mono is None else now_mono
        if not self._ready:
            self._ready = True
            self.send("READY=1\nSTATUS=running")
        if self.watchdog_s is None or now < self._next_ping:
            return
        self._next_ping = now + self.watchdog_s / 2
        if self._flow.look(metrics, now):
            log.error("frames are captured but none has come out for %.1f s: not pinging systemd's watchdog",
                      self.watchdog_s / 2)
            self.send("STATUS=stuck: frames captured, none out")
            return
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
