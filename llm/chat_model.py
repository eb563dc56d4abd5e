"""``ChatLlamaCpp``: a LangChain chat model over one llama.cpp session (:mod:`llm.llama_session`).

This module is the LangChain side: fields and call options, callbacks, chunks and usage metadata.
One generator of events (:meth:`ChatLlamaCpp._events`) does all the work; ``invoke`` aggregates
``stream``, and the async methods run the same generator in a thread of its own whose events cross
back to the event loop through a queue (DESIGN.md decision 1).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import Runnable
from langchain_core.runnables.config import ensure_config
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from llm.chat_template import ChatTemplate, to_chat_dicts
from llm.gate import FairGate
from llm.generation import Done, GenerationParams, Utf8Decoder, start_in_thread
from llm.llama_session import LlamaSession
from llm.load_options import KV_GGML_TYPES, QUANTIZED_KV_TYPES, KVCacheType, LoadOptions
from llm.state_cache import MIB, PromptStateCache, StateCacheStats
from llm.streaming import CallSchemas, StreamedChatModel, ToolChoice, Tools, piece_chunks
from llm.structured import structured_output
from llm.tool_calls import CallStreamer
from llm.tool_calls import prepare as prepare_tools
from llm.tool_format import GENERIC_FORMAT

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["KV_GGML_TYPES", "ChatLlamaCpp", "Utf8Decoder"]

_CALL_OPTIONS = {
    "stop", "max_tokens", "temperature", "top_p", "top_k", "repeat_penalty", "seed", "timeout",
    "grammar", "grammar_triggers", "tools", "tool_choice", "call_schemas",
}  # fmt: skip


class ChatLlamaCpp(StreamedChatModel):
    """Chat model over a local GGUF file through llama-cpp-python.

    Construction is cheap: weights load on first use, on :meth:`load`, or on entering
    ``with ChatLlamaCpp(...) as model:`` (which unloads on exit). One llama context serves one
    generation at a time; concurrent callers queue in arrival order (``queue_timeout`` bounds the wait).
    ``timeout`` is the generation deadline, counted from the moment a request gets the model.
    After each answer the evaluated prompt state is kept (``state_cache_mb``, see :mod:`llm.state_cache`),
    so a conversation that returns after others spoke evaluates only its new tokens.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    model_path: str | None = Field(default=None, description="GGUF path or bundle name; None = default bundle")
    n_ctx: int = Field(default=4096, ge=16)
    max_tokens: int = Field(default=512, ge=1)
    temperature: float = Field(default=0.7, ge=0.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    repeat_penalty: float = Field(default=1.1, gt=0.0)
    seed: int | None = None
    n_threads: int | None = Field(default=None, description="None/0 = one per physical core")
    n_gpu_layers: int | str = Field(default="auto", description="'auto', -1 = all, 0 = CPU only, or N")
    n_batch: int = Field(default=512, ge=1)
    flash_attn: bool = Field(default=False, description="llama.cpp's flash attention kernels")
    kv_cache_type: KVCacheType = Field(
        default="f16", description="KV cache precision; q8_0/q4_0 halve/quarter its RAM and need flash_attn"
    )
    use_mmap: bool = True
    chat_format: str | None = Field(default=None, description="template override: name, file or Jinja text")
    stop: list[str] | None = None
    timeout: float | None = Field(default=120.0, description="generation deadline in seconds")
    queue_timeout: float | None = Field(default=60.0, description="max seconds to wait for the model")
    json_max_string_length: int | None = Field(
        default=512, ge=1, description="tool calls and structured output: maxLength of strings whose schema has none"
    )
    json_max_items: int | None = Field(
        default=32, ge=0, description="tool calls and structured output: maxItems of arrays whose schema has none"
    )
    max_retries: int = Field(default=0, ge=0, description="accepted for API compatibility; local calls are not retried")
    log_prompts: bool = False
    fetch_bundle: bool = Field(default=True, description="fetch a missing bundle on first load")
    state_cache_mb: float = Field(
        default=512, ge=0, description="RAM (MiB) for saved prompt states of recent conversations; 0 = off"
    )

    _session: LlamaSession = PrivateAttr(default_factory=LlamaSession)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _quantized_kv_needs_flash_attention(self) -> ChatLlamaCpp:
        if self.kv_cache_type in QUANTIZED_KV_TYPES and not self.flash_attn:
            raise ValueError(
                f"kv_cache_type {self.kv_cache_type!r} (LLM_KV_CACHE_TYPE) needs flash attention:"
                " set flash_attn=True (LLM_FLASH_ATTENTION=true) or use f16"
            )
        return self

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_loaded(self) -> bool:
        return self._session.llama is not None

    @property
    def model_name(self) -> str:
        """The GGUF's ``general.name`` once loaded; the file stem (or bundle name) before that."""
        if self._session.model_name:
            return self._session.model_name
        return Path(self.model_path).stem if self.model_path else "default-bundle"

    @property
    def resolved_path(self) -> Path | None:
        """The GGUF file loaded (a bundle name resolved to its file); None before the first load."""
        return self._session.resolved_path

    @property
    def context_window(self) -> int:
        """Tokens one request may use, prompt and answer (``n_ctx``; :class:`llm.capabilities.WindowedModel`)."""
        return self.n_ctx

    @property
    def load_time_ms(self) -> float | None:
        return self._session.load_time_ms

    @property
    def queue_depth(self) -> int:
        """Callers waiting for the model (not counting the one using it)."""
        return self._session.gate.queue_depth

    @property
    def state_cache_stats(self) -> StateCacheStats:
        """Counters of the per-conversation prompt-state cache (zeros before the model loads)."""
        states = self._session.states or PromptStateCache(int(self.state_cache_mb * MIB))
        return states.stats()

    @property
    def llama(self) -> Llama:
        """The underlying ``llama_cpp.Llama`` (loads the model). Use only while holding no stream."""
        self.load()
        llama = self._session.llama
        assert llama is not None, "unloaded concurrently"
        return llama

    @property
    def _gate(self) -> FairGate:  # tests hold the model busy through it
        return self._session.gate

    @property
    def _template(self) -> ChatTemplate | None:  # tests tokenize with it directly
        return self._session.template

    def load(self) -> Self:
        """Load the weights (idempotent). Raises ModelNotFoundError / ModelLoadError."""
        self._session.load(
            LoadOptions(
                model_path=self.model_path,
                fetch_bundle=self.fetch_bundle,
                n_ctx=self.n_ctx,
                n_batch=self.n_batch,
                n_threads=self.n_threads,
                n_gpu_layers=self.n_gpu_layers,
                use_mmap=self.use_mmap,
                flash_attn=self.flash_attn,
                kv_cache_type=self.kv_cache_type,
                seed=self.seed,
                chat_format=self.chat_format,
                state_cache_bytes=int(self.state_cache_mb * MIB),
            )
        )
        return self

    def unload(self) -> None:
        """Free the weights and the context (waits for a running generation to finish)."""
        self._session.unload()

    def __enter__(self) -> Self:
        return self.load()

    def __exit__(self, *exc_info: object) -> None:
        self.unload()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.load)

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.unload)

    def clear_prompt_cache(self) -> None:
        """Forget the saved conversation states and the live context: the next call evaluates its whole
        prompt (benchmarks use this; waits for a running generation to finish)."""
        self._session.clear_prompt_cache()

    def prefill(
        self,
        messages: Sequence[BaseMessage],
        *,
        should_stop: Callable[[], bool] | None = None,
        chunk_tokens: int = 16,
        conversation: str | None = None,
        next_role: Literal["human"] | None = None,
        tools: Sequence[Any] | None = None,
    ) -> int:
        """Evaluate ``messages`` ahead of time and keep the result as a saved prompt state.

        For idle moments: after a turn, the next prompt of that conversation starts with the persona and
        the history up to the answer just given, so evaluating that prefix now leaves only the next
        guidance and message for the next turn. No generation prompt is added and nothing is generated.
        Gives way at once: returns 0 when another call holds the model, and stops between chunks of
        ``chunk_tokens`` when someone queues for the model or ``should_stop()`` says so (what was
        evaluated by then is kept). Returns the number of tokens evaluated; 0 when the state cache is off.
        ``next_role="human"`` also evaluates the template's header of the message that comes next (e.g.
        ``<|im_start|>user\\n``): the tokens every user message starts with, whatever it says.
        ``tools``: the tools the next call will have bound (the chat template puts them near the top).
        """
        if next_role not in (None, "human"):
            raise ValueError(f"next_role must be None or 'human', got {next_role!r}")
        if self.state_cache_mb <= 0:
            return 0
        self.load()
        return self._session.prefill(
            to_chat_dicts(messages),
            should_stop=should_stop,
            chunk_tokens=chunk_tokens,
            conversation=conversation,
            next_role="user" if next_role == "human" else None,
            tools=_formatted(tools),
        )

    async def aprefill(
        self,
        messages: Sequence[BaseMessage],
        *,
        should_stop: Callable[[], bool] | None = None,
        conversation: str | None = None,
        next_role: Literal["human"] | None = None,
        tools: Sequence[Any] | None = None,
    ) -> int:
        """:meth:`prefill` from async code (the event loop stays free)."""
        return await asyncio.to_thread(
            self.prefill,
            messages,
            should_stop=should_stop,
            conversation=conversation,
            next_role=next_role,
            tools=tools,
        )

    def restore_prefix_from_disk(
        self,
        messages: Sequence[BaseMessage],
        folder: Path,
        *,
        next_role: Literal["human"] | None = "human",
        tools: Sequence[Any] | None = None,
    ) -> int:
        """Put the prompt state that :meth:`save_prefix_to_disk` kept in ``folder`` for exactly what
        ``prefill(messages, next_role=...)`` evaluates back into the state cache (a restarted server starts
        with its persona evaluated). Returns its token count; 0 when there is none that fits this model,
        file and load options, when another call holds the model, or when the state cache is off."""
        from llm.disk_states import restore_from_disk

        if self.state_cache_mb <= 0:
            return 0
        self.load()
        role = "user" if next_role == "human" else None
        return restore_from_disk(self._session, to_chat_dicts(messages), folder, role, _formatted(tools))

    def save_prefix_to_disk(
        self,
        messages: Sequence[BaseMessage],
        folder: Path,
        *,
        next_role: Literal["human"] | None = "human",
        tools: Sequence[Any] | None = None,
    ) -> Path | None:
        """Keep the cached state of exactly what ``prefill(messages, next_role=...)`` evaluated in a file
        under ``folder`` (the newest few are kept); None when there is no such state."""
        from llm.disk_states import save_to_disk

        if self.state_cache_mb <= 0 or not self.is_loaded:
            return None
        role = "user" if next_role == "human" else None
        return save_to_disk(self._session, to_chat_dicts(messages), folder, role, _formatted(tools))

    # ------------------------------------------------------------------ tools and structured output

    def bind_tools(
        self,
        tools: Tools,
        *,
        tool_choice: ToolChoice = None,
        call_schemas: CallSchemas = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (LangChain tools, functions, pydantic models, TypedDicts or JSON/OpenAI tool dicts).

        ``tool_choice``: ``"auto"`` (default: text, or calls once the model starts one), ``"any"`` /
        ``"required"`` / ``True`` (exactly one call, grammar-constrained), a tool name (exactly one call of
        that tool), ``"none"`` (never a call). Calls come back in ``AIMessage.tool_calls``; a call the
        answer did not finish is in ``invalid_tool_calls`` (llm.tool_calls). ``call_schemas`` (our extension):
        per tool name, a narrower JSON schema of its arguments that the grammar holds the call to, while the
        prompt shows the tools as given (so saved prompt states still match)."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        # names, tool_choice and call_schemas checked now, not later
        prepare_tools(formatted, tool_choice, GENERIC_FORMAT, call_schemas=call_schemas)
        if call_schemas:
            kwargs["call_schemas"] = {name: dict(schema) for name, schema in call_schemas.items()}
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answers as ``schema`` (pydantic class, TypedDict or JSON schema).

        ``json_schema`` (default): the answer is JSON constrained by a grammar made from the schema
        (llm.json_grammar), parsed into the pydantic class (or a dict); ``function_calling``: one forced call
        of a tool made from the schema; ``json_mode``: any JSON object, constrained by a grammar. ``strict``
        is accepted for compatibility: the grammar always holds the answer to the schema."""
        if kwargs:
            raise ValueError(f"unsupported arguments {sorted(kwargs)}")
        return structured_output(self, schema, method=method, include_raw=include_raw, strict=strict)

    # ------------------------------------------------------------------ tokens

    def _tokenize(self, text: str, special: bool) -> list[int]:
        self.load()
        return self._session.tokenize(text, special)

    def prompt_tokens(
        self,
        messages: Sequence[BaseMessage],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Any] | None = None,
    ) -> list[int]:
        """Token ids the model evaluates for ``messages`` (template markup included; with the assistant
        header that starts the answer unless ``add_generation_prompt`` is False), with ``tools`` bound."""
        self.load()
        return self._session.prompt_tokens(to_chat_dicts(messages), add_generation_prompt, _formatted(tools))

    def render_prompt(self, messages: Sequence[BaseMessage]) -> str:
        """The prompt as text, for logs and traces."""
        self.load()
        return self._session.render_prompt(to_chat_dicts(messages))

    def count_input_tokens(self, value: LanguageModelInput) -> int:
        """Prompt tokens of any LangChain input (string, messages or prompt value)."""
        return len(self.prompt_tokens(self._convert_input(value).to_messages()))

    def get_num_tokens(self, text: str) -> int:
        return len(self._tokenize(text, False))

    def get_token_ids(self, text: str) -> list[int]:
        return self._tokenize(text, False)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Tokens the model evaluates for ``messages`` with ``tools`` rendered by the chat template."""
        self.load()
        return len(self._session.prompt_tokens(to_chat_dicts(messages), True, _formatted(tools)))

    # ------------------------------------------------------------------ LangChain plumbing

    @property
    def _llm_type(self) -> str:
        return "naila-llamacpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_path": self.model_path,
            "n_ctx": self.n_ctx,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": self.repeat_penalty,
            "seed": self.seed,
            "chat_format": self.chat_format,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        # Tracing must never fail a call: unknown options are reported by _params at generation time.
        params = self._params(stop, {k: v for k, v in kwargs.items() if k in _CALL_OPTIONS})
        ls = LangSmithParams(
            ls_provider="llamacpp",
            ls_model_name=str(kwargs.get("model") or self.model_name),
            ls_model_type="chat",
            ls_temperature=params.temperature,
            ls_max_tokens=params.max_tokens,
        )
        if params.stop:
            ls["ls_stop"] = params.stop
        return ls

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> GenerationParams:
        """The one place where fields and per-call options merge."""
        unknown = {k for k in kwargs if k not in _CALL_OPTIONS and not k.startswith("ls_")}
        if unknown:
            raise TypeError(f"unsupported call option(s) {sorted(unknown)}; accepted: {sorted(_CALL_OPTIONS)}")
        stops = list(self.stop or [])
        for extra in (stop, kwargs.get("stop")):
            if extra:
                stops.extend([extra] if isinstance(extra, str) else extra)
        return GenerationParams(
            stop=[s for s in dict.fromkeys(stops) if s],
            max_tokens=int(kwargs.get("max_tokens") or self.max_tokens),
            temperature=float(kwargs.get("temperature", self.temperature)),
            top_p=float(kwargs.get("top_p", self.top_p)),
            top_k=int(kwargs.get("top_k", self.top_k)),
            repeat_penalty=float(kwargs.get("repeat_penalty", self.repeat_penalty)),
            seed=kwargs.get("seed", self.seed),
            timeout=kwargs.get("timeout", self.timeout),
            log_prompt=self.log_prompts,
            grammar=kwargs.get("grammar"),  # GBNF text (llm.constrained)
            grammar_triggers=list(kwargs["grammar_triggers"]) if kwargs.get("grammar_triggers") else None,
        )

    # ------------------------------------------------------------------ generation

    def _events(self, messages: list[BaseMessage], params: GenerationParams) -> Iterator[str | Done]:
        """Text pieces as they are decoded, then one :class:`Done`; holds the model while alive."""
        self.load()
        yield from self._session.generate(to_chat_dicts(messages), params, self.queue_timeout)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        params, calls = self._prepare(stop, kwargs)
        params.conversation = _conversation_of(run_manager)
        # In the caller's thread, as raw llama-cpp-python does (llm.generation says why threads matter).
        for event in self._events(messages, params):
            for chunk in self._to_chunks(event, calls):
                if run_manager and isinstance(event, str):
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[ChatGenerationChunk, None]:
        params, calls = self._prepare(stop, kwargs)
        params.conversation = _conversation_of(run_manager)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # loop closed: the consumer is gone
                params.cancel.set()

        # In a thread that ends with the generation (llm.generation says why threads matter).
        start_in_thread(lambda: self._events(messages, params), params.cancel, put)
        try:
            while True:
                kind, value = await events.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise value
                for chunk in self._to_chunks(value, calls):
                    if run_manager and isinstance(value, str):
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
        finally:
            params.cancel.set()  # no-op when finished; stops the worker at the next token otherwise

    def _prepare(self, stop: list[str] | None, kwargs: dict[str, Any]) -> tuple[GenerationParams, CallStreamer | None]:
        """The generation's parameters and, when tools are bound, what reads calls out of its text."""
        tools, tool_choice = kwargs.pop("tools", None), kwargs.pop("tool_choice", None)
        call_schemas = kwargs.pop("call_schemas", None)
        params = self._params(stop, kwargs)
        if not tools:
            if tool_choice not in (None, "none", "auto"):
                raise ValueError(f"tool_choice={tool_choice!r} needs tools: bind them with bind_tools(...)")
            return params, None
        self.load()
        setup = prepare_tools(
            [convert_to_openai_tool(t) for t in tools],
            tool_choice,
            self._session.tool_format,
            (self.json_max_string_length, self.json_max_items),
            call_schemas,
        )
        if params.grammar is not None and setup.grammar is not None:
            raise ValueError("a grammar and tool calls cannot be combined in one call")
        params.tools = setup.tools
        if setup.grammar is not None:
            params.grammar, params.grammar_triggers = setup.grammar, setup.triggers
        return params, CallStreamer(setup)

    def _to_chunks(self, event: str | Done, calls: CallStreamer | None) -> list[ChatGenerationChunk]:
        if calls is None:
            return [self._to_chunk(event)]
        out = piece_chunks(calls.feed(event) if isinstance(event, str) else calls.finish())
        if isinstance(event, Done):
            out.append(self._to_chunk(event))
        return out

    def _to_chunk(self, event: str | Done) -> ChatGenerationChunk:
        if isinstance(event, str):
            return ChatGenerationChunk(message=AIMessageChunk(content=event))
        usage = UsageMetadata(
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            total_tokens=event.input_tokens + event.output_tokens,
            input_token_details={"cache_read": event.cached_tokens},
        )
        metadata = {
            "model_name": self.model_name,
            "finish_reason": event.finish_reason,
            "time_to_first_token_ms": event.time_to_first_token_ms,
            "inference_time_ms": event.inference_time_ms,
            "tokens_per_second": event.tokens_per_second,
            "prompt_tokens_cached": event.cached_tokens,
        }
        return ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=usage, response_metadata=metadata),
            generation_info={"finish_reason": event.finish_reason},
        )


def _conversation_of(run_manager: Any) -> str | None:
    """The memory thread id of the run (LangGraph puts ``thread_id`` into the run's metadata).

    When a caller streams (e.g. a graph run with ``stream_mode="messages"``), LangChain calls ``_stream``
    without a run manager; the run's config is then still the current one (a context variable).
    """
    metadata = getattr(run_manager, "metadata", None) or ensure_config().get("metadata") or {}
    thread = metadata.get("thread_id")
    return str(thread) if thread is not None else None


def _formatted(tools: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """``tools`` as the OpenAI-style dicts the chat template renders (None: no tools)."""
    return [convert_to_openai_tool(tool) for tool in tools] if tools else None
