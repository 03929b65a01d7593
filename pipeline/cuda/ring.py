"""A ring of slots whose tensors live in pinned host memory, each with matching device buffers
and events, for the TensorRT backend.

A slot is the same `slots.Slot` the CPU path uses (numpy arrays keyed by tensor name, here
views of pinned memory), so preprocess and postprocess do not change. Each slot also carries a
`DeviceSlot` in `slot.bindings["cuda"]`: a device buffer per tensor and two events, `h2d_done` and
`d2h_done`. `acquire` hands a slot out only after its last copies have completed, so preprocess
never overwrites memory a copy is still reading; `ready` waits for a slot's copy back to the host,
so postprocess never reads outputs still on their way. Buffers are sized for the model's batch, on
the ring's GPU, and freed by `close()`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from pipeline.cuda.memory import DeviceBuffer, Event, PinnedBuffer
from pipeline.cuda.runtime import use_device
from pipeline.slots import Slot, SlotRing

# How long acquire waits for a slot's copies (a healthy GPU needs microseconds to milliseconds).
COPY_WAIT_S = 10.0


@dataclass(eq=False)
class DeviceSlot:
    """The CUDA side of one slot, in `slot.bindings["cuda"]`: device buffers matching the slot's
    pinned tensors, the events of its last copies, and optional staging for GPU preprocessing."""

    host: dict[str, PinnedBuffer]  # tensor name -> pinned memory (the slot's arrays view it)
    device: dict[str, DeviceBuffer]  # tensor name -> device memory of the same size
    h2d_done: Event = field(default_factory=Event)
    d2h_done: Event = field(default_factory=Event)
    # GPU preprocessing: decoded BGR frames staged per row in pinned memory, letterboxed on the
    # device by the kernel. raw_rows[row] is the frame's (h, w), None for a row letterboxed on
    # the CPU (a frame larger than the staging capacity); raw_geom[row] = (pad_x, pad_y, new_w, new_h).
    raw_host: PinnedBuffer | None = None
    raw_device: DeviceBuffer | None = None
    raw_row_bytes: int = 0
    raw_rows: list[tuple[int, int] | None] = field(default_factory=list)
    raw_geom: list[tuple[int, int, int, int] | None] = field(default_factory=list)

    def stage_raw(self, row: int, image: np.ndarray, geometry: tuple[int, int, int, int]) -> bool:
        """Copies a BGR frame into row `row` of the pinned staging buffer for the kernel. False
        (nothing staged) when there is no staging or the frame is larger than its capacity."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be HxWx3 uint8 BGR, got shape {image.shape} dtype {image.dtype}")
        h, w = image.shape[:2]
        if self.raw_host is None or h * w * 3 > self.raw_row_bytes:
            self.raw_rows[row] = None
            return False
        dst = self.raw_host.array[row, : h * w * 3].reshape(h, w, 3)
        np.copyto(dst, image)
        self.raw_rows[row] = (h, w)
        self.raw_geom[row] = geometry
        return True

    def close(self) -> None:
        for b in (*self.host.values(), *self.device.values(), self.raw_host, self.raw_device):
            if b is not None:
                b.close()
        self.h2d_done.close()
        self.d2h_done.close()


class PinnedSlotRing(SlotRing):
    """A SlotRing whose slots' arrays are pinned memory with device buffers beside them; `acquire`
    returns a slot only once its last copies are done. Build it with `allocate_pinned`.

    Args:
        slots: slots with a DeviceSlot each in `bindings["cuda"]`.
        device: the GPU whose buffers they are; made current in the thread that acquires.
    """

    @classmethod
    def allocate_pinned(cls, count: int, batch: int, input_specs: dict[str, tuple[tuple[int, ...], np.dtype]],
                        output_specs: dict[str, tuple[tuple[int, ...], np.dtype]], *,
                        raw_capacity: tuple[int, int] | None = None, device: int = 0) -> PinnedSlotRing:
        """Allocates `count` slots of `batch` rows on GPU `device` (made current here first, and in
        every thread that acquires, waits for or frees them).

        Args:
            count: slots in the ring.
            batch: rows per tensor (the engine's batch).
            input_specs / output_specs: tensor name -> (shape of one row, dtype).
            raw_capacity: (max frame height, width) of the staging for GPU preprocessing; None: none.
            device: the CUDA device index.

        Returns:
            The ring. On any failed allocation, everything allocated before it is freed and the
            CudaError is raised.
        """
        use_device(device)
        slots: list[Slot] = []
        building: DeviceSlot | None = None  # the slot being allocated: freed here if it fails half-way
        try:
            for i in range(count):
                building = DeviceSlot({}, {})
                for name, (shape, dtype) in {**input_specs, **output_specs}.items():
                    building.host[name] = PinnedBuffer((batch, *shape), dtype)
                    building.device[name] = DeviceBuffer(building.host[name].nbytes)
                if raw_capacity is not None:
                    row_bytes = raw_capacity[0] * raw_capacity[1] * 3
                    building.raw_host = PinnedBuffer((batch, row_bytes), np.uint8)
                    building.raw_device = DeviceBuffer(batch * row_bytes)
                    building.raw_row_bytes = row_bytes
                    building.raw_rows = [None] * batch
                    building.raw_geom = [None] * batch
                slot = Slot(index=i, inputs={n: building.host[n].array for n in input_specs},
                            outputs={n: building.host[n].array for n in output_specs}, row_rects=[None] * batch)
                slot.bindings["cuda"] = building
                slots.append(slot)
                building = None  # owned by the slot from here
        except BaseException:
            if building is not None:
                building.close()
            for s in slots:
                s.bindings["cuda"].close()  # type: ignore[union-attr]
            raise
        return cls(slots, device)

    def __init__(self, slots: list[Slot], device: int = 0) -> None:
        super().__init__(slots)
        self.device = device

    def acquire(self, stop: threading.Event) -> Slot:
        """A free slot whose last copies have completed, with the ring's GPU current in this thread."""
        slot = super().acquire(stop)
        dev: DeviceSlot = slot.bindings["cuda"]  # type: ignore[assignment]
        try:
            use_device(self.device)  # the caller's thread, the ring's GPU
            dev.h2d_done.wait(COPY_WAIT_S)
            dev.d2h_done.wait(COPY_WAIT_S)
        except BaseException:
            self.release(slot)
            raise
        return slot

    def ready(self, slot: Slot, timeout_s: float = COPY_WAIT_S) -> None:
        """Waits until `slot`'s outputs are in host memory: the backend's infer() only enqueues the
        copy back (so the next batch's upload overlaps this one's compute); whoever reads the
        outputs (postprocess) calls this first. Raises TimeoutError after `timeout_s`."""
        dev: DeviceSlot = slot.bindings["cuda"]  # type: ignore[assignment]
        use_device(self.device)  # the event's GPU, in the reading thread
        dev.d2h_done.wait(timeout_s)

    def close(self) -> None:
        """Frees every pinned and device buffer (call once the graph has stopped)."""
        use_device(self.device)
        for slot in self.slots:
            dev = slot.bindings.pop("cuda", None)
            if dev is not None:
                dev.close()  # type: ignore[union-attr]
            slot.inputs.clear()
            slot.outputs.clear()
