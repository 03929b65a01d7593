"""A real Triton Inference Server for the `backend: triton` tests, from PyPI's `nvidia-pytriton`.

Two halves in one file:

- Run as a script *inside the Triton venv* (`.venv-triton`, made by .ci/run; PyTriton wants
  numpy<2, so it cannot share the project's venv), it serves yolov8n.onnx through ONNX Runtime
  behind PyTriton's bundled tritonserver (its Python backend), as two models:
  `yolov8n` (input `images` FP32 NCHW in 0..1, what the local backends take) and `yolov8n_u8`
  (input `images` UINT8 NCHW in 0..255, divided by 255 in float32 on the server: the very numbers
  the client's float32 preprocessing would have sent). Both take batches of up to 8. SIGTERM stops
  it cleanly (PyTriton's workspace is removed; a killed server leaves one that blocks nothing here,
  since each start gets its own).
- Imported from the tests (the project's venv), `TritonTestServer` starts that script as a
  subprocess on free 127.0.0.1 ports, waits for the models to be ready, and stops or kills it.
  `triton_unavailable()` says what is missing to run one (skip reason), or None.

Set VIGIL_TRITON_VENV to use another venv than `.venv-triton` at the repository root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODELS = ("yolov8n", "yolov8n_u8")
MAX_BATCH = 8
START_TIMEOUT_S = 120.0  # tritonserver plus two Python-backend stubs: ~10-30 s on 2 cores
STOP_TIMEOUT_S = 30.0


def triton_venv() -> Path:
    """The venv holding nvidia-pytriton (VIGIL_TRITON_VENV, default .venv-triton in the repository)."""
    return Path(os.environ.get("VIGIL_TRITON_VENV", REPO / ".venv-triton"))


def triton_unavailable() -> str | None:
    """Why a test server cannot start here (missing venv, PyTriton or tritonclient), or None."""
    python = triton_venv() / "bin" / "python"
    if not python.is_file():
        return (f"no Triton venv at {triton_venv()} (create it: python3 -m venv .venv-triton && "
                f".venv-triton/bin/pip install nvidia-pytriton 'numpy<2' onnxruntime; .ci/run does)")
    try:
        import tritonclient.grpc
        import tritonclient.http  # noqa: F401
    except ImportError as exc:
        return f"tritonclient is not installed in this venv ({exc}): pip install -e '.[triton]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonTestServer:
    """PyTriton serving yolov8n.onnx on free 127.0.0.1 ports, in its own process group.

    Args:
        model_path: the .onnx file both models run.
        threads: ONNX Runtime threads per request on the server (None: all cores).

    Attributes:
        grpc_url, http_url: host:port of each protocol (they stay the same across `restart`).
    """

    def __init__(self, model_path: Path, *, threads: int | None = None) -> None:
        self.model_path = Path(model_path)
        self.threads = threads
        self.grpc_port, self.http_port, self.metrics_port = _free_port(), _free_port(), _free_port()
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.http_url = f"127.0.0.1:{self.http_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="vigil-triton-", suffix=".log")[1])
        self.workspace_parent: Path | None = None

    def url(self, protocol: str) -> str:
        """host:port for `protocol` (grpc or http)."""
        return self.grpc_url if protocol == "grpc" else self.http_url

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Starts the server and waits until both models are ready. Raises RuntimeError (with the
        end of the server's log) when it exits or is not ready within `timeout_s`."""
        python = triton_venv() / "bin" / "python"
        env = dict(os.environ)
        # The Python backend's stub links libpython: with a pyenv interpreter that library is in its
        # LIBDIR, which the dynamic loader does not search by default.
        libdir = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"],
                                capture_output=True, text=True, timeout=30).stdout.strip()
        if libdir:
            env["LD_LIBRARY_PATH"] = libdir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        self.workspace_parent = Path(tempfile.mkdtemp(prefix="vigil-pytriton-"))
        cmd = [str(python), str(Path(__file__).resolve()), "--model", str(self.model_path), "--grpc-port", str(self.grpc_port),
               "--http-port", str(self.http_port), "--metrics-port", str(self.metrics_port),
               "--workspace", str(self.workspace_parent / "workspace")]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Triton test server exited with {self.proc.returncode} while starting; "
                                   f"its log ends:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.25)
        self.kill()
        raise RuntimeError(f"the Triton test server was not ready within {timeout_s:.0f} s; its log ends:\n{self.log_tail()}")

    def ready(self) -> bool:
        """Whether the server answers and both models are ready (HTTP, 1 s timeout)."""
        for model in MODELS:
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/models/{model}/ready", timeout=1.0) as r:
                    if r.status != 200:
                        return False
            except OSError:
                return False
        return True

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL to the whole process group after `timeout_s`."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()

    def kill(self) -> None:
        """SIGKILL to the server and everything it started (tritonserver, stubs): a crash."""
        if self.proc is None:
            return
        self._kill_group()

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Starts it again on the same ports (after `kill` or `stop`)."""
        self.stop()
        self.start(timeout_s)

    def _kill_group(self) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this object started (start_new_session)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        if self.workspace_parent is not None:  # PyTriton's sockets and model store (a killed server leaves them)
            shutil.rmtree(self.workspace_parent, ignore_errors=True)
            self.workspace_parent = None
        # The listening ports are free once the group is gone: wait for that, so a restart can bind them.
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and any(_port_taken(p) for p in (self.grpc_port, self.http_port)):
            time.sleep(0.1)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> TritonTestServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---- the server itself (runs in the Triton venv) -----------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import numpy as np
    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(args.model, sess_options=options, providers=["CPUExecutionProvider"])
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    hw = tuple(inp.shape[2:4])
    scale = np.float32(255.0)

    def make(uint8: bool):
        @batch
        def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
            x = inputs[inp.name]
            if uint8:  # the same float32 division the client's preprocessing does
                x = np.divide(x, scale, dtype=np.float32)
            return {out.name: session.run([out.name], {inp.name: np.ascontiguousarray(x, np.float32)})[0]}
        return infer

    workspace = Path(args.workspace)  # PyTriton makes it itself (an existing one is an error)
    config = TritonConfig(grpc_address="127.0.0.1", grpc_port=args.grpc_port, http_address="127.0.0.1",
                          http_port=args.http_port, metrics_port=args.metrics_port, allow_gpu_metrics=False,
                          exit_timeout_secs=5)
    triton = Triton(config=config, workspace=workspace)
    stopping = []

    def on_term(signum: int, frame: object) -> None:
        if not stopping:
            stopping.append(signum)
            raise KeyboardInterrupt  # leaves serve(): Triton.stop() below shuts down cleanly

    signal.signal(signal.SIGTERM, on_term)
    try:
        with triton:
            for name, dtype in (("yolov8n", np.float32), ("yolov8n_u8", np.uint8)):
                triton.bind(model_name=name, infer_func=make(dtype == np.uint8),
                            inputs=[Tensor(name=inp.name, dtype=dtype, shape=(3, *hw))],
                            outputs=[Tensor(name=out.name, dtype=np.float32, shape=(-1, -1))],
                            config=ModelConfig(max_batch_size=MAX_BATCH), strict=False)
            print(f"serving {MODELS} from {args.model}: grpc {args.grpc_port} http {args.http_port}", flush=True)
            triton.serve()
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workspace", required=True, help="PyTriton's workspace (must not exist yet)")
    return _serve(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
