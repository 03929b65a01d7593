"""Reload as a diff of cameras, and its per-camera report when a change cannot be made."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import CameraConfig, ConfigError, LoadedConfig, config_from_data
from pipeline.graph.reload import ReloadReport, apply_reload, diff_cameras


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
