"""The server's durable inbox: every request taken from the broker is on disk before the broker hears so.

MQTT's QoS 1 is at least once only between the broker and a client that acknowledges a message after it
has taken charge of it. aiomqtt acknowledges as soon as a message arrives, so a request queued in memory
was lost with the process on ``kill -9`` (issue #12 defect 3). The server therefore acknowledges by hand
(:class:`naila_graph.mqtt_link.MqttLink` with ``manual_ack``) and only once the message is a row here; a
row is settled when the device got its final answer or an explicit refusal. On the next start the rows
still unsettled are answered first, before anything new is read, so a device's requests keep their order.

Exactly once, as far as one process can tell:

* a crash after the row was written but before the broker got the acknowledgement makes the broker
  deliver the message again, flagged as a redelivery; :meth:`Inbox.holds` recognises it (same topic and
  bytes as a row of the last :data:`REMEMBER_SECONDS`) and it is acknowledged without a second answer;
* a crash between an answer going out and its row being settled (microseconds) answers that request
  once more after the restart: the one window left, the price of never losing one.

SQLite in WAL mode with ``synchronous=NORMAL``: a committed row survives the process being killed (the
operating system holds the write); a power cut may lose the last moments, as it does the broker's own
in-memory state between its saves. One file per MQTT client id, because the broker's persistent session,
which redelivers what was not acknowledged, belongs to that id.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("naila.inbox")

REMEMBER_SECONDS = 600.0  # settled rows are kept this long to recognise a redelivery of what was answered
PRUNE_EVERY = 200  # rows added between two removals of old settled rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    digest BLOB NOT NULL,
    task_id TEXT,
    received_at REAL NOT NULL,
    settled_at REAL
);
CREATE INDEX IF NOT EXISTS inbox_digest ON inbox (digest);
CREATE INDEX IF NOT EXISTS inbox_open ON inbox (settled_at, id);
"""


@dataclass(frozen=True)
class Entry:
    """A request that was taken but not yet settled when the previous process stopped."""

    id: int
    topic: str
    payload: bytes
    task_id: str | None
    received_at: float


def inbox_path(data_dir: Path, client_id: str) -> Path:
    """The inbox file of the server with MQTT client id ``client_id`` under ``data_dir``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", client_id)[:100] or "server"
    return data_dir / f"inbox-{safe}.sqlite"


def _digest(topic: str, payload: bytes) -> bytes:
    return hashlib.blake2b(topic.encode("utf-8", "surrogateescape") + b"\0" + payload, digest_size=16).digest()


class Inbox:
    """Rows of requests taken from the broker; ``with Inbox(path) as inbox:`` opens and closes the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._added = 0

    def __enter__(self) -> Inbox:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise RuntimeError(
                f"cannot open the request inbox {self.path} ({exc}); NAILA_DATA_DIR must be a writable folder"
            ) from exc
        self._db = db
        self.prune()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the inbox is not open")
        return self._db

    def add(self, topic: str, payload: bytes, task_id: str | None = None) -> int:
        """Write a request; when this returns, it survives a crash of this process. Returns its row id."""
        cursor = self.db.execute(
            "INSERT INTO inbox (topic, payload, digest, task_id, received_at) VALUES (?, ?, ?, ?, ?)",
            (topic, payload, _digest(topic, payload), task_id, time.time()),
        )
        self._added += 1
        if self._added % PRUNE_EVERY == 0:
            self.prune()
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def holds(self, topic: str, payload: bytes) -> bool:
        """True when this exact message is unsettled or was taken within :data:`REMEMBER_SECONDS`: the
        broker's redelivery of a message whose acknowledgement it never got."""
        row = self.db.execute(
            "SELECT 1 FROM inbox WHERE digest = ? AND topic = ? AND payload = ?"
            " AND (settled_at IS NULL OR received_at >= ?) LIMIT 1",
            (_digest(topic, payload), topic, payload, time.time() - REMEMBER_SECONDS),
        ).fetchone()
        return row is not None

    def settle(self, entry_id: int) -> None:
        """The request got its final answer or an explicit refusal."""
        self.db.execute("UPDATE inbox SET settled_at = ? WHERE id = ? AND settled_at IS NULL", (time.time(), entry_id))

    def unsettled(self) -> list[Entry]:
        """Rows taken but never settled (the previous process stopped first), oldest first."""
        rows = self.db.execute(
            "SELECT id, topic, payload, task_id, received_at FROM inbox WHERE settled_at IS NULL ORDER BY id"
        ).fetchall()
        return [Entry(int(r[0]), str(r[1]), bytes(r[2]), r[3], float(r[4])) for r in rows]

    def pending_count(self) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM inbox WHERE settled_at IS NULL").fetchone()
        return int(row[0])

    def prune(self) -> None:
        """Forget settled rows older than :data:`REMEMBER_SECONDS`."""
        self.db.execute(
            "DELETE FROM inbox WHERE settled_at IS NOT NULL AND settled_at < ?", (time.time() - REMEMBER_SECONDS,)
        )
