"""`type: mqtt`: events to an MQTT broker through the outbox, plus retained camera state, zone
counts and the box's online/offline status (paho-mqtt 2.x).

Topics (PREFIX is `topic_prefix`, default `vigil`):
- `PREFIX/CAMERA/events/RULE`: each event's JSON (QoS `qos`, 1 by default), in order per camera.
- `PREFIX/CAMERA/state`: the camera's state (`streaming`, `stalled`, `reconnecting`, ...),
  retained, published when it changes.
- `PREFIX/CAMERA/ZONE/count`: objects in a zone that has a rule, retained, when it changes.
- `PREFIX/status`: `online` (retained) once connected; `offline` is the last will the broker
  publishes when the connection dies (a killed box), and is published by a clean shutdown too.

An event leaves the outbox once the broker's PUBACK arrived (QoS 1; QoS 0 once written to the
socket). paho resends unacknowledged messages itself after a reconnect; events appended while
the broker is away wait in the outbox and are sent, in order, when it is back.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from pipeline.frames import Event
from pipeline.metrics import Metrics
from pipeline.outbox import OutboxError, SharedOutbox
from pipeline.sinks.network import OutboxSink

if TYPE_CHECKING:
    from pipeline.config import MqttSinkConfig

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often camera states and zone counts are compared with what was published
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:  # a setup problem, said in one line (the registry reports it)
        raise ImportError("the mqtt sink needs paho-mqtt 2.x: pip install 'paho-mqtt>=2.1'") from exc
    return mqtt


class MqttSink(OutboxSink):
    """Publishes events (through the outbox), camera states and zone counts to an MQTT broker.

    Args:
        config: the sink's config entry.
        outbox: the graph's outbox.
        metrics: the graph's counters (camera states and zone counts are read from them).
    """

    def __init__(self, config: MqttSinkConfig, outbox: SharedOutbox, metrics: Metrics) -> None:
        super().__init__(f"mqtt:{config.client_id}@{config.host}:{config.port}", outbox, metrics)
        self.config = config
        self.prefix = config.topic_prefix.rstrip("/")
        self._client: Any = None
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()  # mids PUBACKed (paho's thread → ours)
        self._in_flight: dict[int, int] = {}  # mid → outbox row id (delivery thread only)
        self._sent_upto = 0  # the last outbox row handed to paho
        self._confirmed: list[int] = []  # PUBACKed rows not yet removed from the outbox (a full disk)
        self._outbox_problem = ""  # the last outbox error logged (logged once per change)
        self._connected = threading.Event()
        self._retained: dict[str, str] = {}  # topic → payload last published (or to publish on connect)
        self._retained_lock = threading.Lock()

    def topic(self, event: Event) -> str:
        return f"{self.prefix}/{event.camera}/events/{event.rule}"

    # ----------------------------------------------------------------------------- connection

    def _make_client(self) -> Any:
        mqtt = _paho()
        cfg = self.config
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id, clean_session=True,
                             protocol=mqtt.MQTTv311)
        if cfg.username:  # an empty ${MQTT_USER:-} means no authentication
            client.username_pw_set(cfg.username, cfg.password or None)
        if cfg.ca is not None:
            client.tls_set(ca_certs=str(cfg.ca), certfile=str(cfg.cert) if cfg.cert else None,
                           keyfile=str(cfg.key) if cfg.key else None)
        client.will_set(f"{self.prefix}/status", "offline", qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.max_inflight_messages_set(cfg.max_inflight)
        client.max_queued_messages_set(0)  # unbounded in paho; we never hand it more than max_inflight events
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        if reason_code.is_failure:
            self.stats.set_state("disconnected", f"broker refused the connection: {reason_code}")
            return
        client.publish(f"{self.prefix}/status", "online", qos=1, retain=True)
        with self._retained_lock:  # the broker may have lost them (a restart without persistence)
            for topic, payload in self._retained.items():
                client.publish(topic, payload, qos=1, retain=True)
        self._connected.set()
        self.stats.set_state("connected", f"{self.config.host}:{self.config.port}")
        self.wake.set()

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        self._connected.clear()
        if not self.stopping.is_set():
            self.stats.set_state("disconnected", f"{reason_code}; reconnecting")

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, _reason_code: Any, _properties: Any) -> None:
        # Called by paho's thread under paho's own lock: hand the mid over, do nothing else here.
        self._acks.put(mid)
        self.wake.set()

    # ------------------------------------------------------------------------------- delivery

    def deliver(self) -> None:
        mqtt = _paho()
        client = self._client = self._make_client()
        self.stats.set_state("connecting", f"{self.config.host}:{self.config.port}")
        try:
            client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        except (OSError, ValueError) as exc:
            self.stats.set_state("disconnected", str(exc))
        client.loop_start()  # paho's network thread: connects, reconnects with backoff, reads PUBACKs
        next_poll = 0.0
        while not self.stopping.is_set():
            try:
                next_poll = self._round(client, mqtt, next_poll)
            except OutboxError as exc:  # a full disk: what is confirmed is removed once there is room
                if str(exc) != self._outbox_problem:
                    log.error("sink %s: %s; delivery goes on, retried every second", self.name, exc)
                self._outbox_problem = str(exc)
                self.stopping.wait(1.0)
        try:
            self._take_acks()
        except OutboxError:
            pass  # confirmed but not removed: sent again by the next start (at least once)

    def _round(self, client: Any, mqtt: Any, next_poll: float) -> float:
        """One pass of the delivery loop; returns when the next state poll is due."""
        self._take_acks()
        now = time.monotonic()
        if now >= next_poll:
            self._publish_retained_changes()
            self.refresh_backlog()
            next_poll = now + POLL_S
        if not self._connected.is_set():
            self.wake.wait(POLL_S)
            self.wake.clear()
            return next_poll
        room = self.config.max_inflight - len(self._in_flight)
        rows = self.outbox.pending(self.key, self._sent_upto, room) if room > 0 else []
        for row in rows:
            info = client.publish(row.topic, row.payload, qos=self.config.qos)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: paho queued it
                log.warning("sink %s: publish of %s failed: %s; retried", self.name, row.topic, mqtt.error_string(info.rc))
                break
            self._in_flight[info.mid] = row.id
            self._sent_upto = row.id
        if not rows:
            self.wake.wait(POLL_S)
            self.wake.clear()
        return next_poll

    def _take_acks(self) -> None:
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            row_id = self._in_flight.pop(mid, None)
            if row_id is not None:  # None: a retained state or status message
                self._confirmed.append(row_id)
                self.stats.sent += 1
        if self._confirmed:
            self.outbox.confirm(self.key, self._confirmed)  # raises OutboxError: kept, tried again
            self._confirmed = []
        self._outbox_problem = ""

    def _publish_retained_changes(self) -> None:
        """Camera states and zone counts that changed since last published (retained, QoS 1)."""
        wanted = self.config.cameras
        current: dict[str, str] = {}
        for cam in self.metrics.cameras():
            if wanted is not None and cam.camera_id not in wanted:
                continue
            current[f"{self.prefix}/{cam.camera_id}/state"] = cam.state.value
            for zone, count in cam.zone_counts.items():
                current[f"{self.prefix}/{cam.camera_id}/{zone}/count"] = str(count)
        with self._retained_lock:
            changed = {t: p for t, p in current.items() if self._retained.get(t) != p}
            self._retained.update(changed)
        if changed and self._connected.is_set():
            for topic, payload in changed.items():
                self._client.publish(topic, payload, qos=1, retain=True)

    def flushed(self) -> bool:
        return not self._in_flight and self.outbox.backlog(self.key) == 0

    def shutdown(self) -> None:
        client = self._client
        if client is None:
            return
        if self._connected.is_set():
            # A clean end says so; the will only covers a connection that dies.
            client.publish(f"{self.prefix}/status", "offline", qos=1, retain=True).wait_for_publish(timeout=2.0)
        client.disconnect()
        client.loop_stop()
        self._client = None
