"""`backend: triton` against a real Triton Inference Server (PyTriton's tritonserver serving
yolov8n.onnx through ONNX Runtime, tests/tools/triton_server.py): detections equal to the local
ONNX Runtime backend through the real letterbox, decoder and NMS, over gRPC and HTTP, float32 and
uint8, batch 1 and 4; the model facts read from the server; config errors; and a live graph that
keeps running while the server is killed and restarted.

Skipped, with the reason, where the Triton venv (.venv-triton) or tritonclient is missing; failed
instead when VIGIL_REQUIRE_TRITON=1 (.ci/run sets it after making the venv)."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import numpy as np
import pytest

from pipeline.backends import ModelLoadError
from pipeline.config import ConfigError, load_config
from pipeline.postprocess.yolo import DecodeParams
from tests.helpers import Running, detect_images, free_port, read_jsonl, wait_for
from tests.tools.triton_server import TritonTestServer, triton_unavailable

IMAGES = ["bus.jpg", "dog.jpg", "person.jpg", "street.png"]
MODEL_FOR = {"float32": "yolov8n", "uint8": "yolov8n_u8"}


def _need_triton() -> None:
    why = triton_unavailable()
    if why is None:
        return
    if os.environ.get("VIGIL_REQUIRE_TRITON") == "1":
        pytest.fail(f"VIGIL_REQUIRE_TRITON=1 but {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def server(model_path):
    _need_triton()
    srv = TritonTestServer(model_path)
    srv.start()
    yield srv
    srv.stop()


def _backend(server, protocol: str, input_dtype: str, **kw):
    from pipeline.backends.triton import TritonBackend

    return TritonBackend(server.url(protocol), MODEL_FOR[input_dtype], protocol=protocol, input_dtype=input_dtype, **kw)


def detect(backend, media, batch: int) -> dict:
    return detect_images(backend, media, IMAGES, batch, DecodeParams(conf=0.25, iou=0.45, max_det=300))


@pytest.fixture(scope="module")
def reference(ort_backend, media):
    return detect(ort_backend, media, 1)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("input_dtype", ["float32", "uint8"])
def test_detections_equal_onnxruntime_at_batch_1_and_4(server, model_path, media, reference, protocol, input_dtype):
    """uint8 too: the server divides the same uint8 values by 255 in float32 that the local
    preprocessing would have, so the model sees identical numbers (same bounds as OpenVINO's f32 test)."""
    backend = _backend(server, protocol, input_dtype, path=model_path)
    try:
        assert backend.info.input.dtype == np.dtype(input_dtype)
        for batch in (1, 4):
            got = detect(backend, media, batch)
            for name, r in reference.items():
                g = got[name]
                assert len(g) == len(r), f"{name} batch {batch}: {len(g)} detections, ONNX Runtime found {len(r)}"
                np.testing.assert_array_equal(g.class_id, r.class_id, err_msg=name)
                np.testing.assert_allclose(g.xyxy, r.xyxy, atol=1.0, err_msg=name)
                np.testing.assert_allclose(g.confidence, r.confidence, atol=1e-3, err_msg=name)
    finally:
        backend.close()


def test_model_info_from_the_server_and_class_names(server, model_path, ort_backend, caplog):
    with_path = _backend(server, "grpc", "float32", path=model_path)
    info = with_path.info
    assert (info.input.name, info.input.shape, info.input.dtype) == ("images", (3, 640, 640), np.float32)
    assert info.outputs == ort_backend.info.outputs  # shapes fixed by the warm-up request ([-1, -1] on the server)
    assert (info.max_batch, info.min_batch, info.batch_text()) == (8, 1, "profile 1..8")  # max_batch_size 8
    assert info.class_names == ort_backend.info.class_names and info.stride == 32  # from the local .onnx
    with_path.close()
    named = _backend(server, "http", "uint8", class_names={0: "human"})
    assert named.info.class_names == {0: "human"} and named.info.path.name == "yolov8n_u8"
    named.close()
    caplog.clear()
    bare = _backend(server, "grpc", "float32")
    assert bare.info.class_names == {} and bare.info.stride is None
    assert "no class names" in caplog.text and "using numbers" in caplog.text
    bare.close()


def test_load_errors_say_what_was_expected_and_what_the_server_has(server, model_path):
    from pipeline.backends.triton import TritonBackend

    with pytest.raises(ModelLoadError, match=r"config says input_dtype float32 \(FP32\), the server's input 'images' is "
                                             r"UINT8 \(set input_dtype: uint8\)"):
        TritonBackend(server.grpc_url, "yolov8n_u8", input_dtype="float32")
    # (PyTriton restricts the repository index: the message then says why the list is unknown)
    with pytest.raises(ModelLoadError, match=r"model 'nope' is not ready there .*models there: (\['yolov8n', 'yolov8n_u8'\]|unknown)"):
        TritonBackend(server.grpc_url, "nope")
    for protocol in ("grpc", "http"):
        t0 = time.monotonic()
        with pytest.raises(ModelLoadError, match=rf"cannot reach Triton server 127.0.0.1:\d+ \({protocol}\) within 2 s"):
            TritonBackend(f"127.0.0.1:{free_port()}", "yolov8n", protocol=protocol, timeout_s=2)
        assert time.monotonic() - t0 < 10


def test_config_path_is_optional_for_triton_only_and_batch_fits_the_server(server, tmp_path, model_path, media):
    def config(model: str) -> object:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"""
cameras:
  - {{id: cam, source: {{type: images, path: {media / 'bus.jpg'}}}, model: m}}
models:
  - {model}
""")
        return load_config(cfg)

    loaded = config(f"{{id: m, backend: triton, url: '{server.grpc_url}', model_name: yolov8n}}")
    m = loaded.config.models[0]
    assert (m.path, m.protocol, m.input_dtype, m.model_version, m.timeout_s) == (None, "grpc", "float32", "", 10.0)
    with pytest.raises(ConfigError, match="path is required for backend onnxruntime"):
        config("{id: m, backend: onnxruntime}")
    with pytest.raises(ConfigError, match="backend triton needs url and model_name"):
        config("{id: m, backend: triton}")
    with pytest.raises(ConfigError, match="model_name and url are for backend triton only, the backend is auto"):
        config(f"{{id: m, path: {model_path}, url: 'h:1', model_name: x}}")
    from pipeline.graph.models import load_models

    with pytest.raises(ConfigError, match=r"takes batches of up to 8 \(max_batch_size in its config.pbtxt\), got batch: 9"):
        load_models(config(f"{{id: m, backend: triton, url: '{server.grpc_url}', model_name: yolov8n, batch: 9}}"))
    models = load_models(config(f"{{id: m, backend: triton, url: '{server.http_url}', protocol: http, model_name: "
                                f"yolov8n_u8, input_dtype: uint8, batch: 4, path: {model_path}}}"))
    assert models["m"].backend.info.input.dtype == np.uint8
    models["m"].backend.close()


def _get_json(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return {}


def test_server_killed_and_restarted_mid_run_the_graph_keeps_running(server, tmp_path, model_path, media):
    """A live camera through Triton: kill -9 the server, the lane goes unavailable, frames are
    dropped and counted, nothing crashes; start it again and detections resume (lane ready)."""
    from pipeline.graph import build_graph

    port = free_port()
    cfg = tmp_path / "live.yaml"
    cfg.write_text(f"""
cameras:
  - id: cam
    source: {{type: file, path: {media / 'office_walk.mp4'}, realtime: true, loop: true, fps: 5}}
    model: m
models:
  - {{id: m, backend: triton, url: '{server.grpc_url}', model_name: yolov8n_u8, input_dtype: uint8, path: {model_path},
      timeout_s: 2}}
sinks:
  - {{type: jsonl, path: out/live.jsonl}}
metrics: {{port: {port}}}
""")
    graph = build_graph(load_config(cfg))
    run = Running(graph, metrics_port=port)
    metrics = graph.ctx.metrics
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: metrics.camera("cam").detections >= 5, 60), "no detections through Triton"
        killed_at = time.time()
        assert _get_json(f"{base}/healthz")["models"]["m"]["state"] == "ready"
        server.kill()
        assert wait_for(lambda: metrics.model("m").state == "unavailable", 20), "the lane never went unavailable"
        assert wait_for(lambda: metrics.camera("cam").drops.get("model_unavailable", 0) >= 3, 20)
        health = _get_json(f"{base}/healthz")
        assert health["models"]["m"]["state"] == "unavailable" and health["status"] == "degraded"
        assert "vigil_model_up{model=\"m\"} 0.0" in urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert run.error is None and graph.runner.alive()
        dropped = metrics.model("m").dropped
        server.start()
        restarted_at = time.time()
        before = metrics.camera("cam").detections
        assert wait_for(lambda: metrics.model("m").state == "ready", 30), "the lane never came back"
        assert wait_for(lambda: metrics.camera("cam").detections >= before + 5, 30), "detections did not resume"
        health = _get_json(f"{base}/healthz")
        assert health["models"]["m"] | {"state_for_s": 0} == {"state": "ready", "state_reason": "", "state_for_s": 0,
                                                                "dropped": health["models"]["m"]["dropped"], "outages": 1}
        assert health["models"]["m"]["dropped"] >= dropped >= 3
        assert "vigil_model_up{model=\"m\"} 1.0" in urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    finally:
        if server.proc is None:
            server.start()  # the module's other tests still need it
        summary = run.finish()
    cam = next(c for c in summary.cameras if c.camera_id == "cam")
    assert cam.drops.get("model_unavailable", 0) >= 3
    records = read_jsonl(tmp_path / "out" / "live.jsonl")
    found = [r["capture_ts"] for r in records if any(d["class_name"] == "person" for d in r["detections"])]
    assert sum(r["capture_ts"] < killed_at for r in records) >= 5  # frames through Triton before the kill
    assert sum(t > restarted_at for t in found) >= 3, (killed_at, restarted_at, found)  # people after the restart


@pytest.mark.parametrize("in_flight", [1, 3])
def test_batches_in_flight_give_the_local_results_in_order(server, tmp_path, model_path, media, in_flight):
    """A file through the whole graph with up to `in_flight` batches at the server: every frame
    out once, in order, with the same boxes as local ONNX Runtime."""
    from pipeline.graph import build_graph
    from pipeline.runner import execute

    def run(name: str, model: str) -> list[dict]:
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"""
cameras:
  - id: cam
    source: {{type: file, path: {media / 'crowd_overhead.mp4'}, max_frames: 24}}
    model: m
models:
  - {model}
sinks:
  - {{type: jsonl, path: out/{name}.jsonl}}
pipeline: {{slots: 5}}
""")
        execute(build_graph(load_config(cfg)), handle_signals=False)
        return read_jsonl(tmp_path / "out" / f"{name}.jsonl")

    local = run("local", f"{{id: m, backend: onnxruntime, path: {model_path}, batch: 2}}")
    remote = run("remote", f"{{id: m, backend: triton, url: '{server.grpc_url}', model_name: yolov8n, path: {model_path}, "
                           f"batch: 2, in_flight: {in_flight}}}")
    assert [r["seq"] for r in remote] == list(range(24))  # each frame once, in order
    for a, b in zip(local, remote, strict=True):
        assert len(a["detections"]) == len(b["detections"]), a["seq"]
        for da, db in zip(a["detections"], b["detections"], strict=True):
            assert da["class_id"] == db["class_id"] and np.allclose(da["box"], db["box"], atol=0.5), (a["seq"], da, db)


def test_bench_runs_against_the_server(server, media, model_path):
    """`run.py bench --video V --backend triton --url ... --model-name ...`: raw (one batch at a
    time at the server) against the pipeline (batches in flight), last line as for local backends."""
    import re

    from conftest import run_cli

    result = run_cli("bench", "--video", str(media / "people_small.mp4"), "--model", str(model_path), "--frames", "24",
                     "--batch", "2", "--rounds", "1", "--no-sequential", "--backend", "triton", "--url", server.grpc_url,
                     "--model-name", "yolov8n_u8", "--input-dtype", "uint8", "--in-flight", "2", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.fullmatch(r"pipeline_fps=\d+\.\d+ raw_fps=\d+\.\d+ ratio=\d+\.\d+", result.stdout.strip().splitlines()[-1]), result.stdout
