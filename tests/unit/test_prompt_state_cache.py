"""PromptStateCache bookkeeping (no llama.cpp): prefix lookup, budget, eviction order."""

from __future__ import annotations

import numpy as np

from llm.state_cache import PromptStateCache, as_tokens, common_prefix


def state(nbytes: int) -> np.ndarray:
    return np.zeros(nbytes, dtype=np.uint8)


def cost(tokens: list[int], nbytes: int) -> int:
    return nbytes + 4 * len(tokens)  # the token list is accounted too (int32)


def test_common_prefix() -> None:
    assert common_prefix(as_tokens([1, 2, 3]), as_tokens([1, 2, 4])) == 2
    assert common_prefix(as_tokens([1, 2]), as_tokens([1, 2, 3])) == 2
    assert common_prefix(as_tokens([]), as_tokens([1])) == 0
    assert common_prefix(as_tokens([5]), as_tokens([1])) == 0


def test_lookup_returns_the_longest_prefix_only_when_it_beats_the_live_context() -> None:
    cache = PromptStateCache(10_000)
    cache.put(as_tokens([1, 2, 3, 4]), state(100))
    cache.put(as_tokens([1, 2, 9, 9, 9]), state(100))
    found = cache.best(as_tokens([1, 2, 3, 7]), live=0)
    assert found is not None and found[1] == 3 and found[0].tokens.tolist() == [1, 2, 3, 4]
    assert cache.best(as_tokens([1, 2, 3, 7]), live=3) is None  # the live context is as good
    assert cache.best(as_tokens([8]), live=0) is None
    stats = cache.stats()
    assert (stats.live_hits, stats.misses) == (1, 1)


def test_the_budget_holds_and_the_least_recently_stored_state_goes_first() -> None:
    tokens = [[i, 100 + i] for i in range(5)]  # no shared prefix
    budget = 3 * cost(tokens[0], 1000)
    cache = PromptStateCache(budget)
    for i, t in enumerate(tokens):
        assert cache.put(as_tokens(t), state(1000))
        assert cache.stats().bytes <= budget
        assert cache.tokens() == tokens[max(0, i - 2) : i + 1]
    assert cache.stats().evictions == 2


def test_restoring_does_not_refresh_a_state_but_storing_does() -> None:
    cache = PromptStateCache(2 * cost([0, 0], 1000))
    cache.put(as_tokens([1, 1]), state(1000))
    cache.put(as_tokens([2, 2]), state(1000))
    found = cache.best(as_tokens([1, 1, 5]), live=0)
    assert found is not None
    cache.restored(found[0], found[1], ok=True)
    cache.put(as_tokens([3, 3]), state(1000))  # the conversation that restored [1, 1] stores its new state
    assert cache.tokens() == [[2, 2], [3, 3]]
    assert cache.stats().hits == 1 and cache.stats().restored_tokens == 2


def test_a_state_that_is_a_prefix_of_a_newer_one_is_replaced() -> None:
    cache = PromptStateCache(100_000)
    cache.put(as_tokens([1, 2]), state(10))
    cache.put(as_tokens([7, 8]), state(10))
    cache.put(as_tokens([1, 2, 3]), state(10))
    assert cache.tokens() == [[7, 8], [1, 2, 3]]
    assert cache.stats().bytes == cost([7, 8], 10) + cost([1, 2, 3], 10)


def test_a_state_larger_than_the_budget_is_not_stored_and_evicts_nothing() -> None:
    cache = PromptStateCache(cost([1], 50))
    assert cache.put(as_tokens([1]), state(50))
    assert not cache.put(as_tokens([2]), state(51))
    assert cache.tokens() == [[1]]


def test_a_zero_budget_disables_the_cache() -> None:
    cache = PromptStateCache(0)
    assert not cache.enabled
    assert not cache.put(as_tokens([1]), state(1))
    assert cache.stats().entries == 0


def test_a_failed_restore_drops_the_state_and_counts_a_miss() -> None:
    cache = PromptStateCache(10_000)
    cache.put(as_tokens([1, 2]), state(10))
    found = cache.best(as_tokens([1, 2, 3]), live=0)
    assert found is not None
    cache.restored(found[0], found[1], ok=False)
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.hits, stats.misses, stats.restore_failures) == (0, 0, 0, 1, 1)


def test_a_conversation_keeps_only_its_newest_states_and_others_are_untouched() -> None:
    from llm.state_cache import PER_CONVERSATION

    cache = PromptStateCache(1_000_000)
    cache.put(as_tokens([9, 9]), state(100), conversation="other")
    for turn in range(5):  # each turn diverges from the last (new guidance), so none is a prefix
        cache.put(as_tokens([1, 2, turn, turn]), state(100), conversation="kitchen")
    kitchen = [t for t in cache.tokens() if t[:2] == [1, 2]]
    assert kitchen == [[1, 2, t, t] for t in range(5 - PER_CONVERSATION, 5)]  # the newest ones
    assert [9, 9] in cache.tokens()  # another conversation's state stays
    cache.put(as_tokens([7, 7]), state(100))  # no conversation given: plain least-recently-stored
    cache.put(as_tokens([7, 8]), state(100))
    assert [7, 7] in cache.tokens() and [7, 8] in cache.tokens()
    assert cache.stats().evictions == 5 - PER_CONVERSATION
