"""Image file or directory-of-images source. Every file is one frame, named in its record.

Like every source it only opens, reads and closes: pacing, stamping, queueing and reconnecting are
the capture stage's job (sources/base.py, sources/live.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from pipeline.sources.base import Source, SourceError, SourceFrame, SourceInfo

if TYPE_CHECKING:
    from pipeline.config import ImagesSourceConfig

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def list_images(path: Path) -> list[Path]:
    """The image files of a directory (sorted by name), or the single image file `path`."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceError(f"image source not found: {path} (expected an image file or a directory of images)")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(
            f"no images in {path}: expected files ending in {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    return files


class ImageSource(Source):
    """An image file or a folder of images, in name order (`type: images`)."""

    @classmethod
    def from_config(cls, config: ImagesSourceConfig, *, camera_id: str, read_timeout_s: float) -> ImageSource:
        return cls(config.path)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._files: list[Path] = []
        self._next = 0

    @property
    def name(self) -> str:
        return self.path.name

    def open(self) -> SourceInfo:
        self._files = list_images(self.path)
        self._next = 0
        return SourceInfo(fps=None, total_frames=len(self._files))

    def read(self, decode: bool = True) -> SourceFrame | None:
        if self._next >= len(self._files):
            return None
        path = self._files[self._next]
        self._next += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"cannot decode image {path}: not an image OpenCV can read")
        return SourceFrame(image, path.name)

    def close(self) -> None:
        self._files = []
