"""How every blocking wait in the graph ends: in steps of POLL_S, re-checking the stop event.

Owns the poll interval and the `Stopped` exception only; it imports nothing from the pipeline, so
any module (queues, slots, stages) can use it without an import cycle.
"""

from __future__ import annotations

# How long one wait lasts before the stop event is checked again.
POLL_S = 0.05


class Stopped(Exception):
    """The graph's stop event was set while waiting (control flow, not an error to report)."""
