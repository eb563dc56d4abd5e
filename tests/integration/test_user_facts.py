"""Long-term memory of the person (naila_graph/user_facts.py) with real stores: SQLite files (and Postgres when
one answers), the graph with the tiny GGUF, the `naila memory` commands, and the MQTT forget topic."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from llm import ChatLlamaCpp
from naila_graph import protocol as p
from naila_graph.graph import build_graph, make_generator, turn_config, turn_input
from naila_graph.memory import conversation_messages, open_async_checkpointer, open_checkpointer
from naila_graph.settings import NailaSettings
from naila_graph.user_facts import UserFacts, facts_namespace, open_async_store, open_store, sentences
from nodes.facts import extract_facts
from nodes.recall import FORGOT_ALL, NAME_UNKNOWN
from prompts.templates import FACTS_HEADER
from tests.support.mqtt import robot
from tests.support.postgres import fresh_database

SAM = "My name is Sam and I have a parrot called Kiwi"
SAM_FACTS = ["The person's name is Sam.", "The person has a parrot called Kiwi."]


def url_of(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'memory.sqlite'}"


def fake(*answers: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(a) for a in answers]))


class Prompts(BaseCallbackHandler):
    """The messages each chat model call was given."""

    def __init__(self) -> None:
        self.seen: list[list[BaseMessage]] = []

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], **kwargs: Any) -> None:
        self.seen.append(messages[0])


def turn(graph: Any, text: str, device: str = "robot1", callbacks: list[Any] | None = None) -> dict[str, Any]:
    config = turn_config(device)
    if callbacks:
        config["callbacks"] = callbacks
    return graph.invoke(turn_input(text, device_id=device), config)


# --------------------------------------------------------------------------------------- the store itself


def test_facts_survive_reopening_the_sqlite_file_beside_the_checkpoints(tmp_path: Path) -> None:
    with open_store(url_of(tmp_path)) as store:
        UserFacts(store).apply("robot1", extract_facts(SAM))
    with open_checkpointer(url_of(tmp_path)):  # the checkpointer shares the file
        pass
    with open_store(url_of(tmp_path)) as store:  # a restart
        assert sentences(UserFacts(store).facts("robot1")) == SAM_FACTS
    tables = {r[0] for r in sqlite3.connect(tmp_path / "memory.sqlite").execute("SELECT name FROM sqlite_master")}
    assert {"store", "checkpoints"} <= tables  # one file holds both


def test_devices_are_isolated_namespaces(tmp_path: Path) -> None:
    with open_store(url_of(tmp_path)) as store:
        facts = UserFacts(store)
        facts.apply("robot1", extract_facts(SAM))
        facts.apply("robot2", extract_facts("Call me Alex. I speak German"))
        assert sentences(facts.facts("robot2")) == ["The person's name is Alex.", "The person speaks German."]
        assert facts.devices() == [("robot1", 2), ("robot2", 2)]
        assert facts.forget("robot1") == 2
        assert facts.facts("robot1") == []
        assert len(facts.facts("robot2")) == 2
        assert [i.key for i in store.search(facts_namespace("robot2"))] != []  # what LangGraph's API sees


def test_the_size_bound_holds_in_the_store(tmp_path: Path) -> None:
    with open_store(url_of(tmp_path)) as store:
        facts = UserFacts(store, max_facts=5)
        facts.apply("robot1", extract_facts("My name is Sam"))
        for thing in ["jazz", "rock", "tea", "chess", "rain", "snow", "opera"]:
            time.sleep(0.002)  # distinct times: the oldest is dropped first
            facts.apply("robot1", extract_facts(f"I love {thing}"))
        kept = sentences(facts.facts("robot1"))
    assert kept == [
        "The person's name is Sam.",
        "The person likes chess.",
        "The person likes rain.",
        "The person likes snow.",
        "The person likes opera.",
    ]
    rows = sqlite3.connect(tmp_path / "memory.sqlite").execute("SELECT COUNT(*) FROM store").fetchone()
    assert rows == (5,)  # evicted facts are deleted, not hidden


async def test_the_async_store_reads_and_writes_the_same_facts(tmp_path: Path) -> None:
    async with open_async_store(url_of(tmp_path)) as store:
        facts = UserFacts(store)
        after = await facts.aapply("robot1", extract_facts(SAM))
        assert sentences(after) == SAM_FACTS
        after = await facts.aapply("robot1", extract_facts("no, my parrot is called Coco"))
        assert sentences(after) == ["The person's name is Sam.", "The person has a parrot called Coco."]
    with open_store(url_of(tmp_path)) as sync_store:
        assert len(UserFacts(sync_store).facts("robot1")) == 2
    async with open_async_store(url_of(tmp_path)) as store:
        assert await UserFacts(store).aforget("robot1") == 2
        assert await UserFacts(store).afacts("robot1") == []


def test_postgres_store_keeps_facts_across_connections() -> None:
    with fresh_database() as pg_url:
        with open_store(pg_url) as store:
            UserFacts(store).apply("robot1", extract_facts(SAM))
        with open_store("postgres://" + pg_url.removeprefix("postgresql://")) as store:
            facts = UserFacts(store)
            assert sentences(facts.facts("robot1")) == SAM_FACTS
            assert facts.forget("robot1") == 2


async def test_async_postgres_store() -> None:
    with fresh_database() as pg_url:
        async with open_async_store(pg_url) as store:
            facts = UserFacts(store, max_facts=1)
            await facts.aapply("robot1", extract_facts("I love jazz"))
            after = await facts.aapply("robot1", extract_facts("I love tea"))
        assert sentences(after) == ["The person likes tea."]


# --------------------------------------------------------------------------------------- the graph


def test_facts_reach_the_prompt_right_after_the_persona_through_the_tiny_gguf(tmp_path: Path, tiny_model: str) -> None:
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=8, temperature=0)
    settings = NailaSettings(data_dir=tmp_path)
    seen = Prompts()
    with open_checkpointer(url_of(tmp_path)) as saver, open_store(url_of(tmp_path)) as store:
        graph = build_graph(model, saver, settings=settings, persona="You are NAILA.", store=store)
        first = turn(graph, SAM, callbacks=[seen])
        assert first["response_source"] == "llm"
        assert first["user_facts"] == SAM_FACTS  # stored after the answer, kept for the next turn's prefill
        assert sorted(first["facts_changed"]) == sorted(SAM_FACTS)
        assert not any(FACTS_HEADER in m.text for m in seen.seen[0])  # told in this turn: not known before it
        second = turn(graph, "what do parrots like to eat?", callbacks=[seen])
        assert second["facts_changed"] == [] and second["response_source"] == "llm"
    persona, block, *rest = seen.seen[1]
    assert (persona.type, persona.text) == ("system", "You are NAILA.")
    assert block.type == "system" and block.text.splitlines() == [FACTS_HEADER, *SAM_FACTS]
    assert [m.text for m in rest if isinstance(m, HumanMessage)] == [SAM, "what do parrots like to eat?"]
    rendered = model.render_prompt(seen.seen[1])  # the model's own template renders the block in place
    assert (
        rendered.index("You are NAILA.") < rendered.index("The person has a parrot called Kiwi.") < rendered.index(SAM)
    )


def test_a_question_the_stored_facts_answer_is_answered_from_them_and_kept_in_memory(
    tmp_path: Path, tiny_model: str
) -> None:
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=8, temperature=0)
    seen = Prompts()
    with open_checkpointer(url_of(tmp_path)) as saver, open_store(url_of(tmp_path)) as store:
        graph = build_graph(
            model, saver, settings=NailaSettings(data_dir=tmp_path), persona="You are NAILA.", store=store
        )
        turn(graph, SAM, callbacks=[seen])
        recalled = turn(graph, "do you remember my parrot's name?", callbacks=[seen])
        unknown = turn(graph, "what's my favourite food?", callbacks=[seen])  # never told: the model answers
        history = graph.get_state(turn_config("robot1")).values["messages"]
    assert (recalled["response_text"], recalled["response_source"]) == ("Your parrot is called Kiwi.", "action")
    assert len(seen.seen) == 2  # the recalled answer asked no model
    assert unknown["response_source"] == "llm"
    assert [m.text for m in history][2:4] == ["do you remember my parrot's name?", "Your parrot is called Kiwi."]


def test_forget_me_forgets_the_facts_and_the_conversation_and_says_so(tmp_path: Path, tiny_model: str) -> None:
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=8, temperature=0)
    with open_checkpointer(url_of(tmp_path)) as saver, open_store(url_of(tmp_path)) as store:
        settings = NailaSettings(data_dir=tmp_path)
        graph = build_graph(model, saver, settings=settings, persona="You are NAILA.", store=store)
        turn(graph, "I'm Nina and I live in Oslo")
        turn(graph, "tell me about fjords")
        forgot = turn(graph, "please forget everything I told you about me")
        asked = turn(graph, "what's my name?")
        history = [m.text for m in graph.get_state(turn_config("robot1")).values["messages"]]
        facts = UserFacts(store).facts("robot1")
    assert (forgot["response_text"], forgot["response_source"]) == (FORGOT_ALL, "action")
    assert facts == [] and asked["user_facts"] == []
    assert (asked["response_text"], asked["response_source"]) == (NAME_UNKNOWN, "action")
    assert not any("Nina" in m for m in history), history
    assert history[0] == "what's my name?"  # the conversation starts afresh after "forget me"


def test_forgetting_a_fact_takes_the_turns_that_told_it_out_of_the_conversation(
    tmp_path: Path, tiny_model: str
) -> None:
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=8, temperature=0)
    with open_checkpointer(url_of(tmp_path)) as saver, open_store(url_of(tmp_path)) as store:
        settings = NailaSettings(data_dir=tmp_path)
        graph = build_graph(model, saver, settings=settings, persona="You are NAILA.", store=store)
        turn(graph, "My name is Sam")
        turn(graph, "I have a cat called Bella")
        turn(graph, "tell me about the sea")
        turn(graph, "wait, I don't want you to remember my pets")
        humans = [m.text for m in graph.get_state(turn_config("robot1")).values["messages"] if m.type == "human"]
        facts = sentences(UserFacts(store).facts("robot1"))
        turn(graph, "forget that")  # the latest statement of a fact: the name
        after = [m.text for m in graph.get_state(turn_config("robot1")).values["messages"] if m.type == "human"]
    assert facts == ["The person's name is Sam."]
    assert humans == ["My name is Sam", "tell me about the sea", "wait, I don't want you to remember my pets"]
    assert after == ["tell me about the sea", "wait, I don't want you to remember my pets", "forget that"]


def test_the_next_turn_prefix_holds_the_facts_and_the_budget_counts_them(tmp_path: Path, tiny_model: str) -> None:
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=1024, max_tokens=64, temperature=0)
    generator = make_generator(model, NailaSettings(data_dir=tmp_path), persona="You are NAILA.")
    history: list[BaseMessage] = []
    for i in range(40):
        history += [HumanMessage(f"Tell me fact number {i} about the sea"), AIMessage(f"Fact {i}: the sea is big.")]
    facts = [f"The person likes the colour number {i} very much." for i in range(12)]

    prefix = generator.next_turn_prefix(history, facts)
    assert prefix[0].text == "You are NAILA." and prefix[1].text.startswith(FACTS_HEADER)
    assert prefix[-1].type == "system" and "Current local time" in prefix[-1].text  # the guidance ends it

    state = {"messages": history, "text": "and now?", "intent": "general"}
    without = generator.inputs(state)
    with_facts = generator.inputs({**state, "user_facts": facts})
    assert len(with_facts["history"]) < len(without["history"])  # the block took its share of the window
    prompt = generator.prompt_messages(with_facts)
    assert len(model.prompt_tokens(prompt)) <= model.n_ctx - model.max_tokens
    assert prefix[:2] == prompt[:2]  # the same persona and block as the turn's


def test_forget_me_in_conversation_clears_facts_and_history(tmp_path: Path) -> None:
    with open_checkpointer(url_of(tmp_path)) as saver, open_store(url_of(tmp_path)) as store:
        graph = build_graph(fake("Hi Sam!", "Kiwi.", "Done."), saver, store=store)
        turn(graph, SAM)
        turn(graph, "forget that")  # the last statement: both facts it stored
        assert UserFacts(store).facts("robot1") == []
        turn(graph, "I love jazz. I speak German")
        out = turn(graph, "Please forget everything about me")
        assert out["user_facts"] == []
        assert UserFacts(store).facts("robot1") == []
        assert conversation_messages(saver, "robot1") == []


def test_without_a_store_the_graph_is_as_before(tmp_path: Path) -> None:
    with open_checkpointer(url_of(tmp_path)) as saver:
        graph = build_graph(fake("Hi Sam!"), saver)
        out = turn(graph, SAM)
    assert "user_facts" not in out and "remember" not in graph.get_graph().nodes


async def test_the_async_graph_recalls_and_remembers(tmp_path: Path) -> None:
    seen = Prompts()
    async with open_async_checkpointer(url_of(tmp_path)) as saver, open_async_store(url_of(tmp_path)) as store:
        graph = build_graph(fake("Hi!", "Kiwi."), saver, store=store, persona="You are NAILA.")
        config = turn_config("robot9")
        config["callbacks"] = [seen]
        await graph.ainvoke(turn_input(SAM, device_id="robot9"), config)
        recalled = await graph.ainvoke(turn_input("what's my parrot called?", device_id="robot9"), config)
        await graph.ainvoke(turn_input("and what do parrots eat?", device_id="robot9"), config)
    assert (recalled["response_text"], recalled["response_source"]) == ("Your parrot is called Kiwi.", "action")
    assert seen.seen[1][1].text.splitlines()[1:] == SAM_FACTS


# --------------------------------------------------------------------------------------- the command line


def naila(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "naila_graph.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        input="",
        timeout=120,
    )


def test_memory_commands_show_and_forget_facts(tmp_path: Path, tiny_model: str) -> None:
    env = {
        "LLM_MODEL_PATH": tiny_model,
        "LLM_MAX_TOKENS": "8",
        "LLM_TEMPERATURE": "0",
        "LLM_CONTEXT_SIZE": "2048",
        "NAILA_DATA_DIR": str(tmp_path),
    }
    assert naila("chat", "--device", "desk7", SAM, env=env).returncode == 0
    listed = naila("memory", "facts", env=env)
    assert listed.returncode == 0 and listed.stdout.split() == ["DEVICE", "FACTS", "desk7", "2"]
    facts = naila("memory", "facts", "desk7", env=env)
    assert "name" in facts.stdout and "The person has a parrot called Kiwi." in facts.stdout
    shown = naila("memory", "show", "desk7", env=env)
    assert f"user: {SAM}" in shown.stdout and "The person's name is Sam." in shown.stdout
    forgot = naila("memory", "forget", "desk7", env=env)
    assert forgot.returncode == 0 and "its conversation and 2 facts" in forgot.stderr
    assert naila("memory", "facts", "desk7", env=env).stdout == ""
    again = naila("memory", "forget", "desk7", env=env)
    assert again.returncode == 1 and "nothing stored for device 'desk7'" in again.stderr
    assert naila("memory", "show", "desk7", env=env).returncode == 1


# --------------------------------------------------------------------------------------- MQTT


@pytest.mark.broker
async def test_the_forget_topic_forgets_a_device_and_bad_payloads_get_an_error(
    mosquitto: Any, tmp_path: Path, tiny_model: str
) -> None:
    from naila_graph.server import NailaServer
    from naila_graph.settings import MQTTSettings

    settings = NailaSettings(data_dir=tmp_path, memory_url=url_of(tmp_path), health_interval_seconds=0.5)
    mqtt = MQTTSettings(broker_host=mosquitto.host, broker_port=mosquitto.port, client_id="naila-facts-test")
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=8, temperature=0.0, seed=1)
    async with robot(mosquitto.host, mosquitto.port) as bot, NailaServer(settings, mqtt, chat_model=model) as server:
        assert server.user_facts is not None
        await bot.answer(await bot.task("robot_1", SAM))
        await bot.answer(await bot.task("robot_2", "I love jazz"))
        for _ in range(200):  # the answer goes out first; the facts are stored after it
            if len(await server.user_facts.afacts("robot_1")) == 2 and await server.user_facts.afacts("robot_2"):
                break
            await asyncio.sleep(0.05)

        await bot.publish(p.FORGET_TOPIC, {"device_id": "robot_1", "task_id": "f-1"})
        (done,) = await bot.wait_for(lambda: bot.on(p.FORGOTTEN_TOPIC, "f-1"), what="forgotten")
        assert done["device_id"] == "robot_1"
        assert done["forgotten"] == {"conversation": True, "facts": 2}
        assert await server.user_facts.afacts("robot_1") == []
        assert len(await server.user_facts.afacts("robot_2")) == 1  # another device keeps its facts

        await bot.publish(p.FORGET_TOPIC, {"device_id": "robot_1", "task_id": ["x"]})
        error = await bot.error("robot_1")
        assert error["error"] == "invalid_payload" and "task_id" in error["message"]
        await bot.publish(p.FORGET_TOPIC, b"not json")  # no device to answer: logged and counted
        await bot.wait_for(lambda: server.stats.errors >= 2, what="bad payloads counted")
        answer = await bot.answer(await bot.task("robot_1", "what's my parrot called?"))  # still serving
        assert answer["response"]["text"]
    with open_checkpointer(url_of(tmp_path)) as saver:
        assert conversation_messages(saver, "robot_1")[0].text == "what's my parrot called?"


# --------------------------------------------------------------------------------------- the model stage


class Reader(GenericFakeChatModel):
    """A chat model whose structured answer is fixed: what the model stage would read."""

    said: Any = None

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Any:
        from langchain_core.runnables import RunnableLambda

        return RunnableLambda(lambda _messages: self.said)


def test_the_model_stage_adds_what_the_patterns_miss(tmp_path: Path) -> None:
    from nodes.facts import SaidFact, SaidFacts

    said = SaidFacts(facts=[SaidFact(kind="pet", about="puppy", value="Bolt"), SaidFact(kind="name", value="Bolt")])
    model = Reader(messages=iter([AIMessage("Congratulations!")] * 3), said=said)
    settings = NailaSettings(data_dir=tmp_path, fact_extraction="model")
    with open_checkpointer(url_of(tmp_path)) as saver, open_store(url_of(tmp_path)) as store:
        graph = build_graph(model, saver, settings=settings, store=store)
        out = turn(graph, "we got a puppy yesterday, Bolt, and I love him")
        # the name is dropped: the message tells no name ("Bolt" is the puppy's); "I love him" is no fact
        assert out["user_facts"] == ["The person has a puppy called Bolt."]
        model.said = SaidFacts(facts=[SaidFact(kind="dislike", value="Mondays")])
        turn(graph, "what's the capital of Peru?")  # no first-person words: the model is not asked
        assert sentences(UserFacts(store).facts("robot1")) == ["The person has a puppy called Bolt."]
        model.said = SaidFacts(facts=[SaidFact(kind="dislike", value="Mondays")])
        turn(graph, "ugh, I really can't deal with mondays")  # the patterns miss it, the model does not
        assert "The person does not like Mondays." in sentences(UserFacts(store).facts("robot1"))


def test_the_model_stage_with_the_tiny_gguf_stores_only_words_of_the_message(tmp_path: Path, tiny_model: str) -> None:
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=48, temperature=0)
    settings = NailaSettings(data_dir=tmp_path, fact_extraction="model")
    with open_checkpointer(url_of(tmp_path)) as saver, open_store(url_of(tmp_path)) as store:
        graph = build_graph(model, saver, settings=settings, store=store)
        out = turn(graph, SAM)
        stored = UserFacts(store).facts("robot1")
    assert out["response_source"] == "llm"
    assert SAM_FACTS == [s for s in out["user_facts"] if s in SAM_FACTS]  # the patterns' facts are there
    words = set(SAM.lower().split())
    for fact in stored:  # a random model's JSON passes the grammar, but its invented values are dropped
        assert set(fact.fact.value.lower().split()) <= words, fact


@pytest.mark.broker
async def test_the_next_turn_reuses_the_facts_block_from_the_prefilled_prompt_state(
    mosquitto: Any, tmp_path: Path, tiny_model: str
) -> None:
    from langchain_core.messages import SystemMessage

    from naila_graph.server import NailaServer
    from naila_graph.settings import MQTTSettings
    from prompts.persona import load_persona
    from prompts.templates import facts_messages

    settings = NailaSettings(data_dir=tmp_path, memory_url=url_of(tmp_path), health_interval_seconds=0.5)
    mqtt = MQTTSettings(broker_host=mosquitto.host, broker_port=mosquitto.port, client_id="naila-facts-prefill")
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=12, temperature=0.0, seed=1)
    async with robot(mosquitto.host, mosquitto.port) as bot, NailaServer(settings, mqtt, chat_model=model) as server:
        await bot.answer(await bot.task("robot_f", SAM))
        await bot.wait_for(lambda: server.stats.prefills >= 1, what="the next turn prefilled")
        second = await bot.task("robot_f", "tell me about parrots")
        await bot.answer(second)
        (metrics,) = await bot.wait_for(lambda: bot.on(p.METRICS_TOPIC, second), what="metrics")
    with open_checkpointer(url_of(tmp_path)) as saver:
        turn_one = conversation_messages(saver, "robot_f")[:2]
    persona = SystemMessage(load_persona(None))
    block = facts_messages(SAM_FACTS)
    with_facts = len(model.prompt_tokens([persona, *block, *turn_one], add_generation_prompt=False))
    # the facts told in turn one sit in the prompt state the server evaluated while the robot spoke
    assert metrics["cached_prompt_tokens"] >= with_facts > len(model.prompt_tokens([persona, *turn_one]))
