"""Reload as a diff of cameras, and its per-camera report when a change cannot be made."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.config import CameraConfig, ConfigError, LoadedConfig, config_from_data, load_config
from pipeline.graph import build_graph, reload
from pipeline.graph.reload import ReloadReport, apply_reload, diff_cameras
from pipeline.runner import execute
from tests.helpers import read_jsonl, wait_for


def cam(cid: str, fps: float = 25.0) -> CameraConfig:
    return CameraConfig(id=cid, model="m", source={"type": "synthetic", "fps": fps, "live": True})


def loaded(*cams: CameraConfig) -> LoadedConfig:
    return config_from_data({"cameras": [c.model_dump() for c in cams], "models": [{"id": "m", "path": "m.onnx"}]},
                            origin="test", base_dir=Path("/"))


def test_diff_adds_removes_and_restarts_only_what_changed():
    running = {"a": cam("a"), "b": cam("b"), "c": cam("c")}
    diff = diff_cameras(running, set(), [cam("a"), cam("b", fps=10), cam("d")])
    assert (diff.added, diff.removed, diff.restarted) == (["d"], ["c"], ["b"])


def test_a_camera_left_draining_is_restarted_or_removed_by_the_next_reload():
    diff = diff_cameras({"a": cam("a")}, {"b", "c"}, [cam("a"), cam("b")])
    assert (diff.added, diff.removed, diff.restarted) == ([], ["c"], ["b"])


class FakeHost:
    """A CameraHost whose stop of one camera times out (a camera stuck draining)."""

    def __init__(self, running: list[CameraConfig], stuck: str) -> None:
        self.running = {c.id: c for c in running}
        self.draining: set[str] = set()
        self.stuck = stuck
        self.started: list[str] = []

    def running_cameras(self) -> dict[str, CameraConfig]:
        return dict(self.running)

    def draining_cameras(self) -> set[str]:
        return set(self.draining)

    def check_cameras(self, new: LoadedConfig, camera_ids: set[str]) -> ConfigError | None:
        return None

    def stop_camera(self, camera_id: str, timeout_s: float) -> None:
        self.running.pop(camera_id, None)
        if camera_id == self.stuck:
            self.draining.add(camera_id)
            raise TimeoutError(f"camera {camera_id!r} did not finish within {timeout_s:.0f} s of its removal")
        self.draining.discard(camera_id)

    def start_camera(self, c: CameraConfig) -> None:
        self.running[c.id] = c
        self.started.append(c.id)


def test_a_removal_that_times_out_is_reported_and_the_next_reload_converges():
    old = loaded(cam("a"), cam("b"), cam("c"))
    host = FakeHost([cam("a"), cam("b"), cam("c")], stuck="b")
    new = loaded(cam("a", fps=10), cam("b", fps=10), cam("c"), cam("d"))
    report = apply_reload(host, old, new)
    # b's restart could not stop the old one: reported; a and d still applied.
    assert report.restarted == ["a"] and report.added == ["d"] and list(report.failed) == ["b"]
    assert "did not finish within 30 s" in report.failed["b"] and report.to_dict()["ok"] is False
    host.stuck = ""  # the old b finally ends
    again = apply_reload(host, old, new)
    assert again == ReloadReport(added=[], removed=[], restarted=["b"], not_applied=[], failed={})
    assert host.running == {c.id: c for c in new.config.cameras}
    assert apply_reload(host, old, new) == ReloadReport([], [], [], [], {})


def test_sections_that_need_a_restart_are_reported():
    old = loaded(cam("a"))
    new = config_from_data({"cameras": [cam("a").model_dump()], "models": [{"id": "m", "path": "m.onnx", "conf": 0.5}]},
                           origin="test", base_dir=Path("/"))
    report = apply_reload(FakeHost([cam("a")], stuck=""), old, new)
    assert report.not_applied == ["models"]


def test_problems_in_the_new_config_change_nothing():
    class Refusing(FakeHost):
        def check_cameras(self, new: LoadedConfig, camera_ids: set[str]) -> ConfigError | None:
            return ConfigError([new.issue(("cameras", 0, "model"), "nope")])

    host = Refusing([cam("a")], stuck="")
    with pytest.raises(ConfigError, match="nope"):
        apply_reload(host, loaded(cam("a")), loaded(cam("b")))
    assert list(host.running) == ["a"] and host.started == []


def test_on_a_real_graph_a_removal_that_times_out_leaves_the_others_applied_and_the_next_reload_converges(
        tmp_path, model_path, media, monkeypatch):
    # `slow` is a file camera on a model of its own whose slots the test holds (a stuck backend):
    # its end of stream cannot pass the model, so its removal times out. The other cameras' model
    # lane runs freely: a restart and an add in the same reload are applied.
    cfg = tmp_path / "site.yaml"
    slow = f"  - {{id: slow, source: {{type: file, path: {media / 'people_small.mp4'}, loop: true}}, model: lone}}\n"

    def write(cams: str) -> LoadedConfig:
        lone = f"  - {{id: lone, path: {model_path}}}\n" if "model: lone" in cams else ""
        cfg.write_text(f"cameras:\n{cams}models:\n  - {{id: yolo, path: {model_path}}}\n{lone}"
                       f"sinks:\n  - {{type: jsonl, path: {tmp_path / 'all.jsonl'}}}\n")
        return load_config(cfg)

    def live(cid: str, fps: int = 2) -> str:
        return f"  - {{id: {cid}, source: {{type: synthetic, live: true, fps: {fps}, width: 160, height: 120}}, model: yolo}}\n"

    graph = build_graph(write(slow + live("a") + live("c")), reloadable=True)
    runner = threading.Thread(target=execute, args=(graph,), kwargs={"handle_signals": False}, daemon=True)
    runner.start()
    metrics = graph.ctx.metrics
    ring = graph.wiring.lanes["lone"].ring
    held = []
    try:
        assert wait_for(lambda: metrics.camera("slow").frames_out > 2 and metrics.camera("a").frames_out > 2, 60)
        held = [ring.acquire(graph.ctx.stop) for _ in ring.slots]  # model lone is stuck from now on
        # Long enough for the restarted camera's queued frames on a busy machine; slow's never pass.
        monkeypatch.setattr(reload, "REMOVE_TIMEOUT_S", 8.0)
        new = write(live("a", fps=3) + live("c") + live("d"))
        report = graph.apply(new)
        assert (report.added, report.removed, report.restarted) == (["d"], [], ["a"]), report
        assert list(report.failed) == ["slow"] and "TimeoutError" in report.failed["slow"]
        assert report.not_applied == ["models"]  # model lone goes with a restart; its camera goes now
        assert set(graph.running_cameras()) == {"a", "c", "d"} and graph.draining_cameras() == {"slow"}
        # Model lone recovers; the same config again removes the camera left draining.
        for slot in held:
            ring.release(slot)
        held = []
        monkeypatch.setattr(reload, "REMOVE_TIMEOUT_S", 120.0)
        assert graph.apply(new) == ReloadReport(added=[], removed=["slow"], restarted=[], not_applied=["models"],
                                                failed={})
        assert graph.apply(new) == ReloadReport([], [], [], ["models"], {})
        assert graph.running_cameras() == {c.id: c for c in new.config.cameras} and not graph.draining_cameras()
        assert wait_for(lambda: metrics.camera("d").frames_out >= 2, 60)
    finally:
        for slot in held:
            ring.release(slot)
        graph.runner.drain()
        runner.join(60)
    assert not runner.is_alive() and not graph.runner.errors
    assert {r["camera"] for r in read_jsonl(tmp_path / "all.jsonl")} == {"slow", "a", "c", "d"}
