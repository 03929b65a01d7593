"""`vigil listen`: subscribe to a ZeroMQ event endpoint and print each event as one JSON line.

Owns the subscriber loop only; what is published, and how, is the zmq sink's job
(pipeline/sinks/events.py).
"""

from __future__ import annotations

import sys

import zmq


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
