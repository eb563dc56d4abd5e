"""The request queue several ``naila serve`` replicas share, in PostgreSQL (``NAILA_QUEUE_URL``).

One row per request taken from the broker (:mod:`naila_graph.replicas` writes them: the ingest leader). A
row goes ``waiting`` → ``running`` (claimed by one replica) → ``done`` or ``cancelled``. The claim is one
``UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)`` statement that takes the oldest waiting row of a device
with no older row still waiting or running, so each device's requests are answered one at a time in the
order they arrived, while different devices run on every replica at once.

Why not a job-queue library: procrastinate 3.10 (the Postgres job queue the issue names; read and tried
here) orders jobs sharing a ``lock`` the same way, but (1) its de-duplication, ``queueing_lock``, is a unique
index ``WHERE status = 'todo'``: the same task id arriving while the first copy runs or after it finished is
queued again, so a unique key of our own is needed anyway; (2) a job of a dead worker stays ``doing`` (and
holds its lock, so the device waits) until the application itself calls ``get_stalled_jobs`` and retries it,
and "stalled" means a worker heartbeat older than a time threshold (defaults: heartbeat every 10 s, 30 s):
for a take-over within 2 s that threshold must be ~1.5 s, and a living replica whose event loop is held up
that long (a model load, a busy CPU) would lose its request to another and the device would hear two
answers; (3) "this answer is already out" and "cancel the waiting request of that device and say so" need
columns of our own. What would be left of the library is one ``SELECT … FOR UPDATE SKIP LOCKED``, so the
claim is written here, and liveness comes from PostgreSQL itself instead of a heartbeat threshold.

A replica holds a session advisory lock on its replica id for as long as its *control connection* lives. A
running row whose replica no longer holds it belongs to a dead replica: every replica looks for such rows every
:data:`~naila_graph.replicas.POLL_SECONDS` and puts them back in the queue (:meth:`QueueDatabase.release_dead`),
where each is still the oldest of its device. PostgreSQL ends the backend, and its locks, as soon as the killed
process's socket closes, so this takes one poll, with no lease that a busy but living replica could outrun.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

logger = logging.getLogger("naila.queue")

NOTIFY_CHANNEL = "naila_requests"
REMEMBER_SECONDS = 600.0  # finished rows are kept this long: a task id seen again within it is a duplicate
_SETUP_LOCK = 7_362_001  # advisory lock taken while the tables are created (replicas start together)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS naila_requests (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    device_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BYTEA NOT NULL,
    digest BYTEA NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL DEFAULT 'waiting',
    claimed_by TEXT,
    claimer_pid INTEGER,
    claimer_since TIMESTAMPTZ,
    claims INTEGER NOT NULL DEFAULT 0,
    claimed_at DOUBLE PRECISION,
    reclaimed_from TEXT,
    reclaimed_at DOUBLE PRECISION,
    answered_at DOUBLE PRECISION,
    answer TEXT,
    finished_at DOUBLE PRECISION,
    outcome TEXT,
    UNIQUE (device_id, task_id)
);
CREATE INDEX IF NOT EXISTS naila_requests_open ON naila_requests (device_id, id)
    WHERE status IN ('waiting', 'running');
CREATE INDEX IF NOT EXISTS naila_requests_digest ON naila_requests (digest);
CREATE TABLE IF NOT EXISTS naila_replicas (
    replica_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    role TEXT NOT NULL,
    pid INTEGER,
    backend_start TIMESTAMPTZ,
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL,
    leader_since DOUBLE PRECISION
);
"""

# A replica is alive while its control connection holds the session advisory lock (LOCK_REPLICA, hash of its
# replica id): pg_locks shows it to every database role (pg_stat_activity hides other roles' sessions).
LOCK_REPLICA = 7_362_004
_HELD = (
    "SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = {ns}::oid"
    " AND l.objid = hashtext({name})::oid AND l.objsubid = 2 AND l.granted"
)
_RELEASE_DEAD = f"""
UPDATE naila_requests q SET status = 'waiting', reclaimed_from = q.claimed_by, reclaimed_at = %(now)s,
    claimed_by = NULL, claimer_pid = NULL, claimer_since = NULL
WHERE q.status = 'running' AND NOT EXISTS ({_HELD.format(ns=LOCK_REPLICA, name="q.claimed_by")})
RETURNING q.id, q.device_id, q.task_id, q.reclaimed_from
"""
_CLAIM = """
WITH candidate AS (
    SELECT q.id FROM naila_requests q
    WHERE q.status = 'waiting'
      AND NOT EXISTS (
          SELECT 1 FROM naila_requests e
          WHERE e.device_id = q.device_id AND e.id < q.id AND e.status IN ('waiting', 'running'))
    ORDER BY q.id
    LIMIT 1
    FOR UPDATE OF q SKIP LOCKED
)
UPDATE naila_requests r SET
    status = 'running',
    claimed_by = %(replica)s,
    claimer_pid = %(pid)s,
    claimer_since = %(since)s,
    claims = r.claims + 1,
    claimed_at = %(now)s
FROM candidate WHERE r.id = candidate.id
RETURNING r.id, r.kind, r.device_id, r.task_id, r.topic, r.payload, r.received_at, r.claims,
    r.answered_at, r.answer, r.reclaimed_from
"""


def digest(topic: str, payload: bytes) -> bytes:
    return hashlib.blake2b(topic.encode("utf-8", "surrogateescape") + b"\0" + payload, digest_size=16).digest()


@dataclass(frozen=True)
class Claimed:
    """A request a worker of this replica now runs."""

    id: int
    kind: str  # "turn" | "forget"
    device_id: str
    task_id: str
    topic: str
    payload: bytes
    received_at: float  # epoch seconds when the ingest leader stored it
    claims: int  # 1 the first time; more when a dead replica's claim was taken over
    answered: bool  # its final answer was published by a replica that died before finishing the turn
    answer: str | None
    reclaimed_from: str | None  # the dead replica it was taken from


class QueueDatabase:
    """One replica's connection to the queue (its *control* connection): the tables, the claims, the
    replica's registration and the advisory locks (ingest leadership, one replica per MQTT client id).
    The locks are held by this connection's session: they end when the process or the connection dies."""

    def __init__(self, url: str, replica_id: str) -> None:
        self.url = url
        self.replica_id = replica_id
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.pid = 0
        self.since: Any = None

    @property
    def conn(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            raise RuntimeError("the queue database is not connected")
        return self._conn

    @property
    def broken(self) -> bool:
        return self._conn is None or self._conn.broken or self._conn.closed

    async def connect(self, connect_timeout: int = 5) -> None:
        self._conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=connect_timeout, row_factory=dict_row
        )
        row = await self._one(
            "SELECT pg_backend_pid() AS pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        assert row is not None
        self.pid, self.since = int(row["pid"]), row["backend_start"]

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _one(self, query: str, params: Any = None) -> dict[str, Any] | None:
        cur = await self.conn.execute(query, params)
        return await cur.fetchone()

    async def setup(self) -> None:
        """Create the tables (idempotent; replicas starting at once take turns)."""
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
            await self.conn.execute(_SCHEMA)

    # ------------------------------------------------------------------ locks and registration

    async def try_lock(self, namespace: int, name: str) -> bool:
        """Take the session advisory lock (``namespace``, hash of ``name``) if it is free."""
        row = await self._one("SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS got", (namespace, name))
        return bool(row and row["got"])

    async def unlock(self, namespace: int, name: str) -> None:
        await self.conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (namespace, name))

    async def register(self, client_id: str) -> None:
        now = time.time()
        await self.conn.execute(
            "INSERT INTO naila_replicas (replica_id, client_id, role, pid, backend_start, started_at, heartbeat_at)"
            " VALUES (%(r)s, %(c)s, 'standby', %(pid)s, %(since)s, %(now)s, %(now)s)"
            " ON CONFLICT (replica_id) DO UPDATE SET client_id = EXCLUDED.client_id, role = 'standby',"
            " pid = EXCLUDED.pid, backend_start = EXCLUDED.backend_start, started_at = EXCLUDED.started_at,"
            " heartbeat_at = EXCLUDED.heartbeat_at, leader_since = NULL",
            {"r": self.replica_id, "c": client_id, "pid": self.pid, "since": self.since, "now": now},
        )

    async def heartbeat(self, role: str) -> None:
        await self.conn.execute(
            "UPDATE naila_replicas SET heartbeat_at = %s, role = %s WHERE replica_id = %s",
            (time.time(), role, self.replica_id),
        )

    async def set_leader(self, leader: bool) -> None:
        await self.conn.execute(
            "UPDATE naila_replicas SET role = %s, leader_since = %s WHERE replica_id = %s",
            ("leader" if leader else "standby", time.time() if leader else None, self.replica_id),
        )

    async def unregister(self) -> None:
        await self.conn.execute("DELETE FROM naila_replicas WHERE replica_id = %s", (self.replica_id,))

    # ------------------------------------------------------------------ ingest (the leader)

    async def add(self, kind: str, device_id: str, task_id: str, topic: str, payload: bytes) -> int | None:
        """Store a request; None when this device already has a request with this task id (a duplicate)."""
        row = await self._one(
            "INSERT INTO naila_requests (kind, device_id, task_id, topic, payload, digest, received_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (device_id, task_id) DO NOTHING RETURNING id",
            (kind, device_id, task_id, topic, payload, digest(topic, payload), time.time()),
        )
        if row is None:
            return None
        await self.conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
        return int(row["id"])

    async def holds(self, topic: str, payload: bytes) -> bool:
        """This exact message was stored within :data:`REMEMBER_SECONDS` (a broker redelivery)."""
        row = await self._one(
            "SELECT 1 AS found FROM naila_requests WHERE digest = %s AND topic = %s AND payload = %s"
            " AND received_at >= %s LIMIT 1",
            (digest(topic, payload), topic, payload, time.time() - REMEMBER_SECONDS),
        )
        return row is not None

    async def waiting(self, device_id: str | None = None) -> int:
        """Requests waiting (not yet claimed), of one device or of all."""
        if device_id is None:
            row = await self._one("SELECT count(*) AS n FROM naila_requests WHERE status = 'waiting'")
        else:
            row = await self._one(
                "SELECT count(*) AS n FROM naila_requests WHERE status = 'waiting' AND device_id = %s", (device_id,)
            )
        return int(row["n"]) if row else 0

    async def prune(self) -> int:
        """Forget finished rows older than :data:`REMEMBER_SECONDS`, and replicas whose control connection is
        gone (killed ones leave their row behind)."""
        cur = await self.conn.execute(
            "DELETE FROM naila_requests WHERE status IN ('done', 'cancelled') AND finished_at < %s",
            (time.time() - REMEMBER_SECONDS,),
        )
        await self.conn.execute(
            f"DELETE FROM naila_replicas r WHERE NOT EXISTS ({_HELD.format(ns=LOCK_REPLICA, name='r.replica_id')})"
        )
        return max(cur.rowcount, 0)

    # ------------------------------------------------------------------ workers

    async def claim(self) -> Claimed | None:
        """The oldest request of a device with nothing older waiting or running, now this replica's."""
        row = await self._one(
            _CLAIM, {"replica": self.replica_id, "pid": self.pid, "since": self.since, "now": time.time()}
        )
        if row is None:
            return None
        return Claimed(
            id=int(row["id"]),
            kind=str(row["kind"]),
            device_id=str(row["device_id"]),
            task_id=str(row["task_id"]),
            topic=str(row["topic"]),
            payload=bytes(row["payload"]),
            received_at=float(row["received_at"]),
            claims=int(row["claims"]),
            answered=row["answered_at"] is not None,
            answer=row["answer"],
            reclaimed_from=row["reclaimed_from"],
        )

    async def release_dead(self) -> list[tuple[str, str, str]]:
        """Put the requests of replicas whose control connection is gone back in the queue (each stays the
        oldest of its device, so it is answered next); (device, task id, dead replica) of each."""
        cur = await self.conn.execute(_RELEASE_DEAD, {"now": time.time()})
        rows = await cur.fetchall()
        if rows:
            await self.conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
        return [(str(r["device_id"]), str(r["task_id"]), str(r["reclaimed_from"])) for r in rows]

    async def mark_answered(self, row_id: int, answer: str | None) -> None:
        """The request's final answer is published: a replica that takes it over must not answer again."""
        await self.conn.execute(
            "UPDATE naila_requests SET answered_at = %s, answer = %s WHERE id = %s AND answered_at IS NULL",
            (time.time(), answer, row_id),
        )

    async def finish(self, row_id: int, outcome: str) -> None:
        """The request is over (answered and stored, refused, failed or cancelled): its device's next may run."""
        await self.conn.execute(
            "UPDATE naila_requests SET status = 'done', finished_at = %s, outcome = %s"
            " WHERE id = %s AND status = 'running' AND claimed_by = %s",
            (time.time(), outcome, row_id, self.replica_id),
        )
        await self.conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))

    async def release(self, row_id: int) -> None:
        """Give a claimed request back (this replica stops before it started it): the next claim takes it."""
        await self.conn.execute(
            "UPDATE naila_requests SET status = 'waiting', claimed_by = NULL, claimer_pid = NULL,"
            " claimer_since = NULL, claims = claims - 1 WHERE id = %s AND status = 'running' AND claimed_by = %s",
            (row_id, self.replica_id),
        )
        await self.conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))

    async def cancel_waiting(self, device_id: str, task_id: str | None) -> list[tuple[int, str, bytes, str, float]]:
        """Take a device's waiting requests (one task, or all) out of the queue; (id, task id, payload, topic,
        received_at) of each. Of several replicas asking at once, exactly one gets them."""
        cur = await self.conn.execute(
            "UPDATE naila_requests SET status = 'cancelled', finished_at = %s, outcome = 'cancelled'"
            " WHERE device_id = %s AND status = 'waiting' AND kind = 'turn' AND (%s::text IS NULL OR task_id = %s)"
            " RETURNING id, task_id, payload, topic, received_at",
            (time.time(), device_id, task_id, task_id),
        )
        rows = await cur.fetchall()
        return [
            (int(r["id"]), str(r["task_id"]), bytes(r["payload"]), str(r["topic"]), float(r["received_at"]))
            for r in rows
        ]


async def listen(url: str) -> psycopg.AsyncConnection[Any]:
    """A connection listening on :data:`NOTIFY_CHANNEL` (a request was stored or finished)."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5)
    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
    return conn
