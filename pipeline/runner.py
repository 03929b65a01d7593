"""Runs a built graph to the end: signals, drain timeout, progress callback, summary, reloads.

Shared by `run`, `detect` and `bench` so they behave the same under SIGINT/SIGTERM. It must not
wire stages (pipeline.graph does) nor print: the summary is returned, and formatted on request."""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import cv2

from pipeline.config import ConfigError, LoadedConfig
from pipeline.graph import Graph
from pipeline.metrics import CameraState, CameraSummary, StageSummary
from pipeline.signals import SIGNALS
from pipeline.systemd import SystemdNotifier

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What `execute` returns: duration, frames out, per-camera and per-stage summaries, and how the
    run ended."""

    seconds: float
    frames_out: int
    cameras: list[CameraSummary]
    stages: list[StageSummary]
    interrupted: bool  # a signal asked for the end: queued frames drained
    forced: bool  # stopped at once (second signal, drain timeout): queued frames were discarded
    failed_cameras: list[str] = dataclasses.field(default_factory=list)  # gave up reconnecting

    @property
    def fps(self) -> float:
        return self.frames_out / self.seconds if self.seconds > 0 else float("nan")


class Reloader:
    """Re-reads the config and applies the camera changes to the running graph, one reload at a
    time, off the main thread (a removed camera's queued frames may take a moment to finish)."""

    def __init__(self, graph: Graph, load: Callable[[], LoadedConfig]) -> None:
        self.graph = graph
        self.load = load

    def reload(self) -> dict[str, object]:
        """Applies the config file as it is now. Returns what changed, or the errors (the running
        cameras are left as they were when the new config is invalid)."""
        try:
            loaded = self.load()  # Graph.apply runs one change at a time (a bounded wait for the one before)
            report = self.graph.apply(loaded)
        except ConfigError as exc:
            log.error("reload: config not applied, cameras unchanged:\n%s", exc)
            return {"ok": False, "errors": [str(i) for i in exc.issues]}
        except (OSError, RuntimeError, ValueError, KeyError, TimeoutError) as exc:
            # OSError: the file is unreadable right now (an editor saving it, say): try again.
            log.error("reload failed: %s", exc)
            return {"ok": False, "errors": [f"{type(exc).__name__}: {exc}"]}
        for section in report.not_applied:
            log.warning("reload: %s changed; that needs a restart (not applied)", section)
        for camera_id, why in report.failed.items():
            log.error("reload: camera %s not changed (the next reload retries it): %s", camera_id, why)
        log.info("reload: added %s, removed %s, restarted %s", report.added or "none", report.removed or "none",
                 report.restarted or "none")
        return report.to_dict()

    def reload_in_background(self) -> None:
        threading.Thread(target=self.reload, name="reload", daemon=True).start()


def execute(graph: Graph, *, drain_timeout_s: float = 30.0, on_progress: Callable[[int, int | None], None] | None = None,
            handle_signals: bool = True, close_backends: bool = True, gil_switch_interval_s: float | None = 0.0002,
            opencv_threads: int | None = 1, metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
            reloader: Reloader | None = None, metrics_token: str | None = None,
            metrics_allowed_hosts: tuple[str, ...] = ()) -> RunSummary:
    """Starts the graph and waits for it. The first SIGINT/SIGTERM drains (queued frames finish,
    files close, exit 0); a second one, or a drain longer than `drain_timeout_s`, stops at once
    (the same signal delivered again within signals.SAME_SIGNAL_S is not a second one).
    SIGHUP (and POST /reload on the metrics port) re-reads the config through `reloader`; without
    one, SIGHUP drains like SIGTERM. Raises GraphFailed if a stage failed, ConfigError (at
    `metrics.port`) if the metrics port cannot be served; then nothing was started or opened.
    The GIL switch interval and OpenCV's thread count are set for the run's duration (see
    PipelineConfig) and restored afterwards; so are the signal handlers.

    Example:
        >>> graph = build_graph(load_config("configs/demo.yaml"))
        >>> print(format_summary(execute(graph)))
    """
    runner = graph.runner
    interrupted = threading.Event()
    drain_started: list[float] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if SIGNALS.is_repeat():
            log.debug("%s again at once: the same request (sent to the process and its group)", signal.Signals(signum).name)
            return
        if interrupted.is_set():
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            runner.stop()
            return
        log.warning("%s: finishing queued frames and closing outputs (send again to stop at once)", signal.Signals(signum).name)
        interrupted.set()
        drain_started.append(time.monotonic())
        runner.drain()

    # The metrics port first: when it is taken, nothing has been started, opened or installed yet.
    health = None
    if metrics_port is not None:
        from pipeline.health import HealthServer

        try:
            health = HealthServer(graph.ctx.metrics, host=metrics_host, port=metrics_port,
                                  reload=reloader.reload if reloader is not None else None, token=metrics_token,
                                  allowed_hosts=metrics_allowed_hosts, previews=graph.ctx.previews).start()
        except OSError as exc:
            if close_backends:
                _close_models(graph)
            raise ConfigError([graph.built.issue(("metrics", "port"), str(exc))]) from None

    previous = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
        if hasattr(signal, "SIGHUP"):
            # Without a config to re-read, a hang-up (a closed terminal, `kill -HUP`) ends the run
            # like SIGTERM: its default action would kill the process with the MP4 unfinished.
            previous[signal.SIGHUP] = signal.signal(
                signal.SIGHUP, on_signal if reloader is None else lambda _s, _f: reloader.reload_in_background())

    metrics = graph.ctx.metrics
    notifier = SystemdNotifier.from_env()  # does nothing unless systemd started us (Type=notify)

    def tick() -> None:
        notifier.tick(metrics)
        if on_progress is not None:
            on_progress(metrics.frames_out_total(), metrics.total_frames_known())
        if drain_started and time.monotonic() - drain_started[0] > drain_timeout_s and not graph.ctx.stop.is_set():
            log.error("drain took longer than %.0f s: stopping", drain_timeout_s)
            runner.stop()

    previous_switch = sys.getswitchinterval()
    previous_cv_threads = cv2.getNumThreads()
    if gil_switch_interval_s is not None:
        sys.setswitchinterval(gil_switch_interval_s)
    if opencv_threads is not None:
        cv2.setNumThreads(opencv_threads if opencv_threads > 0 else -1)  # -1: OpenCV's default
    start = time.monotonic()
    try:
        runner.run(on_tick=tick)
    finally:
        notifier.stopping()
        notifier.close()
        if health is not None:
            health.close()
        sys.setswitchinterval(previous_switch)
        cv2.setNumThreads(previous_cv_threads)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if close_backends:
            if runner.alive():
                # A stuck stage may still be inside a backend (a native or GPU call): freeing its
                # buffers now could crash the process. The process is about to exit anyway.
                log.error("not closing the models: stages still running: %s", ", ".join(runner.alive()))
            else:
                _close_models(graph)
    seconds = time.monotonic() - start
    failed = [c.camera_id for c in metrics.cameras() if c.state is CameraState.FAILED]
    return RunSummary(seconds, metrics.frames_out_total(), metrics.camera_summaries(), metrics.stage_summaries(),
                      interrupted.is_set(), runner.forced, failed)


def _close_models(graph: Graph) -> None:
    for model in graph.models.values():
        model.backend.close()


def _num(value: float, spec: str, unit: str = "") -> str:
    """`value` in `spec`, or `-` where there is nothing to measure (NaN: no frames, no time)."""
    return "-" if math.isnan(value) else f"{value:{spec}}{unit}"


def format_summary(summary: RunSummary) -> str:
    """The end-of-run report: frames and fps, how it ended, then a table per camera and per stage."""
    lines = [
        f"{summary.frames_out} frames in {summary.seconds:.1f} s ({_num(summary.fps, '.2f', ' fps')})"
        + ("; stopped at once, queued frames discarded" if summary.forced
           else "; interrupted, queued frames finished" if summary.interrupted else ""),
        "",
        f"{'camera':<16}{'in':>7}{'out':>7}{'drops':>8}{'fps':>8}{'age p50':>10}{'age p99':>10}"
        f"{'detected':>10}{'det/s':>8}{'asked':>7}{'skip rate':>11}{'skip motion':>13}",
    ]
    for c in summary.cameras:
        drops = sum(c.drops.values())
        asked = f"{c.detect_fps:g}" if c.detect_fps is not None else "all"
        lines.append(f"{c.camera_id:<16}{c.frames_in:>7}{c.frames_out:>7}{drops:>8}{_num(c.fps_out, '.2f'):>8}"
                     f"{_num(c.age_p50_ms, '.1f', 'ms'):>10}{_num(c.age_p99_ms, '.1f', 'ms'):>10}{c.detections:>10}"
                     f"{_num(c.detections_per_s, '.2f'):>8}{asked:>7}"
                     f"{c.skipped.get('rate', 0):>11}{c.skipped.get('motion', 0):>13}")
    width = max([16] + [len(s.name) + 2 for s in summary.stages])
    lines += ["", f"{'stage':<{width}}{'items':>7}{'ms/item':>10}{'ms/call':>10}{'age p50':>10}{'age p99':>10}"]
    for s in summary.stages:
        lines.append(f"{s.name:<{width}}{s.items:>7}{_num(s.mean_ms_per_item, '.2f'):>10}{_num(s.mean_ms_per_call, '.2f'):>10}"
                     f"{_num(s.age_p50_ms, '.1f', 'ms'):>10}{_num(s.age_p99_ms, '.1f', 'ms'):>10}")
    return "\n".join(lines)
