"""``LLM_BACKEND=openai``: any OpenAI-compatible server (llama.cpp's server, `naila llm-server`, vLLM, ...).

langchain-openai's ``ChatOpenAI`` does the protocol (streaming with usage, stop, max tokens, tools). What it
lacks for NAILA is added here (FACTS.md "Scale-out"): its ``timeout`` is per read, so a server that keeps
dripping tokens never times out — :class:`ChatOpenAICompatible` holds the whole answer to a deadline
(``GenerationTimeoutError``); its errors become the LLM errors the fallbacks name (``model_unavailable``,
``model_timeout``, ``context_overflow``); it reports no timings, so time to first token, tokens per second
and inference time are measured here; and its token counting uses tiktoken (a download, and the wrong
vocabulary), so tokens are counted by the server itself (llama.cpp's ``/apply-template`` + ``/tokenize``)
or, on servers without those, approximately with a safety margin (:attr:`ChatOpenAICompatible.token_counting`).
llama.cpp's server takes a forced ``tool_choice`` as a hint only: a forced call is held by the grammar of one
call instead, as in ``ChatLlamaCpp`` (:meth:`ChatOpenAICompatible.bind_tools`, with its ``call_schemas``).

The model is not a :class:`~llm.capabilities.LocalModel` (no prefill, no saved prompt states: the server
keeps its own prompt cache per slot). It knows its window: ``n_ctx`` is the server's context *per slot*
(``/props``), and a prompt that does not fit is cut to it by dropping its oldest turns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Literal

import httpx
import openai
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.utils import convert_to_openai_messages, count_tokens_approximately
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import ChatOpenAI
from pydantic import Field, PrivateAttr, SecretStr

from llm.errors import ContextOverflowError, GenerationTimeoutError, LLMError, ModelUnavailableError
from llm.streaming import CallSchemas, StreamedChatModel, ToolChoice, Tools, piece_chunks
from llm.tool_calls import CallStreamer, narrowed, resolve_choice
from llm.tool_calls import prepare as prepare_tools
from llm.tool_format import FORMATS, GENERIC_FORMAT, ToolCallFormat, source_tool_kind

__all__ = ["ChatOpenAICompatible", "TokenCounting", "build_openai_model", "server_root"]

logger = logging.getLogger(__name__)

TokenCounting = Literal["server", "approximate", "unknown"]
APPROX_MARGIN = 1.25  # approximate counts are raised by this factor (and a few tokens): high, never low
_APPROX_EXTRA = 8
_COUNT_CACHE_SIZE = 4096  # messages whose token counts are remembered


def server_root(base_url: str) -> str:
    """The server's root for its own endpoints (``/props``, ``/tokenize``): the base URL without ``/v1``."""
    root = base_url.rstrip("/")
    return root.removesuffix("/v1")


class ChatOpenAICompatible(StreamedChatModel, ChatOpenAI):
    """``ChatOpenAI`` with a generation deadline, NAILA's errors and timings, and the server's tokenizer.

    ``generation_timeout`` (``LLM_MAX_INFERENCE_TIME_SECONDS``; a call's ``timeout`` option overrides it)
    bounds the whole answer, first token to last. ``context_size`` is the window assumed when the server
    does not say its own (``/props``). Always streams (``invoke`` aggregates the stream).
    """

    generation_timeout: float = Field(default=120.0, gt=0, description="deadline of a whole answer, seconds")
    context_size: int = Field(default=4096, ge=16, description="window when the server does not report one")
    probe_timeout: float = Field(default=5.0, gt=0, description="seconds for /props, /tokenize, /apply-template")

    _info_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _probed: bool = PrivateAttr(default=False)
    _slot_ctx: int | None = PrivateAttr(default=None)
    _server_model: str | None = PrivateAttr(default=None)
    _counting: TokenCounting = PrivateAttr(default="unknown")
    _counts: OrderedDict[tuple[str, str, str], int] = PrivateAttr(default_factory=OrderedDict)
    _frames: dict[str, int] = PrivateAttr(default_factory=dict)
    _auto_model: bool = PrivateAttr(default=False)  # no LLM_MODEL: the server's first model, once reached
    _grammars: bool = PrivateAttr(default=False)  # a llama.cpp server (its /props): takes a GBNF ``grammar``
    _tool_format: ToolCallFormat = PrivateAttr(default=GENERIC_FORMAT)  # how its model writes calls

    # ------------------------------------------------------------------ what the server says

    @property
    def root_url(self) -> str:
        return server_root(str(self.openai_api_base or "http://127.0.0.1:8080/v1"))

    @property
    def n_ctx(self) -> int:
        """Tokens one request may use: the server's context per slot (``/props``), else ``context_size``."""
        self._probe()
        return self._slot_ctx or self.context_size

    @property
    def context_window(self) -> int:
        """:attr:`n_ctx` (:class:`llm.capabilities.WindowedModel`): what the graph fits the history to."""
        return self.n_ctx

    @property
    def token_counting(self) -> TokenCounting:
        """How tokens are counted: ``server`` (its tokenizer and chat template), ``approximate`` (characters,
        with a safety margin) or ``unknown`` (the server has not been reached yet)."""
        return self._counting

    @property
    def server_model(self) -> str | None:
        """The model file or name the server reports (``/props``), once reached."""
        return self._server_model

    @property
    def is_loaded(self) -> bool:
        """Whether the server has answered a probe (the weights are the server's business)."""
        return self._probed

    def load(self) -> ChatOpenAICompatible:
        """Ask the server for its window and tokenizer now (otherwise on first use). Never raises: a server
        that is down is reported by the calls that need it."""
        self._probe()
        return self

    def unload(self) -> None:
        """Nothing to free here; the next use asks the server again."""
        with self._info_lock:
            self._probed = False

    @property
    def backend_info(self) -> dict[str, Any]:
        """What health reports about the server, as last learned (no request is made)."""
        return {
            "backend": "openai",
            "base_url": self.openai_api_base,
            "model": self._server_model or self.model_name,
            "n_ctx_per_slot": self._slot_ctx,
            "token_counting": self._counting,
        }

    def server_info(self) -> dict[str, Any]:
        """:attr:`backend_info` after asking the server when it has not answered yet."""
        self._probe()
        return self.backend_info

    def restore_prefix_from_disk(self, *args: Any, **kwargs: Any) -> int:
        """Nothing to restore: the server keeps its own prompt cache per slot (``naila serve`` asks)."""
        return 0

    def _http(self) -> httpx.Client:
        headers = {}
        if isinstance(self.openai_api_key, SecretStr):
            headers["Authorization"] = f"Bearer {self.openai_api_key.get_secret_value()}"
        return httpx.Client(base_url=self.root_url, timeout=self.probe_timeout, headers=headers)

    def _probe(self) -> None:
        """Read ``/props`` once (per-slot context, model) and find out whether the server tokenizes."""
        with self._info_lock:
            if self._probed:
                return
            try:
                with self._http() as http:
                    props = http.get("/props")
                    if props.status_code == 200:
                        info = props.json()
                        settings = info.get("default_generation_settings") or {}
                        n_ctx = settings.get("n_ctx") or (settings.get("params") or {}).get("n_ctx")
                        self._slot_ctx = int(n_ctx) if n_ctx else None
                        self._server_model = info.get("model_alias") or info.get("model_path")
                        self._grammars = "default_generation_settings" in info  # llama.cpp's own /props
                        self._tool_format = FORMATS[source_tool_kind(str(info.get("chat_template") or ""))]
                    if self._auto_model:
                        listed = http.get(f"{str(self.openai_api_base).rstrip('/')}/models")
                        if listed.status_code == 200 and listed.json().get("data"):
                            self.model_name = str(listed.json()["data"][0]["id"])
                    probe = http.post("/tokenize", json={"content": "a", "add_special": False})
                    template = http.post("/apply-template", json={"messages": [{"role": "user", "content": "a"}]})
                    ok = probe.status_code == 200 and template.status_code == 200 and "prompt" in template.json()
            except (httpx.HTTPError, ValueError) as exc:
                logger.debug("the LLM server at %s cannot be probed: %s", self.root_url, exc)
                return
            self._counting = "server" if ok else "approximate"
            self._probed = True
            logger.info(
                "LLM server %s: context per slot %s, token counting: %s", self.root_url, self._slot_ctx, self._counting
            )

    # ------------------------------------------------------------------ tokens

    def _server_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> int:
        body: dict[str, Any] = {"messages": messages}
        if tools:
            body["tools"] = tools
        try:
            with self._http() as http:
                rendered = http.post("/apply-template", json=body)
                rendered.raise_for_status()
                tokens = http.post(
                    "/tokenize", json={"content": rendered.json()["prompt"], "add_special": True, "parse_special": True}
                )
                tokens.raise_for_status()
                return len(tokens.json()["tokens"])
        except httpx.TransportError as exc:
            raise ModelUnavailableError(f"the LLM server at {self.root_url} cannot be reached: {exc}") from exc
        except (httpx.HTTPStatusError, KeyError, ValueError) as exc:
            raise LLMError(f"the LLM server at {self.root_url} could not count tokens: {exc}") from exc

    def _frame_tokens(self, tools: list[dict[str, Any]] | None, with_user: bool = False) -> int:
        """The template's preamble (with the tools) and the assistant header: what every prompt has
        (``with_user``: and an empty user message, the frame :meth:`_message_tokens` measures in)."""
        if tools and not with_user:  # a template may put the tools in the first user message (Llama 3.1)
            return self._frame_tokens(None) + self._frame_tokens(tools, True) - self._frame_tokens(None, True)
        key = f"{with_user}:{tools!r}"
        if key not in self._frames:
            frame: list[dict[str, Any]] = [{"role": "system", "content": ""}]
            if with_user:
                frame.append({"role": "user", "content": ""})
            self._frames[key] = self._server_tokens(frame, tools)
        return self._frames[key]

    def _message_tokens(self, message: BaseMessage) -> int:
        key = _message_key(message)
        with self._info_lock:
            if key in self._counts:
                self._counts.move_to_end(key)
                return self._counts[key]
        # Between an empty system and an empty user message: a list that ends with an assistant message is
        # a prefill to llama.cpp (rendered unfinished, and refused when it holds tool calls).
        around = [SystemMessage(""), message, HumanMessage("")]
        n = max(0, self._server_tokens(convert_to_openai_messages(around), None) - self._frame_tokens(None, True))
        self._remember(key, n)
        return n

    def get_num_tokens_from_messages(
        self,
        messages: Sequence[BaseMessage],
        tools: Sequence[Any] | None = None,
        *,
        allow_fetching_images: bool = True,
    ) -> int:
        """Prompt tokens of ``messages`` with ``tools`` bound: exact with the server's tokenizer and chat
        template (remembered per message list); otherwise an approximate count raised by a safety margin."""
        self._probe()
        formatted = [convert_to_openai_tool(t) for t in tools] if tools else None
        if self._counting == "server":
            key = ("list", repr([_message_key(m) for m in messages]), repr(formatted))
            with self._info_lock:
                if key in self._counts:
                    self._counts.move_to_end(key)
                    return self._counts[key]
            try:
                n = self._server_tokens(convert_to_openai_messages(list(messages)), formatted)
            except ModelUnavailableError:
                raise
            except LLMError as exc:  # e.g. a message its template refuses: the server's answer will say
                logger.warning("counting tokens approximately: %s", exc)
                return _approximate(messages, formatted)
            self._remember(key, n)
            return n
        return _approximate(messages, formatted)

    def _estimate(self, messages: Sequence[BaseMessage], tools: Sequence[Any] | None) -> int:
        """A quick count for choosing what to drop: the template's frame plus each message's own tokens
        (remembered per message), so trying shorter and shorter histories tokenizes no message twice."""
        if self._counting != "server":
            return self.get_num_tokens_from_messages(messages, tools)
        formatted = [convert_to_openai_tool(t) for t in tools] if tools else None
        try:
            return self._frame_tokens(formatted) + sum(self._message_tokens(m) for m in messages)
        except ModelUnavailableError:
            raise
        except LLMError as exc:
            logger.warning("counting tokens approximately: %s", exc)
            return _approximate(messages, formatted)

    def _remember(self, key: tuple[str, str, str], n: int) -> None:
        with self._info_lock:
            self._counts[key] = n
            while len(self._counts) > _COUNT_CACHE_SIZE:
                self._counts.popitem(last=False)

    def get_token_ids(self, text: str) -> list[int]:
        self._probe()
        if self._counting != "server":
            raise NotImplementedError("this LLM server has no /tokenize endpoint: token ids are unknown")
        try:
            with self._http() as http:
                reply = http.post("/tokenize", json={"content": text, "add_special": False})
                reply.raise_for_status()
                return [int(t) for t in reply.json()["tokens"]]
        except httpx.HTTPError as exc:
            raise ModelUnavailableError(f"the LLM server at {self.root_url} cannot tokenize: {exc}") from exc

    def get_num_tokens(self, text: str) -> int:
        self._probe()
        if self._counting == "server":
            return len(self.get_token_ids(text))
        return math.ceil(count_tokens_approximately([HumanMessage(text)]) * APPROX_MARGIN)

    # ------------------------------------------------------------------ fitting the window

    def fit_to_context(
        self, messages: list[BaseMessage], max_tokens: int, tools: Sequence[Any] | None = None
    ) -> list[BaseMessage]:
        """``messages`` without their oldest turns, as many as must go for the prompt and ``max_tokens`` new
        tokens to fit one slot's context. System messages and the last human message always stay; a turn is
        dropped whole (a tool call goes with its result). Raises ``ContextOverflowError`` when even that does
        not fit, ``ModelUnavailableError`` when the server cannot be reached to count."""
        budget = self.n_ctx - max_tokens
        if not self._probed:  # cannot count: send as is, the server says whether it fits
            return messages
        kept = list(messages)
        # The per-message estimate picks the cut quickly; the exact count then has the last word.
        for count in (self._estimate, self.get_num_tokens_from_messages):
            while count(kept, tools) > budget:
                drop = _oldest_turn(kept)
                if not drop:
                    raise ContextOverflowError(
                        f"the prompt needs more than the {budget} tokens one slot of the LLM server leaves for it"
                        f" ({self.n_ctx} per slot minus {max_tokens} to answer), even without its history"
                    )
                kept = [m for i, m in enumerate(kept) if i not in drop]
        if len(kept) < len(messages):
            logger.info("dropped %d old messages to fit the %d-token slot", len(messages) - len(kept), self.n_ctx)
        return kept

    # ------------------------------------------------------------------ tools

    def bind_tools(
        self,
        tools: Tools,
        *,
        tool_choice: ToolChoice = None,
        call_schemas: CallSchemas = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """``ChatOpenAI.bind_tools`` with ``ChatLlamaCpp``'s signature and its forced calls.

        ``tool_choice``: ``"auto"`` (default) and ``"none"`` go to the server as they are; ``"any"``,
        ``"required"``, ``True`` or a tool name force exactly one call. llama.cpp's server takes a forced
        ``tool_choice`` as a hint only, so on it (its ``/props`` says so) the call is held by a grammar, as in
        ``ChatLlamaCpp``: the request renders the tools as usual (``tool_choice="none"``, the same prompt as an
        ``auto`` turn) and carries the GBNF of one call of the allowed tools (llm.tool_calls) in llama.cpp's
        ``grammar`` field; the answer's JSON becomes ``AIMessage.tool_calls`` (a call the answer did not
        finish: ``invalid_tool_calls``). Other servers get ``tool_choice="required"`` (one named tool: that tool
        alone). ``call_schemas``: per tool name, a narrower JSON schema of its arguments that a forced call is
        held to (the prompt shows the tools as given); ``auto`` calls are not narrowed."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        names = [str(t["function"]["name"]) for t in formatted if "function" in t]
        resolve_choice(tool_choice, names)  # a ValueError names a bad choice now, not at the first call
        if call_schemas:
            narrowed([t for t in formatted if "function" in t], call_schemas)  # the same for unknown tools
        bound = super().bind_tools(tools, tool_choice=tool_choice, **kwargs)
        if call_schemas:
            return bound.bind(call_schemas={name: dict(schema) for name, schema in call_schemas.items()})
        return bound

    def _forced_call(self, kwargs: dict[str, Any], call_schemas: Mapping[str, Any] | None) -> CallStreamer | None:
        """For a forced ``tool_choice``, the request's options rewritten (see :meth:`bind_tools`) and, on a
        llama.cpp server, what reads the call out of the answer's text; None otherwise."""
        tools, choice = kwargs.get("tools"), kwargs.get("tool_choice")
        functions = [t for t in tools or [] if isinstance(t, dict) and "function" in t]
        if not functions or choice in (None, "auto", "none"):
            return None
        try:
            kind, _ = resolve_choice(choice, [str(t["function"]["name"]) for t in functions])
        except ValueError:  # a choice of another kind (e.g. a built-in tool): the server's business
            return None
        if kind != "forced":
            return None
        if not self._grammars:  # a server that forces calls itself (vLLM, ...): narrowed tools, "required"
            if call_schemas and len(functions) == len(tools or []):
                kwargs["tools"] = narrowed(functions, call_schemas)
            _require_named_tool(kwargs)
            return None
        setup = prepare_tools(functions, choice, self._tool_format, None, call_schemas)
        kwargs["tool_choice"] = "none"  # the tools rendered as in any turn; the grammar holds the answer
        kwargs.pop("parallel_tool_calls", None)
        kwargs["extra_body"] = {**(self.extra_body or {}), **(kwargs.get("extra_body") or {}), "grammar": setup.grammar}
        return CallStreamer(setup)

    # ------------------------------------------------------------------ generation

    def _prepare_call(
        self, messages: list[BaseMessage], kwargs: dict[str, Any]
    ) -> tuple[list[BaseMessage], float, dict[str, Any], CallStreamer | None]:
        """The messages cut to fit, the deadline (monotonic), the options for ``ChatOpenAI`` and, for a call
        held by a grammar, what reads it out of the answer."""
        timeout = kwargs.pop("timeout", None)
        seconds = float(timeout) if timeout else self.generation_timeout
        deadline = time.monotonic() + seconds
        max_tokens = int(kwargs.get("max_tokens") or kwargs.get("max_completion_tokens") or self.max_tokens or 512)
        call_schemas = kwargs.pop("call_schemas", None)
        fitted = self.fit_to_context(messages, max_tokens, kwargs.get("tools"))
        calls = self._forced_call(kwargs, call_schemas)  # after the probe of fit_to_context: the server is known
        # each read of the request too: a server that stalls is cut then (the deadline is checked between chunks)
        kwargs["timeout"] = max(deadline - time.monotonic(), 0.001)
        return fitted, deadline, kwargs, calls

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        timer = _Timer()
        try:
            fitted, deadline, options, calls = self._prepare_call(messages, kwargs)
            chunks = super()._stream(fitted, stop, run_manager, **options)
            try:
                for chunk in chunks:
                    timer.seen(chunk)
                    yield from _read_calls(chunk, calls)
                    if time.monotonic() > deadline:
                        raise GenerationTimeoutError(f"the answer took longer than {deadline_text(timer, deadline)}")
            finally:
                chunks.close()  # type: ignore[attr-defined]  # a generator
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise self._mapped(exc) from exc
        if calls is not None:  # a call the answer did not finish is closed so that it cannot parse
            yield from piece_chunks(calls.finish())
        yield timer.metrics_chunk()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        timer = _Timer()
        try:
            fitted, deadline, options, calls = await asyncio.to_thread(self._prepare_call, messages, kwargs)
            chunks = super()._astream(fitted, stop, run_manager, **options)
            try:
                while True:
                    try:
                        async with asyncio.timeout_at(_loop_time(deadline)):
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise GenerationTimeoutError(
                            f"the answer took longer than {deadline_text(timer, deadline)}"
                        ) from None
                    timer.seen(chunk)
                    for piece in _read_calls(chunk, calls):
                        yield piece
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise self._mapped(exc) from exc
        if calls is not None:
            for piece in piece_chunks(calls.finish()):
                yield piece
        yield timer.metrics_chunk()

    def _mapped(self, exc: Exception) -> LLMError:
        """The LLM error (and so the fallback reason) of a client or transport error."""
        where = f"the LLM server at {self.openai_api_base}"
        if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
            return GenerationTimeoutError(f"{where} did not answer in time: {exc}")
        if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
            return ModelUnavailableError(f"{where} cannot be reached: {exc}")
        if isinstance(exc, openai.APIStatusError):
            text = str(exc).lower()
            if "exceed_context_size" in text or ("context" in text and ("exceed" in text or "length" in text)):
                return ContextOverflowError(f"{where}: the prompt does not fit the context: {exc}")
            if exc.status_code in (502, 503, 504):  # loading, overloaded or behind a proxy that lost it
                return ModelUnavailableError(f"{where} is not ready: {exc}")
        return LLMError(f"{where} failed: {exc}")

    @property
    def _llm_type(self) -> str:
        return "naila-openai-compatible"


class _Timer:
    """Time to first token, decode speed and total time of one answer, from the chunks as they arrive."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.first: float | None = None
        self.output_tokens: int | None = None
        self.cached: int | None = None

    def seen(self, chunk: ChatGenerationChunk) -> None:
        message = chunk.message
        if self.first is None and (message.content or getattr(message, "tool_call_chunks", None)):
            self.first = time.monotonic()
        usage = getattr(message, "usage_metadata", None)
        if usage:
            self.output_tokens = usage.get("output_tokens")
            self.cached = (usage.get("input_token_details") or {}).get("cache_read")

    def metrics_chunk(self) -> ChatGenerationChunk:
        end = time.monotonic()
        decode_s = end - self.first if self.first is not None else 0.0
        produced = self.output_tokens or 0
        metadata = {
            "time_to_first_token_ms": (self.first - self.started) * 1000 if self.first is not None else None,
            "inference_time_ms": (end - self.started) * 1000,
            "tokens_per_second": (produced - 1) / decode_s if produced > 1 and decode_s > 0 else None,
            "prompt_tokens_cached": self.cached,
        }
        return ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=metadata))


def deadline_text(timer: _Timer, deadline: float) -> str:
    return f"its deadline of {deadline - timer.started:.1f} s (LLM_MAX_INFERENCE_TIME_SECONDS)"


def _loop_time(deadline: float) -> float:
    """``deadline`` (``time.monotonic``) on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def _read_calls(chunk: ChatGenerationChunk, calls: CallStreamer | None) -> list[ChatGenerationChunk]:
    """``chunk`` as it came, or (a call held by a grammar) its text read as the call: the chunk without its
    text (its metadata and usage stay), then the call's pieces."""
    text = chunk.message.content
    if calls is None or not isinstance(text, str) or not text:
        return [chunk]
    bare = ChatGenerationChunk(
        message=chunk.message.model_copy(update={"content": ""}), generation_info=chunk.generation_info
    )
    return [bare, *piece_chunks(calls.feed(text))]


def _require_named_tool(kwargs: dict[str, Any]) -> None:
    """A call forced to one named tool becomes that tool alone with ``tool_choice="required"``: the same
    request in the form every OpenAI-compatible server knows (llama.cpp's reads ``none``, ``auto`` and
    ``required`` only)."""
    choice, tools = kwargs.get("tool_choice"), kwargs.get("tools")
    if not (isinstance(choice, dict) and choice.get("type") == "function" and tools):
        return
    name = (choice.get("function") or {}).get("name")
    only = [t for t in tools if isinstance(t, dict) and (t.get("function") or {}).get("name") == name]
    if only:
        kwargs["tools"], kwargs["tool_choice"] = only, "required"


def _approximate(messages: Sequence[BaseMessage], tools: list[dict[str, Any]] | None) -> int:
    """Characters-based count raised by a safety margin: for servers that cannot tokenize for us."""
    approx = count_tokens_approximately(list(messages))
    if tools:
        approx += count_tokens_approximately([SystemMessage(json.dumps(tools))])
    return math.ceil(approx * APPROX_MARGIN) + _APPROX_EXTRA


def _message_key(message: BaseMessage) -> tuple[str, str, str]:
    calls = getattr(message, "tool_calls", None) or []
    return (message.type, message.text, repr([(c["name"], c["args"]) for c in calls]))


def _oldest_turn(messages: list[BaseMessage]) -> list[int] | None:
    """Indices of the oldest turn that may go: the conversation messages from the first one up to the next
    human message (system messages among them stay); never the last human message or what follows it."""
    humans = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)]
    if not humans:
        return None
    last = humans[-1]
    start = next((i for i in range(last) if not isinstance(messages[i], SystemMessage)), None)
    if start is None:
        return None
    end = next((i for i in humans if i > start), last)
    return [i for i in range(start, end) if not isinstance(messages[i], SystemMessage)]


def build_openai_model(
    *,
    base_url: str,
    api_key: str | None,
    model: str | None,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    generation_timeout: float,
    context_size: int,
) -> ChatOpenAICompatible:
    """The ``openai`` backend's chat model (``load_chat_model`` with ``LLM_BACKEND=openai``)."""
    chat = ChatOpenAICompatible(
        model=model or "default",
        base_url=base_url,
        api_key=SecretStr(
            api_key or "none"
        ),  # llama.cpp's server without --api-key accepts anything; the client needs one
        max_completion_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        streaming=True,
        stream_usage=True,
        max_retries=0,  # a retry hides a failure behind latency; the fallback answers instead
        use_responses_api=False,
        generation_timeout=generation_timeout,
        context_size=context_size,
    )
    chat._auto_model = model is None
    return chat
