"""cuda-python imports and checked calls.

`check(call_name, result)` turns cuda-python's `(err, *values)` tuples into values or a CudaError
that names the call and the error (`cudaMemcpyAsync failed: cudaErrorInvalidValue (invalid argument)`).
"""

from __future__ import annotations

from typing import Any


class CudaUnavailable(RuntimeError):
    """cuda-python, the CUDA driver or a GPU is missing; the message says which and what to do."""


class CudaError(RuntimeError):
    """A CUDA, driver or NVRTC call failed; the message names the call, the error and its description.

    Args:
        call: the function called, e.g. `cudaMemcpyAsync`.
        code: the error code cuda-python returned.
        name: the error's name, e.g. `cudaErrorInvalidValue`.
        description: CUDA's text for it.
    """

    def __init__(self, call: str, code: Any, name: str, description: str) -> None:
        # Without the driver library its descriptions are unavailable: the name alone, no "()".
        super().__init__(f"{call} failed: {name} ({description})" if description else f"{call} failed: {name}")
        self.call = call
        self.code = code
        self.name = name


def _import() -> tuple[Any, Any, Any]:
    try:
        from cuda.bindings import driver, nvrtc, runtime  # cuda-python >= 12.6 / 13
    except ImportError:
        try:
            from cuda import cuda as driver  # type: ignore[no-redef]  # cuda-python < 12.6
            from cuda import cudart as runtime  # type: ignore[no-redef]
            from cuda import nvrtc  # type: ignore[no-redef]
        except ImportError as exc:
            raise CudaUnavailable(
                "cuda-python is not installed: pip install -r requirements-gpu.txt on a machine with an NVIDIA GPU "
                f"({exc})") from exc
    return runtime, driver, nvrtc


cudart, cuda_driver, nvrtc = (None, None, None)


def modules() -> tuple[Any, Any, Any]:
    """(runtime, driver, nvrtc) modules of cuda-python, imported on first use."""
    global cudart, cuda_driver, nvrtc
    if cudart is None:
        cudart, cuda_driver, nvrtc = _import()
    return cudart, cuda_driver, nvrtc


def error_name(err: Any) -> str:
    """The name of a cuda-python error code (`cudaErrorInvalidValue`, `CUDA_ERROR_INVALID_IMAGE`,
    `NVRTC_ERROR_COMPILATION`): the enum member's own name, which needs no library call."""
    return str(getattr(err, "name", err))


def _error_text(err: Any) -> tuple[str, str]:
    rt, drv, nv = modules()
    try:
        if isinstance(err, rt.cudaError_t):
            return rt.cudaGetErrorName(err)[1].decode(), rt.cudaGetErrorString(err)[1].decode()
        if isinstance(err, drv.CUresult):
            text = drv.cuGetErrorString(err)[1]  # needs the driver library: may raise without it
            return error_name(err), (text.decode() if text else "")
        if isinstance(err, nv.nvrtcResult):
            return error_name(err), nv.nvrtcGetErrorString(err)[1].decode()
    except Exception:  # noqa: BLE001 - describing an error must not raise another
        pass
    return error_name(err), ""


def _is_success(err: Any) -> bool:
    return int(err) == 0  # cudaSuccess, CUDA_SUCCESS and NVRTC_SUCCESS are all 0


def check(call: str, result: Any) -> Any:
    """`result` is what a cuda-python call returned: (err,) or (err, value, ...). Returns None, the
    value, or the tuple of values; raises CudaError naming `call` on failure."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if not _is_success(err):
        name, text = _error_text(err)
        raise CudaError(call, err, name, text)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def use_device(device: int) -> None:
    """Makes `device` current in the calling thread. CUDA's current device is per thread and
    defaults to 0, so every thread that allocates, copies or frees for a model on another GPU
    (loading, building, the ring, inference, postprocess, close) calls this first."""
    rt, _, _ = modules()
    check("cudaSetDevice", rt.cudaSetDevice(device))


def device_count() -> int:
    """The number of CUDA devices. Raises CudaUnavailable when the runtime cannot count them (no driver, no GPU)."""
    rt, _, _ = modules()
    err, count = rt.cudaGetDeviceCount()
    if not _is_success(err):
        name, text = _error_text(err)
        raise CudaUnavailable(f"no usable CUDA device: cudaGetDeviceCount gave {name} ({text})")
    return int(count)


def compute_capability(device: int = 0) -> tuple[int, int]:
    """(major, minor) compute capability of `device`, e.g. (8, 6)."""
    rt, _, _ = modules()
    major = check("cudaDeviceGetAttribute", rt.cudaDeviceGetAttribute(
        rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, device))
    minor = check("cudaDeviceGetAttribute", rt.cudaDeviceGetAttribute(
        rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, device))
    return int(major), int(minor)


def device_name(device: int = 0) -> str:
    """The product name of `device`, e.g. `NVIDIA GeForce RTX 3060`."""
    rt, _, _ = modules()
    props = check("cudaGetDeviceProperties", rt.cudaGetDeviceProperties(device))
    name = props.name
    return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\x00")
