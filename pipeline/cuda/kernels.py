"""The fused letterbox kernel: resize (bilinear, OpenCV INTER_LINEAR's sampling) + pad + BGR→RGB +
scale to 0..1 + HWC→CHW, one thread per output pixel, compiled at run time with NVRTC.

Geometry (new size, padding) comes from `preprocess.letterbox_geometry`, the same function the CPU
path uses, so boxes map back identically. Sampling follows cv2.resize INTER_LINEAR: source
coordinate (x + 0.5) * src_w / new_w - 0.5, clamped at the borders. OpenCV blends in 11-bit fixed
point and the kernel in float, so values may differ by one grey level (1/255), which is the
tolerance `benchmarks/gpu_check.py` checks against the CPU letterbox.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.cuda.runtime import CudaError, check, error_name, modules, use_device

KERNEL_NAME_F32 = "letterbox_bgr_to_rgb_chw_f32"
KERNEL_NAME_F16 = "letterbox_bgr_to_rgb_chw_f16"
BLOCK = (32, 8, 1)

SOURCE = r"""
__device__ __forceinline__ float sample_channel(const unsigned char* src, int stride, int x0, int x1, int y0,
                                                int y1, float fx, float fy, int c) {
    const unsigned char* r0 = src + (long long)y0 * stride;
    const unsigned char* r1 = src + (long long)y1 * stride;
    float top = r0[x0 * 3 + c] * (1.0f - fx) + r0[x1 * 3 + c] * fx;
    float bottom = r1[x0 * 3 + c] * (1.0f - fx) + r1[x1 * 3 + c] * fx;
    return top * (1.0f - fy) + bottom * fy;
}

// One output pixel (all three channels) per thread. src: HWC BGR uint8, rows `src_stride` bytes
// apart. dst: CHW RGB, values in 0..1, plane size dst_w * dst_h.
template <typename Store>
__device__ __forceinline__ void letterbox(const unsigned char* src, int src_w, int src_h, int src_stride,
                                          int dst_w, int dst_h, int pad_x, int pad_y, int new_w, int new_h,
                                          float pad_value, Store store) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) return;
    long long plane = (long long)dst_w * dst_h;
    long long at = (long long)y * dst_w + x;
    int ix = x - pad_x, iy = y - pad_y;
    if (ix < 0 || iy < 0 || ix >= new_w || iy >= new_h) {
        store(at, pad_value); store(at + plane, pad_value); store(at + 2 * plane, pad_value);
        return;
    }
    float sx = (ix + 0.5f) * ((float)src_w / (float)new_w) - 0.5f;
    float sy = (iy + 0.5f) * ((float)src_h / (float)new_h) - 0.5f;
    int x0 = (int)floorf(sx), y0 = (int)floorf(sy);
    float fx = sx - x0, fy = sy - y0;
    if (x0 < 0) { x0 = 0; fx = 0.0f; }
    if (y0 < 0) { y0 = 0; fy = 0.0f; }
    if (x0 >= src_w - 1) { x0 = src_w - 1; fx = 0.0f; }
    if (y0 >= src_h - 1) { y0 = src_h - 1; fy = 0.0f; }
    int x1 = min(x0 + 1, src_w - 1), y1 = min(y0 + 1, src_h - 1);
    const float inv = 1.0f / 255.0f;
    // BGR in, RGB out: output channel c reads input channel 2 - c.
    store(at, sample_channel(src, src_stride, x0, x1, y0, y1, fx, fy, 2) * inv);
    store(at + plane, sample_channel(src, src_stride, x0, x1, y0, y1, fx, fy, 1) * inv);
    store(at + 2 * plane, sample_channel(src, src_stride, x0, x1, y0, y1, fx, fy, 0) * inv);
}

struct StoreF32 {
    float* dst;
    __device__ void operator()(long long i, float v) const { dst[i] = v; }
};

struct StoreF16 {
    unsigned short* dst;  // IEEE half bits: NVRTC has no cuda_fp16.h without the toolkit's headers
    __device__ void operator()(long long i, float v) const {
        unsigned short h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
        dst[i] = h;
    }
};

extern "C" __global__ void letterbox_bgr_to_rgb_chw_f32(const unsigned char* src, int src_w, int src_h, int src_stride,
                                                        float* dst, int dst_w, int dst_h, int pad_x, int pad_y,
                                                        int new_w, int new_h, float pad_value) {
    letterbox(src, src_w, src_h, src_stride, dst_w, dst_h, pad_x, pad_y, new_w, new_h, pad_value, StoreF32{dst});
}

extern "C" __global__ void letterbox_bgr_to_rgb_chw_f16(const unsigned char* src, int src_w, int src_h, int src_stride,
                                                        unsigned short* dst, int dst_w, int dst_h, int pad_x, int pad_y,
                                                        int new_w, int new_h, float pad_value) {
    letterbox(src, src_w, src_h, src_stride, dst_w, dst_h, pad_x, pad_y, new_w, new_h, pad_value, StoreF16{dst});
}
"""


def compile_ptx(arch: str = "compute_75") -> bytes:
    """Compiles SOURCE with NVRTC to PTX (needs no GPU). Raises CudaError with NVRTC's log."""
    return _compile(arch, cubin=False)


def compile_cubin(arch: str) -> bytes:
    """Compiles SOURCE to a cubin for one GPU (`sm_86`). A cubin loads on any driver that runs
    that GPU; PTX from a newer NVRTC than the driver would be refused (unsupported PTX version)."""
    return _compile(arch, cubin=True)


# The newest virtual architecture the NVRTC of cuda-python 12 compiles for; a newer GPU JIT-compiles it.
NEWEST_PTX_ARCH = "compute_90"


def compile_for_device(major: int, minor: int) -> bytes:
    """The code to load for a GPU of compute capability major.minor: a cubin for it, or, when this
    NVRTC does not know the GPU (NVRTC_ERROR_INVALID_OPTION for its --gpu-architecture), PTX for
    the newest architecture it knows, which the driver JIT-compiles. Any other error (a kernel that
    does not compile) is raised as it is, with NVRTC's log: PTX would fail the same way, and its
    error would hide the first one."""
    try:
        return compile_cubin(f"sm_{major}{minor}")
    except CudaError as exc:
        if error_name(exc.code) != "NVRTC_ERROR_INVALID_OPTION":
            raise
    return compile_ptx(NEWEST_PTX_ARCH if major >= 9 else f"compute_{major}{minor}")


def _compile(arch: str, *, cubin: bool) -> bytes:
    _, _, nvrtc = modules()
    prog = check("nvrtcCreateProgram", nvrtc.nvrtcCreateProgram(SOURCE.encode(), b"letterbox.cu", 0, [], []))
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++14"]  # IEEE division: matches the reference
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if int(err) != 0:
            size = check("nvrtcGetProgramLogSize", nvrtc.nvrtcGetProgramLogSize(prog))
            log = b" " * size
            check("nvrtcGetProgramLog", nvrtc.nvrtcGetProgramLog(prog, log))
            raise CudaError("nvrtcCompileProgram", err, error_name(err), log.decode(errors="replace").strip("\x00 \n"))
        if cubin:
            size = check("nvrtcGetCUBINSize", nvrtc.nvrtcGetCUBINSize(prog))
            code = b" " * size
            check("nvrtcGetCUBIN", nvrtc.nvrtcGetCUBIN(prog, code))
            return code
        size = check("nvrtcGetPTXSize", nvrtc.nvrtcGetPTXSize(prog))
        ptx = b" " * size
        check("nvrtcGetPTX", nvrtc.nvrtcGetPTX(prog, ptx))
        return ptx
    finally:
        check("nvrtcDestroyProgram", nvrtc.nvrtcDestroyProgram(prog))


@dataclass(frozen=True, slots=True)
class LetterboxArgs:
    """Where one image comes from and goes to on the device, and its letterbox geometry (from
    `preprocess.letterbox_geometry`), as `LetterboxKernel.launch` passes them to the kernel."""

    src_ptr: int  # device pointer to HWC BGR uint8
    src_w: int
    src_h: int
    src_stride: int  # bytes per source row
    dst_ptr: int  # device pointer to one CHW image (float32 or float16)
    dst_w: int
    dst_h: int
    pad_x: int
    pad_y: int
    new_w: int
    new_h: int


class LetterboxKernel:
    """The compiled kernel in the current device's context; `launch` enqueues one image."""

    def __init__(self, device: int = 0) -> None:
        from pipeline.cuda.runtime import compute_capability

        rt, drv, _ = modules()
        use_device(device)
        check("cudaFree", rt.cudaFree(0))  # makes the primary context current for the driver API
        self.device = device
        code = compile_for_device(*compute_capability(device))
        self._module = check("cuModuleLoadData", drv.cuModuleLoadData(code))
        self._f32 = check("cuModuleGetFunction", drv.cuModuleGetFunction(self._module, KERNEL_NAME_F32.encode()))
        self._f16 = check("cuModuleGetFunction", drv.cuModuleGetFunction(self._module, KERNEL_NAME_F16.encode()))

    def launch(self, a: LetterboxArgs, stream: Any, *, half: bool = False, pad_value: float = 114.0 / 255.0) -> None:
        rt, drv, _ = modules()
        # The driver API needs the device's context current in *this* thread (the inference
        # thread is not the one that loaded the module); cudaSetDevice makes the primary one current.
        check("cudaSetDevice", rt.cudaSetDevice(self.device))
        grid = ((a.dst_w + BLOCK[0] - 1) // BLOCK[0], (a.dst_h + BLOCK[1] - 1) // BLOCK[1], 1)
        c_int = ctypes.c_int
        values = (a.src_ptr, a.src_w, a.src_h, a.src_stride, a.dst_ptr, a.dst_w, a.dst_h, a.pad_x, a.pad_y,
                  a.new_w, a.new_h, pad_value)
        types = (ctypes.c_void_p, c_int, c_int, c_int, ctypes.c_void_p, c_int, c_int, c_int, c_int, c_int, c_int,
                 ctypes.c_float)
        check("cuLaunchKernel", drv.cuLaunchKernel(self._f16 if half else self._f32, *grid, *BLOCK, 0,
                                                   stream.handle, (values, types), 0))

    def close(self) -> None:
        """Unloads the module from its GPU (made current first: the closing thread may be on another)."""
        if self._module is not None:
            _, drv, _ = modules()
            use_device(self.device)
            check("cuModuleUnload", drv.cuModuleUnload(self._module))
            self._module = None


def reference_letterbox(image: np.ndarray, dst_h: int, dst_w: int) -> np.ndarray:
    """The kernel's arithmetic in numpy (float32, CHW RGB 0..1): the exact reference for tests on
    machines without OpenCV, and the definition of what the kernel computes."""
    from pipeline.preprocess import PAD_VALUE, letterbox_geometry

    src_h, src_w = image.shape[:2]
    lb, new_w, new_h = letterbox_geometry(src_w, src_h, dst_w, dst_h)
    out = np.full((3, dst_h, dst_w), np.float32(PAD_VALUE) / np.float32(255.0), np.float32)
    ix = np.arange(new_w, dtype=np.float32)
    iy = np.arange(new_h, dtype=np.float32)
    sx = (ix + np.float32(0.5)) * np.float32(src_w / new_w) - np.float32(0.5)
    sy = (iy + np.float32(0.5)) * np.float32(src_h / new_h) - np.float32(0.5)

    def axis(s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i0 = np.floor(s).astype(np.int64)
        f = (s - i0).astype(np.float32)
        f[i0 < 0] = 0
        i0 = np.maximum(i0, 0)
        f[i0 >= n - 1] = 0
        i0 = np.minimum(i0, n - 1)
        return i0, np.minimum(i0 + 1, n - 1), f

    x0, x1, fx = axis(sx, src_w)
    y0, y1, fy = axis(sy, src_h)
    img = image.astype(np.float32)
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bottom = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    blended = top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]
    rgb = blended[:, :, ::-1].transpose(2, 0, 1) / np.float32(255.0)
    out[:, lb.pad_y:lb.pad_y + new_h, lb.pad_x:lb.pad_x + new_w] = rgb
    return out
