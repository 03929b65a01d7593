"""Adding a sink takes one class and one registry entry (plus its config model)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from pipeline.config import Strict, config_from_data
from pipeline.frames import FrameResult
from pipeline.graph import build_graph
from pipeline.runner import execute
from pipeline.sinks import SINKS, Sink, SinkContext


class CountingSinkConfig(Strict):
    """Its config section: `{type: counting}`."""

    type: Literal["counting"]
    cameras: list[str] | None = None


class CountingSink(Sink):
    """A do-nothing sink that counts what reaches it."""

    def __init__(self) -> None:
        self.name = "counting"
        self.frames = 0
        self.ended: list[str] = []
        self.opened = self.closed = False

    @classmethod
    def from_config(cls, config: CountingSinkConfig, context: SinkContext) -> CountingSink:
        return cls()

    def open(self) -> None:
        self.opened = True

    def write(self, result: FrameResult) -> None:
        self.frames += 1

    def end_camera(self, camera_id: str) -> None:
        self.ended.append(camera_id)

    def close(self) -> None:
        self.closed = True


def test_a_do_nothing_sink_is_one_class_and_one_registry_entry(tmp_path, model_path, media):
    SINKS.register("counting", CountingSink)  # the registry entry
    try:
        loaded = config_from_data({
            "cameras": [{"id": "yard", "model": "m", "source": {"type": "file", "path": str(media / "people_small.mp4"),
                                                                 "max_frames": 12}}],
            "models": [{"id": "m", "path": str(model_path)}],
        }, origin="test", base_dir=tmp_path)
        # A config model outside the schema's union: swapped in after validation.
        config = loaded.config.model_copy(update={"sinks": [CountingSinkConfig(type="counting")]})
        graph = build_graph(dataclasses.replace(loaded, config=config))
        execute(graph, handle_signals=False)
    finally:
        SINKS.unregister("counting")
    [sink] = graph.sinks
    assert isinstance(sink, CountingSink)
    assert (sink.frames, sink.ended, sink.opened, sink.closed) == (12, ["yard"], True, True)
