"""Bounded queues with an explicit policy per edge, and a fan-in reader over several of them.

`block`: the producer waits (in short, stop-checked steps) until there is room; nothing is lost.
Used for files, where every frame must come out.
`drop_oldest`: the producer never waits; when full, the oldest data item is dropped and counted,
so the queue holds the newest frames and latency cannot grow. Used for live cameras.

Control items (EndOfStream) are never dropped: a dropped sentinel would leave the consumer waiting
for a camera that already ended.
"""

from __future__ import annotations

import collections
import enum
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from pipeline.frames import EndOfStream
from pipeline.waiting import POLL_S, Stopped

T = TypeVar("T")


class QueuePolicy(str, enum.Enum):
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


class BoundedQueue(Generic[T]):
    """A FIFO of at most `maxsize` items whose `put` follows `policy` (see the module docstring).

    Args:
        name: for error messages.
        maxsize: the most items held (at least 1); only sentinels can push it one over.
        policy: block, or drop_oldest.
        condition: a condition shared with the other queues of one consumer (a FanIn); a new one when None.
        on_drop: called with each item drop_oldest dropped, outside the lock.
    """

    def __init__(
        self,
        name: str,
        maxsize: int,
        policy: QueuePolicy,
        *,
        condition: threading.Condition | None = None,
        on_drop: Callable[[T], None] | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"queue {name!r}: maxsize must be >= 1, got {maxsize}")
        self.name = name
        self.maxsize = maxsize
        self.policy = QueuePolicy(policy)
        # Queues read by one consumer share its condition so the consumer can wait on all at once.
        self._cond = condition if condition is not None else threading.Condition()
        self._items: collections.deque[T] = collections.deque()
        self._on_drop = on_drop
        self.dropped = 0
        self.max_depth = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def condition(self) -> threading.Condition:
        return self._cond

    def put(self, item: T, stop: threading.Event) -> None:
        """Adds `item` following the queue's policy. Raises Stopped if `stop` is set while blocked."""
        dropped: T | None = None
        with self._cond:
            if self.policy is QueuePolicy.DROP_OLDEST:
                if len(self._items) >= self.maxsize:
                    dropped = self._drop_oldest_data_item()
            else:
                while len(self._items) >= self.maxsize:
                    if stop.is_set():
                        raise Stopped(f"stopped while waiting to put into queue {self.name!r}")
                    self._cond.wait(POLL_S)
            self._items.append(item)
            self.max_depth = max(self.max_depth, len(self._items))
            self._cond.notify_all()
        if dropped is not None and self._on_drop is not None:
            self._on_drop(dropped)

    def _drop_oldest_data_item(self) -> T | None:
        for index, queued in enumerate(self._items):
            if not isinstance(queued, EndOfStream):
                del self._items[index]
                self.dropped += 1
                return queued
        return None  # only sentinels queued: grow by one rather than lose one

    def get(self, timeout: float) -> T:
        """Removes and returns the oldest item; raises queue.Empty after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._items:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise queue.Empty
                self._cond.wait(remaining)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def wait_for_room(self, timeout: float) -> bool:
        """Waits up to `timeout` s until the queue has room; True if it has."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._items) >= self.maxsize:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def get_nowait(self) -> T:
        with self._cond:
            if not self._items:
                raise queue.Empty
            item = self._items.popleft()
            self._cond.notify_all()
            return item


class FanIn(Generic[T]):
    """Reads from several queues that share one condition, round-robin, so that no input starves
    another and the reader never waits on an input that has nothing."""

    def __init__(self, queues: Sequence[BoundedQueue[T]], condition: threading.Condition | None = None) -> None:
        if not queues and condition is None:
            raise ValueError("FanIn needs at least one queue, or the condition its queues will share")
        cond = condition if condition is not None else queues[0].condition
        for q in queues:
            if q.condition is not cond:
                raise ValueError(f"queue {q.name!r} does not share the fan-in's condition")
        self._queues = list(queues)
        self._cond = cond
        self._next = 0

    @property
    def queues(self) -> list[BoundedQueue[T]]:
        return self._queues

    @property
    def condition(self) -> threading.Condition:
        return self._cond

    def add(self, q: BoundedQueue[T]) -> None:
        """Adds an input while the reader runs (a camera added at run time)."""
        if q.condition is not self._cond:
            raise ValueError(f"queue {q.name!r} does not share the fan-in's condition")
        with self._cond:
            self._queues = [*self._queues, q]
            self._cond.notify_all()

    def get(self, timeout: float) -> T:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                count = len(self._queues)
                for step in range(count):  # no queues yet (cameras come at run time): just wait
                    q = self._queues[(self._next + step) % count]
                    if q._items:  # noqa: SLF001 - same condition held; avoids re-locking
                        self._next = (self._next + step + 1) % count
                        item = q._items.popleft()  # noqa: SLF001 - same condition held; avoids re-locking
                        if isinstance(item, EndOfStream):
                            # A camera's sentinel is its last item: stop polling its queue (a
                            # camera removed at run time leaves nothing behind).
                            self._queues = [other for other in self._queues if other is not q]
                            self._next = self._next % len(self._queues) if self._queues else 0
                        self._cond.notify_all()
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise queue.Empty
                self._cond.wait(remaining)
