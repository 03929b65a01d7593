"""Slot and SlotRing: the pre-allocated model input/output tensors that batches travel in.

Owns the ring's hand-out/return protocol only. It must not import OpenCV, CUDA or any backend:
the ONNX Runtime backend, the CUDA pinned ring and the preprocess stage all build on it, and a
CPU-only install must be able to import it without either.

Double buffering: preprocess fills slot k while inference runs slot k-1 and postprocess decodes
slot k-2. A slot holds its batch's input tensor *and* the backend's output tensors, so it goes back
to the ring only when postprocess has read the outputs; nothing is allocated per frame.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

import numpy as np

from pipeline.waiting import POLL_S, Stopped

Rect = tuple[int, int, int, int]  # x, y, w, h of the image inside the model input


@dataclass(eq=False, slots=True)
class Slot:
    """One batch worth of model input and output tensors, keyed by tensor name.

    Args:
        index: position in its ring (for messages and double-release checks).
        inputs: tensor name -> (batch, *shape) array the preprocess stage writes.
        outputs: tensor name -> (batch, *shape) array the backend writes.
        row_rects: where each input row's image sat last time (its padding is already written).
        bindings: objects a backend binds to this slot's buffers (e.g. ONNX Runtime IOBindings,
            CUDA device buffers), so that they live and die with the buffers they point into.
    """

    index: int
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    row_rects: list[Rect | None] = field(default_factory=list)
    bindings: dict[object, object] = field(default_factory=dict)


class SlotRing:
    """A fixed set of slots handed out and returned; `acquire` waits (stop-checked) for a free one.

    Args:
        slots: at least two slots (double buffering).

    Example:
        >>> ring = SlotRing.allocate(2, 1, {"images": ((3, 4, 4), np.float32)}, {"out": ((5,), np.float32)})
        >>> slot = ring.acquire(threading.Event()); ring.release(slot)
    """

    def __init__(self, slots: list[Slot]) -> None:
        if len(slots) < 2:
            raise ValueError(f"a slot ring needs at least 2 slots for double buffering, got {len(slots)}")
        self.slots = slots
        self._free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        self._in_use: set[int] = set()
        self._lock = threading.Lock()
        for slot in slots:
            self._free.put(slot)

    @classmethod
    def allocate(cls, count: int, batch: int, input_specs: dict[str, tuple[tuple[int, ...], np.dtype]],
                 output_specs: dict[str, tuple[tuple[int, ...], np.dtype]]) -> SlotRing:
        """A ring of `count` zeroed slots of `batch` rows.

        Args:
            count: slots in the ring (2 = double buffering).
            batch: rows per tensor.
            input_specs / output_specs: tensor name -> (shape of one row, dtype).

        Returns:
            The ring, every slot free.
        """
        slots = [
            Slot(
                index=i,
                inputs={name: np.zeros((batch, *shape), dtype) for name, (shape, dtype) in input_specs.items()},
                outputs={name: np.zeros((batch, *shape), dtype) for name, (shape, dtype) in output_specs.items()},
                row_rects=[None] * batch,
            )
            for i in range(count)
        ]
        return cls(slots)

    def acquire(self, stop: threading.Event) -> Slot:
        """A free slot, waiting for one in POLL_S steps. Raises Stopped once `stop` is set."""
        while True:
            try:
                slot = self._free.get(timeout=POLL_S)
            except queue.Empty:
                if stop.is_set():
                    raise Stopped("stopped while waiting for a free input slot") from None
                continue
            with self._lock:
                self._in_use.add(slot.index)
            return slot

    def release(self, slot: Slot) -> None:
        """Returns `slot` to the ring. Raises RuntimeError on a double release."""
        with self._lock:
            if slot.index not in self._in_use:
                raise RuntimeError(f"slot {slot.index} released twice (or never acquired)")
            self._in_use.discard(slot.index)
        self._free.put(slot)

    def ready(self, slot: Slot, timeout_s: float = 10.0) -> None:
        """Waits until the backend's writes to `slot`'s outputs are visible to the host. CPU
        backends write synchronously: nothing to wait for (a GPU ring waits for its copy back).

        Args:
            slot: a slot handed to the backend's `infer`.
            timeout_s: how long to wait at most (a GPU ring raises past it).
        """

    def in_use(self) -> int:
        """How many slots are handed out now."""
        with self._lock:
            return len(self._in_use)
