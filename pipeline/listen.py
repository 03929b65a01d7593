"""`vigil listen`: subscribe to a ZeroMQ event endpoint and print each event as one JSON line.

Owns the subscriber loop only; what is published, and how, is the zmq sink's job
(pipeline/sinks/events.py).
"""

from __future__ import annotations

import socket
import sys
import threading

import zmq

RESOLVE_TIMEOUT_S = 5.0


class ListenError(RuntimeError):
    """The endpoint cannot be subscribed to (a malformed address, say)."""


def listen(endpoint: str, *, topic: str = "", count: int = 0, timeout_s: float = 0.0) -> int:
    """Prints each event published on `endpoint` as a JSON line on stdout.

    Args:
        endpoint: the zmq sink's endpoint, e.g. tcp://127.0.0.1:5560.
        topic: only topics starting with this (topics are CAMERA/RULE).
        count: exit after this many events (0: until Ctrl-C).
        timeout_s: exit with 1 when no event arrives for this long (0: wait forever).

    Returns:
        The exit code: 0, or 1 after `timeout_s` without an event.
    """
    if count < 0 or timeout_s < 0:
        raise ValueError(f"count and timeout_s must be 0 or more, got {count} and {timeout_s}")
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


def check_host(endpoint: str, timeout_s: float = RESOLVE_TIMEOUT_S) -> None:
    """Raises ListenError when the host of a `tcp://HOST:PORT` endpoint does not resolve.

    ZeroMQ resolves the host in its I/O thread and retries for ever without telling anyone, so an
    unresolvable (mistyped) host would look like a publisher that is merely quiet.

    Args:
        endpoint: the endpoint to subscribe to; other transports (ipc://, inproc://) pass.
        timeout_s: how long name resolution may take (getaddrinfo has no timeout of its own: it
            runs in a daemon thread that is abandoned after this long).
    """
    if not endpoint.startswith("tcp://"):
        return
    address = endpoint[len("tcp://"):].rpartition(";")[2]  # tcp://[source;]host:port
    host = address.rpartition(":")[0].strip("[]")  # [::1]:5560 is an IPv6 literal
    if not host or host == "*":
        return  # a malformed endpoint: zmq's connect names the problem
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
        raise ListenError(f"cannot resolve host {host!r} of {endpoint} within {timeout_s:g} s")
    if outcome[0] is not None:
        raise ListenError(f"cannot resolve host {host!r} of {endpoint}: {outcome[0].strerror or outcome[0]}")
