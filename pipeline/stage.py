"""Stage base class and the graph runner: one thread per stage, one stop event, errors kept.

Two ways to end a run:
- *drain* (end of files, SIGINT/SIGTERM): sources stop reading and send EndOfStream; every queued
  frame still flows through, sinks close their files, threads return.
- *stop* (an error anywhere, or a second signal): every stage returns at its next stop check
  (at most POLL_S later, plus the item it is working on). The first error is kept and re-raised by
  `GraphRunner.wait()` as the cause of GraphFailed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from pipeline.frames import EndOfStream
from pipeline.metrics import Metrics
from pipeline.preview import Previews
from pipeline.queues import POLL_S, BoundedQueue, Stopped
from pipeline.signals import block_stop_signals

log = logging.getLogger(__name__)

# How long stages get to return once the graph is stopped before we report them as stuck.
STOP_DEADLINE_S = 2.0
# How long a drain waits for a camera that is joining the graph (a join takes microseconds; the
# bound only keeps a drain from hanging on a bug).
SEAL_LOCK_TIMEOUT_S = 5.0
# How long the sources wait at start for every output to open (a file, a bound socket). An output
# that takes longer is logged and the sources start anyway: a slow disk must not stop the watching.
OUTPUTS_OPEN_TIMEOUT_S = 30.0


@dataclass(slots=True)
class StageContext:
    """What every stage of one graph shares: the stop, drain and sealed events, the metrics and the
    status page's previews."""

    stop: threading.Event = field(default_factory=threading.Event)
    drain: threading.Event = field(default_factory=threading.Event)
    metrics: Metrics = field(default_factory=Metrics)
    # Set once no camera can be added any more: at build time for a graph of files, at drain/stop
    # for a live graph that takes cameras at run time. Until then a stage whose cameras have all
    # ended keeps waiting for new ones instead of returning.
    sealed: threading.Event = field(default_factory=threading.Event)
    # Held while `sealed` is set and while a camera joins the stages' camera sets: a drain then
    # never falls between two of a camera's joins (a camera in some sets but not others would hold
    # up the drain, or lose its frames to a stage that has already returned).
    seal_lock: threading.Lock = field(default_factory=threading.Lock)
    # Each camera's newest frame and the recent events, for the status page (references only).
    previews: Previews = field(default_factory=Previews)


class CameraSet:
    """The cameras a stage still expects an EndOfStream from. Grows when a camera is added at run
    time (before its capture starts), shrinks as sentinels pass; the stage is finished when it is
    empty and the graph is sealed."""

    def __init__(self, camera_ids: Iterable[str], sealed: threading.Event | None = None) -> None:
        self._ids = set(camera_ids)
        self._lock = threading.Lock()
        self._sealed = sealed

    def add(self, camera_id: str) -> bool:
        """Adds a camera; False (and nothing added) when the set is already finished: its stage
        may have returned, so a camera added now would never be served."""
        with self._lock:
            if not self._ids and self._sealed is not None and self._sealed.is_set():
                return False
            self._ids.add(camera_id)
            return True

    def discard(self, camera_id: str) -> None:
        """Forgets a camera (its EndOfStream has been handled, or its join was rolled back)."""
        with self._lock:
            self._ids.discard(camera_id)

    def __contains__(self, camera_id: object) -> bool:
        with self._lock:
            return camera_id in self._ids

    def snapshot(self) -> set[str]:
        """The cameras in the set now (a copy)."""
        with self._lock:
            return set(self._ids)

    def finished(self) -> bool:
        """True when no camera is left and none can join any more (sealed, or a fixed set)."""
        with self._lock:
            return not self._ids and (self._sealed is None or self._sealed.is_set())


class Stage(ABC):
    """One thread of the graph. `run` returns when its inputs have ended or `ctx.stop` is set;
    it raises on failure (the runner catches, records and stops the graph).

    At start the runner starts the sources (`is_source`) only once every stage that opens an
    output (`opened` not None) has set `opened`: an output that cannot be opened (a busy port, a
    read-only folder) then stops the run before any frame is read, so no other output has written
    a line and the previous run's files stay as they were.
    """

    is_source: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.opened: threading.Event | None = None  # an output stage sets it once its output is open

    @abstractmethod
    def run(self, ctx: StageContext) -> None: ...


def consume(inp: BoundedQueue, cameras: CameraSet | Iterable[str], ctx: StageContext,
            on_idle: Callable[[], None] | None = None) -> Iterator[object]:
    """Yields what arrives on `inp` until every camera in `cameras` has sent its EndOfStream (the
    sentinels are yielded too, so the stage can pass them on) and, for a CameraSet that can grow,
    the graph is sealed. Raises Stopped when the graph stops.

    A camera leaves `cameras` only once the stage has *handled* its sentinel (asked for the next
    item): until then the stage may still be finishing the camera's clips or files, or passing the
    sentinel on, and whoever waits for the camera to be gone (a removal, a restart) must wait too.
    `on_idle` is called each time nothing arrives for POLL_S (work that is due without input)."""
    active = cameras if isinstance(cameras, CameraSet) else CameraSet(cameras)
    while not active.finished():
        if ctx.stop.is_set():
            raise Stopped
        try:
            item = inp.get(POLL_S)
        except queue.Empty:
            if on_idle is not None:
                on_idle()
            continue
        yield item
        if isinstance(item, EndOfStream):
            active.discard(item.camera_id)


@dataclass(frozen=True, slots=True)
class StageError:
    """An exception a stage raised, with the stage's name."""

    stage: str
    error: BaseException  # carries its own __traceback__


class GraphFailed(RuntimeError):
    """A stage raised; `__cause__` is the original exception."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"stage {stage!r} failed: {type(error).__name__}: {error}")
        self.stage = stage
        self.error = error


class GraphStuck(RuntimeError):
    """Stages did not return within STOP_DEADLINE_S of the stop request (e.g. stuck in a native
    call). Their daemon threads are abandoned; what they were writing may be incomplete."""

    def __init__(self, stages: list[str]) -> None:
        super().__init__(f"stages still running {STOP_DEADLINE_S:.0f} s after stop: {', '.join(stages)}")
        self.stages = stages


class GraphRunner:
    """Runs each stage on its own daemon thread; the first stage error stops the graph and is
    re-raised by `wait()` as GraphFailed.

    Args:
        stages: the stages, in graph order (summaries list them so); names must be unique.
        ctx: the shared context; a new one when None.
    """

    def __init__(self, stages: Sequence[Stage], ctx: StageContext | None = None) -> None:
        names = [s.name for s in stages]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"stage names must be unique, got duplicates {sorted(duplicates)}")
        self.stages = list(stages)
        self.ctx = ctx or StageContext()
        self._threads_lock = threading.Lock()
        for stage in self.stages:  # registered in graph order, so summaries list them in that order
            self.ctx.metrics.stage(stage.name)
        self.errors: list[StageError] = []
        self._errors_lock = threading.Lock()
        self.forced = False  # stop() was called: queued work was discarded
        self._threads: list[threading.Thread] = []
        self._started = False
        self._stop_requested_at: float | None = None

    def start(self) -> None:
        """Starts one thread per stage: the sources last, once every output has opened (or the
        graph has stopped: an output failed to open, and then no source starts at all)."""
        if self._started or self._threads:
            raise RuntimeError("GraphRunner.start() called twice")
        sources = [s for s in self.stages if s.is_source]
        with self._threads_lock:
            self._started = True
            self._start_threads([s for s in self.stages if not s.is_source])
        self._await_outputs()
        if self.ctx.stop.is_set():
            return
        with self._threads_lock:
            self._start_threads(sources)

    def _start_threads(self, stages: list[Stage]) -> None:
        # daemon: a stage stuck in a native call past the deadline must not keep the process
        # alive after run() has reported it.
        threads = [threading.Thread(target=self._thread_main, args=(s,), name=s.name, daemon=True) for s in stages]
        self._threads.extend(threads)
        for t in threads:
            t.start()

    def _await_outputs(self) -> None:
        """Waits until every output stage has opened its output, the graph stops, or
        OUTPUTS_OPEN_TIMEOUT_S passes (logged; the sources then start anyway)."""
        deadline = time.monotonic() + OUTPUTS_OPEN_TIMEOUT_S
        for stage in self.stages:
            while stage.opened is not None and not stage.opened.wait(POLL_S):
                if self.ctx.stop.is_set():
                    return
                if time.monotonic() > deadline:
                    log.warning("%s has not opened its output after %.0f s: starting the sources anyway",
                                stage.name, OUTPUTS_OPEN_TIMEOUT_S)
                    return

    def add_stage(self, stage: Stage) -> None:
        """Starts one more stage in a running graph (a camera added at run time)."""
        with self._threads_lock:
            if self.ctx.stop.is_set():
                raise RuntimeError(f"cannot add stage {stage.name!r}: the graph is stopping")
            if self._started:
                # Stages that have returned (a removed or restarted camera's) are forgotten, so the
                # lists do not grow with every restart; their errors, if any, are already recorded,
                # and their metrics stay, keyed by name, for the stage that takes the name again.
                alive = [t for t in self._threads if t.is_alive()]
                names = {t.name for t in alive}
                self._threads = alive
                self.stages = [s for s in self.stages if s.name in names]
            finished = {t.name for t in self._threads if not t.is_alive()}
            if stage.name in {s.name for s in self.stages} - finished:
                raise ValueError(f"a stage named {stage.name!r} is still running")
            self.stages.append(stage)
            self.ctx.metrics.stage(stage.name)
            t = threading.Thread(target=self._thread_main, args=(stage,), name=stage.name, daemon=True)
            self._threads.append(t)
            t.start()

    def is_running(self, stage_name: str) -> bool:
        """Whether a stage of that name has a thread that has not returned."""
        return any(t.name == stage_name and t.is_alive() for t in self._thread_list())

    def _thread_list(self) -> list[threading.Thread]:
        with self._threads_lock:
            return list(self._threads)

    def _thread_main(self, stage: Stage) -> None:
        block_stop_signals()  # signals go to the main thread; native workers started here inherit this
        try:
            stage.run(self.ctx)
        except Stopped:
            pass  # the graph is stopping; the reason is recorded elsewhere
        except BaseException as exc:  # noqa: BLE001 - kept and re-raised by wait()
            with self._errors_lock:
                self.errors.append(StageError(stage.name, exc))
            log.error("stage %s failed: %s: %s", stage.name, type(exc).__name__, exc)
            self.stop()

    def drain(self) -> None:
        """Graceful end: sources stop, queued frames flow out, files close."""
        if not self.ctx.drain.is_set():
            log.info("draining: sources stop reading, queued frames finish")
        # Sealed under the lock cameras join under: a camera being added is then either in every
        # stage it feeds (and drains with the others) or refused, never half-joined.
        locked = self.ctx.seal_lock.acquire(timeout=SEAL_LOCK_TIMEOUT_S)
        try:
            if not locked:  # a join that takes this long is stuck: sealing anyway beats hanging here
                log.warning("drain: a camera has been joining for over %.0f s; sealing without waiting for it",
                            SEAL_LOCK_TIMEOUT_S)
            self.ctx.sealed.set()
        finally:
            if locked:
                self.ctx.seal_lock.release()
        self.ctx.drain.set()

    def stop(self) -> None:
        """Immediate end: every stage returns at its next check."""
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        self.forced = True
        # No seal_lock here: a stop ends every stage whatever their camera sets hold, and it must
        # never wait (it is called from failing stages and from a second signal).
        self.ctx.sealed.set()
        self.ctx.drain.set()
        self.ctx.stop.set()

    def alive(self) -> list[str]:
        """The names of the stages whose threads are still running."""
        return [t.name for t in self._thread_list() if t.is_alive()]

    def wait(self, timeout: float | None = None, on_tick: Callable[[], None] | None = None) -> bool:
        """Waits for all stage threads. Returns True when all have exited, False on `timeout`.
        Raises GraphFailed (from the first stage error) once the threads are down."""
        start = time.monotonic()
        stuck: list[str] = []
        while True:
            alive = [t for t in self._thread_list() if t.is_alive()]
            if not alive:
                break
            # One short join per round (not one per thread) keeps the stop deadline checked often
            # however many stages there are.
            alive[0].join(0.05)
            if on_tick is not None:
                on_tick()
            if self.ctx.stop.is_set() and self._stop_requested_at is None:
                self._stop_requested_at = time.monotonic()
            if self._stop_requested_at is not None and time.monotonic() - self._stop_requested_at > STOP_DEADLINE_S:
                stuck = self.alive()
                break
            if timeout is not None and time.monotonic() - start > timeout:
                return False
        if self.errors:
            first = self.errors[0]
            raise GraphFailed(first.stage, first.error) from first.error
        if stuck:
            raise GraphStuck(stuck)
        return True

    def run(self, on_tick: Callable[[], None] | None = None) -> None:
        """start() then wait(); on KeyboardInterrupt or any exit path, stops the graph first."""
        self.start()
        try:
            self.wait(on_tick=on_tick)
        finally:
            if self.alive():  # interrupted by an exception in the caller (KeyboardInterrupt, ...)
                self.stop()
                self.wait()
