"""The webhook sink against a real local HTTP server: every event of a run arrives in order after
5xx answers (retried with backoff) with the configured headers; a 4xx is refused for good and not
retried; 429 + Retry-After is retried; a receiver that is away fills the bounded outbox, which
drops its oldest events (counted, logged) without holding up the run. Also, on the sink alone:
what a receiver that misbehaves (a redirect, a reply that is not HTTP) must not do to the events,
two urls differing only in the query string, and an outbox whose disk is full."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.config import WebhookSinkConfig, load_config
from pipeline.delivery import DeliveryMetrics
from pipeline.frames import Event
from pipeline.graph import build_graph
from pipeline.metrics import Metrics
from pipeline.outbox import OutboxError, SharedOutbox
from pipeline.runner import execute
from pipeline.sinks.webhook import WebhookSink
from tests.helpers import dedupe_events, fill_disk, free_port, read_jsonl, wait_for

ZONE = "[[0.3, 0.45], [0.7, 0.45], [0.7, 0.95], [0.3, 0.95]]"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived
    status: int = 0  # what it was answered

    @property
    def event(self) -> dict:
        return json.loads(self.body)


# Decides the answer to the n-th request (0-based): (status, extra headers).
Policy = Callable[[int, "Request"], tuple[int, dict[str, str]]]


class Receiver:
    """A webhook receiver on 127.0.0.1 (on `port`; 0: a free one) that records every POST and
    answers what `policy` says (200 by default)."""

    def __init__(self, policy: Policy | None = None, port: int = 0) -> None:
        self.requests: list[Request] = []
        self.policy = policy or (lambda n, req: (200, {}))
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                with lock:
                    n = len(receiver.requests)
                    receiver.requests.append(req)
                status, headers = receiver.policy(n, req)
                req.status = status
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True)
        self._thread.start()

    def events(self) -> list[dict]:
        return [r.event for r in list(self.requests)]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def receiver_factory():
    started: list[Receiver] = []

    def start(policy: Policy | None = None, port: int = 0) -> Receiver:
        started.append(Receiver(policy, port))
        return started[-1]

    yield start
    for r in started:
        r.stop()


def site(tmp_path: Path, model_path: Path, video: Path, webhook: str, *, max_frames: int = 60, outbox: str = "") -> Path:
    """A config: one camera on `video` with a zone rule that gives several incidents, its events to
    a JSONL file and to the webhook sink `webhook` (a flow mapping)."""
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"""
cameras:
  - id: floor
    source: {{type: file, path: {video}, max_frames: {max_frames}, realtime: false}}
    model: yolo
    zones: [{{id: danger, units: normalized, points: {ZONE}}}]
    rules: [{{id: intrusion, type: zone_intrusion, zone: danger, classes: [person], min_seconds: 0, clear_seconds: 0.2}}]
models:
  - {{id: yolo, path: {model_path}, classes: [person]}}
sinks:
  - {{type: events, path: {tmp_path / 'events.jsonl'}}}
  - {webhook}
outbox: {{path: {tmp_path / 'outbox.db'}{outbox}}}
""")
    return cfg


def run_site(cfg: Path):
    """Runs the config in-process; returns (the run's summary, the webhook sink's DeliveryMetrics)."""
    graph = build_graph(load_config(cfg))
    summary = execute(graph, handle_signals=False)
    [stats] = [d for d in graph.ctx.metrics.deliveries() if d.sink.startswith("webhook:")]
    return summary, stats


def keys(events: list[dict]) -> list[tuple[str, str, int]]:
    return [(e["event_id"], e["kind"], e["seq"]) for e in events]


def outbox_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])


def test_events_arrive_in_order_with_headers_after_5xx_answers(tmp_path, model_path, media, receiver_factory,
                                                                monkeypatch):
    """The first 3 requests get HTTP 500: they are retried (backoff) and every event of the run
    reaches the receiver once after de-duplication, in the JSONL's order, with the configured
    headers (an ${ENV} reference expanded)."""
    monkeypatch.setenv("HOOK_TOKEN", "s3cret-token")
    hook = receiver_factory(lambda n, req: (500, {}) if n < 3 else (200, {}))
    cfg = site(tmp_path, model_path, media / "crowd_overhead.mp4",
               f'{{type: webhook, url: "{hook.url}", headers: {{Authorization: "Bearer ${{HOOK_TOKEN}}", '
               f'X-Site: floor-1}}, max_backoff_s: 0.5}}')
    summary, stats = run_site(cfg)
    written = read_jsonl(tmp_path / "events.jsonl")
    assert len(written) >= 3, "the config should give several events"
    assert wait_for(lambda: len(dedupe_events(hook.events())) >= len(written), 10), (len(hook.requests), len(written))
    assert keys(dedupe_events(hook.events())) == keys(written), "every event once, in order"
    assert dedupe_events(hook.events()) == written, "the same documents as the events sink"
    assert len(hook.requests) >= len(written) + 3
    assert hook.requests[0].body == hook.requests[1].body == hook.requests[2].body == hook.requests[3].body, \
        "a failed event is sent again before the next one"
    assert stats.retries >= 3 and stats.failed == 0 and stats.dropped == 0
    assert stats.sent == len(written) and stats.backlog == 0
    assert stats.state == "connected"
    for req in hook.requests:
        assert req.path == "/hook"
        assert req.headers["authorization"] == "Bearer s3cret-token"
        assert req.headers["x-site"] == "floor-1"
        assert req.headers["content-type"] == "application/json"
    assert outbox_rows(tmp_path / "outbox.db") == 0, "confirmed events left the outbox"
    assert summary.frames_out == 60


def test_a_4xx_answer_fails_that_event_for_good_without_retrying_it(tmp_path, model_path, media, receiver_factory,
                                                                   caplog):
    hook = receiver_factory(lambda n, req: (400, {}) if n == 0 else (200, {}))
    cfg = site(tmp_path, model_path, media / "crowd_overhead.mp4", f'{{type: webhook, url: "{hook.url}"}}')
    with caplog.at_level(logging.ERROR, logger="pipeline.sinks.webhook"):
        _, stats = run_site(cfg)
    written = read_jsonl(tmp_path / "events.jsonl")
    assert len(written) >= 3
    assert wait_for(lambda: len(hook.requests) >= len(written), 10)
    refused = hook.requests[0].event
    assert keys([refused]) == keys(written[:1])
    assert [keys([r.event])[0] for r in hook.requests].count(keys([refused])[0]) == 1, "the refused event was retried"
    assert hook.events() == written, "the others arrive, in order, once each"
    assert stats.failed == 1 and stats.retries == 0 and stats.sent == len(written) - 1 and stats.backlog == 0
    assert "HTTP 400" in caplog.text and "not retried" in caplog.text
    assert outbox_rows(tmp_path / "outbox.db") == 0


def test_429_with_retry_after_is_retried_after_the_asked_wait(tmp_path, model_path, media, receiver_factory):
    hook = receiver_factory(lambda n, req: (429, {"Retry-After": "1"}) if n == 0 else (200, {}))
    cfg = site(tmp_path, model_path, media / "crowd_overhead.mp4", f'{{type: webhook, url: "{hook.url}"}}')
    _, stats = run_site(cfg)
    written = read_jsonl(tmp_path / "events.jsonl")
    assert wait_for(lambda: len(dedupe_events(hook.events())) >= len(written), 10)
    assert hook.requests[0].body == hook.requests[1].body, "the event answered 429 is sent again"
    gap = hook.requests[1].at - hook.requests[0].at
    assert gap >= 0.9, f"Retry-After: 1 asks for a second, the retry came after {gap:.2f} s"
    assert dedupe_events(hook.events()) == written
    assert stats.retries == 1 and stats.failed == 0 and stats.sent == len(written)


def test_a_receiver_that_is_away_fills_the_outbox_which_drops_its_oldest_events(tmp_path, model_path, media, caplog):
    """Nothing listens on the webhook's port and the outbox holds ~2 kB: the run still processes
    every frame, the outbox stays within its bound, and the events that fell out are counted in the
    sink's `dropped` and logged."""
    port = free_port()  # closed: connection refused
    cfg = site(tmp_path, model_path, media / "crowd_overhead.mp4",
               f'{{type: webhook, url: "http://127.0.0.1:{port}/hook", max_backoff_s: 1}}', max_frames=120,
               outbox=", max_mb: 0.002")
    with caplog.at_level(logging.WARNING):
        summary, stats = run_site(cfg)
    written = read_jsonl(tmp_path / "events.jsonl")
    assert summary.frames_out == 120 and [c.frames_out for c in summary.cameras] == [120]
    assert not summary.interrupted and not summary.forced and not summary.failed_cameras
    payload = sum(len(json.dumps(e)) for e in written)
    assert payload > 2 * 0.002 * 1024 * 1024, f"the run should give more events than the outbox holds ({payload} bytes)"
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        left, size = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages").fetchone()
    assert 0 < size <= 0.002 * 1024 * 1024
    assert stats.dropped > 0 and stats.sent == 0 and stats.retries > 0
    assert stats.dropped + left == len(written), "each event is either waiting or counted as dropped"
    assert stats.backlog == left
    assert stats.state == "retrying"
    assert "oldest messages" in caplog.text
    assert "wait in the outbox" in caplog.text


# --- The sink on its own (no pipeline): faster, for what a misbehaving receiver must not do. ---


def event(seq: int) -> Event:
    return Event(event_id=f"incident-{seq}", kind="start", rule="intrusion", rule_type="zone_intrusion", camera="gate",
                 track_ids=[seq], classes=["person"], zone="danger", line=None, ts=1000.0 + seq, started_ts=1000.0,
                 seq=0, boxes=[[0.0, 0.0, 1.0, 1.0]], confidence=[0.9])


def open_sink(tmp_path: Path, url: str, **config) -> tuple[WebhookSink, DeliveryMetrics]:
    sink = WebhookSink(WebhookSinkConfig(type="webhook", url=url, **config),
                       SharedOutbox(tmp_path / "outbox.db", 10, 3600), Metrics())
    sink.open()
    return sink, sink.stats


def test_a_redirect_does_not_count_as_delivered(tmp_path):
    """A 301/302/303 to a POST: urllib would follow it as a GET without the body, and a 2xx for
    that GET is no delivery of the event. The event is kept and retried; no GET goes out."""
    gets: list[str] = []

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(301)
            self.send_header("Location", "/new")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            gets.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink, stats = open_sink(tmp_path, f"http://127.0.0.1:{server.server_address[1]}/old", max_backoff_s=0.5)
    try:
        sink.write_event(event(1))
        assert wait_for(lambda: stats.retries >= 2, 10), vars(stats)
        assert stats.sent == 0 and stats.failed == 0
        assert sink.outbox.backlog(sink.key) == 1, "the event must wait until it is delivered"
        assert gets == [], "a POST's body must not be lost to a redirect"
        assert "301" in stats.state_reason
    finally:
        sink.close()
        server.shutdown()
        server.server_close()


def test_a_reply_that_is_not_http_is_retried_and_delivery_goes_on(tmp_path, receiver_factory):
    """A receiver port that answers garbage (not an HTTP status line) is a failed attempt like a
    refused connection: retried, and once a real receiver listens there the event is delivered."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # its port is taken over below
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    garbage_answers = []

    def answer_garbage() -> None:
        while len(garbage_answers) < 2:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                garbage_answers.append(1)

    threading.Thread(target=answer_garbage, daemon=True).start()
    sink, stats = open_sink(tmp_path, f"http://127.0.0.1:{port}/hook", max_backoff_s=0.5)
    try:
        sink.write_event(event(1))
        assert wait_for(lambda: len(garbage_answers) >= 2, 10), "the event should be tried again"
        assert wait_for(lambda: stats.retries >= 2, 5), vars(stats)
        assert stats.state == "retrying" and "BadStatusLine" in stats.state_reason
        assert sink.outbox.backlog(sink.key) == 1
        listener.close()
        hook = receiver_factory(port=port)
        assert wait_for(lambda: stats.sent == 1, 10), f"the delivery stopped: {vars(stats)}"
        assert [e["event_id"] for e in hook.events()] == ["incident-1"]
    finally:
        sink.close()


def test_two_webhooks_differing_only_in_the_query_string_each_get_every_event_once(tmp_path, receiver_factory):
    """`?channel=a` and `?channel=b` on one URL are two destinations (the config accepts them): each
    has its own backlog, so each receives every event exactly once."""
    hook = receiver_factory()
    outbox, metrics = SharedOutbox(tmp_path / "outbox.db", 10, 3600), Metrics()
    sinks = [WebhookSink(WebhookSinkConfig(type="webhook", url=f"{hook.url}?channel={c}"), outbox, metrics)
             for c in ("a", "b")]
    for s in sinks:
        s.open()
    try:
        for seq in range(5):
            for s in sinks:
                s.write_event(event(seq))
        assert wait_for(lambda: all(s.outbox.backlog(s.key) == 0 for s in sinks), 10)
    finally:
        for s in sinks:
            s.close()
    for channel in ("a", "b"):
        got = [r.event["event_id"] for r in hook.requests if r.path == f"/hook?channel={channel}"]
        assert got == [f"incident-{seq}" for seq in range(5)], (channel, got)
    assert all(s.stats.sent == 5 for s in sinks)
    assert "channel" not in sinks[0].key, "the query string (it may hold a token) stays out of the outbox file"


def test_an_event_the_outbox_cannot_keep_stays_counted_as_dropped(tmp_path, receiver_factory, monkeypatch):
    """The outbox refuses a write (a full disk): watching goes on, and the lost event stays counted
    in the sink's `dropped` (the delivery thread's refreshes must not reset it)."""
    hook = receiver_factory()
    sink, stats = open_sink(tmp_path, hook.url)
    try:
        sink.write_event(event(1))
        assert wait_for(lambda: stats.sent == 1, 10)

        def full(*args, **kwargs):
            raise OutboxError("database or disk is full")

        monkeypatch.setattr(sink.outbox, "append", full)
        sink.write_event(event(2))
        assert stats.dropped == 1
        monkeypatch.undo()
        sink.write_event(event(3))
        assert wait_for(lambda: stats.sent == 2, 10)
        time.sleep(0.6)  # the delivery thread refreshes the counters while idle (IDLE_WAIT_S)
        assert stats.dropped == 1
    finally:
        sink.close()
    assert stats.dropped == 1
    assert [e["event_id"] for e in hook.events()] == ["incident-1", "incident-3"]


def test_two_webhooks_whose_urls_differ_only_in_a_masked_token_have_their_own_metrics(tmp_path, receiver_factory):
    """`?token=a` and `?token=b` both show as `?token=***`: each sink still has its own
    DeliveryMetrics (its own line in /healthz and the metrics), with its own counts."""
    hook = receiver_factory(lambda n, req: (200, {}) if "token=a" in req.path else (503, {}))
    outbox, metrics = SharedOutbox(tmp_path / "outbox.db", 10, 3600), Metrics()
    sinks = [WebhookSink(WebhookSinkConfig(type="webhook", url=f"{hook.url}?token={t}", max_backoff_s=0.5), outbox, metrics)
             for t in ("a", "b")]
    for s in sinks:
        s.open()
    try:
        for seq in range(3):
            for s in sinks:
                s.write_event(event(seq))
        assert wait_for(lambda: sinks[0].stats.sent == 3 and sinks[1].stats.retries >= 1, 10)
        up, down = sinks[0].stats, sinks[1].stats
        assert up is not down and len(metrics.deliveries()) == 2
        assert up.sink != down.sink and "token=***" in up.sink and "token=***" in down.sink
        assert "token=a" not in up.sink + down.sink and "token=b" not in up.sink + down.sink
        assert up.retries == 0 and up.state == "connected"
        assert down.sent == 0 and down.state == "retrying" and down.backlog >= 1
    finally:
        for s in sinks:
            s.close()


def test_delivery_goes_on_when_the_outbox_disk_is_full_and_sends_each_event_once(small_disk, receiver_factory):
    """Events wait (the receiver answers 503), then the outbox's disk fills up and the receiver
    comes back: the delivered events cannot be removed from the outbox, yet each is POSTed once
    (not again and again), the delivery goes on, and once there is room the outbox is emptied and
    new events are delivered."""
    answer = {"status": 503}
    hook = receiver_factory(lambda n, req: (answer["status"], {}))
    sink, stats = open_sink(small_disk, hook.url, max_backoff_s=0.3)
    try:
        for seq in (1, 2, 3):
            sink.write_event(event(seq))
        assert wait_for(lambda: stats.retries >= 1, 10)
        filler = fill_disk(small_disk)
        answer["status"] = 200
        accepted = lambda: [r.event["event_id"] for r in hook.requests if r.status == 200]  # noqa: E731
        assert wait_for(lambda: len(accepted()) >= 3, 10), (vars(stats), accepted())
        time.sleep(1.5)  # several delivery rounds while the disk stays full
        assert accepted() == ["incident-1", "incident-2", "incident-3"], "each delivered event is POSTed once"
        assert stats.sent == 3 and stats.state == "connected"
        assert sink.outbox.backlog(sink.key) == 3, "(the disk is full: they could not be removed yet)"
        filler.unlink()
        assert wait_for(lambda: sink.outbox.backlog(sink.key) == 0, 10), "the outbox is emptied once there is room"
        sink.write_event(event(4))
        assert wait_for(lambda: stats.sent == 4, 10), vars(stats)
    finally:
        sink.close()
    assert [r.event["event_id"] for r in hook.requests if r.status == 200] == [f"incident-{i}" for i in (1, 2, 3, 4)]
    assert stats.backlog == 0 and stats.dropped == 0 and stats.failed == 0
