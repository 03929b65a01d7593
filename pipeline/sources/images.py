"""Image file or directory-of-images source. Every file is one frame, named in its record.

A folder is a batch of independent pictures: a file that does not decode (empty, cut short, not an
image) is skipped with a warning and counted (`drops()`: `unreadable`), and the others go on. Only
a folder where no file decodes, or a single image that does not, is an error.

Like every source it only opens, reads and closes: pacing, stamping, queueing and reconnecting are
the capture stage's job (sources/base.py, sources/live.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from pipeline.sources.base import Source, SourceError, SourceFrame, SourceInfo

if TYPE_CHECKING:
    from pipeline.config import ImagesSourceConfig

log = logging.getLogger(__name__)

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
        self._decoded = 0
        self._unreadable: list[str] = []

    @property
    def name(self) -> str:
        return self.path.name

    def open(self) -> SourceInfo:
        self._files = list_images(self.path)
        self._next = 0
        self._decoded = 0
        self._unreadable = []
        return SourceInfo(fps=None, total_frames=len(self._files))

    def read(self, decode: bool = True) -> SourceFrame | None:
        """The next image that decodes; unreadable ones are skipped with a warning (see the module
        docstring). Raises SourceError when a single image, or every image of a folder, fails."""
        while self._next < len(self._files):
            path = self._files[self._next]
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                self._decoded += 1
                return SourceFrame(image, path.name)
            if self.path.is_file():
                raise SourceError(f"cannot decode image {path}: {_why_unreadable(path)}")
            self._unreadable.append(path.name)
            log.warning("skipping unreadable image %s (%s); the other images go on", path, _why_unreadable(path))
        if self._unreadable and not self._decoded:
            raise SourceError(f"none of the {len(self._unreadable)} images in {self.path} could be read "
                              f"(e.g. {self._unreadable[0]}: {_why_unreadable(self.path / self._unreadable[0])})")
        return None

    def drops(self) -> dict[str, int]:
        """Files skipped so far, by reason (`unreadable`), for the camera's drop counters."""
        return {"unreadable": len(self._unreadable)} if self._unreadable else {}

    def close(self) -> None:
        if self._unreadable:
            log.warning("%s: skipped %d unreadable of %d images: %s", self.path, len(self._unreadable), len(self._files),
                        ", ".join(self._unreadable[:5]) + (", ..." if len(self._unreadable) > 5 else ""))
        self._files = []


def _why_unreadable(path: Path) -> str:
    """A few words on why OpenCV could not read `path`."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    return "empty file" if size == 0 else "not an image OpenCV can decode"
