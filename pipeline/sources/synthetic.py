"""Synthetic source: a moving filled rectangle on a grey background, at a given size.

For tests and benchmarks that need a camera with known timing and no decoder in the way."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pipeline.sources.base import Source, SourceFrame, SourceInfo

if TYPE_CHECKING:
    from pipeline.config import SyntheticSourceConfig


class SyntheticSource(Source):
    """A moving rectangle at a given size (`type: synthetic`), for tests and benchmarks."""

    @classmethod
    def from_config(cls, config: SyntheticSourceConfig, *, camera_id: str, read_timeout_s: float) -> SyntheticSource:
        return cls(config.width, config.height, frames=config.frames, name=camera_id)

    def __init__(self, width: int, height: int, *, frames: int | None, name: str = "synthetic") -> None:
        self.width = width
        self.height = height
        self.frames = frames
        self._name = name
        self._index = 0
        self._background = np.full((height, width, 3), 90, np.uint8)

    @property
    def name(self) -> str:
        return self._name

    def open(self) -> SourceInfo:
        self._index = 0
        return SourceInfo(fps=None, total_frames=self.frames)  # the rate is the capture stage's pacing

    def read(self, decode: bool = True) -> SourceFrame | None:
        if self.frames is not None and self._index >= self.frames:
            return None
        image = self._background.copy()
        size = max(8, min(self.width, self.height) // 6)
        span = max(1, self.width - size)
        x = (self._index * 7) % span
        y = (self.height - size) // 2
        image[y : y + size, x : x + size] = (40, 160, 230)
        self._index += 1
        return SourceFrame(image, self._name)

    def close(self) -> None:
        pass
