"""`backend: auto`: the fastest backend this machine has for a model, decided once at load time.

TensorRT for an .engine file, or where TensorRT and a CUDA GPU are both present (then with the
same engine rules as `backend: tensorrt`); else OpenVINO when it imports; else ONNX Runtime.
`choose_backend` decides from the facts alone (so tests can give it any machine); `machine_facts`
gathers them without importing TensorRT or CUDA on a machine that lacks TensorRT: only
`importlib.util.find_spec("tensorrt")` runs there.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class MachineFacts:
    """What `choose_backend` needs to know about the machine.

    Args:
        tensorrt: the `tensorrt` package is installed.
        cuda_devices: CUDA devices the runtime sees (0 when cuda-python or the driver is missing,
            or when TensorRT is absent and they were not looked for).
        openvino: the `openvino` package imports.
    """

    tensorrt: bool
    cuda_devices: int
    openvino: bool


def choose_backend(path: Path, facts: MachineFacts, device: str = "auto", precision: str | None = None) -> tuple[str, str]:
    """The backend `auto` means for the model at `path` on a machine with `facts`, and why.

    Args:
        path: the model file (.onnx or .engine).
        facts: the machine's facts (see `machine_facts`).
        device: the model's `device`: cpu rules TensorRT out; cuda without TensorRT means ONNX
            Runtime (its CUDA provider, with onnxruntime-gpu), not the CPU-only OpenVINO.
        precision: bf16 is OpenVINO's and fp16 TensorRT's alone, so they pick that backend (whose
            load then says what is missing, if anything).

    Returns:
        (backend name, a short reason for the log line).
    """
    if Path(path).suffix == ".engine":
        return "tensorrt", "the model is a TensorRT engine"
    if precision == "bf16":
        return "openvino", "precision bf16 runs on OpenVINO"
    if precision == "fp16":
        return "tensorrt", "precision fp16 runs on TensorRT"
    if facts.tensorrt and facts.cuda_devices > 0 and device != "cpu":
        return "tensorrt", f"TensorRT and {facts.cuda_devices} CUDA GPU(s) are present"
    gpu = "device: cpu" if device == "cpu" else "no CUDA GPU" if facts.tensorrt else "no TensorRT"
    if device == "cuda":
        return "onnxruntime", f"device: cuda and {gpu}: ONNX Runtime's CUDA provider"
    if facts.openvino:
        return "openvino", f"{gpu}; OpenVINO is installed"
    return "onnxruntime", f"{gpu} and no OpenVINO (pip install openvino for faster CPU inference)"


def machine_facts(path: Path) -> MachineFacts:
    """The facts of this machine that `choose_backend` looks at for `path`: CUDA is asked only when
    TensorRT is installed (so a machine without it imports nothing of CUDA).

    Args:
        path: the model file (an .engine needs no facts).

    Returns:
        The facts.
    """
    if Path(path).suffix == ".engine":  # TensorRT whatever the machine: nothing to look for
        return MachineFacts(tensorrt=False, cuda_devices=0, openvino=False)
    tensorrt = importlib.util.find_spec("tensorrt") is not None
    cuda_devices = _cuda_devices() if tensorrt else 0
    return MachineFacts(tensorrt, cuda_devices, openvino=_imports("openvino"))


def _cuda_devices() -> int:
    from pipeline.cuda.runtime import CudaError, CudaUnavailable, device_count

    try:
        return device_count()
    except (CudaUnavailable, CudaError):
        return 0


def _imports(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
