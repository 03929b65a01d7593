"""The CUDA layer. Without a GPU: the kernel compiles with NVRTC (no driver needed) and its
arithmetic (the numpy reference) matches the CPU letterbox within 1/255; errors are named. With a
GPU (cuda-python and a device): the checks of benchmarks/gpu_check.py, else skipped with the reason."""

from __future__ import annotations

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
        assert f".entry {KERNEL_NAME_F32}" in ptx and f".entry {KERNEL_NAME_F16}" in ptx
        assert "cvt.rn.f16.f32" in ptx
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


@pytest.mark.parametrize("shape", [(1080, 1920), (720, 1280), (480, 854), (240, 320), (641, 333), (640, 640), (2160, 3840)])
def test_kernel_arithmetic_matches_the_cpu_letterbox(shape):
    """reference_letterbox is the kernel's formula in numpy (the GPU check compares the kernel with
    it to 1e-5); here it is held to the OpenCV letterbox the CPU path uses."""
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


def test_cuda_errors_name_the_call():
    """Without cuda-python the layer says what to install; without a GPU, which call failed and why."""
    from pipeline.cuda.runtime import CudaError, CudaUnavailable, device_count

    try:
        count = device_count()
    except CudaUnavailable as exc:
        assert "cuda" in str(exc).lower() and ("install" in str(exc) or "cudaGetDeviceCount" in str(exc))
        return
    except CudaError as exc:
        assert str(exc).startswith("cudaGetDeviceCount failed: ")
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
