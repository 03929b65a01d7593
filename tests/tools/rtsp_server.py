#!/usr/bin/python3
"""A real RTSP server for the tests: Debian's GStreamer RTSP server serving a video file in a loop.

Runs under the *system* Python (python3-gi and gir1.2-gst-rtsp-server-1.0 come from Debian, not
from PyPI), so the tests start it as a subprocess:

    /usr/bin/python3 tests/tools/rtsp_server.py --port 8554 --video crowd_overhead.mp4

The file is decoded by one GStreamer pipeline that seeks back to the start at its end, and pushed at
`--fps` into an appsrc → x264enc → rtph264pay media, so the stream never ends and its timestamps
keep increasing across loops, as a camera's do. A key frame every second lets a client that
(re)connects start decoding within a second. `--user/--password` turn on HTTP basic auth.
Prints `READY rtsp://127.0.0.1:PORT/PATH` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402 - after gi.require_version, as gi requires


class LoopingDecoder:
    """Decodes `path` to I420 frames of width x height, forever (seeks to 0 at end of stream)."""

    def __init__(self, path: str, width: int, height: int) -> None:
        self.pipeline = Gst.parse_launch(
            f'filesrc location="{path}" ! decodebin ! videoconvert ! videoscale ! '
            f"video/x-raw,format=I420,width={width},height={height} ! "
            "appsink name=sink sync=false max-buffers=8 drop=false"
        )
        self.sink = self.pipeline.get_by_name("sink")
        self.pipeline.set_state(Gst.State.PLAYING)
        self.lock = threading.Lock()

    def next_frame(self) -> bytes:
        with self.lock:
            for _ in range(3):
                sample = self.sink.emit("try-pull-sample", 2 * Gst.SECOND)
                if sample is not None:
                    buf = sample.get_buffer()
                    return buf.extract_dup(0, buf.get_size())
                if not self.sink.get_property("eos"):
                    raise RuntimeError("decoder produced no frame within 2 s")
                self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
            raise RuntimeError("decoder could not loop back to the start")


class Feeder:
    """Pushes frames into one media's appsrc at a fixed rate until the media goes away."""

    def __init__(self, appsrc, decoder: LoopingDecoder, fps: float, freeze_after_s: float | None = None) -> None:
        self.appsrc = appsrc
        self.freeze_after_s = freeze_after_s
        self.decoder = decoder
        self.period = 1.0 / fps
        self.duration = int(Gst.SECOND / fps)
        self.stopped = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        n = 0
        due = start = time.monotonic()
        data = b""
        while not self.stopped.is_set():
            # --freeze-after: the picture stops changing while frames (and timestamps) go on, as
            # with a camera whose encoder keeps sending its last image.
            if not data or self.freeze_after_s is None or time.monotonic() - start < self.freeze_after_s:
                data = self.decoder.next_frame()
            buf = Gst.Buffer.new_wrapped(data)
            buf.pts = n * self.duration
            buf.duration = self.duration
            if self.appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                return  # media torn down (last client left)
            n += 1
            due += self.period
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                due = time.monotonic()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/cam")
    p.add_argument("--video", required=True)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--freeze-after", type=float, default=None, help="repeat one picture after this many seconds")
    args = p.parse_args()

    Gst.init(None)
    decoder = LoopingDecoder(args.video, args.width, args.height)
    fps_num = round(args.fps * 1000)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        "( appsrc name=src is-live=true format=time do-timestamp=false "
        f"caps=video/x-raw,format=I420,width={args.width},height={args.height},framerate={fps_num}/1000 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={max(1, round(args.fps))} bframes=0 threads=1 "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    feeders: list[Feeder] = []

    def on_configure(_factory, media):
        appsrc = media.get_element().get_by_name_recurse_up("src")
        feeder = Feeder(appsrc, decoder, args.fps, args.freeze_after)
        feeders.append(feeder)
        media.connect("unprepared", lambda _m: feeder.stopped.set())

    factory.connect("media-configure", on_configure)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", args.user)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role(args.user, "media.factory.access", True)
        permissions.add_permission_for_role(args.user, "media.factory.construct", True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
