"""Frame sources. Each yields BGR uint8 images; the capture stage stamps and queues them.

`SOURCES` maps a camera's `source.type` to its class. Adding a source is one module with a
`Source` subclass (and its `from_config`), one line here, and its pydantic model in
`config/schema.py` added to the `SourceConfig` union.
"""

from pipeline.registry import Registry
from pipeline.sources.base import CaptureStage, Source, SourceError, SourceInfo

SOURCES: Registry[Source] = Registry("source", {
    "file": "pipeline.sources.file:VideoFileSource",
    "images": "pipeline.sources.images:ImageSource",
    "synthetic": "pipeline.sources.synthetic:SyntheticSource",
    "rtsp": "pipeline.sources.rtsp:RtspSource",
    "usb": "pipeline.sources.usb:UsbSource",
})


def create_source(config: object, camera_id: str, *, read_timeout_s: float = 3.0) -> Source:
    """A new source object for a camera's `source:` config, by its `type` (one per connection).

    Args:
        config: the validated source config.
        camera_id: the camera's id.
        read_timeout_s: how long one read may block (network and device sources).
    """
    cls = SOURCES.get(config.type)  # type: ignore[attr-defined]
    return cls.from_config(config, camera_id=camera_id, read_timeout_s=read_timeout_s)


__all__ = ["SOURCES", "CaptureStage", "Source", "SourceError", "SourceInfo", "create_source"]
