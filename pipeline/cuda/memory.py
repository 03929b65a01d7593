"""Pinned host buffers, device buffers, streams and events, each freed by an explicit close().

Thin wrappers over cuda-python through runtime.check (errors become CudaError naming the call); no
object here frees itself on garbage collection, so the owner (a slot ring, a backend) must close it.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

import numpy as np

from pipeline.cuda.runtime import check, modules


class Stream:
    """A non-blocking CUDA stream (does not synchronise with the legacy default stream)."""

    def __init__(self) -> None:
        rt, _, _ = modules()
        self.handle = check("cudaStreamCreateWithFlags", rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        """Blocks until the stream's work is done (no timeout: for tests and benchmarks only; the
        pipeline waits on events, which have one)."""
        rt, _, _ = modules()
        check("cudaStreamSynchronize", rt.cudaStreamSynchronize(self.handle))

    def wait_event(self, event: Event) -> None:
        """Makes later work on this stream wait, on the GPU, for `event` (recorded on another
        stream); the host does not block."""
        rt, _, _ = modules()
        check("cudaStreamWaitEvent", rt.cudaStreamWaitEvent(self.handle, event.handle, 0))

    def close(self) -> None:
        if self.handle is not None:
            rt, _, _ = modules()
            check("cudaStreamDestroy", rt.cudaStreamDestroy(self.handle))
            self.handle = None


class Event:
    """A CUDA event. `timing=False` (the default) is cheaper: for ordering and completion only."""

    def __init__(self, timing: bool = False) -> None:
        rt, _, _ = modules()
        flags = rt.cudaEventDefault if timing else rt.cudaEventDisableTiming
        self.handle = check("cudaEventCreateWithFlags", rt.cudaEventCreateWithFlags(flags))
        self.recorded = False

    def record(self, stream: Stream) -> None:
        rt, _, _ = modules()
        check("cudaEventRecord", rt.cudaEventRecord(self.handle, stream.handle))
        self.recorded = True

    def done(self) -> bool:
        """True when the work before the record has finished (or it was never recorded)."""
        if not self.recorded:
            return True
        rt, _, _ = modules()
        (err,) = rt.cudaEventQuery(self.handle)
        if err == rt.cudaError_t.cudaErrorNotReady:
            return False
        check("cudaEventQuery", (err,))
        return True

    def wait(self, timeout_s: float) -> None:
        """Waits (polling, so it has a timeout) until done; raises TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        delay = 20e-6
        while not self.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"CUDA work not finished after {timeout_s:.1f} s (GPU hung or overloaded?)")
            time.sleep(delay)
            delay = min(delay * 2, 1e-3)

    def elapsed_ms(self, since: Event) -> float:
        rt, _, _ = modules()
        return float(check("cudaEventElapsedTime", rt.cudaEventElapsedTime(since.handle, self.handle)))

    def close(self) -> None:
        if self.handle is not None:
            rt, _, _ = modules()
            check("cudaEventDestroy", rt.cudaEventDestroy(self.handle))
            self.handle = None


class PinnedBuffer:
    """Page-locked host memory seen as a numpy array (async copies need pinned memory)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type) -> None:
        rt, _, _ = modules()
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.ptr = int(check("cudaMallocHost", rt.cudaMallocHost(max(self.nbytes, 1))))
        raw = (ctypes.c_uint8 * max(self.nbytes, 1)).from_address(self.ptr)
        self.array = np.frombuffer(raw, np.uint8, self.nbytes).view(self.dtype).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            rt, _, _ = modules()
            self.array = np.empty(0, self.dtype)  # no view may outlive the memory
            check("cudaFreeHost", rt.cudaFreeHost(self.ptr))
            self.ptr = 0


class DeviceBuffer:
    """`nbytes` of device memory (cudaMalloc) at the int pointer `ptr`; freed by close().

    Args:
        nbytes: the size in bytes (at least 1 is allocated).
    """

    def __init__(self, nbytes: int) -> None:
        rt, _, _ = modules()
        self.nbytes = int(nbytes)
        self.ptr = int(check("cudaMalloc", rt.cudaMalloc(max(self.nbytes, 1))))

    def fill_async(self, byte: int, stream: Stream) -> None:
        """Sets every byte (e.g. 0xFF poisons float32 buffers with NaN) on `stream`."""
        rt, _, _ = modules()
        check("cudaMemsetAsync", rt.cudaMemsetAsync(self.ptr, byte, self.nbytes, stream.handle))

    def close(self) -> None:
        if self.ptr:
            rt, _, _ = modules()
            check("cudaFree", rt.cudaFree(self.ptr))
            self.ptr = 0


def copy_async(dst: int, src: int, nbytes: int, kind: str, stream: Stream) -> None:
    """cudaMemcpyAsync with kind "h2d", "d2h" or "d2d" (pointers as ints)."""
    rt, _, _ = modules()
    kinds: dict[str, Any] = {"h2d": rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                             "d2h": rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                             "d2d": rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice}
    if kind not in kinds:
        raise ValueError(f"copy kind must be one of {sorted(kinds)}, got {kind!r}")
    check("cudaMemcpyAsync", rt.cudaMemcpyAsync(dst, src, nbytes, kinds[kind], stream.handle))
