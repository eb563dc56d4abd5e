"""Per-conversation prompt states (``state_cache_mb``) against real llama.cpp.

The reference for every answer is a fresh evaluation of the same prompt (no KV reuse at all): with the
cache, interleaved conversations must produce exactly the tokens they would produce alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from llm import ChatLlamaCpp, LLMSettings, load_chat_model
from llm.errors import GenerationTimeoutError
from llm.state_cache import MIB, as_tokens, common_prefix


def make(path: str, **kw: Any) -> ChatLlamaCpp:
    params: dict[str, Any] = {"model_path": path, "temperature": 0.0, "max_tokens": 24, "n_ctx": 4096}
    params.update(kw)
    return ChatLlamaCpp(**params)


@pytest.fixture
def cached(tiny_model: str) -> Iterator[ChatLlamaCpp]:
    m = make(tiny_model, state_cache_mb=64)
    yield m
    m.unload()


@pytest.fixture
def fresh(tiny_model: str) -> Iterator[ChatLlamaCpp]:
    """Reference model: no saved states, and its context is cleared before every call."""
    m = make(tiny_model, state_cache_mb=0)
    yield m
    m.unload()


def answer(model: ChatLlamaCpp, messages: list[BaseMessage], **kw: Any) -> tuple[list[int], AIMessage]:
    """The sampled token ids (spied on llama-cpp-python's generator) and the message."""
    llama = model.llama
    original = llama.generate
    ids: list[int] = []

    def spy(*args: Any, **kwargs: Any) -> Iterator[int]:
        tokens = original(*args, **kwargs)
        try:
            for token in tokens:
                ids.append(token)
                yield token
        finally:
            tokens.close()

    llama.generate = spy
    try:
        message = model.invoke(messages, **kw)
    finally:
        del llama.generate
    assert isinstance(message, AIMessage)
    return ids, message


def alone(fresh: ChatLlamaCpp, messages: list[BaseMessage], **kw: Any) -> list[int]:
    fresh.clear_prompt_cache()
    ids, _ = answer(fresh, messages, **kw)
    return ids


def cached_tokens(message: AIMessage) -> int:
    return int(message.response_metadata["prompt_tokens_cached"])


PERSONA = SystemMessage("You are NAILA, a small and curious desk robot who speaks in short sentences. " * 6)
QUESTIONS = {
    "kitchen": ["Hi there!", "What's for dinner?", "Too spicy.", "Fine, thanks."],
    "office": ["Good morning.", "Remind me at noon.", "And tomorrow?", "Bye now."],
    "garage": ["Hey robot.", "Is the door shut?", "Check again.", "Okay."],
}


def conversation(name: str, turn: int, answers: Mapping[tuple[str, int], str]) -> list[BaseMessage]:
    messages: list[BaseMessage] = [PERSONA]
    for t in range(turn):
        messages += [HumanMessage(QUESTIONS[name][t]), AIMessage(answers[(name, t)])]
    messages.append(HumanMessage(QUESTIONS[name][turn]))
    return messages


# 1. interleaved conversations answer as if each ran alone ------------------------------------------


def test_interleaved_conversations_answer_as_if_each_ran_alone(cached: ChatLlamaCpp, fresh: ChatLlamaCpp) -> None:
    answers: dict[tuple[str, int], str] = {}
    for turn in range(4):
        for name in QUESTIONS:  # round-robin: every returning conversation had two others in between
            messages = conversation(name, turn, answers)
            ids, message = answer(cached, messages)
            assert ids == alone(fresh, messages), (name, turn)
            answers[(name, turn)] = message.text
    stats = cached.state_cache_stats
    assert stats.hits >= 9  # every returning conversation restored its own state
    assert stats.restore_failures == 0


def test_answers_are_the_same_with_and_without_the_cache(tiny_model: str) -> None:
    def run(state_cache_mb: float) -> dict[tuple[str, int], str]:
        model = make(tiny_model, state_cache_mb=state_cache_mb)
        answers: dict[tuple[str, int], str] = {}
        for turn in range(3):
            for name in QUESTIONS:
                answers[(name, turn)] = model.invoke(conversation(name, turn, answers)).text
        model.unload()
        return answers

    assert run(64) == run(0)


@pytest.mark.real_model
def test_real_model_interleaved_conversations_answer_the_same_with_and_without_the_cache(real_model: str) -> None:
    from prompts.persona import load_persona
    from prompts.templates import build_prompt, turn_guidance

    template = build_prompt(load_persona())
    questions = {
        "ana": ["Hi NAILA, I'm Ana.", "What's 12 times 7?", "What's my name?"],
        "ben": ["Hello! Tell me a joke.", "Another one please.", "Why is that funny?"],
        "cy": ["Good morning robot.", "Can you turn your head?", "Thanks, bye."],
    }

    def prompt(name: str, turn: int, answers: dict[tuple[str, int], str]) -> list[BaseMessage]:
        history: list[BaseMessage] = []
        for t in range(turn):
            history += [HumanMessage(questions[name][t]), AIMessage(answers[(name, t)])]
        guidance = turn_guidance(intent="question", now=datetime(2025, 1, 1, 9, 0) + timedelta(minutes=turn))
        return template.format_messages(history=history, guidance=guidance, input=questions[name][turn])

    def run(state_cache_mb: float) -> tuple[dict[tuple[str, int], str], dict[tuple[str, int], int]]:
        model = ChatLlamaCpp(
            model_path=real_model, temperature=0.0, max_tokens=32, n_ctx=2048, state_cache_mb=state_cache_mb
        )
        answers: dict[tuple[str, int], str] = {}
        reused: dict[tuple[str, int], int] = {}
        for turn in range(3):
            for name in questions:
                message = model.invoke(prompt(name, turn, answers))
                answers[(name, turn)] = message.text
                reused[(name, turn)] = cached_tokens(message)
        model.unload()
        return answers, reused

    with_cache, reused = run(256)
    without_cache, reused_without = run(0)
    assert with_cache == without_cache
    assert "84" in with_cache[("ana", 1)]
    # turn 2: the returning conversation restores its persona + turn-0 history; without the cache
    # only the persona (shared with the device that spoke last) is reused
    for name in questions:
        assert reused[(name, 2)] > reused_without[(name, 2)]


# 2. no state leaks between conversations that share a long prefix -----------------------------------


SHARED = [
    SystemMessage("You are NAILA. The family's rules: be kind, be brief, never shout. " * 5),
    HumanMessage("We all share this long introduction before anyone says anything personal."),
    AIMessage("Understood, I will remember the family's rules."),
]


def test_conversations_sharing_a_long_prefix_never_see_each_others_state(
    cached: ChatLlamaCpp, fresh: ChatLlamaCpp
) -> None:
    a0 = [*SHARED, HumanMessage("My favourite fruit is apples.")]
    b0 = [*SHARED, HumanMessage("My favourite fruit is oranges.")]
    ids_a0, msg_a0 = answer(cached, a0)
    assert ids_a0 == alone(fresh, a0)
    cached.llama.reset()  # forget the live context: only A's saved state can help B
    ids_b0, msg_b0 = answer(cached, b0)
    assert ids_b0 == alone(fresh, b0)
    shared = common_prefix(as_tokens(cached.prompt_tokens(a0)), as_tokens(cached.prompt_tokens(b0)))
    assert shared > 300
    assert cached_tokens(msg_b0) == shared  # exactly the common part of A's state, not one token more
    a1 = [*a0, AIMessage(msg_a0.text), HumanMessage("Which fruit do I like?")]
    b1 = [*b0, AIMessage(msg_b0.text), HumanMessage("Which fruit do I like?")]
    for messages in (a1, b1, a0, b0):  # alternate: each one finds the other's state most recent
        ids, _ = answer(cached, messages)
        assert ids == alone(fresh, messages)


# 3. the budget ---------------------------------------------------------------------------------------


def distinct(i: int) -> list[BaseMessage]:
    """A conversation sharing nothing but the template header with the others (~700 tokens)."""
    return [SystemMessage(f"{i} " + f"Household number {i} has its own long story to tell. " * 13), HumanMessage("Hi")]


def test_the_budget_is_never_exceeded_and_the_oldest_state_is_evicted(tiny_model: str) -> None:
    model = make(tiny_model, state_cache_mb=1)
    budget = 1 * MIB
    assert model.state_cache_stats.budget_bytes == budget
    prompts = [model.prompt_tokens(distinct(i)) for i in range(6)]
    stored: list[int] = []  # conversation numbers in storing order

    for i in range(6):
        model.invoke(distinct(i))
        stored.append(i)
        stats = model.state_cache_stats
        assert 0 < stats.bytes <= budget
        kept = [next(j for j, p in enumerate(prompts) if t[: len(p)] == p) for t in model._session.states.tokens()]  # type: ignore[union-attr]
        assert kept == stored[-len(kept) :]  # what is left are the most recently stored, oldest first
    stats = model.state_cache_stats
    assert stats.entries < 6 and stats.evictions == 6 - stats.entries
    newest_kept = kept[0]
    evicted = newest_kept - 1
    hits = stats.hits
    model.invoke(distinct(newest_kept))
    assert model.state_cache_stats.hits == hits + 1
    model.invoke(distinct(evicted))
    assert model.state_cache_stats.hits == hits + 1  # gone: evaluated again
    assert model.state_cache_stats.bytes <= budget
    model.unload()


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))


def test_resident_memory_grows_by_at_most_the_budget(tiny_model: str) -> None:
    model = make(tiny_model, state_cache_mb=8, max_tokens=4)

    def talk(i: int) -> list[BaseMessage]:  # ~3,000 tokens: ~1 MiB of state each on the tiny model
        return [SystemMessage(f"{i} " + f"Conversation {i} is long. " * 110), HumanMessage("hi")]

    for i in range(3):  # llama.cpp's buffers reach their size for such prompts
        model.invoke(talk(100 + i))
    model.clear_prompt_cache()
    before = _rss_mib()
    for i in range(30):  # ~30 MiB of states if nothing were evicted
        model.invoke(talk(i))
    assert model.state_cache_stats.evictions > 15
    assert _rss_mib() - before < 8 + 4
    model.unload()


def test_a_zero_budget_keeps_no_states_but_still_reuses_the_live_prefix(fresh: ChatLlamaCpp) -> None:
    a = conversation("kitchen", 0, {})
    fresh.invoke(a)
    message = fresh.invoke([*a[:-1], HumanMessage("Something else")])
    stats = fresh.state_cache_stats
    assert (stats.entries, stats.bytes, stats.hits) == (0, 0, 0)
    assert cached_tokens(message) > 0


# 4. prompt_tokens_cached reports the restored prefix ------------------------------------------------


def test_a_returning_conversation_reports_its_restored_prefix(cached: ChatLlamaCpp, fresh: ChatLlamaCpp) -> None:
    answers: dict[tuple[str, int], str] = {}
    for model in (cached, fresh):
        model.clear_prompt_cache()
        for turn in range(2):
            for name in ("kitchen", "office"):
                message = model.invoke(conversation(name, turn, answers))
                answers[(name, turn)] = message.text
        returning = conversation("kitchen", 2, answers)
        message = model.invoke(returning)
        persona = common_prefix(
            as_tokens(model.prompt_tokens(returning)),
            as_tokens(model.prompt_tokens(conversation("office", 1, answers))),
        )
        expected = common_prefix(
            as_tokens(model.prompt_tokens(returning)),
            as_tokens(model.prompt_tokens(conversation("kitchen", 1, answers))),
        )
        if model is cached:
            assert cached_tokens(message) >= expected > persona  # its own history, not only the persona
            assert message.usage_metadata is not None
            assert message.usage_metadata["input_token_details"]["cache_read"] == cached_tokens(message)
        else:
            assert cached_tokens(message) == persona  # only what the other conversation left behind


# 5. cancellation and deadlines leave a usable state or none -----------------------------------------


def long_turn(answers: Mapping[tuple[str, int], str]) -> list[BaseMessage]:
    return [*conversation("kitchen", 1, answers)[:-1], HumanMessage("Tell me everything. " * 40)]


def test_a_deadline_during_prompt_evaluation_leaves_the_next_answers_correct(
    tiny_model: str, fresh: ChatLlamaCpp
) -> None:
    model = make(tiny_model, state_cache_mb=64, n_batch=32)
    answers = {("kitchen", 0): model.invoke(conversation("kitchen", 0, {})).text}
    model.invoke(conversation("office", 0, {}))
    saved = model._session.states.tokens()  # type: ignore[union-attr]
    llama = model.llama
    original = llama.eval
    batches = 0

    def slow_eval(tokens: Any) -> None:
        nonlocal batches
        batches += 1
        original(tokens)
        if batches == 2:
            time.sleep(0.3)  # the deadline passes after two batches of the new tokens

    llama.eval = slow_eval
    turn = long_turn(answers)
    with pytest.raises(GenerationTimeoutError, match="prompt evaluation"):
        model.invoke(turn, timeout=0.2)
    del llama.eval
    assert model._session.states.tokens() == saved  # type: ignore[union-attr]  # the partial prompt was not stored
    assert 0 < llama.n_tokens < len(model.prompt_tokens(turn)) - 1  # it stopped mid-prompt
    assert answer(model, turn)[0] == alone(fresh, turn)  # right after: reuses the partial, consistent prompt
    model.invoke(conversation("office", 0, {}))
    assert answer(model, turn)[0] == alone(fresh, turn)  # after someone else: restores its state
    model.unload()


def test_closing_a_stream_mid_generation_leaves_the_next_answers_correct(
    cached: ChatLlamaCpp, fresh: ChatLlamaCpp
) -> None:
    answers = {("kitchen", 0): cached.invoke(conversation("kitchen", 0, {})).text}
    saved = cached._session.states.tokens()  # type: ignore[union-attr]
    turn = long_turn(answers)
    stream = cast(Generator[Any, None, None], cached.stream(turn, max_tokens=500))
    for _ in range(3):
        next(stream)
    stream.close()
    assert cached._session.states.tokens() == saved  # type: ignore[union-attr]
    assert answer(cached, turn)[0] == alone(fresh, turn)
    cached.invoke(conversation("garage", 0, {}))
    assert answer(cached, turn)[0] == alone(fresh, turn)


async def test_cancelling_an_async_answer_leaves_the_next_answers_correct(
    cached: ChatLlamaCpp, fresh: ChatLlamaCpp
) -> None:
    answers = {("office", 0): (await cached.ainvoke(conversation("office", 0, {}))).text}
    turn = conversation("office", 1, answers)
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in cached.astream(turn, max_tokens=1000):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(400):
        if not cached._gate.busy:
            break
        await asyncio.sleep(0.005)
    await cached.ainvoke(conversation("garage", 0, {}))
    ids, _ = await asyncio.to_thread(answer, cached, turn)
    assert ids == await asyncio.to_thread(alone, fresh, turn)


def test_a_state_that_fails_to_restore_is_dropped_and_the_answer_is_still_right(
    cached: ChatLlamaCpp, fresh: ChatLlamaCpp
) -> None:
    answers = {("garage", 0): cached.invoke(conversation("garage", 0, {})).text}
    cached.invoke(conversation("office", 0, {}))
    states = cached._session.states
    assert states is not None
    for entry in states._entries.values():
        entry.data = entry.data[: entry.data.nbytes // 2]  # truncated: llama.cpp must refuse it
    turn = conversation("garage", 1, answers)
    ids, message = answer(cached, turn)
    assert ids == alone(fresh, turn)
    stats = cached.state_cache_stats
    assert stats.restore_failures == 1 and stats.hits == 0
    assert cached_tokens(message) == 0


# 6. the fair gate ------------------------------------------------------------------------------------


def test_concurrent_conversations_answer_as_if_each_ran_alone(cached: ChatLlamaCpp, fresh: ChatLlamaCpp) -> None:
    answers: dict[tuple[str, int], str] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    cached.load()

    def talk(name: str) -> None:
        try:
            for turn in range(3):
                with lock:
                    messages = conversation(name, turn, answers)
                message = cached.invoke(messages)
                with lock:
                    answers[(name, turn)] = message.text
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=talk, args=(name,)) for name in QUESTIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(answers) == 9
    for (name, turn), text in answers.items():
        fresh.clear_prompt_cache()
        assert text == fresh.invoke(conversation(name, turn, answers)).text, (name, turn)
    assert cached.state_cache_stats.hits > 0


# 7. wiring -------------------------------------------------------------------------------------------


def test_the_budget_comes_from_the_settings_and_unload_frees_the_states(tiny_model: str) -> None:
    model = load_chat_model(LLMSettings(model_path=tiny_model, state_cache_mb=3, context_size=1024, max_tokens=8))
    assert model.state_cache_mb == 3
    model.invoke("hello")
    assert model.state_cache_stats.entries == 1 and model.state_cache_stats.budget_bytes == 3 * MIB
    model.unload()
    assert model.state_cache_stats.entries == 0


# prefill: the next turn's known prefix evaluated ahead of time ------------------------------------------


def test_prefilled_turns_evaluate_only_their_new_tokens_and_answer_as_if_alone(
    cached: ChatLlamaCpp, fresh: ChatLlamaCpp
) -> None:
    answers: dict[tuple[str, int], str] = {}
    for turn in range(3):
        for name in QUESTIONS:  # round-robin, and every answered turn prefills that conversation's next one
            messages = conversation(name, turn, answers)
            ids, message = answer(cached, messages)
            assert ids == alone(fresh, messages), (name, turn)
            answers[(name, turn)] = message.text
            if turn:  # the prefilled prefix (persona + history through the previous answer) was reused whole
                prefix = cached.prompt_tokens(messages[:-1], add_generation_prompt=False)
                assert cached_tokens(message) >= len(prefix), (name, turn)
            nxt = [*messages, AIMessage(message.text)]
            evaluated = cached.prefill(nxt)
            assert evaluated > 0  # at least the answer as history (its template form was never evaluated)
            assert cached.prefill(nxt) == 0  # nothing left to do the second time


def test_prefill_gives_way_to_a_running_call_and_to_should_stop(cached: ChatLlamaCpp) -> None:
    messages: list[BaseMessage] = [PERSONA, HumanMessage("Hi there!"), AIMessage("Hello! " * 40)]
    total = len(cached.prompt_tokens(messages, add_generation_prompt=False))
    ticket = cached._gate.acquire()  # someone else holds the model
    try:
        started = time.perf_counter()
        assert cached.prefill(messages) == 0
        assert time.perf_counter() - started < 0.5  # did not wait for the model
    finally:
        cached._gate.release(ticket)
    calls = 0

    def stop_after_two_chunks() -> bool:
        nonlocal calls
        calls += 1
        return calls > 2

    partial = cached.prefill(messages, should_stop=stop_after_two_chunks, chunk_tokens=16)
    assert partial == 32 < total
    rest = cached.prefill(messages)  # continues from the state kept by the partial prefill
    assert rest == total - partial


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_chatml_model"])
def test_prefill_can_include_the_next_user_header(request: pytest.FixtureRequest, fixture: str) -> None:
    """The header every user message starts with (Llama 3: <|start_header_id|>user<|end_header_id|>\\n\\n,
    ChatML: <|im_start|>user\\n) is evaluated ahead too; the next turn then evaluates only its words."""
    model = ChatLlamaCpp(model_path=request.getfixturevalue(fixture), n_ctx=2048, max_tokens=4, temperature=0)
    history: list[BaseMessage] = [PERSONA, HumanMessage("Hi there!"), AIMessage("Hello, friend.")]
    plain = len(model.prompt_tokens(history, add_generation_prompt=False))
    header = "<|start_header_id|>user<|end_header_id|>\n\n" if fixture == "tiny_model" else "<|im_start|>user\n"
    header_tokens = len(model.llama.tokenize(header.encode(), add_bos=False, special=True))
    assert header_tokens >= 2
    assert model.prefill(history, next_role="human") == plain + header_tokens  # from scratch, header included
    message = model.invoke([*history, HumanMessage("What's for dinner?")])
    assert cached_tokens(message) == plain + header_tokens


def test_prefill_refuses_an_unknown_next_role(cached: ChatLlamaCpp) -> None:
    with pytest.raises(ValueError, match="next_role must be None or 'human', got 'robot'"):
        cached.prefill([PERSONA, HumanMessage("Hi")], next_role="robot")  # type: ignore[arg-type]
    assert cached.prefill([PERSONA, HumanMessage("Hi")], next_role="human") > 0  # still usable


def test_prefill_does_nothing_without_a_state_cache(fresh: ChatLlamaCpp) -> None:
    assert fresh.prefill([PERSONA, HumanMessage("Hi"), AIMessage("Hello!")]) == 0


def test_prefill_then_a_different_conversation_still_answers_as_if_alone(
    cached: ChatLlamaCpp, fresh: ChatLlamaCpp
) -> None:
    history: list[BaseMessage] = [PERSONA, HumanMessage("Hi there!"), AIMessage("Hello, friend.")]
    assert cached.prefill(history) > 0
    other = [PERSONA, HumanMessage("Hey robot."), AIMessage("Hi!"), HumanMessage("Is the door shut?")]
    ids, _ = answer(cached, other)
    assert ids == alone(fresh, other)
    same = [*history, HumanMessage("What's for dinner?")]
    ids, message = answer(cached, same)
    assert ids == alone(fresh, same)
    assert cached_tokens(message) >= len(cached.prompt_tokens(history, add_generation_prompt=False))


@pytest.mark.parametrize(
    ("model_fixture", "kv_cache_type"),
    [
        ("tiny_model", "f16"),
        # q8_0 blocks are 32 wide: the tiny model's 16-wide heads cannot hold them, the 0.5B's 64 can
        pytest.param("real_model", "q8_0", marks=pytest.mark.real_model),
    ],
)
def test_flash_attention_and_a_quantized_kv_cache_keep_answers_identical(
    request: pytest.FixtureRequest, model_fixture: str, kv_cache_type: str
) -> None:
    path = request.getfixturevalue(model_fixture)
    knobs: dict[str, Any] = {"flash_attn": True, "kv_cache_type": kv_cache_type, "max_tokens": 12}
    model = make(path, state_cache_mb=64, **knobs)
    reference = make(path, state_cache_mb=0, **knobs)
    try:
        answers: dict[tuple[str, int], str] = {}
        for turn in range(2):
            for name in QUESTIONS:
                messages = conversation(name, turn, answers)
                ids, message = answer(model, messages)
                assert ids == alone(reference, messages), (name, turn)
                answers[(name, turn)] = message.text
        assert model.state_cache_stats.hits >= 3 and model.state_cache_stats.restore_failures == 0
        ctx = model.llama.context_params
        assert ctx.flash_attn_type == 1 and ctx.type_k == ctx.type_v == {"f16": 1, "q8_0": 8}[kv_cache_type]
    finally:
        model.unload()
        reference.unload()


async def test_graph_turns_keep_at_most_two_states_per_device(tiny_model: str, tmp_path: Any) -> None:
    from naila_graph.graph import build_graph, turn_config, turn_input
    from naila_graph.memory import open_async_checkpointer

    model = make(tiny_model, state_cache_mb=256, max_tokens=8)
    async with open_async_checkpointer(f"sqlite:///{tmp_path / 'm.sqlite'}") as saver:
        graph = build_graph(model, saver)
        for i in range(12):
            device = f"dev{i % 3}"
            await graph.ainvoke(turn_input(f"turn {i}, tell me more", device_id=device), turn_config(device))
    stats = model.state_cache_stats
    # every turn stored a state (the thread id reached the model), yet 3 devices hold 2 each at most
    assert stats.entries == 6 and stats.evictions == 12 - 6
    assert stats.hits + stats.live_hits + stats.misses == 12  # one lookup per turn
    assert stats.hits >= 6 and stats.restore_failures == 0  # returning devices still restore their state
    model.unload()
