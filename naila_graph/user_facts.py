"""Long-term memory of the person: facts per device in a LangGraph ``BaseStore``.

The conversation (the checkpointer, :mod:`naila_graph.memory`) holds the last turns only; what the person
told about themselves (name, pets, family, likes, plans, language: nodes/facts.py) is kept here, in the
namespace ``("user_facts", device_id)``, one item per slot (``name``, ``pet:parrot`` …), and shown in every
prompt as third-person sentences.

Where: the store of ``NAILA_MEMORY_URL`` — the same SQLite file as the checkpoints (its own connection and
table, ``store``), or ``PostgresStore`` in the same Postgres database. Bound: at most ``NAILA_MAX_USER_FACTS``
facts per device; storing one more drops the one stored (or last confirmed) longest ago, except the name and
the language, which are single slots and never dropped to make room.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, RemoveMessage
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.store.base import BaseStore, Item, PutOp

from naila_graph.memory import SETTING, MemoryConfigError, _postgres_url, _require_postgres, _sqlite_path
from nodes.facts import KINDS, Fact, FactUpdate, aextract_with_model, extract_facts, extract_with_model
from prompts.templates import group_turns

logger = logging.getLogger("naila.user_facts")

NAMESPACE = "user_facts"
DEFAULT_MAX_FACTS = 32
_KEPT = frozenset({"name", "language"})  # never dropped to make room
_SEARCH_LIMIT = 10_000  # above any bound; the store's search defaults to 10 items
# Who may state a fact about themselves ("tell me a joke" states none: no "me")
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|im|my|mine|we|our)\b", re.IGNORECASE)


def facts_namespace(device_id: str) -> tuple[str, str]:
    return (NAMESPACE, device_id)


@dataclass(frozen=True)
class StoredFact:
    """A fact as stored: ``told`` (epoch seconds) when the person last said it, ``first_told`` when first
    (the prompt lists facts in that order, so a repeated fact does not move), ``statement`` which statement
    stored it (what "forget that" removes), ``source`` ``pattern`` or ``model``."""

    fact: Fact
    told: float
    first_told: float
    statement: float
    source: str = "pattern"

    @classmethod
    def from_item(cls, item: Item) -> StoredFact:
        value = item.value
        told = float(value.get("told", 0.0))
        return cls(
            Fact.from_value(item.key, value),
            told,
            float(value.get("first_told", told)),
            float(value.get("statement", told)),
            str(value.get("source", "pattern")),
        )

    def as_value(self) -> dict[str, Any]:
        return {
            **self.fact.as_value(),
            "told": self.told,
            "first_told": self.first_told,
            "statement": self.statement,
            "source": self.source,
        }


def ordered(facts: Sequence[StoredFact]) -> list[StoredFact]:
    """The prompt's order: by kind (name first), then as first told. Stable across turns."""
    rank = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(facts, key=lambda f: (rank.get(f.fact.kind, len(rank)), f.first_told, f.fact.key))


def sentences(facts: Sequence[StoredFact]) -> list[str]:
    """The third-person sentences the prompt shows (:func:`prompts.templates.facts_messages`)."""
    return [f.fact.sentence() for f in ordered(facts)]


def _matches(key: str, drop: str, kind: str) -> bool:
    return drop == key or (drop.startswith("kind:") and drop[5:] == kind)


def forgotten_turns(messages: Sequence[BaseMessage], update: FactUpdate) -> list[RemoveMessage]:
    """The earlier turns that told what ``update`` forgets ("forget that": the latest turn that stated a
    fact; "forget my pets" / "forget my name": every turn that stated one of those), so the conversation
    does not keep telling the model what the facts no longer hold. The current turn (the last) stays."""
    if not (update.forget_last or update.drop):
        return []
    earlier = group_turns(messages)[:-1]
    told = [(turn, extract_facts(turn[0].text).remember) for turn in earlier if isinstance(turn[0], HumanMessage)]
    told = [(turn, facts) for turn, facts in told if facts]
    gone: list[list[BaseMessage]] = []
    if update.forget_last and told:
        gone.append(told[-1][0])
    for turn, facts in told:
        if any(_matches(f.key, drop, f.kind) for f in facts for drop in update.drop) and turn not in gone:
            gone.append(turn)
    return [RemoveMessage(id=m.id) for turn in gone for m in turn if m.id is not None]


def plan_changes(
    current: Sequence[StoredFact],
    update: FactUpdate,
    *,
    max_facts: int,
    now: float | None = None,
    source: str = "pattern",
) -> dict[str, StoredFact | None]:
    """The puts (a :class:`StoredFact`) and deletes (None) by key that apply ``update`` to ``current``.

    Pure, so the sync and async stores (and the tests) share it: "forget me" deletes all; "forget that"
    deletes what the latest statement stored; dropped slots go; new facts replace their slot (a nameless
    "I have a dog" does not replace "a dog called Rex"); then the oldest are dropped down to ``max_facts``."""
    now = time.time() if now is None else now
    by_key = {f.fact.key: f for f in current}
    changes: dict[str, StoredFact | None] = {}
    if update.forget_all:
        return dict.fromkeys(by_key)
    if update.forget_last and by_key:
        latest = max(f.statement for f in by_key.values())
        changes.update({k: None for k, f in by_key.items() if f.statement == latest})
    for drop in update.drop:
        changes.update({k: None for k, f in by_key.items() if _matches(k, drop, f.fact.kind)})
    for fact in update.remember:
        old = by_key.get(fact.key)
        if old is not None and changes.get(fact.key, old) is not None:
            if not fact.value and old.fact.value:  # "I have a dog" after "my dog is called Rex"
                fact = old.fact
            first = old.first_told
        else:
            first = now
        changes[fact.key] = StoredFact(fact, now, first, now, source)
    kept = {k: f for k, f in by_key.items() if k not in changes}
    kept.update({k: f for k, f in changes.items() if f is not None})
    excess = len(kept) - max(0, max_facts)
    if excess > 0:
        evictable = sorted((f for f in kept.values() if f.fact.kind not in _KEPT), key=lambda f: (f.told, f.first_told))
        for victim in evictable[:excess]:
            changes[victim.fact.key] = None
    return changes


def _ops(device_id: str, changes: dict[str, StoredFact | None]) -> list[PutOp]:
    ns = facts_namespace(device_id)
    return [PutOp(ns, key, None if f is None else f.as_value(), index=False) for key, f in changes.items()]


class UserFacts:
    """The facts of every device in ``store`` (sync and async). Reads return :class:`StoredFact` lists;
    :meth:`apply` / :meth:`aapply` store what a message said and return the device's facts afterwards."""

    def __init__(self, store: BaseStore, *, max_facts: int = DEFAULT_MAX_FACTS) -> None:
        self.store = store
        self.max_facts = max_facts

    def facts(self, device_id: str) -> list[StoredFact]:
        items = self.store.search(facts_namespace(device_id), limit=_SEARCH_LIMIT)
        return ordered([StoredFact.from_item(i) for i in items])

    async def afacts(self, device_id: str) -> list[StoredFact]:
        items = await self.store.asearch(facts_namespace(device_id), limit=_SEARCH_LIMIT)
        return ordered([StoredFact.from_item(i) for i in items])

    def apply(self, device_id: str, update: FactUpdate, *, source: str = "pattern") -> list[StoredFact]:
        current = self.facts(device_id)
        if update.empty:
            return current
        changes = plan_changes(current, update, max_facts=self.max_facts, source=source)
        if changes:
            self.store.batch(_ops(device_id, changes))
        return self.facts(device_id)

    async def aapply(self, device_id: str, update: FactUpdate, *, source: str = "pattern") -> list[StoredFact]:
        current = await self.afacts(device_id)
        if update.empty:
            return current
        changes = plan_changes(current, update, max_facts=self.max_facts, source=source)
        if changes:
            await self.store.abatch(_ops(device_id, changes))
        return await self.afacts(device_id)

    def forget(self, device_id: str) -> int:
        """Drop every fact of ``device_id``; returns how many there were."""
        current = self.facts(device_id)
        if current:
            self.store.batch(_ops(device_id, dict.fromkeys(f.fact.key for f in current)))
        return len(current)

    async def aforget(self, device_id: str) -> int:
        current = await self.afacts(device_id)
        if current:
            await self.store.abatch(_ops(device_id, dict.fromkeys(f.fact.key for f in current)))
        return len(current)

    def devices(self) -> list[tuple[str, int]]:
        """Every device with facts, and how many."""
        out = []
        for ns in self.store.list_namespaces(prefix=(NAMESPACE,), limit=_SEARCH_LIMIT):
            if len(ns) == 2 and (count := len(self.facts(ns[1]))):
                out.append((ns[1], count))
        return sorted(out)


# ---------------------------------------------------------------------------------------------------
# The graph's two uses: recall before the answer, remember after it
# ---------------------------------------------------------------------------------------------------


class FactsNodes:
    """What the graph does with the facts (naila_graph/graph.py).

    :meth:`recall` reads the device's facts for the prompt (one indexed read, well under a millisecond on
    SQLite; a store that fails leaves the facts the conversation last had). :meth:`remember` is the node after
    ``finalize``: it reads the facts the person's message states (nodes/facts.py, microseconds) and stores
    them. The server publishes a model's answer as soon as the model is done, before this node runs, so the
    answer never waits for it; a pattern or action answer waits for the store's write (~1 ms) only when the
    message stated a fact.

    ``extraction`` (NAILA_FACT_EXTRACTION): ``patterns``; ``model`` asks ``chat_model`` too (one call held
    to a schema by a grammar, :func:`nodes.facts.extract_with_model`) for a message that speaks in the first
    person, its facts added to what the patterns found (the patterns win a slot both fill). That call runs
    after the answer, but the turn ends only after it: the device's next request, and other devices' model
    turns, wait for it (~1-3 s on the 0.5B)."""

    def __init__(self, facts: UserFacts, today: Any, *, extraction: str = "patterns", chat_model: Any = None) -> None:
        self.facts = facts
        self.today = today  # () -> date: plans are dated
        self.model = chat_model if extraction == "model" else None

    def recall(self, state: dict[str, Any]) -> list[Fact] | None:
        """The device's facts in the prompt's order; None when they could not be read (the turn then keeps
        the last known sentences, ``state["user_facts"]``)."""
        device = state.get("device_id")
        if not device:
            return []
        try:
            return [f.fact for f in ordered(self.facts.facts(device))]
        except Exception as exc:  # memory of the person is a help, never a reason not to answer
            self._unreadable(state, exc)
            return None

    async def arecall(self, state: dict[str, Any]) -> list[Fact] | None:
        device = state.get("device_id")
        if not device:
            return []
        try:
            return [f.fact for f in ordered(await self.facts.afacts(device))]
        except Exception as exc:
            self._unreadable(state, exc)
            return None

    def _unreadable(self, state: dict[str, Any], exc: Exception) -> None:
        logger.warning("device=%s: the facts could not be read (%s); using the last known", state.get("device_id"), exc)
        return None

    def _update(self, state: dict[str, Any], by_model: FactUpdate | None = None) -> tuple[str, FactUpdate] | None:
        text, device = state.get("text") or "", state.get("device_id")
        if not text or not device:
            return None
        update = extract_facts(text, today=self.today())
        if by_model is not None and by_model.remember and not update.forget_all:
            known = {f.key for f in update.remember}
            extra = tuple(f for f in by_model.remember if f.key not in known)
            update = replace(update, remember=update.remember + extra)
        return None if update.empty else (device, update)

    def _asks_model(self, state: dict[str, Any]) -> bool:
        return self.model is not None and bool(_FIRST_PERSON.search(state.get("text") or ""))

    def _model_update(self, state: dict[str, Any]) -> FactUpdate | None:
        if not self._asks_model(state):
            return None
        try:
            return extract_with_model(self.model, state["text"], today=self.today())
        except Exception as exc:  # the patterns' facts are stored all the same
            logger.warning("device=%s: the model could not read facts (%s)", state.get("device_id"), exc)
            return None

    async def _amodel_update(self, state: dict[str, Any]) -> FactUpdate | None:
        if not self._asks_model(state):
            return None
        try:
            return await aextract_with_model(self.model, state["text"], today=self.today())
        except Exception as exc:
            logger.warning("device=%s: the model could not read facts (%s)", state.get("device_id"), exc)
            return None

    @staticmethod
    def _changed(state: dict[str, Any], after: list[StoredFact], update: FactUpdate) -> dict[str, Any]:
        before = list(state.get("user_facts") or [])
        now = sentences(after)
        out: dict[str, Any] = {"user_facts": now, "facts_changed": sorted(set(now) ^ set(before))}
        if update.forget_all:  # "forget me": the conversation that told the facts goes too
            out["messages"] = [RemoveMessage(id=REMOVE_ALL_MESSAGES)]
        elif removed := forgotten_turns(state.get("messages") or [], update):
            out["messages"] = removed
        return out

    def remember(self, state: dict[str, Any]) -> dict[str, Any]:
        found = self._update(state, self._model_update(state))
        if found is None:
            return {}
        device, update = found
        try:
            after = self.facts.apply(device, update)
        except Exception:  # the answer is out; losing a fact must not fail the turn
            logger.exception("device=%s: the facts of this turn could not be stored", device)
            return {}
        return self._changed(state, after, update)

    async def aremember(self, state: dict[str, Any]) -> dict[str, Any]:
        found = self._update(state, await self._amodel_update(state))
        if found is None:
            return {}
        device, update = found
        try:
            after = await self.facts.aapply(device, update)
        except Exception:
            logger.exception("device=%s: the facts of this turn could not be stored", device)
            return {}
        return self._changed(state, after, update)


# ---------------------------------------------------------------------------------------------------
# Opening the store of NAILA_MEMORY_URL
# ---------------------------------------------------------------------------------------------------

_SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")


@contextmanager
def open_store(url: str) -> Iterator[BaseStore]:
    """The synchronous store of ``url`` (``sqlite:///path``: the checkpoints' file, ``postgresql://…``)."""
    if url.startswith("sqlite:"):
        from langgraph.store.sqlite import SqliteStore

        # Its own connection in autocommit mode: the store runs its own BEGIN/COMMIT.
        conn = sqlite3.connect(_sqlite_path(url), check_same_thread=False, isolation_level=None)
        try:
            for pragma in _SQLITE_PRAGMAS:
                conn.execute(pragma)
            store = SqliteStore(conn)
            store.setup()
            yield store
        finally:
            conn.close()
    elif url.startswith(("postgresql://", "postgres://")):
        _require_postgres()
        from langgraph.store.postgres import PostgresStore

        with PostgresStore.from_conn_string(_postgres_url(url)) as pg_store:
            pg_store.setup()
            yield pg_store
    else:
        raise MemoryConfigError(f"{SETTING} must be sqlite:///path or postgresql://…, got {url!r}")


@asynccontextmanager
async def open_async_store(url: str) -> AsyncIterator[BaseStore]:
    """The async flavour, for the server and ``naila chat`` sessions (no blocking call on the event loop)."""
    if url.startswith("sqlite:"):
        import aiosqlite
        from langgraph.store.sqlite.aio import AsyncSqliteStore

        async with aiosqlite.connect(_sqlite_path(url), isolation_level=None) as conn:
            for pragma in _SQLITE_PRAGMAS:
                await conn.execute(pragma)
            store = AsyncSqliteStore(conn)
            await store.setup()
            yield store
    elif url.startswith(("postgresql://", "postgres://")):
        _require_postgres()
        from langgraph.store.postgres.aio import AsyncPostgresStore

        # A small pool that checks its connections: a restarted Postgres costs a reconnect, not the facts.
        from psycopg_pool import AsyncConnectionPool

        pool = {
            "min_size": 1,
            "max_size": 2,
            "kwargs": {"connect_timeout": 5},
            "check": AsyncConnectionPool.check_connection,
        }
        from naila_graph.memory_postgres import setup_lock

        async with AsyncPostgresStore.from_conn_string(_postgres_url(url), pool_config=pool) as pg_store:  # type: ignore[arg-type]
            async with setup_lock(_postgres_url(url)):  # replicas starting together migrate one at a time
                await pg_store.setup()
            yield pg_store
    else:
        raise MemoryConfigError(f"{SETTING} must be sqlite:///path or postgresql://…, got {url!r}")
