"""Triton Inference Server backend (`backend: triton`): the model runs on a server, spoken to in
the KServe v2 protocol (gRPC or HTTP) through NVIDIA's `tritonclient` (pip install 'vigil[triton]').

At load time it reads the model's metadata and config from the server (input name, shape and
datatype, outputs, max_batch_size, string `parameters` such as `names`) and runs one warm-up
request, which also fixes output shapes the server leaves open (-1). `infer` sends rows 0..n-1 of
the slot's input and writes the reply into the same rows of the slot's outputs.

Input: NCHW either way. `input_dtype: float32` sends the letterboxed RGB image in 0..1 (what the
local backends run; 4.9 MB per 640x640 frame); `input_dtype: uint8` sends it in 0..255 (1.2 MB) and
the server divides by 255 (deploy/triton/ has models that do). Preprocessing writes the slot in the
model's input dtype (pipeline/preprocess.py), so uint8 costs no conversion here.

A server that is down or answers late never ends the run: `infer` raises BackendUnavailable (the
inference stage drops that batch, counted `model_unavailable`, and marks the lane unavailable).
After a failure, requests are not sent again for a short backoff (0.25 s, doubling to 2 s) so a
dead server costs no time per batch, and each retry uses a fresh connection (a gRPC channel left in
its own reconnect backoff could otherwise stay down for up to two minutes after the server is back).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pipeline.backends.base import BackendUnavailable, ModelInfo, ModelLoadError, TensorSpec, parse_ultralytics_metadata
from pipeline.backends.triton_meta import local_metadata, parse_server_model
from pipeline.slots import Slot

if TYPE_CHECKING:
    from pipeline.config import ModelConfig

log = logging.getLogger(__name__)

# KServe v2 datatypes this backend sends or reads, and their numpy types.
_V2_DTYPES = {"FP32": np.dtype(np.float32), "UINT8": np.dtype(np.uint8), "FP16": np.dtype(np.float16)}
_INPUT_DTYPES = {"float32": "FP32", "uint8": "UINT8"}
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 2.0


def _client_module(protocol: str) -> Any:
    """tritonclient.grpc or tritonclient.http; ModelLoadError naming the extra when missing."""
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as exc:
        raise ModelLoadError(
            f"backend triton needs tritonclient with {protocol} support ({exc}): pip install 'vigil[triton]' "
            f"(or pip install 'tritonclient[grpc,http]>=2.40')"
        ) from None
    return module


class TritonBackend:
    """A model served by a Triton Inference Server (`backend: triton`).

    Args:
        url: the server's host:port (its gRPC port for grpc, its HTTP port for http).
        model_name: the model's name in the server's repository.
        protocol: grpc or http.
        model_version: the version to run; "" lets the server choose.
        input_dtype: float32 (image in 0..1) or uint8 (0..255, the server normalises); must match
            the server model's input datatype (FP32 or UINT8).
        timeout_s: the longest any request (connecting, metadata, one inference) may take.
        class_names: the config's class names; else the server config's `names` parameter, else
            the Ultralytics metadata of `path`, else numbers (with a warning).
        path: a local copy of the model's .onnx, read only for class names, imgsz and stride.
        input_size: [H, W] when the server model's image size is variable (-1).

    Returns (from `from_config` / the constructor):
        A connected backend whose `info` describes the server's model. Raises ModelLoadError,
        saying what was expected and what the server has, when the server cannot be reached in
        `timeout_s`, the model is not ready there, or it does not fit the config.
    """

    @classmethod
    def from_config(cls, config: ModelConfig, *, intra_op_threads: int | None = None) -> TritonBackend:
        """Connects to the server a `models[]` entry names (`intra_op_threads` does not apply: the
        server runs the model). See the class docstring for what it returns and raises."""
        assert config.url is not None and config.model_name is not None  # ModelConfig checks both for triton
        backend = cls(config.url, config.model_name, protocol=config.protocol, model_version=config.model_version,
                      input_dtype=config.input_dtype, timeout_s=config.timeout_s, class_names=config.names,
                      path=config.path, input_size=config.input_size, in_flight=config.in_flight)
        mbs = backend.server_model.max_batch_size
        if mbs and config.batch > mbs:
            backend.close()
            raise ModelLoadError(f"Triton model {config.model_name!r} takes batches of up to {mbs} (max_batch_size in its "
                                 f"config.pbtxt), got batch: {config.batch} (set batch <= {mbs}, or raise max_batch_size "
                                 f"on the server)")
        return backend

    def __init__(
        self,
        url: str,
        model_name: str,
        *,
        protocol: Literal["grpc", "http"] = "grpc",
        model_version: str = "",
        input_dtype: Literal["float32", "uint8"] = "float32",
        timeout_s: float = 10.0,
        class_names: dict[int, str] | None = None,
        path: Path | None = None,
        input_size: tuple[int, int] | None = None,
        in_flight: int = 2,
    ) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {in_flight}")
        self.url = url
        # Batches at the server at once (see `submit`): the network's round trip overlaps the
        # server's work on the previous batch instead of adding to it.
        self.max_in_flight = in_flight
        self._pool: ThreadPoolExecutor | None = None
        self.model_name = model_name
        self.protocol = protocol
        self.model_version = model_version
        self.timeout_s = float(timeout_s)
        self._module = _client_module(protocol)
        from tritonclient.utils import InferenceServerException

        self._server_error: type[Exception] = InferenceServerException
        self._local = threading.local()  # one client per thread (the HTTP client is gevent-based: not shareable)
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        self._retry_at = 0.0  # monotonic time before which infer does not try the server again
        self._retry_s = RETRY_FIRST_S
        self._last_error = ""
        where = f"Triton server {url} ({protocol})"
        try:
            client = self._client()
            if not self._call(client.is_server_live):
                raise ModelLoadError(f"{where} answers but is not live")
            if not self._call(client.is_model_ready, model_name, model_version):
                raise ModelLoadError(f"{where}: model {model_name!r}{self._version_text()} is not ready there "
                                     f"(check the server's log and its model repository; models there: "
                                     f"{self._repository_names(client)})")
            metadata = self._call(client.get_model_metadata, model_name, model_version, json=True)
            config = self._call(client.get_model_config, model_name, model_version, json=True)
        except ModelLoadError:
            self.close()
            raise
        except Exception as exc:  # noqa: BLE001 - connection refused, DNS, timeout: each client type raises its own
            self.close()
            raise ModelLoadError(f"cannot reach {where} within {self.timeout_s:g} s: {_short(exc)} (is the server "
                                 f"running, and is {url} its {protocol} port? gRPC defaults to 8001, HTTP to 8000)") from None
        self.server_model = parse_server_model(model_name, metadata, config)
        self.info = self._model_info(input_dtype, class_names, path, input_size)
        self._input_datatype = _INPUT_DTYPES[input_dtype]
        try:
            self.info = self._probe_outputs()
        except ModelLoadError:
            self.close()
            raise
        log.info("%s model %s%s (%s): input %s %s %s, outputs %s, batch %s, %d classes", where, model_name,
                 self._version_text(), self.server_model.platform, self.info.input.name, input_dtype,
                 self.info.input.shape, {o.name: o.shape for o in self.info.outputs}, self.info.batch_text(),
                 len(self.info.class_names))

    # ---- loading ----------------------------------------------------------------------------

    def _version_text(self) -> str:
        return f" version {self.model_version}" if self.model_version else ""

    def _repository_names(self, client: Any) -> str:
        try:
            index = self._call(client.get_model_repository_index, json=True)
        except Exception as exc:  # noqa: BLE001 - only for the message: say why it is unknown
            return f"unknown ({_short(exc)})"
        models = index.get("models", index) if isinstance(index, dict) else index
        return str(sorted({str(m.get("name")) for m in models})) if models else "none"

    def _model_info(self, input_dtype: str, class_names: dict[int, str] | None, path: Path | None,
                    input_size: tuple[int, int] | None) -> ModelInfo:
        sm = self.server_model
        name = self.model_name
        want = _INPUT_DTYPES[input_dtype]
        if sm.input_datatype != want:
            other = {v: k for k, v in _INPUT_DTYPES.items()}.get(sm.input_datatype)
            hint = f"set input_dtype: {other}" if other else "serve a model that takes FP32 or UINT8"
            raise ModelLoadError(f"Triton model {name!r}: the config says input_dtype {input_dtype} ({want}), the "
                                 f"server's input {sm.input_name!r} is {sm.input_datatype} ({hint})")
        shape = sm.input_shape
        if sm.max_batch_size > 0:
            row = shape[1:] if len(shape) == 4 else shape
            max_batch, min_batch = sm.max_batch_size, 1
        else:
            batch_dim, row = (shape[0], shape[1:]) if len(shape) == 4 else (-1, shape)
            max_batch, min_batch = (batch_dim, None) if batch_dim > 0 else (None, None)
        if len(row) != 3 or row[0] != 3:
            raise ModelLoadError(f"Triton model {name!r}: expected an NCHW image input with 3 channels, the server's "
                                 f"input {sm.input_name!r} has shape {list(shape)} (max_batch_size {sm.max_batch_size})")
        meta = {k: v for k, v in sm.parameters.items() if k in ("names", "imgsz", "stride")}
        local: dict[str, str] = local_metadata(path) if path is not None else {}
        server_names, server_imgsz, server_stride = parse_ultralytics_metadata(meta)
        local_names, local_imgsz, local_stride = parse_ultralytics_metadata(local)
        if row[1] > 0 and row[2] > 0:
            hw = (row[1], row[2])
            if input_size is not None and tuple(input_size) != hw:
                raise ModelLoadError(f"Triton model {name!r}: input_size {list(input_size)} does not fit the server "
                                     f"model's fixed input {list(hw)} (remove input_size)")
        elif input_size is not None:
            hw = (int(input_size[0]), int(input_size[1]))
        elif (server_imgsz or local_imgsz) is not None:
            hw = server_imgsz or local_imgsz  # type: ignore[assignment]
        else:
            raise ModelLoadError(f"Triton model {name!r}: its input height/width are variable ({list(shape)}): set "
                                 f"input_size: [H, W] for this model in the config")
        names = class_names or server_names or local_names
        if not names:
            log.warning("Triton model %s: no class names in the config, in the server's model config (parameters "
                        "{key: \"names\"}) or in a local .onnx (path): using numbers", name)
        stride = server_stride or local_stride
        dtype = _V2_DTYPES[want]
        label = Path(path.name if path is not None else name)
        return ModelInfo(label, TensorSpec(sm.input_name, (3, *hw), dtype), (), max_batch, names, stride, min_batch)

    def _probe_outputs(self) -> ModelInfo:
        """One request on a zero input: output shapes per row (the server may leave them -1), and
        proof that the model runs. Raises ModelLoadError with the server's answer."""
        from dataclasses import replace

        rows = self.info.fixed_batch or 1
        probe = np.zeros((rows, *self.info.input.shape), self.info.input.dtype)
        try:
            result = self._request(probe)
        except Exception as exc:  # noqa: BLE001 - the server's own error, or the connection's
            raise ModelLoadError(f"Triton model {self.model_name!r}: a test request on a zero {list(probe.shape)} "
                                 f"{self.info.input.dtype} input failed: {_short(exc)}") from None
        specs = []
        for out_name, datatype in self.server_model.outputs:
            if datatype not in ("FP32", "FP16"):
                raise ModelLoadError(f"Triton model {self.model_name!r}: output {out_name} is {datatype}, expected FP32 or FP16")
            value = result.as_numpy(out_name)
            if value is None or value.ndim < 1 or value.shape[0] != rows:
                raise ModelLoadError(f"Triton model {self.model_name!r}: output {out_name} of the test request has shape "
                                     f"{None if value is None else list(value.shape)}, expected {rows} rows first")
            specs.append(TensorSpec(out_name, tuple(value.shape[1:]), np.dtype(np.float32)))
        return replace(self.info, outputs=tuple(specs))

    # ---- requests ---------------------------------------------------------------------------

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self._module.InferenceServerClient(self.url)
            else:
                client = self._module.InferenceServerClient(self.url, connection_timeout=self.timeout_s,
                                                            network_timeout=self.timeout_s)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _drop_client(self) -> None:
        """Closes this thread's client: the next request connects afresh."""
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with self._clients_lock:
                if client in self._clients:
                    self._clients.remove(client)
            _close_quietly(client)

    def _call(self, method: Any, *args: Any, json: bool = False) -> Any:
        """A metadata call with the timeout (the gRPC client takes it per call, HTTP per client)."""
        kwargs: dict[str, Any] = {}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
            if json:
                kwargs["as_json"] = True
        return method(*args, **kwargs)

    def _request(self, x: np.ndarray) -> Any:
        module = self._module
        inp = module.InferInput(self.info.input.name, list(x.shape), _INPUT_DTYPES["uint8" if x.dtype == np.uint8 else "float32"])
        inp.set_data_from_numpy(x) if self.protocol == "grpc" else inp.set_data_from_numpy(x, binary_data=True)
        if self.protocol == "grpc":
            outputs = [module.InferRequestedOutput(name) for name, _ in self.server_model.outputs]
            return self._client().infer(self.model_name, [inp], model_version=self.model_version, outputs=outputs,
                                        client_timeout=self.timeout_s)
        outputs = [module.InferRequestedOutput(name, binary_data=True) for name, _ in self.server_model.outputs]
        return self._client().infer(self.model_name, [inp], model_version=self.model_version, outputs=outputs)

    def infer(self, slot: Slot, n: int) -> None:
        """Sends rows 0..n-1 of the slot's input; writes the reply into the same rows of its outputs.

        Args:
            slot: a ring slot holding the batch's input.
            n: rows in use (a fixed-batch model always gets its full batch).

        Raises BackendUnavailable when the server cannot be reached, fails the request, answers
        past `timeout_s`, or answers with outputs of another shape; ValueError when `n` does not
        fit the slot (a bug in the caller).
        """
        n = self.info.fixed_batch or n
        x = slot.inputs[self.info.input.name]
        if not 1 <= n <= x.shape[0]:
            raise ValueError(f"batch of {n} does not fit slot {slot.index} of {x.shape[0]} rows")
        now = time.monotonic()
        if now < self._retry_at:
            raise BackendUnavailable(f"Triton server {self.url} unavailable ({self._last_error}); next try in "
                                     f"{self._retry_at - now:.2f} s")
        try:
            result = self._request(x[:n])
            for spec in self.info.outputs:
                value = result.as_numpy(spec.name)
                if value is None or value.shape != (n, *spec.shape):
                    raise BackendUnavailable(
                        f"Triton model {self.model_name!r}: expected output {spec.name} of shape {[n, *spec.shape]}, got "
                        f"{None if value is None else list(value.shape)} (was the model on the server replaced?)")
                slot.outputs[spec.name][:n] = value
        except Exception as exc:
            self._failed(exc)
            if isinstance(exc, BackendUnavailable):
                raise
            raise BackendUnavailable(f"Triton server {self.url} ({self.protocol}), model {self.model_name!r}: "
                                     f"{self._last_error}") from exc
        except BaseException as exc:  # gevent's Timeout (HTTP) is a BaseException
            if type(exc).__module__.startswith("gevent"):
                self._failed(exc)
                raise BackendUnavailable(f"Triton server {self.url} (http): no answer within {self.timeout_s:g} s") from exc
            raise
        self._retry_s = RETRY_FIRST_S

    def _failed(self, exc: BaseException) -> None:
        self._last_error = _short(exc)
        self._retry_at = time.monotonic() + self._retry_s
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
        self._drop_client()

    def submit(self, slot: Slot, n: int) -> Future[None]:
        """`infer(slot, n)` on one of `max_in_flight` worker threads (each with its own client);
        the future raises what `infer` raises. The inference stage keeps up to `max_in_flight`
        batches submitted and hands them on in order."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix=f"triton[{self.model_name}]")
        return self._pool.submit(self.infer, slot, n)

    def close(self) -> None:
        """Stops the in-flight workers and closes the connections (one per thread that used the backend)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            _close_quietly(client)


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception as exc:  # noqa: BLE001 - closing a broken connection: nothing left to do about it
        log.debug("closing a Triton client: %s", exc)


def _short(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line of at most `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
