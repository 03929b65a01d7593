"""CUDA memory layer on cuda-python (`cuda.bindings`): checked calls, pinned host and device
buffers, streams, events, a ring of pinned/device slots, and the letterbox kernel (NVRTC).

Nothing here is imported by the CPU path: `pipeline.backends.tensorrt`, `pipeline.backends.engine_build`
and `benchmarks/gpu_check.py` import it when asked for. Every call is checked (an error code becomes
CudaError naming the call and the error), and every allocation is freed explicitly by `close()`,
never by `__del__`.
"""
