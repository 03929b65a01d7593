"""The CUDA layer. Without a GPU: the kernel compiles with NVRTC (no driver needed) and its PTX
has the expected entries and instructions; the kernel's own .cu source, built for the CPU with g++,
matches the CPU letterbox within 1/255 (a swapped channel or a wrong pad fails); the numpy
reference that gpu_check.py holds the GPU kernel to matches it too; errors are named. With a GPU
(cuda-python and a device): the checks of benchmarks/gpu_check.py, else skipped with the reason."""

from __future__ import annotations

import re
from typing import Any

import cv2
import numpy as np
import pytest

from pipeline.preprocess import LetterboxScratch, letterbox_into


def _nvrtc_missing() -> str | None:
    try:
        from cuda.bindings import nvrtc  # noqa: F401 - only probing that it imports
    except ImportError as exc:
        return f"cuda-python (cuda.bindings) not installed: {exc}"
    try:
        from pipeline.cuda.kernels import compile_ptx

        compile_ptx()
    except Exception as exc:  # noqa: BLE001 - the reason is shown in the skip
        if "nvrtc" in str(exc).lower() and "compil" not in str(exc).lower():
            return f"NVRTC library not found: {exc}"
    return None


def _gpu_missing() -> str | None:
    from pipeline.cuda.runtime import CudaError, CudaUnavailable, device_count

    try:
        return None if device_count() > 0 else "no CUDA device"
    except (CudaUnavailable, CudaError) as exc:
        return f"no CUDA GPU: {exc}"


def test_letterbox_kernel_compiles_with_nvrtc():
    reason = _nvrtc_missing()
    if reason:
        pytest.skip(reason)
    from pipeline.cuda.kernels import KERNEL_NAME_F16, KERNEL_NAME_F32, compile_ptx

    for arch in ("compute_75", "compute_86", "compute_90"):
        ptx = compile_ptx(arch).decode()
        for name in (KERNEL_NAME_F32, KERNEL_NAME_F16):
            # The 12 arguments LetterboxKernel.launch passes, in one entry each.
            entry = re.search(rf"\.entry {name}\((.*?)\)", ptx, re.S)
            assert entry is not None and entry.group(1).count(".param") == 12, name
        assert "cvt.rn.f16.f32" in ptx  # the f16 store rounds to nearest even
        assert "div.rn.f32" in ptx  # IEEE division, as the reference computes src_w / new_w
        assert not re.search(r"\.f64\b", ptx), "double-precision arithmetic in the kernel (slow on most GPUs)"
    from pipeline.cuda.kernels import compile_cubin

    for arch in ("sm_75", "sm_86", "sm_89", "sm_90"):  # what LetterboxKernel loads: a cubin per GPU
        cubin = compile_cubin(arch)
        assert cubin[:4] == b"\x7fELF" and KERNEL_NAME_F16.encode() in cubin


def test_kernel_compile_errors_carry_the_nvrtc_log(monkeypatch):
    if _nvrtc_missing():
        pytest.skip(_nvrtc_missing())
    from pipeline.cuda import kernels
    from pipeline.cuda.runtime import CudaError

    monkeypatch.setattr(kernels, "SOURCE", kernels.SOURCE + "\nthis is not cuda;\n")
    with pytest.raises(CudaError, match=r"nvrtcCompileProgram failed: .*letterbox.cu\(\d+\): error"):
        kernels.compile_ptx()


def test_a_real_compile_error_is_not_hidden_by_the_ptx_fallback(monkeypatch):
    """PTX is the fallback for a GPU this NVRTC does not know, not for a kernel that does not compile."""
    if _nvrtc_missing():
        pytest.skip(_nvrtc_missing())
    from pipeline.cuda import kernels
    from pipeline.cuda.runtime import CudaError

    monkeypatch.setattr(kernels, "SOURCE", kernels.SOURCE + "\nthis is not cuda;\n")
    monkeypatch.setattr(kernels, "compile_ptx", lambda arch="": pytest.fail(f"fell back to PTX {arch}"))
    with pytest.raises(CudaError, match=r"nvrtcCompileProgram failed: NVRTC_ERROR_COMPILATION .*letterbox.cu\(\d+\): error"):
        kernels.compile_for_device(8, 6)


def test_a_gpu_newer_than_nvrtc_gets_ptx_it_can_jit():
    if _nvrtc_missing():
        pytest.skip(_nvrtc_missing())
    from pipeline.cuda.kernels import compile_for_device

    assert compile_for_device(8, 6)[:4] == b"\x7fELF"  # a cubin for a GPU this NVRTC knows
    code = compile_for_device(99, 0)  # sm_990: unknown to any NVRTC
    assert b".target sm_90" in code and b".entry letterbox_bgr_to_rgb_chw_f32" in code


# The .cu source built for the CPU: CUDA's keywords and thread indices as plain C++, each "thread"
# run in a loop over the grid, and the one inline PTX instruction (cvt.rn.f16.f32, round to nearest
# even) as GCC's _Float16 conversion, which rounds the same way. This runs the kernel's own text,
# so a swapped channel, a wrong pad or a wrong sample position in it fails here, without a GPU.
CPU_PRELUDE = r"""
#include <algorithm>
#include <cmath>
#include <cstring>
struct Dim3 { int x, y, z; };
static Dim3 blockIdx, threadIdx, blockDim;
using std::min;
static inline unsigned short f16_bits(float v) {
    _Float16 half = (_Float16)v; unsigned short bits; std::memcpy(&bits, &half, 2); return bits;
}
#define __device__
#define __global__
#define __forceinline__ inline
#define asm(...) h = f16_bits(v)
"""
CPU_GRID = r"""
template <typename Kernel, typename T>
static void grid(Kernel kernel, const unsigned char* src, int src_w, int src_h, int src_stride, T* dst, int dst_w,
                 int dst_h, int pad_x, int pad_y, int new_w, int new_h, float pad_value) {
    blockDim = {BX, BY, 1};
    for (int by = 0; by * BY < dst_h; ++by) for (int bx = 0; bx * BX < dst_w; ++bx)
        for (int ty = 0; ty < BY; ++ty) for (int tx = 0; tx < BX; ++tx) {
            blockIdx = {bx, by, 0}; threadIdx = {tx, ty, 0};
            kernel(src, src_w, src_h, src_stride, dst, dst_w, dst_h, pad_x, pad_y, new_w, new_h, pad_value);
        }
}
extern "C" void run_f32(const unsigned char* src, int src_w, int src_h, int src_stride, float* dst, int dst_w, int dst_h,
                        int pad_x, int pad_y, int new_w, int new_h, float pad_value) {
    grid(letterbox_bgr_to_rgb_chw_f32, src, src_w, src_h, src_stride, dst, dst_w, dst_h, pad_x, pad_y, new_w, new_h, pad_value);
}
extern "C" void run_f16(const unsigned char* src, int src_w, int src_h, int src_stride, unsigned short* dst, int dst_w,
                        int dst_h, int pad_x, int pad_y, int new_w, int new_h, float pad_value) {
    grid(letterbox_bgr_to_rgb_chw_f16, src, src_w, src_h, src_stride, dst, dst_w, dst_h, pad_x, pad_y, new_w, new_h, pad_value);
}
"""


def build_kernel_for_cpu(source: str, folder) -> Any:
    """The kernel source compiled with g++ into a library with run_f32/run_f16 (skips without g++)."""
    import ctypes
    import shutil
    import subprocess

    from pipeline.cuda.kernels import BLOCK

    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler (g++) to build the kernel source for the CPU")
    cpp, lib = folder / "letterbox_cpu.cpp", folder / "letterbox_cpu.so"
    cpp.write_text(CPU_PRELUDE + source + CPU_GRID)
    # -ffp-contract=off: no fused multiply-add, so the float arithmetic is the reference's
    done = subprocess.run(["g++", "-std=c++14", "-O2", "-ffp-contract=off", "-shared", "-fPIC", f"-DBX={BLOCK[0]}",
                           f"-DBY={BLOCK[1]}", "-o", str(lib), str(cpp)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    so = ctypes.CDLL(str(lib))
    i = ctypes.c_int
    for fn in (so.run_f32, so.run_f16):
        fn.argtypes = [ctypes.c_void_p, i, i, i, ctypes.c_void_p, i, i, i, i, i, i, ctypes.c_float]
        fn.restype = None
    return so


def run_kernel_on_cpu(so: Any, image: np.ndarray, dst_h: int, dst_w: int, *, half: bool = False) -> np.ndarray:
    """What the kernel writes for `image`, as float32 CHW; the output is poisoned (NaN) first."""
    from pipeline.preprocess import PAD_VALUE, letterbox_geometry

    h, w = image.shape[:2]
    lb, new_w, new_h = letterbox_geometry(w, h, dst_w, dst_h)
    out = np.full((3, dst_h, dst_w), np.nan, np.float16 if half else np.float32)
    src = np.ascontiguousarray(image)
    (so.run_f16 if half else so.run_f32)(src.ctypes.data, w, h, w * 3, out.ctypes.data, dst_w, dst_h, lb.pad_x, lb.pad_y,
                                         new_w, new_h, PAD_VALUE / 255.0)
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def kernel_on_cpu(tmp_path_factory):
    from pipeline.cuda.kernels import SOURCE

    return build_kernel_for_cpu(SOURCE, tmp_path_factory.mktemp("kernel"))


@pytest.mark.parametrize("shape", [(1080, 1920), (480, 854), (641, 333), (640, 640), (100, 3000)])
def test_the_kernel_source_run_on_the_cpu_matches_the_cpu_letterbox(kernel_on_cpu, shape):
    from pipeline.cuda.kernels import reference_letterbox

    rng = np.random.default_rng(shape[0] + shape[1])
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    image[..., 0] //= 4  # channels of different ranges: a BGR/RGB swap cannot go unnoticed
    cpu = np.empty((3, 640, 640), np.float32)
    letterbox_into(image, cpu, LetterboxScratch(640, 640))
    kernel = run_kernel_on_cpu(kernel_on_cpu, image, 640, 640)
    assert not np.isnan(kernel).any(), "the kernel left output elements unwritten"
    assert np.abs(kernel - cpu).max() <= 1 / 255 + 1e-6
    assert np.abs(kernel - reference_letterbox(image, 640, 640)).max() <= 1e-5
    half = run_kernel_on_cpu(kernel_on_cpu, image, 640, 640, half=True)
    assert np.abs(half - cpu).max() <= 1 / 255 + 1e-3  # fp16 holds 0..1 to within 2^-11


def test_the_kernel_source_on_real_images(kernel_on_cpu, media):
    for name in ("bus.jpg", "street.png", "person.jpg"):
        image = cv2.imread(str(media / name))
        cpu = np.empty((3, 640, 640), np.float32)
        letterbox_into(image, cpu, LetterboxScratch(640, 640))
        assert np.abs(run_kernel_on_cpu(kernel_on_cpu, image, 640, 640) - cpu).max() <= 1 / 255 + 1e-6, name


@pytest.mark.parametrize("shape", [(1080, 1920), (720, 1280), (480, 854), (240, 320), (641, 333), (640, 640), (2160, 3840)])
def test_kernel_arithmetic_matches_the_cpu_letterbox(shape):
    """reference_letterbox is the kernel's formula in numpy (gpu_check.py compares the GPU kernel
    with it to 1e-5); here the reference itself is held to the OpenCV letterbox the CPU path uses.
    The kernel's source is checked by test_the_kernel_source_run_on_the_cpu_matches_the_cpu_letterbox."""
    from pipeline.cuda.kernels import reference_letterbox

    rng = np.random.default_rng(shape[0] * shape[1])
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    cpu = np.empty((3, 640, 640), np.float32)
    letterbox_into(image, cpu, LetterboxScratch(640, 640))
    assert np.abs(reference_letterbox(image, 640, 640) - cpu).max() <= 1 / 255 + 1e-6


def test_kernel_arithmetic_on_real_images(media):
    from pipeline.cuda.kernels import reference_letterbox

    for name in ("bus.jpg", "street.png", "person.jpg"):
        image = cv2.imread(str(media / name))
        cpu = np.empty((3, 640, 640), np.float32)
        letterbox_into(image, cpu, LetterboxScratch(640, 640))
        assert np.abs(reference_letterbox(image, 640, 640) - cpu).max() <= 1 / 255 + 1e-6, name


def test_cuda_errors_name_the_call_and_the_error():
    """check() turns each library's error code into `CALL failed: NAME (description)`, the same on
    every machine: the codes are cuda-python's own enums, no GPU or driver call is needed."""
    if _nvrtc_missing():
        pytest.skip(_nvrtc_missing())
    from pipeline.cuda.runtime import CudaError, check, modules

    rt, drv, nv = modules()
    with pytest.raises(CudaError) as err:
        check("cudaMemcpyAsync", (rt.cudaError_t.cudaErrorInvalidValue,))
    assert str(err.value) == "cudaMemcpyAsync failed: cudaErrorInvalidValue (invalid argument)"
    assert (err.value.call, err.value.name) == ("cudaMemcpyAsync", "cudaErrorInvalidValue")
    # The driver's own descriptions need the driver library; its error names never do.
    with pytest.raises(CudaError, match=r"^cuModuleLoadData failed: CUDA_ERROR_INVALID_IMAGE( \(.+\))?$"):
        check("cuModuleLoadData", (drv.CUresult.CUDA_ERROR_INVALID_IMAGE,))
    with pytest.raises(CudaError, match=r"^nvrtcCompileProgram failed: NVRTC_ERROR_INVALID_OPTION \(.+\)$"):
        check("nvrtcCompileProgram", (nv.nvrtcResult.NVRTC_ERROR_INVALID_OPTION,))
    ok = rt.cudaError_t.cudaSuccess
    assert check("cudaStreamSynchronize", (ok,)) is None
    assert check("cudaGetDeviceCount", (ok, 3)) == 3
    assert check("nvrtcGetPTXSize", (nv.nvrtcResult.NVRTC_SUCCESS, 7, 8)) == (7, 8)


def test_a_missing_gpu_is_said_in_words():
    """Without a driver or GPU, device_count names the call and CUDA's error; with one, it counts."""
    if _nvrtc_missing():
        pytest.skip(_nvrtc_missing())
    from pipeline.cuda.runtime import CudaUnavailable, device_count

    try:
        count = device_count()
    except CudaUnavailable as exc:
        assert re.fullmatch(r"no usable CUDA device: cudaGetDeviceCount gave cudaError\w+ \(.+\)", str(exc)), str(exc)
        return
    assert count >= 1


@pytest.fixture
def gpu():
    reason = _gpu_missing()
    if reason:
        pytest.skip(reason)


def test_gpu_pinned_ring_roundtrip(gpu):
    from pipeline.cuda import selfcheck

    assert selfcheck.ring_roundtrip(rounds=4)["elements_checked"] > 0


def test_gpu_kernel_matches_cpu(gpu, media):
    from pipeline.cuda import selfcheck

    images = [cv2.imread(str(media / "bus.jpg")), np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)]
    for row in selfcheck.kernel_vs_cpu(images):
        assert row["max_diff_reference"] <= 1e-5 and row["max_diff_cpu"] <= 1 / 255 + 1e-6


def test_a_failing_cuda_call_names_itself_and_the_error():
    """A real cuda-python call with no GPU (or a real error on a GPU): CudaError names call and code."""
    if _nvrtc_missing():
        pytest.skip(_nvrtc_missing())
    if not _gpu_missing():
        from pipeline.cuda.memory import DeviceBuffer
        from pipeline.cuda.runtime import CudaError

        with pytest.raises(CudaError, match=r"^cudaMalloc failed: cudaErrorMemoryAllocation"):
            DeviceBuffer(1 << 62)  # more than any GPU has
        return
    from pipeline.cuda.memory import PinnedBuffer
    from pipeline.cuda.runtime import CudaError

    with pytest.raises(CudaError, match=r"^cudaMallocHost failed: cudaError\w+ \(.+\)$"):
        PinnedBuffer((4,), np.float32)


def test_gpu_check_without_a_gpu_says_so_in_one_line():
    """benchmarks/gpu_check.py on a machine without a GPU: exit 2 and one line, no traceback."""
    import subprocess
    import sys

    from conftest import REPO

    if not _gpu_missing():
        pytest.skip("a GPU is here: gpu_check runs its checks instead")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--quick"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("gpu_check: no usable CUDA device: ")
