"""Video files that survive a crash and report every write error: fragmented MP4 through PyAV.

OpenCV's VideoWriter cannot do either. It writes an MP4's index (the `moov` box) only when it is
released, so a killed process or a power loss leaves a file with no readable frame; and its
`write` returns nothing, so a full disk passed for success. Its OPENCV_FFMPEG_WRITER_OPTIONS
variable reaches the encoder, not the MP4 muxer (checked with OpenCV 5.0: the file is the same
with `movflags;frag_keyframe+empty_moov`), so it cannot ask for fragments.

PyAV drives the same FFmpeg libraries directly. An `.mp4`/`.mov`/`.m4v` file is written fragmented
(`movflags=frag_keyframe+empty_moov+default_base_moof`): the header comes first and each fragment,
from one key frame to the next (at most KEY_INTERVAL_S apart), carries its own index, so a file cut
anywhere keeps every fragment written before the cut. Other containers FFmpeg knows by extension
(`.mkv`, `.avi`) are written as FFmpeg writes them. Every FFmpeg error (ENOSPC, EIO) is raised as
OSError naming the file.
"""

from __future__ import annotations

import contextlib
import errno
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# FourCC codes (the `codec:` of a video sink, as OpenCV took them) -> FFmpeg encoders.
FOURCC_ENCODERS = {
    "mp4v": "mpeg4", "fmp4": "mpeg4", "xvid": "mpeg4", "divx": "mpeg4", "dx50": "mpeg4",
    "avc1": "libx264", "h264": "libx264", "x264": "libx264",
    "hev1": "libx265", "hvc1": "libx265", "h265": "libx265", "hevc": "libx265", "x265": "libx265",
    "mjpg": "mjpeg", "vp80": "libvpx", "vp90": "libvpx-vp9", "vp09": "libvpx-vp9",
}
FRAGMENTED = {".mp4", ".mov", ".m4v"}
# A key frame, so a new fragment, at least this often: what a crash can lose at most, at the cost
# of a larger file the shorter it is.
KEY_INTERVAL_S = 1.0


def _os_error(exc: BaseException, path: Path, doing: str, detail: str = "") -> OSError:
    """An OSError naming the file and FFmpeg's cause (errno kept, e.g. ENOSPC for a full disk)."""
    code = getattr(exc, "errno", None) or errno.EIO
    reason = getattr(exc, "strerror", None) or str(exc)
    return OSError(code, f"cannot {doing} video {path}{detail}: {reason}")


class VideoFile:
    """One video file written frame by frame (see the module docstring).

    Args:
        path: the file; its extension picks the container (`.mp4` is written fragmented).
        fps: frames per second of the file.
        width, height: the frames' size. Odd sizes lose their last column or row (4:2:0 video
            needs even ones).
        codec: a FourCC code from FOURCC_ENCODERS (`mp4v`, `avc1`, `hvc1`, `MJPG`, `VP80`, `VP90`).

    Raises:
        OSError: the file cannot be created, or the codec is unknown or not available here.
    """

    def __init__(self, path: Path, *, fps: float, width: int, height: int, codec: str = "mp4v") -> None:
        self.path = Path(path)
        self.frames = 0
        self._failed = False
        encoder = FOURCC_ENCODERS.get(codec.lower())
        if encoder is None:
            raise OSError(errno.EINVAL, f"cannot write video {self.path}: unknown codec {codec!r}; "
                                        f"known: {', '.join(sorted(FOURCC_ENCODERS))}")
        self.width, self.height = width - width % 2, height - height % 2
        if self.width < 2 or self.height < 2:
            raise OSError(errno.EINVAL, f"cannot write video {self.path}: frames of {width}x{height} are too small")
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if self.path.suffix.lower() in FRAGMENTED else {}
        try:
            self._container = av.open(str(self.path), "w", options=options)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise _os_error(exc, self.path, "create") from exc
        try:
            rate = Fraction(fps).limit_denominator(1001)  # MPEG-4 time bases must fit 16 bits
            self._stream = self._container.add_stream(encoder, rate=rate)
            ctx = self._stream.codec_context
            ctx.width, ctx.height = self.width, self.height
            formats = [f.name for f in (self._stream.codec.video_formats or ())]
            ctx.pix_fmt = formats[0] if formats else "yuv420p"  # the encoder's own first choice (yuvj420p for MJPEG)
            ctx.gop_size = max(1, round(fps * KEY_INTERVAL_S))
            if encoder == "mpeg4":
                # OpenCV's rate for this codec (1.5 bits per pixel and frame): the same quality as before.
                ctx.bit_rate = int(min(1.5 * fps * self.width * self.height, 2**31 - 1))
            # Opens the encoder and the file and writes the header now (PyAV would at the first
            # frame), so a bad codec or folder fails here, before any frame is handed over.
            self._container.start_encoding()
        except (av.FFmpegError, OSError, ValueError) as exc:
            with contextlib.suppress(av.FFmpegError, OSError):
                self._container.close()
            raise _os_error(exc, self.path, "create", f" with codec {codec!r}") from exc

    def write(self, image: np.ndarray) -> None:
        """Encodes one BGR frame of the file's size (a frame larger by an odd row/column is cut)."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:self.height, :self.width]), format="bgr24")
        frame.pts = self.frames
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            self._failed = True
            raise _os_error(exc, self.path, "write") from exc
        self.frames += 1

    def close(self) -> None:
        """Flushes the encoder and closes the file. After a failed write, only closes it (the error
        was raised then)."""
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            if not self._failed:
                for packet in self._stream.encode(None):
                    container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            self._failed = True
            raise _os_error(exc, self.path, "finish") from exc
        finally:
            try:
                container.close()
            except (av.FFmpegError, OSError) as exc:
                if not self._failed:
                    raise _os_error(exc, self.path, "finish") from exc
