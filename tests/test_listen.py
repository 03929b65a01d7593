"""pipeline.listen: the subscriber's checks before it waits (real sockets, real name resolution),
and `run.py listen mqtt://...` against a real Mosquitto broker (tests/tools/mqtt.py)."""

from __future__ import annotations

import json
import select
import signal
import subprocess
from collections.abc import Iterator

import pytest

from pipeline.listen import ListenError, check_host, check_topic_filter, is_event_topic, listen, parse_mqtt_endpoint
from tests.helpers import free_port
from tests.tools.mqtt import Mosquitto

from conftest import run_cli, start_cli


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:5560", "tcp://localhost:5560", "tcp://[::1]:5560",
                                      "ipc:///tmp/vigil.sock", "tcp://*:5560", "mqtt://127.0.0.1", "mqtt://localhost:1883",
                                      "mqtt://user:pw@[::1]:1883"])
def test_hosts_that_resolve_and_other_transports_pass(endpoint):
    check_host(endpoint)


def test_an_unresolvable_host_is_named_at_once():
    with pytest.raises(ListenError, match=r"cannot resolve host 'no-such-host\.invalid' of tcp://no-such-host\.invalid:5560"):
        check_host("tcp://no-such-host.invalid:5560")


def test_negative_count_or_timeout_is_refused():
    with pytest.raises(ValueError, match="0 or more"):
        listen("tcp://127.0.0.1:5560", count=-1)


# ------------------------------------------------------------------------------------------- MQTT


def test_an_mqtt_endpoint_is_taken_apart_with_the_default_port_and_decoded_credentials():
    plain = parse_mqtt_endpoint("mqtt://broker.local")
    assert (plain.host, plain.port, plain.username, plain.password, plain.shown) == ("broker.local", 1883, None, None,
                                                                                      "mqtt://broker.local")
    full = parse_mqtt_endpoint("mqtt://vigil:p%40ss%2Fw@[::1]:8883/")
    assert (full.host, full.port, full.username, full.password) == ("::1", 8883, "vigil", "p@ss/w")
    assert "p%40ss" not in full.shown and "vigil" not in full.shown and "p@ss" not in repr(full)


@pytest.mark.parametrize("endpoint, problem", [("mqtt://:x", "no host"), ("mqtt://", "no host"),
                                               ("mqtt://h:x", "port 'x'"), ("mqtt://h:70000", "port '70000'"),
                                               ("mqtt://h:1883/vigil/#", "no path")])
def test_a_malformed_mqtt_endpoint_is_refused(endpoint, problem):
    with pytest.raises(ListenError, match=problem):
        parse_mqtt_endpoint(endpoint)


def test_only_event_topics_are_events():
    assert is_event_topic("vigil/floor/events/intrusion") and is_event_topic("site/a/vigil/floor/events/loiter")
    for topic in ("vigil/floor/state", "vigil/status", "vigil/floor/door/count", "vigil/events", "events/x"):
        assert not is_event_topic(topic), topic


@pytest.mark.parametrize("topic", ["", "vigil/#/x", "vigil#", "vigil/a+/b"])
def test_an_invalid_topic_filter_is_refused_as_topic(topic):
    with pytest.raises(ListenError) as caught:
        check_topic_filter(topic)
    assert caught.value.key == "--topic"


@pytest.fixture
def broker(tmp_path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def publish(broker):
    """publish(topic, payload, retain=False): QoS 1, returns once the broker has acknowledged it."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect("127.0.0.1", broker.port, keepalive=10)
    client.loop_start()

    def send(topic: str, payload: str, retain: bool = False) -> None:
        info = client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=5)
        assert info.is_published(), f"the broker did not acknowledge {topic} within 5 s"

    yield send
    client.disconnect()
    client.loop_stop()


def first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first line `proc` prints on stdout, waiting at most `timeout` seconds for it."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        pytest.fail(f"listen printed nothing within {timeout} s; stderr: {proc.communicate(timeout=10)[1]}")
    return proc.stdout.readline().rstrip("\n")


def event(n: int) -> str:
    return json.dumps({"event_id": f"e{n}", "camera": "floor", "rule": "intrusion", "kind": "start", "seq": n})


def test_listen_prints_event_messages_only_and_counts_them(broker, publish):
    publish("vigil/floor/state", "streaming", retain=True)
    publish("vigil/status", "online", retain=True)
    # The first event is retained: the broker hands it over right after the SUBACK, so its line
    # says listen has subscribed (no sleep, no race) before the second one is published.
    publish("vigil/floor/events/intrusion", event(1), retain=True)
    proc = start_cli("listen", broker.url, "--topic", "vigil/#", "--count", "2", "--timeout", "20")
    try:
        first = first_line(proc, 20)
        publish("vigil/floor/state", "stalled", retain=True)
        publish("vigil/status", "offline", retain=True)
        publish("vigil/floor/door/count", "3", retain=True)
        publish("vigil/floor/events/intrusion", event(2))
        rest, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert [first, *rest.splitlines()] == [event(1), event(2)]
    assert "warning" not in stderr and "Traceback" not in stderr


def test_listen_mqtt_stops_with_0_on_ctrl_c(broker, publish):
    publish("vigil/floor/events/intrusion", event(1), retain=True)
    proc = start_cli("listen", broker.url)
    try:
        assert first_line(proc, 20) == event(1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_listen_mqtt_without_events_times_out_with_1(broker, publish):
    publish("vigil/floor/state", "streaming", retain=True)  # not an event: neither printed nor resetting the clock
    result = run_cli("listen", broker.url, "--timeout", "1", timeout=30)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"error: no event on {broker.url} for 1 s"]


@pytest.mark.parametrize("credentials", ["", "vigil:s3cret@"])
def test_an_unreachable_broker_is_retried_with_one_warning_until_the_timeout(credentials):
    port = free_port()  # nothing listens there
    shown = f"mqtt://{'***:***@' if credentials else ''}127.0.0.1:{port}"
    result = run_cli("listen", f"mqtt://{credentials}127.0.0.1:{port}", "--timeout", "2", timeout=30)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr
    assert result.stderr.splitlines() == [f"warning: cannot connect to {shown}: Connection refused; retrying",
                                          f"error: no event on {shown} for 2 s"]


@pytest.mark.parametrize("args, key, words", [
    (["mqtt://:x"], "ENDPOINT", "no host"),
    (["mqtt://vigil:s3cret@127.0.0.1:x"], "ENDPOINT", "port 'x'"),
    (["mqtt://no-such-host.invalid:1883"], "ENDPOINT", "cannot resolve host 'no-such-host.invalid'"),
    (["mqtt://127.0.0.1:1883", "--topic", "vigil/#/x"], "--topic", "'#' must be a whole topic level"),
])
def test_a_bad_mqtt_endpoint_or_topic_is_one_line_and_exit_2(args, key, words):
    result = run_cli("listen", *args, "--timeout", "5", timeout=30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}: ") and words in lines[0], result.stderr
