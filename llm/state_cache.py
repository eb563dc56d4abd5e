"""Evaluated prompt states of recent conversations, so a returning conversation skips its known prefix.

llama.cpp reuses the KV cache only for the prefix it shares with the *previous* call (FACTS.md). When
devices interleave, every returning device would evaluate its persona and history again. The llama
session snapshots the llama.cpp sequence after each answer; this module keeps those snapshots, keyed
by the exact token list the KV cache held, and finds the one sharing the longest prefix with a new
prompt. Keying by tokens (not by a conversation id) means a state can only ever be reused for tokens
it was computed from: no conversation can see another one's state beyond their common prefix.

Memory is bounded by a byte budget (``LLM_STATE_CACHE_MB``) with least-recently-stored eviction.
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

MIB = 1024 * 1024
# Saved states kept per conversation: the newest answer's, and the prefill of its next turn.
PER_CONVERSATION = 2


@dataclass(frozen=True)
class StateCacheStats:
    """Counters for metrics. ``hits``: a saved state was restored; ``live_hits``: the context already
    held the longest prefix (the same conversation spoke last); ``misses``: no state helped."""

    hits: int
    live_hits: int
    misses: int
    entries: int
    bytes: int
    budget_bytes: int
    evictions: int
    restored_tokens: int
    restore_failures: int


@dataclass(eq=False)
class SavedState:
    """A snapshot of the llama.cpp sequence (``data``) after evaluating ``tokens``."""

    tokens: npt.NDArray[np.int32]
    data: npt.NDArray[np.uint8]
    conversation: str | None = None

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.tokens.nbytes)


def common_prefix(a: npt.NDArray[np.int32], b: npt.NDArray[np.int32]) -> int:
    """Length of the longest common prefix of two token arrays."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


class PromptStateCache:
    """Saved llama.cpp sequence states keyed by their tokens, within ``budget_bytes``.

    Eviction drops the least recently *stored* state. Restoring a state does not refresh it: the
    conversation that restored it stores a newer, longer state after its answer, which supersedes it
    (refreshing the restored one as well would spend half the budget on superseded states). A stored
    state that is a prefix of a newer one is dropped at once. Thread-safe; the llama context itself is
    only touched by the caller that holds the model's gate.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = max(0, int(budget_bytes))
        self._entries: OrderedDict[int, SavedState] = OrderedDict()  # oldest first
        self._ids = 0
        self._bytes = 0
        self._lock = threading.RLock()
        self._hits = self._live_hits = self._misses = 0
        self._evictions = self._restored_tokens = self._restore_failures = 0

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def stats(self) -> StateCacheStats:
        with self._lock:
            return StateCacheStats(
                hits=self._hits,
                live_hits=self._live_hits,
                misses=self._misses,
                entries=len(self._entries),
                bytes=self._bytes,
                budget_bytes=self.budget_bytes,
                evictions=self._evictions,
                restored_tokens=self._restored_tokens,
                restore_failures=self._restore_failures,
            )

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def tokens(self) -> list[list[int]]:
        """Token lists of the stored states, oldest first (for tests and diagnostics)."""
        with self._lock:
            return [e.tokens.tolist() for e in self._entries.values()]

    # ------------------------------------------------------------------ lookup

    def best(self, target: npt.NDArray[np.int32], live: int) -> tuple[SavedState, int] | None:
        """The stored state sharing the longest prefix with ``target``, if it beats ``live`` tokens.

        When none does, counts a live hit (``live`` > 0) or a miss; the caller reports a restore
        through :meth:`restored`.
        """
        with self._lock:
            found: tuple[SavedState, int] | None = None
            for entry in self._entries.values():
                length = common_prefix(entry.tokens, target)
                if length > (found[1] if found else live):
                    found = (entry, length)
            if found is None:
                if live > 0:
                    self._live_hits += 1
                else:
                    self._misses += 1
            return found

    def restored(self, entry: SavedState, reused: int, ok: bool) -> None:
        """Record the outcome of restoring ``entry``; a state that failed to load is dropped."""
        with self._lock:
            if ok:
                self._hits += 1
                self._restored_tokens += reused
            else:
                self._restore_failures += 1
                self._misses += 1
                self._remove(entry)

    def exact(self, tokens: npt.NDArray[np.int32]) -> SavedState | None:
        """The stored state of exactly ``tokens`` (no statistics are counted: not a lookup for a prompt)."""
        with self._lock:
            for entry in self._entries.values():
                if len(entry.tokens) == len(tokens) and common_prefix(entry.tokens, tokens) == len(tokens):
                    return entry
        return None

    # ------------------------------------------------------------------ storing

    def reserve(self, tokens: npt.NDArray[np.int32], nbytes: int) -> bool:
        """Make room for a state of ``tokens`` taking ``nbytes``: drop stored states it supersedes
        (prefixes of ``tokens``), then the oldest ones. False when it can never fit."""
        if nbytes > self.budget_bytes:
            return False
        with self._lock:
            for old in list(self._entries.values()):
                if len(old.tokens) <= len(tokens) and common_prefix(old.tokens, tokens) == len(old.tokens):
                    self._remove(old)
            evicted = 0
            while self._entries and self._bytes + nbytes > self.budget_bytes:
                _, oldest = self._entries.popitem(last=False)
                self._bytes -= oldest.nbytes
                self._evictions += 1
                evicted += 1
                del oldest
        if evicted:
            _return_freed_memory()
        return True

    def put(self, tokens: npt.NDArray[np.int32], data: npt.NDArray[np.uint8], conversation: str | None = None) -> bool:
        """Store a state as the newest (see :meth:`reserve` for what it replaces).

        ``conversation`` (the memory thread id, when the caller knows it) bounds what one conversation
        keeps: its next prompt shares the most with its newest states, so only the newest
        ``PER_CONVERSATION`` stay and older ones of that conversation go before anyone else's.
        """
        entry = SavedState(tokens=tokens, data=data, conversation=conversation)
        with self._lock:
            if conversation is not None:
                mine = [e for e in self._entries.values() if e.conversation == conversation]
                for old in mine[: max(0, len(mine) - (PER_CONVERSATION - 1))]:  # oldest first
                    self._remove(old)
                    self._evictions += 1
            if not self.reserve(tokens, entry.nbytes):
                return False
            self._ids += 1
            self._entries[self._ids] = entry
            self._bytes += entry.nbytes
        return True

    def _remove(self, entry: SavedState) -> None:
        for key, value in self._entries.items():
            if value is entry:
                del self._entries[key]
                self._bytes -= entry.nbytes
                return


def _return_freed_memory() -> None:
    """Give freed state buffers back to the OS: glibc keeps ~1 MB buffers freed from its heap in RSS
    once its mmap threshold has risen, so RSS would creep up every turn (docs/PERFORMANCE.md, part 4)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def as_tokens(tokens: Sequence[int]) -> npt.NDArray[np.int32]:
    """Token ids as the int32 array the cache keys by."""
    return np.asarray(tokens, dtype=np.int32)
