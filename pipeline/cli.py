"""Command line: run / validate / detect / bench / listen / build-engine.

Owns argument parsing, the `detect` shorthand's config, and what the user sees: exit codes, the
summary, the `wrote ...` lines. It must not wire or run stages itself: the graph comes from
pipeline.graph and runs in pipeline.runner; config errors come from pipeline.config.

Exit codes: 0 success (also after one SIGINT/SIGTERM, queued frames finished, outputs closed), 1 a
stage failed at run time (the original error is shown) or did not stop, 2 a config or usage error
(file:line: key: message, no traceback), 130 stopped at once by a second signal or a drain timeout."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.backends.base import ModelLoadError
from pipeline.config import ConfigError, LoadedConfig, check_files
from pipeline.detect import arg_issue as _arg_issue
from pipeline.detect import detect_config
from pipeline.memory import keep_frames_off_the_heap
from pipeline.paths import default_model
from pipeline.redact import install_log_redaction
from pipeline.signals import interrupt_on_signals
from pipeline.stage import GraphFailed, GraphStuck

if TYPE_CHECKING:
    from pipeline.shard import Shard

log = logging.getLogger("vigil")

COMMANDS = ("run", "validate", "detect", "bench", "listen", "build-engine")
LOG_LEVELS = ("debug", "info", "warning", "error")


def main(argv: list[str] | None = None) -> int:
    """Runs one command (the `vigil` console script and `run.py`).

    A first argument that is not a command is taken as `run CONFIG`. Config and model errors are
    printed as `file:line: key: message` lines, without a traceback.

    Args:
        argv: the arguments after the program name; default `sys.argv[1:]`.

    Returns:
        The exit code: 0, 1, 2 or 130 (see the module docstring).

    Example:
        >>> from pipeline.cli import main
        >>> exit_code = main(["validate", "configs/demo.yaml"])
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    keep_frames_off_the_heap()  # freed frames go back to the OS: RSS stays flat on long runs
    # `run.py [--log-level L] CONFIG` is a shorthand for `run.py [--log-level L] run CONFIG`.
    first = 2 if argv[:1] == ["--log-level"] else 1 if argv[:1] and argv[0].startswith("--log-level=") else 0
    if len(argv) > first and argv[first] not in COMMANDS and not argv[first].startswith("-"):
        argv.insert(first, "run")
    args = _parser().parse_args(argv)
    # validate keeps stderr for its `file:line: key: message` lines unless asked for more.
    if args.log_level is None:
        args.log_level = "warning" if args.command == "validate" else "info"
    args.log_level = args.log_level.lower()
    if args.log_level not in LOG_LEVELS:  # VIGIL_LOG_LEVEL bypasses argparse's choices
        print(f"error: VIGIL_LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)}, got {args.log_level!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        stream=sys.stderr)
    install_log_redaction()
    _quiet_opencv(args.log_level)
    try:
        with interrupt_on_signals():  # a signal while a model loads: exit 130, one line (not SIGTERM's death)
            return int(args.func(args))
    except KeyboardInterrupt as exc:
        print(f"error: stopped by {exc.args[0] if exc.args else 'SIGINT'} before the run finished", file=sys.stderr)
        return 130
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GraphFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.log_level == "debug":
            import traceback

            traceback.print_exception(exc.error)
        return 1
    except GraphStuck as exc:
        print(f"error: {exc}; their output files may be incomplete", file=sys.stderr)
        return 1


def _quiet_opencv(level: str) -> None:
    """OpenCV prints its own warnings (e.g. "Stream timeout triggered") to stderr; the camera state
    log lines say the same in our words, so below debug they are turned off."""
    import cv2

    if level != "debug":
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _parser() -> argparse.ArgumentParser:
    # `vigil` as the console script, `run.py` through the shim
    p = argparse.ArgumentParser(prog=os.path.basename(sys.argv[0]), description="Vigil: streaming video analytics")
    p.add_argument("--log-level", default=os.environ.get("VIGIL_LOG_LEVEL"), choices=LOG_LEVELS)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the camera graph described by a YAML config")
    run.add_argument("config", type=Path)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--shard", default=None, metavar="I/N", help=(
        "run only the cameras of shard I of N (a stable hash of each camera id); default: $VIGIL_SHARD, or "
        "$VIGIL_SHARDS with the host name's trailing ordinal (vigil-3 -> 3), else every camera"))
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check a config (paths, models, output layouts) without running")
    val.add_argument("config", type=Path)
    val.add_argument("--shards", type=int, default=None, metavar="N", help="also print which cameras each of N shards runs")
    val.set_defaults(func=cmd_validate)

    det = sub.add_parser("detect", help="one source through one model, no YAML (like `yolo predict`)")
    det.add_argument("source", help="video file, image file, directory of images, rtsp:// URL or /dev/videoN")
    det.add_argument("--model", type=Path, default=None, help=f"ONNX model (default {default_model()})")
    det.add_argument("--jsonl", type=Path, required=True, help="JSON Lines output, one record per frame ('-': stdout)")
    det.add_argument("--video", type=Path, default=None, help="annotated video output (.mp4)")
    det.add_argument("--conf", type=float, default=0.25)
    det.add_argument("--iou", type=float, default=0.45)
    det.add_argument("--family", default="yolov8", choices=["yolov8", "yolo11", "yolov5"])
    det.add_argument("--batch", type=int, default=1)
    det.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "openvino", "tensorrt"], help="default: the fastest here")
    det.add_argument("--precision", default=None, choices=["auto", "f32", "bf16", "fp16"], help="default: the backend's (f32/fp16)")
    det.add_argument("--classes", nargs="+", default=None, help="keep only these class names or ids")
    det.add_argument("--realtime", action="store_true",
                     help="pace a video file at its native fps and treat it as a live camera (drop_oldest)")
    det.add_argument("--max-frame-age-ms", type=float, default=None,
                     help="drop (and count) frames older than this when a stage picks them up "
                          "(default: 2000 for live sources, none for files)")
    det.add_argument("--metrics-port", type=int, default=None,
                     help="serve /metrics (Prometheus) and /healthz (JSON) on 127.0.0.1:PORT")
    det.add_argument("--transport", default="tcp", choices=["tcp", "udp"], help="RTSP transport (default tcp)")
    det.add_argument("--detect-fps", type=float, default=None,
                     help="run the model on at most N frames per second of stream time (default: every frame)")
    det.add_argument("--motion", action="store_true",
                     help="motion gating: run the model only while something moves (plus a heartbeat every 3 s)")
    det.add_argument("--no-progress", action="store_true")
    det.set_defaults(func=cmd_detect)

    bench = sub.add_parser("bench", help="raw backend fps vs pipeline fps on the same model and video")
    bench.add_argument("--model", type=Path, default=None, help=f"ONNX model (default {default_model()})")
    bench.add_argument("--video", type=Path, required=True)
    bench.add_argument("--frames", type=int, default=0, help="frames to run (default: the whole video)")
    bench.add_argument("--batch", type=int, default=None, help="default 1; with --live, N (one frame per camera)")
    bench.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    bench.add_argument("--gil-switch-ms", type=float, default=0.2,
                       help="Python GIL switch interval during pipeline runs (default 0.2; Python's own is 5)")
    bench.add_argument("--rounds", type=int, default=2, help="pipeline runs, each bracketed by raw runs (default 2)")
    bench.add_argument("--no-sequential", action="store_true", help="skip the naive sequential-loop baseline")
    bench.add_argument("--compare-backends", action="store_true", help="instead: every backend/precision here, raw fps and agreement")
    bench.add_argument("--live", default=None, metavar="N[,N...]",
                       help="instead: N live cameras (the video paced and looped) into one model, e.g. 1,2,4,8")
    bench.add_argument("--seconds", type=float, default=20.0, help="--live: seconds per N (default 20)")
    bench.add_argument("--fps", type=float, default=None, help="--live: each camera's rate (default: the video's)")
    bench.add_argument("--max-frame-age-ms", type=float, default=None, help="--live: frame-age bound (default 2000)")
    bench.add_argument("--detect-fps", type=float, default=None,
                       help="--live: each camera asks for at most N detections per second (default: every frame)")
    bench.add_argument("--backend", default=None, help="the model's backend (default: auto; triton: with --url and --model-name)")
    bench.add_argument("--url", default=None, help="backend triton: the server's host:port (gRPC, or HTTP with --protocol http)")
    bench.add_argument("--model-name", default=None, help="backend triton: the model's name on the server")
    bench.add_argument("--protocol", default=None, choices=["grpc", "http"], help="backend triton (default grpc)")
    bench.add_argument("--input-dtype", default=None, choices=["float32", "uint8"], help="backend triton (default float32)")
    bench.add_argument("--in-flight", type=int, default=None, help="backend triton: batches at the server at once (default 2)")
    bench.add_argument("--precision", default=None, help="--live: the model's precision (default: the backend's)")
    bench.set_defaults(func=cmd_bench)
    build = sub.add_parser("build-engine", help="build (or find cached) the TensorRT engine of an ONNX model (NVIDIA GPU)")
    build.add_argument("model", type=Path, help="the .onnx file")
    build.add_argument("--fp16", action="store_true", help="FP16 precision (default FP32)")
    build.add_argument("--max-batch", type=int, default=1, help="largest batch of the optimisation profile (default 1)")
    build.add_argument("--engine-dir", type=Path, default=None, help="engine cache folder (default engines/)")
    build.add_argument("--rebuild", action="store_true", help="build even when a fitting engine is cached")
    build.add_argument("--workspace-mb", type=int, default=2048, help="TensorRT builder workspace (default 2048)")
    build.set_defaults(func=cmd_build_engine)
    listen = sub.add_parser("listen", help="subscribe to a ZeroMQ endpoint or an MQTT broker and print each event as a JSON line")
    listen.add_argument("endpoint", help="tcp://127.0.0.1:5560 (the zmq sink's endpoint) or mqtt://[USER:PASSWORD@]HOST[:PORT] "
                                         "(the mqtt sink's broker; port 1883 by default)")
    listen.add_argument("--topic", default=None,
                        help="zmq: only topics starting with this (topics are CAMERA/RULE; default: all). mqtt: the "
                             "subscription filter (default vigil/#); only event messages (PREFIX/CAMERA/events/RULE) are "
                             "printed and counted, not the camera states, zone counts or online/offline status")
    listen.add_argument("--count", type=int, default=0,
                        help="exit after this many events (mqtt: event messages only; default: run until Ctrl-C)")
    listen.add_argument("--timeout", type=float, default=0,
                        help="exit with 1 if no event arrives for this many seconds (also while an mqtt broker is unreachable)")
    listen.set_defaults(func=cmd_listen)
    return p


def cmd_listen(args: argparse.Namespace) -> int:
    """`listen`: prints each event published on a ZeroMQ endpoint or an MQTT broker as a JSON line (see pipeline.listen)."""
    from pipeline.listen import ListenError, listen

    for option, value in (("--count", args.count), ("--timeout", args.timeout)):
        if not value >= 0:  # (also NaN)
            raise ConfigError([_arg_issue(option, f"must be 0 (no limit) or more, got {value:g}")])
    try:
        return listen(args.endpoint, topic=args.topic, count=args.count, timeout_s=args.timeout)
    except ListenError as exc:
        raise ConfigError([_arg_issue(exc.key, str(exc))]) from None  # ENDPOINT or --topic, credentials masked


def _progress(disabled: bool):  # returns (callback, close)
    if disabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(unit="frame", dynamic_ncols=True, disable=None, file=sys.stderr)

    def update(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def _execute(loaded: LoadedConfig, no_progress: bool, config_path: Path | None = None, shard: Shard | None = None) -> int:
    from pipeline.config import load_config
    from pipeline.graph import build_graph
    from pipeline.runner import Reloader, execute, format_summary
    from pipeline.shard import apply_shard
    from pipeline.sinks.jsonl import STDOUT
    from pipeline.validate import check_outputs

    # Outputs before the model loads: a bad --video name must not cost a model load and then fail
    # with the codec's words. (build_graph checks the inputs again; that costs a stat per file.)
    issues = check_files(loaded) + check_outputs(loaded)
    if issues:
        raise ConfigError(issues)
    # Records on stdout (`--jsonl -`): everything else the run prints goes to stderr.
    report = sys.stderr if any(getattr(s, "path", None) == STDOUT for s in loaded.config.sinks) else sys.stdout
    graph = build_graph(loaded)
    graph.ctx.metrics.shard = str(shard) if shard is not None else None
    # A reload re-reads the file and keeps this instance's shard of it.
    reloader = Reloader(graph, lambda: apply_shard(load_config(config_path), shard)) \
        if config_path is not None and graph.reloadable else None
    update, close = _progress(no_progress)
    try:
        pipeline = loaded.config.pipeline
        summary = execute(graph, drain_timeout_s=pipeline.drain_timeout_s, on_progress=update,
                          gil_switch_interval_s=pipeline.gil_switch_interval_ms / 1000.0,
                          opencv_threads=pipeline.opencv_threads, metrics_port=loaded.config.metrics.port,
                          metrics_host=loaded.config.metrics.host, reloader=reloader,
                          metrics_token=loaded.config.metrics.token,
                          metrics_allowed_hosts=tuple(loaded.config.metrics.allowed_hosts))
    finally:
        close()
    print(format_summary(summary), file=report)
    if summary.forced:
        print("error: stopped before queued frames finished; outputs hold the frames written until then", file=sys.stderr)
        return 130
    if summary.failed_cameras:
        print(f"error: cameras failed for good: {', '.join(summary.failed_cameras)} (see the log for why)", file=sys.stderr)
        return 1
    for sink in graph.sinks:
        for path in getattr(sink, "paths", []) or [getattr(sink, "path", None)]:
            if path is not None and path != STDOUT:
                print(f"wrote {path}", file=report)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """`run`: loads the YAML config and runs its graph; POST /reload re-reads the same file."""
    from pipeline.config import load_config
    from pipeline.shard import ShardError, apply_shard, resolve_shard

    try:
        shard = resolve_shard(args.shard)
    except ShardError as exc:
        raise ConfigError([_arg_issue("--shard", str(exc))]) from None
    loaded = apply_shard(load_config(args.config), shard)
    if shard is not None:
        cams = [c.id for c in loaded.config.cameras]
        log.info("shard %s: %d camera(s): %s", shard, len(cams), ", ".join(cams) or "none")
    return _execute(loaded, args.no_progress, args.config, shard=shard)


def cmd_build_engine(args: argparse.Namespace) -> int:
    """`build-engine`: builds the TensorRT engine of an ONNX model into the engine cache, or
    reports the cached one that already fits."""
    from pipeline.backends.engine_build import DEFAULT_ENGINE_DIR, build_engine

    if args.max_batch < 1:
        raise ConfigError([_arg_issue("--max-batch", f"must be at least 1, got {args.max_batch}")])
    if args.model.suffix != ".onnx":
        raise ConfigError([_arg_issue("MODEL", f"expected an .onnx file, got {args.model}")])
    try:
        path, built = build_engine(args.model, fp16=args.fp16, max_batch=args.max_batch,
                                   engine_dir=args.engine_dir or DEFAULT_ENGINE_DIR, rebuild=args.rebuild,
                                   workspace_mb=args.workspace_mb)
    except ImportError as exc:  # cuda-python missing
        raise ModelLoadError(f"{exc}") from exc
    print(f"{'built' if built else 'up to date'}: {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """`validate`: checks that the config can run: the files it names, each source opened once,
    each output writable, each video container and codec (pipeline.validate); loads every model
    and prints what it found (input, batch, outputs, classes; TensorRT engines)."""
    from pipeline.config import load_config
    from pipeline.graph import load_models
    from pipeline.validate import check_runnable

    if args.shards is not None and not 1 <= args.shards <= 10_000:
        raise ConfigError([_arg_issue("--shards", f"expected a number of shards from 1 to 10000, got {args.shards}")])
    loaded = load_config(args.config)
    issues = check_files(loaded) or check_runnable(loaded)
    if issues:
        raise ConfigError(issues)
    for m in loaded.config.models:
        if m.backend == "tensorrt":
            from pipeline.backends.engine_build import engine_precision, engine_report

            print(f"model {m.id}: TensorRT engines")
            for line in engine_report(m.path, precision=engine_precision(m.precision), batch=m.batch, device=m.gpu_device):
                print(line)
    models = load_models(loaded, build_engines=False)  # validate never spends minutes building an engine
    for mid, m in models.items():
        info = m.backend.info
        print(f"model {mid}: {info.path} input {list(info.input.shape)} batch {m.batch} ({info.batch_text()}), "
              f"output {list(info.outputs[0].shape)} fits {m.config.family}, {len(info.class_names)} classes")
        m.backend.close()
    cfg = loaded.config
    if args.shards is not None:
        from pipeline.shard import shard_table

        for index, cams in shard_table(loaded, args.shards):
            print(f"shard {index}/{args.shards}: {len(cams)} camera(s): {', '.join(cams) or '-'}")
    print(f"{args.config}: valid ({len(cfg.cameras)} cameras, {len(cfg.models)} models, {len(cfg.sinks)} sinks)")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    """`detect`: runs the config from `detect_config` (no reload)."""
    return _execute(detect_config(args), args.no_progress)


def cmd_bench(args: argparse.Namespace) -> int:
    """`bench`: raw backend fps against pipeline fps on one video, or with `--live N,...` the
    live-camera benchmark for each camera count; prints the table."""
    from pipeline.bench import format_bench, run_bench, video_problem

    if args.rounds < 1:
        raise ConfigError([_arg_issue("--rounds", f"must be at least 1, got {args.rounds}")])
    if args.frames < 0:
        raise ConfigError([_arg_issue("--frames", f"must be 0 (the whole video) or more, got {args.frames}")])
    for option, value in (("--gil-switch-ms", args.gil_switch_ms), ("--seconds", args.seconds), ("--fps", args.fps),
                          ("--max-frame-age-ms", args.max_frame_age_ms), ("--detect-fps", args.detect_fps)):
        if value is not None and not 0 < value < float("inf"):  # (NaN fails too)
            raise ConfigError([_arg_issue(option, f"must be a number above 0, got {value:g}")])
    problem = video_problem(args.video)
    if problem is not None:
        raise ConfigError([_arg_issue("--video", problem)])
    if args.compare_backends:  # (pipeline/bench_backends.py checks its options)
        from pipeline.bench_backends import compare_backends

        print(compare_backends(args.model or default_model(), args.video, args.frames, args.batch, args.rounds, args.threads))
        return 0
    if args.live:
        from pipeline.bench import format_live_bench, run_live_bench

        try:
            counts = [int(n) for n in args.live.split(",")]
        except ValueError:
            counts = []
        if not counts or min(counts) < 1:
            raise ConfigError([_arg_issue("--live", f"expected camera counts such as 1,2,4,8, got {args.live!r}")])
        rows = run_live_bench(args.model or default_model(), args.video, counts, seconds=args.seconds,
                              batch=args.batch, fps=args.fps, threads=args.threads,
                              max_frame_age_ms=args.max_frame_age_ms, gil_switch_ms=args.gil_switch_ms,
                              detect_fps=args.detect_fps, backend=args.backend, precision=args.precision)
        print(format_live_bench(args.model or default_model(), args.video, rows))
        return 0
    # The model's backend and, for triton, where its server is (the raw figure then is one batch at
    # a time at the server; the pipeline keeps --in-flight batches there).
    options = {key: value for key, value in (("backend", args.backend), ("url", args.url), ("model_name", args.model_name),
                                              ("protocol", args.protocol), ("input_dtype", args.input_dtype),
                                              ("in_flight", args.in_flight)) if value is not None}
    result = run_bench(args.model or default_model(), args.video, frames=args.frames, batch=1 if args.batch is None else args.batch,
                       threads=args.threads, rounds=args.rounds, sequential=not args.no_sequential,
                       gil_switch_ms=args.gil_switch_ms, model_options=options)
    print(format_bench(result))
    return 0
