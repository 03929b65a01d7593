"""pipeline.runner in-process: signals, the metrics port, the summary (real model, real graph)."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from pipeline.config import ConfigError, config_from_data
from pipeline.graph import build_graph
from pipeline.metrics import Metrics
from pipeline.runner import RunSummary, execute, format_summary


def _graph(tmp_path: Path, model_path: Path, *, metrics_port: int | None = None, frames: int | None = None):
    """An endless (or `frames` long) synthetic file-like camera through the real model into JSONL."""
    data = {
        "cameras": [{"id": "cam0", "model": "m",
                     "source": {"type": "synthetic", "width": 160, "height": 120, "frames": frames}}],
        "models": [{"id": "m", "path": str(model_path), "backend": "onnxruntime", "threads": 1}],
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}],
    }
    if metrics_port is not None:
        data["metrics"] = {"port": metrics_port}
    loaded = config_from_data(data, origin="error", base_dir=tmp_path, key_names={("metrics", "port"): "--metrics-port"})
    return build_graph(loaded, reloadable=False), loaded


def test_a_busy_metrics_port_is_a_setup_error_naming_the_port_and_leaves_no_handler(tmp_path, model_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        graph, loaded = _graph(tmp_path, model_path, metrics_port=port, frames=5)
        before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        with pytest.raises(ConfigError) as caught:
            execute(graph, metrics_port=loaded.config.metrics.port)
    message = str(caught.value)
    assert "\n" not in message and f"127.0.0.1:{port}" in message and "--metrics-port" in message, message
    assert {s: signal.getsignal(s) for s in before} == before, "execute left its signal handlers installed"
    assert not (tmp_path / "out.jsonl").exists(), "nothing may be opened (or truncated) by a run that cannot start"


def test_summary_of_a_run_without_frames_shows_no_nan():
    metrics = Metrics()
    metrics.camera("cam0")
    metrics.stage("capture[cam0]")
    metrics.stage("inference[m]")
    summary = RunSummary(0.0, 0, metrics.camera_summaries(), metrics.stage_summaries(), False, False)
    text = format_summary(summary)
    assert "nan" not in text.lower(), text
    assert text.splitlines()[0].startswith("0 frames in 0.0 s")
