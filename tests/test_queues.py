import queue
import threading
import time

import pytest

from pipeline.frames import EndOfStream
from pipeline.queues import BoundedQueue, FanIn, QueuePolicy, Stopped


def test_block_policy_loses_nothing_and_waits_for_room():
    q = BoundedQueue("q", 2, QueuePolicy.BLOCK)
    stop = threading.Event()
    received = []

    def consumer():
        for _ in range(100):
            received.append(q.get(timeout=2))
            time.sleep(0.0005)

    t = threading.Thread(target=consumer)
    t.start()
    for i in range(100):
        q.put(i, stop)
    t.join(5)
    assert received == list(range(100))
    assert q.dropped == 0
    assert q.max_depth <= 2


def test_block_put_raises_stopped_when_graph_stops():
    q = BoundedQueue("q", 1, QueuePolicy.BLOCK)
    stop = threading.Event()
    q.put(1, stop)
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(Stopped):
        q.put(2, stop)
    assert time.monotonic() - t0 < 1.0


def test_drop_oldest_keeps_newest_and_counts_drops():
    dropped = []
    q = BoundedQueue("q", 3, QueuePolicy.DROP_OLDEST, on_drop=dropped.append)
    stop = threading.Event()
    for i in range(10):
        q.put(i, stop)  # never blocks
    assert [q.get_nowait() for _ in range(3)] == [7, 8, 9]
    assert q.dropped == 7
    assert dropped == list(range(7))


def test_drop_oldest_never_drops_end_of_stream():
    q = BoundedQueue("q", 2, QueuePolicy.DROP_OLDEST)
    stop = threading.Event()
    q.put(EndOfStream("a"), stop)
    q.put(1, stop)
    q.put(2, stop)  # full: drops 1, not the sentinel
    q.put(EndOfStream("b"), stop)  # full: drops 2
    items = [q.get_nowait() for _ in range(len(q))]
    assert items == [EndOfStream("a"), EndOfStream("b")]


def test_get_times_out():
    q = BoundedQueue("q", 1, QueuePolicy.BLOCK)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.1)
    assert 0.08 <= time.monotonic() - t0 < 1.0


def test_fan_in_is_round_robin_and_never_waits_on_an_empty_input():
    cond = threading.Condition()
    a = BoundedQueue("a", 10, QueuePolicy.BLOCK, condition=cond)
    b = BoundedQueue("b", 10, QueuePolicy.BLOCK, condition=cond)
    stop = threading.Event()
    for i in range(5):
        a.put(("a", i), stop)
    for i in range(2):
        b.put(("b", i), stop)
    fan = FanIn([a, b])
    got = [fan.get(timeout=0.1) for _ in range(7)]
    assert got[:4] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert got[4:] == [("a", 2), ("a", 3), ("a", 4)]
    with pytest.raises(queue.Empty):
        fan.get(timeout=0.05)


def test_fan_in_rejects_queues_with_their_own_condition():
    with pytest.raises(ValueError, match="does not share"):
        FanIn([BoundedQueue("a", 1, QueuePolicy.BLOCK), BoundedQueue("b", 1, QueuePolicy.BLOCK)])


def test_maxsize_must_be_positive():
    with pytest.raises(ValueError, match="maxsize must be >= 1, got 0"):
        BoundedQueue("q", 0, QueuePolicy.BLOCK)


def test_fanin_takes_queues_added_while_it_runs_and_forgets_ended_ones():
    import threading as _threading

    from pipeline.frames import EndOfStream as _EOS

    cond = _threading.Condition()
    fan = FanIn([], condition=cond)
    stop = _threading.Event()
    a = BoundedQueue("a", 4, QueuePolicy.DROP_OLDEST, condition=cond)
    fan.add(a)
    a.put("a1", stop)
    assert fan.get(0.1) == "a1"
    b = BoundedQueue("b", 4, QueuePolicy.DROP_OLDEST, condition=cond)
    fan.add(b)
    a.put(_EOS("a"), stop)
    b.put("b1", stop)
    got = {fan.get(0.1), fan.get(0.1)}
    assert "b1" in got and _EOS("a") in got
    assert fan.queues == [b]


def test_wait_for_room_times_out_on_a_full_queue():
    import threading as _threading
    import time as _time

    q = BoundedQueue("q", 1, QueuePolicy.BLOCK)
    q.put(1, _threading.Event())
    t0 = _time.monotonic()
    assert not q.wait_for_room(0.1)
    assert _time.monotonic() - t0 >= 0.09
    q.get(0.1)
    assert q.wait_for_room(0.0)
