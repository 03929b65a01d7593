"""The durable outbox (pipeline/outbox.py) on a real SQLite file: per-sink backlogs in append
order, confirmation, what a restart and a SIGKILL leave, and the two bounds (max_mb drops the
oldest rows, max_age_s expires old ones), each counted per sink and logged."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.outbox import Outbox, OutboxError, SharedOutbox
from tests.helpers import fill_disk

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def box(tmp_path: Path):
    b = Outbox(tmp_path / "outbox.db", max_mb=10, max_age_s=3600)
    yield b
    b.close()


def payloads(rows) -> list[bytes]:
    return [r.payload for r in rows]


def stored_bytes(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM messages").fetchone()[0])


def test_pending_returns_rows_in_append_order_and_confirm_removes_them(box):
    ids = [box.append("a", "gate", f"t/{i}", f"m{i}".encode()) for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    rows = box.pending("a", after_id=0, limit=100)
    assert payloads(rows) == [f"m{i}".encode() for i in range(5)]
    assert [r.id for r in rows] == ids
    assert rows[0].camera == "gate" and rows[0].topic == "t/0" and rows[0].created <= time.time()
    assert payloads(box.pending("a", after_id=ids[1], limit=2)) == [b"m2", b"m3"]  # after_id and limit
    box.confirm("a", ids[:2])
    assert payloads(box.pending("a")) == [b"m2", b"m3", b"m4"]
    assert box.backlog("a") == 3
    assert box.size_bytes == stored_bytes(box.path) == 6
    box.confirm("a", ids[:2])  # confirming twice is harmless
    box.confirm("a", [])
    assert box.backlog("a") == 3 and box.size_bytes == 6
    box.confirm("a", ids[2:])
    assert box.pending("a") == [] and box.backlog("a") == 0 and box.size_bytes == 0


def test_each_sink_has_its_own_backlog(box):
    for i in range(4):
        box.append("mqtt:x", "cam", "t", f"m{i}".encode())
        box.append("webhook:y", "cam", "t", f"w{i}".encode())
    box.append("mqtt:x", "cam", "t", b"m4")
    assert box.backlog("mqtt:x") == 5 and box.backlog("webhook:y") == 4 and box.backlog("other") == 0
    assert payloads(box.pending("webhook:y")) == [b"w0", b"w1", b"w2", b"w3"]
    # Confirming one sink's rows (even by another sink's ids) leaves the other's backlog alone.
    mqtt_ids = [r.id for r in box.pending("mqtt:x")]
    webhook_ids = [r.id for r in box.pending("webhook:y")]
    box.confirm("webhook:y", mqtt_ids)
    assert box.backlog("mqtt:x") == 5
    box.confirm("mqtt:x", mqtt_ids)
    assert box.backlog("mqtt:x") == 0
    assert payloads(box.pending("webhook:y")) == [b"w0", b"w1", b"w2", b"w3"]
    box.confirm("webhook:y", webhook_ids)
    assert box.backlog("webhook:y") == 0


def test_confirm_takes_more_ids_than_sqlite_binds_at_once(box):
    ids = [box.append("a", "cam", "t", b"x") for _ in range(600)]
    box.confirm("a", ids)
    assert box.backlog("a") == 0 and box.size_bytes == 0


def test_a_new_outbox_on_the_same_file_returns_the_unconfirmed_rows(tmp_path, caplog):
    path = tmp_path / "sub" / "outbox.db"  # the folder is created
    first = Outbox(path, max_mb=10, max_age_s=3600)
    ids = [first.append("a", "cam", "t", f"m{i}".encode()) for i in range(6)]
    first.append("b", "cam", "t", b"other")
    first.confirm("a", ids[:2])
    first.close()

    with caplog.at_level(logging.INFO, logger="pipeline.outbox"):
        second = Outbox(path, max_mb=10, max_age_s=3600)
    try:
        assert payloads(second.pending("a")) == [b"m2", b"m3", b"m4", b"m5"]
        assert payloads(second.pending("b")) == [b"other"]
        assert second.size_bytes == 4 * 2 + 5
        assert "from the previous run" in caplog.text and "4 for a" in caplog.text
        new_id = second.append("a", "cam", "t", b"m6")
        assert new_id > ids[-1], "ids keep increasing across restarts (order is kept)"
        assert payloads(second.pending("a"))[-1] == b"m6"
    finally:
        second.close()


CHILD = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from pipeline.outbox import Outbox
box = Outbox(Path({path!r}), max_mb=10, max_age_s=3600)
for i in range({n}):
    box.append("a", "cam", "t", b"event %d" % i)
os.kill(os.getpid(), signal.SIGKILL)  # at once, no close(), no atexit
"""


def test_rows_appended_before_a_sigkill_are_all_there_after_it(tmp_path):
    path, n = tmp_path / "outbox.db", 200
    child = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), path=str(path), n=n)],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    box = Outbox(path, max_mb=10, max_age_s=3600)
    try:
        assert payloads(box.pending("a", limit=10_000)) == [b"event %d" % i for i in range(n)]
    finally:
        box.close()


def test_beyond_max_mb_the_oldest_rows_are_dropped_counted_per_sink_and_logged(tmp_path, caplog):
    box = Outbox(tmp_path / "outbox.db", max_mb=0.01, max_age_s=3600)  # 10485 bytes
    try:
        sent: dict[str, list[bytes]] = {"a": [], "b": []}
        with caplog.at_level(logging.WARNING, logger="pipeline.outbox"):
            for i in range(300):  # 300 x 100 bytes: about three times the bound
                sink = "a" if i % 3 else "b"
                payload = f"{i:05d}".encode().ljust(100, b".")
                box.append(sink, "cam", "t", payload)
                sent[sink].append(payload)
                assert box.size_bytes <= box.max_bytes
        assert box.size_bytes == stored_bytes(box.path) <= box.max_bytes
        kept = {s: payloads(box.pending(s, limit=1000)) for s in sent}
        for sink, rows in sent.items():
            # What is left of each sink is the newest part of what it appended: the oldest went.
            assert kept[sink] == rows[len(rows) - len(kept[sink]):]
            assert box.dropped[sink] == len(rows) - len(kept[sink]) > 0
        newest_dropped = max(int(p[:5]) for s in sent for p in sent[s][:box.dropped[s]])
        oldest_kept = min(int(p[:5]) for s in kept for p in kept[s])
        assert newest_dropped < oldest_kept, "rows are dropped oldest first, across sinks"
        assert box.expired == {}
        assert "dropped the" in caplog.text and "oldest messages" in caplog.text
        assert any(r.levelno == logging.WARNING for r in caplog.records)
    finally:
        box.close()


def test_a_payload_larger_than_max_mb_does_not_break_the_bound(tmp_path):
    box = Outbox(tmp_path / "outbox.db", max_mb=0.001, max_age_s=3600)  # 1048 bytes
    try:
        box.append("a", "cam", "t", b"small")
        box.append("a", "cam", "t", b"x" * 5000)
        assert box.size_bytes == stored_bytes(box.path) <= box.max_bytes
        assert box.dropped["a"] == 2
        box.append("a", "cam", "t", b"after")
        assert payloads(box.pending("a")) == [b"after"]
    finally:
        box.close()


def test_rows_older_than_max_age_s_expire_and_are_counted(tmp_path, caplog):
    box = Outbox(tmp_path / "outbox.db", max_mb=10, max_age_s=0.3)
    try:
        box.append("a", "cam", "t", b"old-a")
        box.append("b", "cam", "t", b"old-b1")
        box.append("b", "cam", "t", b"old-b2")
        time.sleep(1.2)  # past max_age_s and past the expiry check's interval (EXPIRY_CHECK_S)
        with caplog.at_level(logging.WARNING, logger="pipeline.outbox"):
            box.append("a", "cam", "t", b"new")
        assert payloads(box.pending("a")) == [b"new"]
        assert box.pending("b") == []
        assert box.expired == {"a": 1, "b": 2}
        assert box.dropped == {}
        assert box.size_bytes == stored_bytes(box.path) == 3
        assert "older than" in caplog.text
    finally:
        box.close()


def test_old_rows_left_by_a_previous_run_expire_on_the_next_start(tmp_path):
    path = tmp_path / "outbox.db"
    first = Outbox(path, max_mb=10, max_age_s=3600)
    for i in range(3):
        first.append("a", "cam", "t", f"m{i}".encode())
    first.close()
    with sqlite3.connect(path) as db:  # two of them were written two hours ago
        db.execute("UPDATE messages SET created = created - 7200 WHERE payload IN (?, ?)", (b"m0", b"m1"))
    box = Outbox(path, max_mb=10, max_age_s=3600)
    try:
        assert payloads(box.pending("a")) == [b"m2"]
        assert box.expired["a"] == 2
        assert box.size_bytes == stored_bytes(path) == 2
    finally:
        box.close()


def test_shared_outbox_opens_once_and_closes_with_its_last_user(tmp_path):
    shared = SharedOutbox(tmp_path / "outbox.db", 10, 3600)
    assert not (tmp_path / "outbox.db").exists()
    first, second = shared.acquire(), shared.acquire()
    assert first is second
    shared.release()
    first.append("a", "cam", "t", b"still open")
    shared.release()
    with pytest.raises(OutboxError):  # closed
        first.backlog("a")
    again = shared.acquire()
    try:
        assert payloads(again.pending("a")) == [b"still open"]
    finally:
        shared.release()


def test_a_full_disk_raises_outbox_errors_and_the_outbox_works_again_once_there_is_room(small_disk):
    """Appending and confirming (a delete writes too) fail with OutboxError, never a bare
    sqlite3 error; reading goes on; once the disk has room, confirm works and the byte count is
    still right."""
    box = Outbox(small_disk / "outbox.db", max_mb=10, max_age_s=3600)
    try:
        ids = [box.append("a", "cam", "t", b"x" * 100) for _ in range(3)]
        filler = fill_disk(small_disk)
        with pytest.raises(OutboxError, match="cannot write"):
            box.append("a", "cam", "t", b"y" * 100)
        with pytest.raises(OutboxError, match="cannot remove"):
            box.confirm("a", ids[:1])
        assert [r.id for r in box.pending("a")] == ids and box.backlog("a") == 3
        filler.unlink()
        box.confirm("a", ids[:1])
        box.append("a", "cam", "t", b"z" * 10)
        assert box.backlog("a") == 3 and box.size_bytes == stored_bytes(box.path) == 210
    finally:
        box.close()


def test_bad_bounds_are_refused(tmp_path):
    with pytest.raises(ValueError):
        Outbox(tmp_path / "a.db", max_mb=0, max_age_s=10)
    with pytest.raises(ValueError):
        Outbox(tmp_path / "b.db", max_mb=1, max_age_s=0)


def test_cost_per_append(tmp_path, capsys):
    """Not a check: prints what one durable append costs on this disk (synchronous=FULL)."""
    box = Outbox(tmp_path / "outbox.db", max_mb=10, max_age_s=3600)
    try:
        n = 200
        start = time.perf_counter()
        for _ in range(n):
            box.append("a", "cam", "t", b"x" * 400)
        per_append_ms = (time.perf_counter() - start) / n * 1000
    finally:
        box.close()
    with capsys.disabled():
        print(f"\noutbox: {per_append_ms:.3f} ms per append of 400 bytes ({tmp_path})")
