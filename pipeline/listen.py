"""`vigil listen`: subscribe to an event endpoint and print each event as one JSON line.

Two transports:
- ZeroMQ (`tcp://`, `ipc://`): the zmq sink's PUB socket (pipeline/sinks/events.py); topics are
  CAMERA/RULE and `topic` is a prefix (default: all).
- MQTT (`mqtt://[USER:PASSWORD@]HOST[:PORT]`, port 1883): the broker the mqtt sink publishes to
  (pipeline/sinks/mqtt.py); `topic` is a subscription filter (default `vigil/#`). Only event
  messages (`PREFIX/CAMERA/events/RULE`) are printed and counted: the retained camera states,
  zone counts and the box's online/offline status under the same prefix are skipped.

Owns the subscriber loop only; what is published, and how, is the sinks' job. Credentials in an
endpoint are never printed (pipeline.redact.mask_url).
"""

from __future__ import annotations

import queue
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import zmq

from pipeline.redact import mask_url

RESOLVE_TIMEOUT_S = 5.0
MQTT_DEFAULT_PORT = 1883
MQTT_DEFAULT_TOPIC = "vigil/#"
MQTT_QOS = 1
MQTT_KEEPALIVE_S = 30  # a broker that vanished without closing the socket is noticed within ~45 s
MQTT_CONNECT_TIMEOUT_S = 5.0  # one TCP connect attempt; also bounds how long stopping paho's thread takes
MQTT_RECONNECT_MIN_S = 1
MQTT_RECONNECT_MAX_S = 30
MQTT_STOP_TIMEOUT_S = MQTT_CONNECT_TIMEOUT_S + 2.0
POLL_S = 0.2  # the longest the main thread waits in one call: keeps Ctrl-C and the timeout responsive


class ListenError(RuntimeError):
    """The endpoint cannot be subscribed to (a malformed address, say).

    Args:
        message: what is wrong, with any credentials already masked.
        key: the command-line argument at fault (`ENDPOINT` or `--topic`).
    """

    def __init__(self, message: str, key: str = "ENDPOINT") -> None:
        super().__init__(message)
        self.key = key


def listen(endpoint: str, *, topic: str | None = None, count: int = 0, timeout_s: float = 0.0) -> int:
    """Prints each event published on `endpoint` as a JSON line on stdout.

    Args:
        endpoint: the zmq sink's endpoint, e.g. tcp://127.0.0.1:5560, or an MQTT broker,
            mqtt://[USER:PASSWORD@]HOST[:PORT] (port 1883 by default).
        topic: zmq: only topics starting with this (topics are CAMERA/RULE; default all). MQTT: the
            subscription filter (default `vigil/#`); whatever it matches, only event messages
            (PREFIX/CAMERA/events/RULE) are printed.
        count: exit after this many events (0: until Ctrl-C).
        timeout_s: exit with 1 when no event arrives for this long (0: wait forever).

    Returns:
        The exit code: 0, or 1 after `timeout_s` without an event.

    Raises:
        ValueError: `count` or `timeout_s` is negative.
        ListenError: a malformed endpoint or topic filter, or a host that does not resolve.
    """
    if count < 0 or timeout_s < 0:
        raise ValueError(f"count and timeout_s must be 0 or more, got {count} and {timeout_s}")
    if is_mqtt(endpoint):
        return _listen_mqtt(endpoint, MQTT_DEFAULT_TOPIC if topic is None else topic, count, timeout_s)
    return _listen_zmq(endpoint, topic or "", count, timeout_s)


def _listen_zmq(endpoint: str, topic: str, count: int, timeout_s: float) -> int:
    check_host(endpoint)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close()
        ctx.term()
        raise ListenError(f"cannot connect to {endpoint!r}: {exc}") from None
    sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    received = 0
    try:
        while not count or received < count:
            # Short polls keep Ctrl-C responsive; the optional timeout bounds a silent wait.
            waited = 0.0
            while not sock.poll(200):
                waited += 0.2
                if timeout_s and waited >= timeout_s:
                    print(f"error: no event on {endpoint} for {timeout_s:g} s", file=sys.stderr)
                    return 1
            _topic, payload = sock.recv_multipart()
            print(payload.decode(), flush=True)
            received += 1
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        ctx.term()
    return 0


# ------------------------------------------------------------------------------------------- MQTT


@dataclass(frozen=True)
class MqttEndpoint:
    """An `mqtt://` endpoint taken apart.

    Attributes:
        host: the broker's host name or IP address (an IPv6 literal without brackets).
        port: its TCP port.
        username: the user name, or None for an anonymous connection.
        password: the password (None: none), kept out of repr().
        shown: the endpoint as it may be printed, credentials masked.
    """

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    shown: str


def is_mqtt(endpoint: str) -> bool:
    """Whether `endpoint` names an MQTT broker (`mqtt://...`) rather than a ZeroMQ endpoint.

    Args:
        endpoint: the endpoint given to `listen`.

    Returns:
        True for an `mqtt://` endpoint (the scheme in any case).
    """
    return endpoint[:7].lower() == "mqtt://"


def parse_mqtt_endpoint(endpoint: str) -> MqttEndpoint:
    """Takes `mqtt://[USER:PASSWORD@]HOST[:PORT]` apart (percent-escapes in USER and PASSWORD are
    decoded, so a password may hold `@` or `/` as %40 and %2F).

    Args:
        endpoint: an endpoint for which `is_mqtt` is true.

    Returns:
        Its host, port (1883 when none is given), credentials and masked form.

    Raises:
        ListenError: no host, a port that is not a number from 1 to 65535, or a path, query or
            fragment (an MQTT endpoint has none: the topic is `--topic`).
    """
    shown = mask_url(endpoint)
    expected = "expected mqtt://[USER:PASSWORD@]HOST[:PORT]"
    try:
        parts = urlsplit(endpoint)
    except ValueError as exc:  # an unbalanced IPv6 bracket, say
        raise ListenError(f"{expected}, got {shown!r}: {exc}") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ListenError(f"{expected}, got {shown!r}: an MQTT endpoint has no path (the topic filter is --topic)")
    if not parts.hostname:
        raise ListenError(f"{expected}, got {shown!r}: no host")
    try:
        port = parts.port  # ValueError for a port that is not a number, or out of 0-65535
    except ValueError:
        port = -1
    if port is None:
        port = MQTT_DEFAULT_PORT
    if not 1 <= port <= 65535:
        given = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise ListenError(f"{expected}, got {shown!r}: port {given!r} is not a number from 1 to 65535")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return MqttEndpoint(parts.hostname, port, username, password, shown)


def check_topic_filter(topic: str) -> None:
    """Raises ListenError (key `--topic`) when `topic` is not a valid MQTT subscription filter.

    paho raises a bare ValueError from subscribe(), inside its own network thread, where nobody
    would see it; checked here, the command says what is wrong before it connects.

    Args:
        topic: an MQTT topic filter, e.g. `vigil/#` or `vigil/+/events/intrusion`.
    """
    problem = None
    if not topic:
        problem = "an MQTT topic filter cannot be empty (e.g. vigil/#)"
    elif len(topic.encode()) > 65535 or "\0" in topic:
        problem = "an MQTT topic filter has at most 65535 bytes and no NUL character"
    else:
        levels = topic.split("/")
        if any("#" in level and (level != "#" or i != len(levels) - 1) for i, level in enumerate(levels)):
            problem = "'#' must be a whole topic level, and the last one (e.g. vigil/#)"
        elif any("+" in level and level != "+" for level in levels):
            problem = "'+' must be a whole topic level (e.g. vigil/+/events/+)"
    if problem:
        raise ListenError(f"{problem}, got {topic!r}", key="--topic")


def is_event_topic(topic: str) -> bool:
    """Whether an MQTT message on `topic` is an event: `PREFIX/CAMERA/events/RULE`, i.e. the
    second-to-last level is `events` (the mqtt sink's other topics are `PREFIX/CAMERA/state`,
    `PREFIX/CAMERA/ZONE/count` and `PREFIX/status`).

    Args:
        topic: the topic a message arrived on.

    Returns:
        True for an event message.
    """
    levels = topic.split("/")
    return len(levels) >= 4 and levels[-2] == "events"


# What paho's thread hands the main thread (the only one that prints).
_EVENT, _WARNING, _CONNECTED = "event", "warning", "connected"


class _MqttSession:
    """paho's callbacks: they run on paho's network thread and only put (kind, text) items on
    `inbox`; the main thread reads it, prints, counts and keeps the timeout."""

    def __init__(self, endpoint: MqttEndpoint, topic: str) -> None:
        self.endpoint = endpoint
        self.topic = topic
        self.inbox: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.connected = False  # paho's thread only

    def on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        if reason_code.is_failure:  # a CONNACK refusal (bad credentials, say): paho retries
            self.inbox.put((_WARNING, self._cannot_connect(f"the broker refused the connection: {reason_code}")))
            return
        self.connected = True
        # Subscribed on every connect: with a clean session a reconnect starts with no subscriptions.
        client.subscribe(self.topic, qos=MQTT_QOS)
        self.inbox.put((_CONNECTED, ""))

    def on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        # paho passes no reason, but calls this from inside its `except OSError:` around the
        # connect, so the error being handled is the reason (refused, timed out, unreachable).
        error = sys.exc_info()[1]
        reason = (getattr(error, "strerror", None) or str(error) or type(error).__name__) if error else "connection failed"
        self.inbox.put((_WARNING, self._cannot_connect(reason)))

    def on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        was_connected, self.connected = self.connected, False
        if was_connected and reason_code.is_failure:  # not our own disconnect() at the end
            self.inbox.put((_WARNING, f"warning: lost the connection to {self.endpoint.shown}: {reason_code}; reconnecting"))

    def on_subscribe(self, _client: Any, _userdata: Any, _mid: int, reason_codes: Any, _properties: Any) -> None:
        if any(rc.is_failure for rc in reason_codes):  # an ACL that denies the filter, say
            self.inbox.put((_WARNING, f"warning: {self.endpoint.shown} refused the subscription to {self.topic!r}: "
                                      f"{', '.join(str(rc) for rc in reason_codes)}"))

    def on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        if is_event_topic(message.topic):
            self.inbox.put((_EVENT, bytes(message.payload).decode(errors="replace")))

    def _cannot_connect(self, reason: str) -> str:
        return f"warning: cannot connect to {self.endpoint.shown}: {reason}; retrying"


def _listen_mqtt(endpoint: str, topic: str, count: int, timeout_s: float) -> int:
    address = parse_mqtt_endpoint(endpoint)
    check_topic_filter(topic)
    check_host(endpoint)  # paho would retry an unresolvable (mistyped) host for ever
    try:
        import paho.mqtt.client as mqtt  # here, not at the top: the zmq path does not need it
    except ImportError:  # a setup problem, said in one line
        raise ListenError("listening on mqtt:// needs paho-mqtt 2.x: pip install 'paho-mqtt>=2.1'") from None

    session = _MqttSession(address, topic)
    # A random id: two listeners (or a listener and a sink) with one id would keep kicking each
    # other off the broker. 21 characters: MQTT 3.1.1 brokers must accept up to 23.
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"vigil-listen-{secrets.token_hex(4)}",
                         clean_session=True, protocol=mqtt.MQTTv311)
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    client.connect_timeout = MQTT_CONNECT_TIMEOUT_S
    client.reconnect_delay_set(MQTT_RECONNECT_MIN_S, MQTT_RECONNECT_MAX_S)
    client.on_connect = session.on_connect
    client.on_connect_fail = session.on_connect_fail
    client.on_disconnect = session.on_disconnect
    client.on_subscribe = session.on_subscribe
    client.on_message = session.on_message
    # connect_async + loop_start: paho's thread connects, and retries with backoff (the first
    # attempt too), while this thread prints and keeps the timeout.
    client.connect_async(address.host, address.port, keepalive=MQTT_KEEPALIVE_S)
    client.loop_start()
    received = 0
    last_event = time.monotonic()
    warning: str | None = None  # the warning last printed: each is printed once, until it changes
    try:
        while not count or received < count:
            left = timeout_s - (time.monotonic() - last_event) if timeout_s else POLL_S
            if left <= 0:
                print(f"error: no event on {address.shown} for {timeout_s:g} s", file=sys.stderr)
                return 1
            try:
                kind, text = session.inbox.get(timeout=min(POLL_S, left))  # short waits: Ctrl-C stays responsive
            except queue.Empty:
                continue
            if kind == _EVENT:
                print(text, flush=True)
                received += 1
                last_event = time.monotonic()
            elif kind == _WARNING and text != warning:
                print(text, file=sys.stderr, flush=True)
                warning = text
            elif kind == _CONNECTED and warning is not None:
                print(f"connected to {address.shown}", file=sys.stderr, flush=True)
                warning = None
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        # loop_stop() joins paho's thread without a timeout, and that thread may be inside a
        # connect (up to MQTT_CONNECT_TIMEOUT_S): join it from a daemon thread, for at most so long.
        stopper = threading.Thread(target=client.loop_stop, name="listen-mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(MQTT_STOP_TIMEOUT_S)
    return 0


# ------------------------------------------------------------------------------ name resolution


def check_host(endpoint: str, timeout_s: float = RESOLVE_TIMEOUT_S) -> None:
    """Raises ListenError when the host of a `tcp://HOST:PORT` or `mqtt://HOST[:PORT]` endpoint
    does not resolve.

    ZeroMQ resolves the host in its I/O thread and retries for ever without telling anyone, and
    paho retries a failed connect for ever too, so an unresolvable (mistyped) host would look like
    a publisher that is merely quiet.

    Args:
        endpoint: the endpoint to subscribe to; other transports (ipc://, inproc://) pass.
        timeout_s: how long name resolution may take (getaddrinfo has no timeout of its own: it
            runs in a daemon thread that is abandoned after this long).

    Raises:
        ListenError: the host does not resolve (within `timeout_s`), or a malformed mqtt:// endpoint.
    """
    if is_mqtt(endpoint):
        host = parse_mqtt_endpoint(endpoint).host
    elif endpoint.startswith("tcp://"):
        address = endpoint[len("tcp://"):].rpartition(";")[2]  # tcp://[source;]host:port
        host = address.rpartition(":")[0].strip("[]")  # [::1]:5560 is an IPv6 literal
        if not host or host == "*":
            return  # a malformed endpoint: zmq's connect names the problem
    else:
        return
    shown = mask_url(endpoint)
    outcome: list[OSError | None] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, None)
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=resolve, name="listen-resolve", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        raise ListenError(f"cannot resolve host {host!r} of {shown} within {timeout_s:g} s")
    if outcome[0] is not None:
        raise ListenError(f"cannot resolve host {host!r} of {shown}: {outcome[0].strerror or outcome[0]}")
