"""Frame sources. Each yields BGR uint8 images; the capture stage stamps and queues them."""

from pipeline.sources.base import CaptureStage, Source, SourceError, SourceInfo

__all__ = ["CaptureStage", "Source", "SourceError", "SourceInfo"]
