"""The pinned ring's bookkeeping: which device it allocates on, that a failed allocation frees what
was allocated before it, and that postprocess waits for a slot's copies through `ready`.

These run without a GPU: `FakeRuntime` stands in for the few cuda-python runtime calls the ring
makes (allocations, events, cudaSetDevice) and records them. It checks the ring's own logic (call
order, ownership, frees) and nothing about a GPU; the same ring on a real GPU is checked by
test_cuda.py::test_gpu_pinned_ring_roundtrip and benchmarks/gpu_check.py.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import threading
import time

import numpy as np
import pytest

from pipeline.cuda import runtime


class FakeRuntime:
    """cuda-python's runtime module as far as the ring uses it; every call is recorded."""

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2
        cudaErrorNotReady = 600

    cudaEventDefault = 0
    cudaEventDisableTiming = 2
    cudaStreamNonBlocking = 1

    def __init__(self, fail_host_alloc_of: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.live: dict[int, tuple[str, int]] = {}  # handle -> (kind, device)
        self.not_ready: set[int] = set()  # events that report cudaErrorNotReady
        self.device = 0
        self._buffers: dict[int, ctypes.Array] = {}
        self._ids = itertools.count(0x1000)
        self._fail = fail_host_alloc_of

    def _ok(self, *values):
        return (self.cudaError_t.cudaSuccess, *values)

    def cudaSetDevice(self, device):
        self.calls.append(("cudaSetDevice", device))
        self.device = device
        return self._ok()

    def cudaMallocHost(self, nbytes):
        self.calls.append(("cudaMallocHost", nbytes))
        if nbytes == self._fail:
            return (self.cudaError_t.cudaErrorMemoryAllocation, 0)
        buf = (ctypes.c_uint8 * nbytes)()
        ptr = ctypes.addressof(buf)
        self._buffers[ptr] = buf
        self.live[ptr] = ("host", self.device)
        return self._ok(ptr)

    def cudaFreeHost(self, ptr):
        self.calls.append(("cudaFreeHost", ptr))
        del self.live[ptr], self._buffers[ptr]
        return self._ok()

    def cudaMalloc(self, nbytes):
        self.calls.append(("cudaMalloc", nbytes))
        ptr = next(self._ids)
        self.live[ptr] = ("device", self.device)
        return self._ok(ptr)

    def cudaFree(self, ptr):
        self.calls.append(("cudaFree", ptr))
        del self.live[ptr]
        return self._ok()

    def cudaEventCreateWithFlags(self, flags):
        handle = next(self._ids)
        self.live[handle] = ("event", self.device)
        return self._ok(handle)

    def cudaEventDestroy(self, handle):
        del self.live[handle]
        return self._ok()

    def cudaEventRecord(self, handle, stream):
        return self._ok()

    def cudaEventQuery(self, handle):
        self.calls.append(("cudaEventQuery", handle))
        return (self.cudaError_t.cudaErrorNotReady if handle in self.not_ready else self.cudaError_t.cudaSuccess,)

    def cudaGetErrorName(self, err):
        return self._ok(err.name.encode())

    def cudaGetErrorString(self, err):
        return self._ok(b"out of memory" if err == self.cudaError_t.cudaErrorMemoryAllocation else b"")


class _NoLibrary:
    """The driver and NVRTC modules: the ring never calls them; only their error types are looked at."""

    class CUresult(enum.IntEnum):
        CUDA_SUCCESS = 0

    class nvrtcResult(enum.IntEnum):
        NVRTC_SUCCESS = 0


@pytest.fixture
def fake_cuda(monkeypatch):
    """Installs a FakeRuntime as the cuda-python runtime that pipeline.cuda uses; returns a factory."""

    def install(**kwargs) -> FakeRuntime:
        rt = FakeRuntime(**kwargs)
        monkeypatch.setattr(runtime, "cudart", rt)
        monkeypatch.setattr(runtime, "cuda_driver", _NoLibrary)
        monkeypatch.setattr(runtime, "nvrtc", _NoLibrary)
        return rt

    return install


SPECS_IN = {"images": ((3, 8, 8), np.dtype(np.float32))}
SPECS_OUT = {"output0": ((84, 4), np.dtype(np.float32))}


def test_the_ring_allocates_on_its_own_device(fake_cuda):
    from pipeline.cuda.ring import PinnedSlotRing

    rt = fake_cuda()
    ring = PinnedSlotRing.allocate_pinned(2, 2, SPECS_IN, SPECS_OUT, raw_capacity=(4, 4), device=1)
    try:
        assert rt.calls[0] == ("cudaSetDevice", 1)  # before the first allocation
        assert {device for _kind, device in rt.live.values()} == {1}
        assert ring.device == 1
    finally:
        ring.close()
    assert rt.live == {}


def test_a_failed_staging_allocation_frees_everything_allocated_before_it(fake_cuda):
    from pipeline.cuda.ring import PinnedSlotRing
    from pipeline.cuda.runtime import CudaError

    staging = 2 * 4 * 4 * 3  # batch rows x (4 x 4 BGR)
    rt = fake_cuda(fail_host_alloc_of=staging)
    with pytest.raises(CudaError, match=r"^cudaMallocHost failed: cudaErrorMemoryAllocation \(out of memory\)$"):
        PinnedSlotRing.allocate_pinned(3, 2, SPECS_IN, SPECS_OUT, raw_capacity=(4, 4))
    assert ("cudaMallocHost", staging) in rt.calls
    assert rt.live == {}, f"leaked: {sorted(kind for kind, _ in rt.live.values())}"


def test_postprocess_waits_for_the_slots_outputs_through_ready(fake_cuda):
    from pipeline.cuda.ring import PinnedSlotRing

    rt = fake_cuda()
    ring = PinnedSlotRing.allocate_pinned(2, 1, SPECS_IN, SPECS_OUT, device=1)
    try:
        slot = ring.acquire(threading.Event())
        d2h = slot.bindings["cuda"].d2h_done
        d2h.recorded = True  # as infer() leaves it: the copy to the host enqueued, not finished
        rt.not_ready.add(d2h.handle)
        with pytest.raises(TimeoutError, match="CUDA work not finished after 0.1 s"):
            ring.ready(slot, timeout_s=0.1)
        threading.Timer(0.05, rt.not_ready.discard, (d2h.handle,)).start()
        t0, before = time.monotonic(), len(rt.calls)
        ring.ready(slot, timeout_s=5)
        assert time.monotonic() - t0 >= 0.04
        assert rt.calls[before] == ("cudaSetDevice", 1)  # postprocess's thread, the ring's GPU
        ring.release(slot)
    finally:
        ring.close()
