"""The durable outbox: events wait on disk until a network sink has confirmed them.

Owns the on-disk queue and nothing about delivery (that is pipeline/sinks/network.py). SQLite in
WAL mode with `synchronous=FULL`: an append has reached the disk when it returns, so neither a
SIGKILL nor a power loss loses an event that was appended; the next start sends it.

Each network sink has its own backlog (a row per sink and message, in append order: `id`), so a
sink that is down never holds up another one. A sink takes rows in `id` order and deletes them
once its server confirmed them (MQTT PUBACK, HTTP 2xx): delivery is at-least-once and in order.

The outbox is bounded. Beyond `max_mb` of payload the oldest rows are dropped; rows older than
`max_age_s` are dropped as expired. Either is counted per sink and logged, never silent.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 5.0  # another process on the same file (a second instance by mistake) waits this long
EXPIRY_CHECK_S = 1.0  # how often appends and reads look for expired rows


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One message waiting for a sink.

    Args:
        id: its place in the outbox (increasing in append order).
        camera: the camera it came from.
        topic: where the sink sends it (an MQTT topic; a webhook ignores it).
        payload: the bytes to send (the event's JSON).
        created: wall-clock time it was appended.
    """

    id: int
    camera: str
    topic: str
    payload: bytes
    created: float


class OutboxError(OSError):
    """The outbox file cannot be opened or written (a read-only folder, a full disk, a corrupt file)."""


class Outbox:
    """A bounded on-disk queue of messages per sink, safe to share between threads.

    Args:
        path: the SQLite file (created with its folder).
        max_mb: payload bytes kept, in MB; the oldest rows beyond it are dropped.
        max_age_s: rows older than this are dropped (expired).

    Example:
        >>> box = Outbox(Path("outbox.db"), max_mb=100, max_age_s=86400)
        >>> box.append("mqtt:broker", "gate", "vigil/gate/events/intrusion", b'{"kind": "start"}')
        >>> rows = box.pending("mqtt:broker", after_id=0, limit=100)
        >>> box.confirm("mqtt:broker", [r.id for r in rows])
    """

    def __init__(self, path: Path, *, max_mb: float = 100.0, max_age_s: float = 7 * 86400.0) -> None:
        if max_mb <= 0 or max_age_s <= 0:
            raise ValueError(f"max_mb and max_age_s must be > 0, got {max_mb} and {max_age_s}")
        self.path = Path(path)
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self.dropped: Counter[str] = Counter()  # per sink: rows dropped by the size bound
        self.expired: Counter[str] = Counter()  # per sink: rows dropped by the age bound
        self._next_expiry_check = 0.0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False: one connection, serialised by self._lock, shared by the
            # sinks' writer and delivery threads (SQLite itself is in serialized mode).
            self._db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # WAL + FULL: a commit survives a power loss
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, "
                "camera TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS messages_by_sink ON messages (sink, id)")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._bytes = int(self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM messages").fetchone()[0])
            waiting = dict(self._db.execute("SELECT sink, COUNT(*) FROM messages GROUP BY sink").fetchall())
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open the outbox {self.path}: {exc}") from None
        if waiting:
            log.info("outbox %s: %s from the previous run, sent first", self.path,
                     ", ".join(f"{n} for {sink}" for sink, n in sorted(waiting.items())))

    def append(self, sink: str, camera: str, topic: str, payload: bytes) -> int:
        """Stores one message for `sink`; it is on disk when this returns. Drops the oldest rows
        (any sink's) when the outbox is over `max_mb`. Returns the row's id."""
        now = time.time()
        with self._lock:
            try:
                row_id = self._db.execute("INSERT INTO messages (sink, camera, topic, payload, created) VALUES (?, ?, ?, ?, ?)",
                                          (sink, camera, topic, payload, now)).lastrowid
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot write to the outbox {self.path}: {exc}") from None
            self._bytes += len(payload)
            try:
                if self._bytes > self.max_bytes:
                    self._drop_oldest()
                self._expire_now_and_then(now)
            except sqlite3.Error as exc:  # the row is stored; the bounds are tried again by the next append
                log.warning("outbox %s: cannot drop old messages now: %s", self.path, exc)
        return int(row_id)

    def pending(self, sink: str, after_id: int = 0, limit: int = 100) -> list[OutboxRow]:
        """The oldest rows of `sink` after `after_id`, in order (at most `limit`). Raises OutboxError
        when the file cannot be read."""
        with self._lock:
            try:
                self._expire_now_and_then(time.time())
            except sqlite3.Error as exc:  # a full disk: expired rows stay until there is room to delete them
                log.warning("outbox %s: cannot drop expired messages now: %s", self.path, exc)
            try:
                rows = self._db.execute("SELECT id, camera, topic, payload, created FROM messages WHERE sink = ? AND id > ? "
                                        "ORDER BY id LIMIT ?", (sink, after_id, limit)).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read the outbox {self.path}: {exc}") from None
        return [OutboxRow(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]

    def confirm(self, sink: str, ids: list[int]) -> None:
        """Removes rows the server has confirmed (or that failed for good and must not be retried).
        Raises OutboxError when they cannot be removed now (a full disk: deleting writes too); then
        some of them may be gone, and confirming them again is harmless."""
        if not ids:
            return
        with self._lock:
            for chunk in range(0, len(ids), 500):  # SQLite's limit on bound parameters is 999 on old builds
                part = ids[chunk:chunk + 500]
                marks = ",".join("?" * len(part))
                try:
                    gone = int(self._db.execute(f"SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM messages WHERE sink = ? "
                                                f"AND id IN ({marks})", (sink, *part)).fetchone()[0])
                    self._db.execute(f"DELETE FROM messages WHERE sink = ? AND id IN ({marks})", (sink, *part))
                except sqlite3.Error as exc:
                    raise OutboxError(f"cannot remove delivered messages from the outbox {self.path}: {exc}") from None
                self._bytes -= gone

    def backlog(self, sink: str) -> int:
        """How many rows wait for `sink`. Raises OutboxError when the file cannot be read."""
        with self._lock:
            try:
                return int(self._db.execute("SELECT COUNT(*) FROM messages WHERE sink = ?", (sink,)).fetchone()[0])
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read the outbox {self.path}: {exc}") from None

    @property
    def size_bytes(self) -> int:
        """Payload bytes held."""
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _drop_oldest(self) -> None:
        """Deletes the oldest rows until the payload is at 90% of `max_mb` (a margin, so the next
        appends do not each delete one row). Called with the lock held."""
        target = int(self.max_bytes * 0.9)
        over = self._bytes - target
        rows = self._db.execute("SELECT id, sink, LENGTH(payload) FROM messages ORDER BY id").fetchmany(100_000)
        drop_ids: list[int] = []
        per_sink: Counter[str] = Counter()
        freed = 0
        for row_id, sink, size in rows:
            if freed >= over:
                break
            drop_ids.append(row_id)
            per_sink[sink] += 1
            freed += size
        if drop_ids:
            self._db.execute("DELETE FROM messages WHERE id <= ?", (drop_ids[-1],))
            self._bytes -= freed
            self.dropped.update(per_sink)
            log.warning("outbox %s is over %.1f MB: dropped the %d oldest messages (%s)", self.path,
                        self.max_bytes / 1024 / 1024, len(drop_ids),
                        ", ".join(f"{n} for {sink}" for sink, n in sorted(per_sink.items())))

    def _expire_now_and_then(self, now: float) -> None:
        """Deletes rows older than `max_age_s` (checked at most every EXPIRY_CHECK_S). Lock held."""
        if now < self._next_expiry_check:
            return
        self._next_expiry_check = now + EXPIRY_CHECK_S
        cutoff = now - self.max_age_s
        old = self._db.execute("SELECT sink, COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages WHERE created < ? "
                               "GROUP BY sink", (cutoff,)).fetchall()
        if not old:
            return
        self._db.execute("DELETE FROM messages WHERE created < ?", (cutoff,))
        for sink, count, size in old:
            self.expired[sink] += count
            self._bytes -= size
        log.warning("outbox %s: dropped %s older than %.0f s", self.path,
                    ", ".join(f"{n} for {sink}" for sink, n, _ in sorted(old)), self.max_age_s)


@dataclass
class SharedOutbox:
    """The one outbox of a graph, opened by the first network sink that opens and closed by the
    last one that closes (a graph without network sinks never creates the file).

    Args:
        path, max_mb, max_age_s: see OutboxConfig.
    """

    path: Path
    max_mb: float
    max_age_s: float
    _outbox: Outbox | None = None
    _users: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self) -> Outbox:
        with self._lock:
            if self._outbox is None:
                self._outbox = Outbox(self.path, max_mb=self.max_mb, max_age_s=self.max_age_s)
            self._users += 1
            return self._outbox

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users <= 0 and self._outbox is not None:
                self._outbox.close()
                self._outbox = None
