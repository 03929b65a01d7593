"""Whether the pipeline is stuck: its cameras capture frames but none comes out.

Owns that one decision, for systemd's watchdog (pipeline/systemd.py) and Kubernetes' liveness
probe (GET /livez, pipeline/health.py). Cameras that capture nothing (down, or a network outage)
are not a stuck pipeline: a restart would not bring them back.
"""

from __future__ import annotations

import threading

from pipeline.metrics import Metrics


class FlowCheck:
    """Compares the frames captured and put out between two looks at least `window_s` apart.

    Args:
        window_s: the shortest time between two looks; a stuck verdict needs a whole window.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()  # the HTTP server asks from several threads
        self._at: float | None = None
        self._in = 0
        self._out = 0
        self.stuck = False

    def look(self, metrics: Metrics, now_mono: float) -> bool:
        """Updates the verdict when a window has passed since the last look; returns it."""
        with self._lock:
            if self._at is not None and now_mono - self._at < self.window_s:
                return self.stuck
            frames_in = sum(c.frames_in for c in metrics.cameras())
            frames_out = metrics.frames_out_total()
            if self._at is not None:
                self.stuck = frames_in > self._in and frames_out == self._out
            self._at, self._in, self._out = now_mono, frames_in, frames_out
            return self.stuck
