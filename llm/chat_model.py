"""``ChatLlamaCpp``: a LangChain chat model over llama-cpp-python.

One generator of events (:meth:`ChatLlamaCpp._events`) does all the work; ``invoke`` aggregates
``stream``, and the async methods run the same generator in a worker thread whose events cross back
to the event loop through a queue (DESIGN.md decision 1).
"""

from __future__ import annotations

import asyncio
import codecs
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import (
    BaseChatModel,
    LangSmithParams,
    agenerate_from_stream,
    generate_from_stream,
)
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from llm.chat_template import ChatTemplate, resolve_template, to_chat_dicts
from llm.errors import (
    ContextOverflowError,
    GenerationCancelledError,
    GenerationTimeoutError,
    ModelLoadError,
    ModelNotFoundError,
    QueueTimeoutError,
)
from llm.gate import FairGate
from llm.state_cache import MIB, PromptStateCache, StateCacheStats, as_tokens, common_prefix, restore_state, save_state

logger = logging.getLogger(__name__)

KVCacheType = Literal["f16", "bf16", "f32", "q8_0", "q4_0"]
# ggml_type ids (ggml.h): the KV cache element types llama.cpp accepts for type_k / type_v
KV_GGML_TYPES: dict[str, int] = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "bf16": 30}
QUANTIZED_KV_TYPES = frozenset({"q8_0", "q4_0"})

_CALL_OPTIONS = {"stop", "max_tokens", "temperature", "top_p", "top_k", "repeat_penalty", "seed", "timeout"}


@dataclass
class _Params:
    """The effective options of one generation (fields merged with per-call kwargs)."""

    stop: list[str]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repeat_penalty: float
    seed: int | None
    timeout: float | None
    cancel: threading.Event = field(default_factory=threading.Event)
    conversation: str | None = None  # the memory thread id (from the run's metadata), for the state cache


@dataclass
class _Done:
    """Final event of a generation: why it ended, usage and timings."""

    finish_reason: Literal["stop", "length"]
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    time_to_first_token_ms: float | None
    inference_time_ms: float
    tokens_per_second: float | None


class ChatLlamaCpp(BaseChatModel):
    """Chat model over a local GGUF file through llama-cpp-python.

    Construction is cheap: weights load on first use or on :meth:`load`. One llama context serves one
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
    max_retries: int = Field(default=0, ge=0, description="accepted for API compatibility; local calls are not retried")
    log_prompts: bool = False
    fetch_bundle: bool = Field(default=True, description="fetch a missing bundle on first load")
    state_cache_mb: float = Field(
        default=512, ge=0, description="RAM (MiB) for saved prompt states of recent conversations; 0 = off"
    )

    _llama: Any = PrivateAttr(default=None)
    _template: ChatTemplate | None = PrivateAttr(default=None)
    _gate: FairGate = PrivateAttr(default_factory=FairGate)
    _load_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _model_name: str | None = PrivateAttr(default=None)
    _resolved_path: Path | None = PrivateAttr(default=None)
    _load_time_ms: float | None = PrivateAttr(default=None)
    _states: PromptStateCache | None = PrivateAttr(default=None)

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
        return self._llama is not None

    @property
    def model_name(self) -> str:
        """The GGUF's ``general.name`` once loaded; the file stem (or bundle name) before that."""
        if self._model_name:
            return self._model_name
        return Path(self.model_path).stem if self.model_path else "default-bundle"

    @property
    def load_time_ms(self) -> float | None:
        return self._load_time_ms

    @property
    def queue_depth(self) -> int:
        return self._gate.queue_depth

    @property
    def state_cache_stats(self) -> StateCacheStats:
        """Counters of the per-conversation prompt-state cache (zeros before the model loads)."""
        states = self._states or PromptStateCache(int(self.state_cache_mb * MIB))
        return states.stats()

    @property
    def llama(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (loads the model). Use only while holding no stream."""
        self.load()
        return self._llama

    def load(self) -> ChatLlamaCpp:
        """Load the weights (idempotent). Raises ModelNotFoundError / ModelLoadError."""
        if self._llama is not None:
            return self
        with self._load_lock:
            if self._llama is not None:
                return self
            started = time.perf_counter()
            path = self._resolve_path()
            _check_gguf(path)
            try:
                import llama_cpp
            except ImportError as exc:  # pragma: no cover - dependency problem
                raise ModelLoadError(f"llama-cpp-python is not installed: {exc}") from exc
            from llm.hardware import model_params_override, resolve_gpu_layers, resolve_threads, safe_model_params

            threads = resolve_threads(self.n_threads)
            overrides = safe_model_params()
            if overrides:
                logger.warning(
                    "this llama-cpp-python build contains llama.cpp's AMX backend, which crashes on Q4_K"
                    " models (llama.cpp #20824); loading without extra buffer types (slower). Rebuild without"
                    " it: scripts/setup.sh does so on AMX CPUs"
                )
            try:
                with model_params_override(**overrides):
                    llama = llama_cpp.Llama(
                        model_path=str(path),
                        n_ctx=self.n_ctx,
                        n_batch=min(self.n_batch, self.n_ctx),
                        n_threads=threads,
                        n_threads_batch=threads,
                        n_gpu_layers=resolve_gpu_layers(self.n_gpu_layers),
                        use_mmap=self.use_mmap,
                        flash_attn=self.flash_attn,
                        type_k=KV_GGML_TYPES[self.kv_cache_type],
                        type_v=KV_GGML_TYPES[self.kv_cache_type],
                        seed=self.seed if self.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED,
                        verbose=False,
                    )
            except Exception as exc:
                raise ModelLoadError(
                    f"llama.cpp could not load {path}: {exc}. The file may be corrupt, truncated or of an"
                    " architecture this llama-cpp-python build does not support."
                ) from exc
            try:
                template = self._build_template(llama)
            except Exception:
                llama.close()
                raise
            self._template = template
            self._model_name = str(llama.metadata.get("general.name") or path.stem)
            self._resolved_path = path
            self._states = PromptStateCache(int(self.state_cache_mb * MIB))
            self._llama = llama
            self._load_time_ms = (time.perf_counter() - started) * 1000
            logger.info("loaded %s (%s) in %.0f ms", self._model_name, path, self._load_time_ms)
        return self

    def unload(self) -> None:
        """Free the weights and the context (waits for a running generation to finish)."""
        ticket = self._gate.acquire(timeout=None)
        try:
            with self._load_lock:
                llama, self._llama = self._llama, None
                self._template = None
                if self._states is not None:
                    self._states.clear()  # the states belong to this context
                if llama is not None:
                    llama.close()
                    del llama
                    gc.collect()
        finally:
            self._gate.release(ticket)

    def clear_prompt_cache(self) -> None:
        """Forget the saved conversation states and the live context: the next call evaluates its whole
        prompt (benchmarks use this; waits for a running generation to finish)."""
        ticket = self._gate.acquire(timeout=None)
        try:
            if self._states is not None:
                self._states.clear()
            if self._llama is not None:
                self._llama.reset()
        finally:
            self._gate.release(ticket)

    def prefill(
        self,
        messages: Sequence[BaseMessage],
        *,
        should_stop: Callable[[], bool] | None = None,
        chunk_tokens: int = 16,
        conversation: str | None = None,
        next_role: Literal["human"] | None = None,
    ) -> int:
        """Evaluate ``messages`` ahead of time and keep the result as a saved prompt state.

        For idle moments: after a turn, the next prompt of that conversation starts with the persona and
        the history up to the answer just given, so evaluating that prefix now leaves only the next
        guidance and message for the next turn. No generation prompt is added and nothing is generated.
        Gives way at once: returns 0 when another call holds the model, and stops between chunks of
        ``chunk_tokens`` when someone queues for the model or ``should_stop()`` says so (what was
        evaluated by then is kept). Returns the number of tokens evaluated; 0 when the state cache is off.
        ``next_role="human"`` also evaluates the template's header of the message that comes next (e.g.
        ``<|im_start|>user\n``): the tokens every user message starts with, whatever it says.
        """
        if next_role not in (None, "human"):
            raise ValueError(f"next_role must be None or 'human', got {next_role!r}")
        if self.state_cache_mb <= 0:
            return 0
        self.load()
        outcome: list[Any] = []

        def work() -> None:  # in a thread that ends with it: see _start_generation
            try:
                outcome.append(self._prefill_now(messages, should_stop, chunk_tokens, conversation, next_role))
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=work, name="llama-prefill", daemon=True)
        worker.start()
        worker.join()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return int(outcome[0])

    def _prefill_now(
        self,
        messages: Sequence[BaseMessage],
        should_stop: Callable[[], bool] | None,
        chunk_tokens: int,
        conversation: str | None,
        next_role: Literal["human"] | None,
    ) -> int:
        try:
            ticket = self._gate.acquire(timeout=0.0)
        except QueueTimeoutError:
            return 0  # the model is busy: that call leaves its own state
        try:
            llama = self._llama
            states = self._states
            if llama is None or states is None or not states.enabled:
                return 0
            target = self._prefill_target(messages, next_role)
            if not target or len(target) >= llama.n_ctx():
                return 0
            done = self._reuse_prefix(llama, target)
            evaluated = 0
            step = max(1, min(chunk_tokens, llama.n_batch))
            while done + evaluated < len(target):
                if self._gate.queue_depth or (should_stop is not None and should_stop()):
                    break
                batch = target[done + evaluated : done + evaluated + step]
                llama.eval(batch)
                evaluated += len(batch)
            if evaluated:
                self._save_state(llama, conversation)
            return evaluated
        finally:
            self._gate.release(ticket)

    def _prefill_target(self, messages: Sequence[BaseMessage], next_role: Literal["human"] | None) -> list[int]:
        base = self.prompt_tokens(messages, add_generation_prompt=False)
        if next_role is None:
            return base
        # the header is what two renderings with different next messages share beyond ``messages``
        one = self.prompt_tokens([*messages, HumanMessage("a")], add_generation_prompt=False)
        other = self.prompt_tokens([*messages, HumanMessage("z")], add_generation_prompt=False)
        shared = common_prefix(as_tokens(one), as_tokens(other))
        return one[:shared] if shared > len(base) and one[: len(base)] == base else base

    async def aprefill(
        self,
        messages: Sequence[BaseMessage],
        *,
        should_stop: Callable[[], bool] | None = None,
        conversation: str | None = None,
        next_role: Literal["human"] | None = None,
    ) -> int:
        """:meth:`prefill` in a worker thread."""
        return await asyncio.to_thread(
            self.prefill, messages, should_stop=should_stop, conversation=conversation, next_role=next_role
        )

    def _resolve_path(self) -> Path:
        from llm.bundles import resolve_model_path

        return resolve_model_path(self.model_path, fetch=self.fetch_bundle)

    def _build_template(self, llama: Any) -> ChatTemplate:
        model = llama._model
        bos_id, eos_id = llama.token_bos(), llama.token_eos()

        def token_text(token: int) -> str:
            return model.token_get_text(token) if token >= 0 else ""

        try:
            source = resolve_template(self.chat_format, llama.metadata.get("tokenizer.chat_template"))
            return ChatTemplate(
                source=source,
                bos_token=token_text(bos_id),
                eos_token=token_text(eos_id),
                add_bos_id=bos_id if bos_id >= 0 and model.add_bos_token() else None,
            )
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        except Exception as exc:
            raise ModelLoadError(f"the chat template could not be compiled: {exc}") from exc

    # ------------------------------------------------------------------ tokens

    def _tokenize(self, text: str, special: bool) -> list[int]:
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def prompt_tokens(self, messages: Sequence[BaseMessage], *, add_generation_prompt: bool = True) -> list[int]:
        """Token ids the model evaluates for ``messages`` (template markup included; with the assistant
        header that starts the answer unless ``add_generation_prompt`` is False)."""
        self.load()
        assert self._template is not None
        return self._template.tokenize(to_chat_dicts(messages), self._tokenize, add_generation_prompt)

    def render_prompt(self, messages: Sequence[BaseMessage]) -> str:
        """The prompt as text, for logs and traces."""
        self.load()
        assert self._template is not None
        return self._template.render_text(to_chat_dicts(messages))

    def get_num_tokens(self, text: str) -> int:
        return len(self._tokenize(text, False))

    def get_token_ids(self, text: str) -> list[int]:
        return self._tokenize(text, False)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        if tools:
            raise NotImplementedError("token counting with tools is not supported yet")
        return len(self.prompt_tokens(messages))

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

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> _Params:
        """The one place where fields and per-call options merge."""
        unknown = {k for k in kwargs if k not in _CALL_OPTIONS and not k.startswith("ls_")}
        if unknown:
            raise TypeError(f"unsupported call option(s) {sorted(unknown)}; accepted: {sorted(_CALL_OPTIONS)}")
        stops = list(self.stop or [])
        for extra in (stop, kwargs.get("stop")):
            if extra:
                stops.extend([extra] if isinstance(extra, str) else extra)
        return _Params(
            stop=[s for s in dict.fromkeys(stops) if s],
            max_tokens=int(kwargs.get("max_tokens") or self.max_tokens),
            temperature=float(kwargs.get("temperature", self.temperature)),
            top_p=float(kwargs.get("top_p", self.top_p)),
            top_k=int(kwargs.get("top_k", self.top_k)),
            repeat_penalty=float(kwargs.get("repeat_penalty", self.repeat_penalty)),
            seed=kwargs.get("seed", self.seed),
            timeout=kwargs.get("timeout", self.timeout),
        )

    # ------------------------------------------------------------------ generation

    def _events(self, messages: list[BaseMessage], params: _Params) -> Iterator[str | _Done]:
        """Text pieces as they are decoded, then one :class:`_Done`. Holds the gate while alive."""
        self.load()
        ticket = self._gate.acquire(self.queue_timeout, params.cancel)
        try:
            yield from self._generate_locked(messages, params)
        finally:
            self._gate.release(ticket)

    def _generate_locked(self, messages: list[BaseMessage], params: _Params) -> Iterator[str | _Done]:
        import llama_cpp

        llama = self._llama
        if llama is None:  # unloaded while we waited
            self.load()
            llama = self._llama
        got_model = time.perf_counter()
        deadline = None if not params.timeout else got_model + float(params.timeout)
        prompt = self.prompt_tokens(messages)
        if self.log_prompts:
            logger.info("prompt (%d tokens):\n%s", len(prompt), self.render_prompt(messages))
        n_ctx = llama.n_ctx()
        if len(prompt) >= n_ctx:
            raise ContextOverflowError(
                f"the prompt has {len(prompt)} tokens but the context holds {n_ctx};"
                " shorten the conversation or raise LLM_CONTEXT_SIZE"
            )
        budget = min(params.max_tokens, n_ctx - len(prompt))

        def check(stage: str) -> None:
            if params.cancel.is_set():
                raise GenerationCancelledError(f"generation cancelled during {stage}")
            if deadline is not None and time.perf_counter() > deadline:
                raise GenerationTimeoutError(
                    f"generation exceeded its {params.timeout}s deadline during {stage}"
                    " (LLM_MAX_INFERENCE_TIME_SECONDS)"
                )

        cached = self._evaluate_prompt(llama, prompt, check)
        if params.seed is not None:
            llama.set_seed(int(params.seed))
        vocab = llama._model.vocab
        decoder = Utf8Decoder()
        stops = params.stop
        holdback = max((len(s) for s in stops), default=1) - 1
        pending = ""
        produced = 0
        first_at: float | None = None
        last_at = got_model
        finish: Literal["stop", "length"] = "length"
        tokens = llama.generate(
            prompt,
            top_k=params.top_k,
            top_p=params.top_p,
            temp=params.temperature,
            repeat_penalty=params.repeat_penalty,
            reset=True,
        )
        try:
            for token in tokens:
                now = time.perf_counter()
                if first_at is None:
                    first_at = now
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = "stop"
                    break
                produced += 1
                last_at = now
                pending += decoder.feed(llama.detokenize([token]))
                if stops:
                    hit = _first_stop(pending, stops)
                    if hit is not None:
                        pending = pending[:hit]
                        finish = "stop"
                        break
                    emit_upto = max(0, len(pending) - holdback)
                else:
                    emit_upto = len(pending)
                if emit_upto:
                    yield pending[:emit_upto]
                    pending = pending[emit_upto:]
                if produced >= budget:
                    break
                check("generation")
        finally:
            tokens.close()
        pending += decoder.flush()
        if pending and finish == "length" and stops:
            hit = _first_stop(pending, stops)
            if hit is not None:
                pending, finish = pending[:hit], "stop"
        if pending:
            yield pending
        end = time.perf_counter()
        decode_s = last_at - first_at if first_at is not None else 0.0
        yield _Done(
            finish_reason=finish,
            input_tokens=len(prompt),
            output_tokens=produced,
            cached_tokens=cached,
            time_to_first_token_ms=(first_at - got_model) * 1000 if first_at is not None else None,
            inference_time_ms=(end - got_model) * 1000,
            tokens_per_second=(produced - 1) / decode_s if produced > 1 and decode_s > 0 else None,
        )
        # After the caller has the answer, still holding the model: the next call waits for a complete state.
        self._save_state(llama, params.conversation)

    def _evaluate_prompt(self, llama: Any, prompt: list[int], check: Any) -> int:
        """Evaluate the prompt's full batches ahead of ``Llama.generate``, reusing the longest prefix known.

        That prefix comes from the live context (the previous call) or from a saved state of a recent
        conversation, whichever is longer. Whole ``n_batch`` batches go here, one at a time, so a cancel
        or deadline stops a long prompt between batches; the last batch (with the last token, whose logits
        start the answer) is left to ``Llama.generate``, which finds the rest cached. That is exactly
        the batches raw llama-cpp-python evaluates: splitting off the last token alone would cost one
        more pass over all the weights (~a token's generation time) before the first token.
        """
        cached = self._reuse_prefix(llama, prompt[:-1])
        step = llama.n_batch
        ahead = ((len(prompt) - cached - 1) // step) * step  # whole batches, never the last token
        for start in range(cached, cached + ahead, step):
            check("prompt evaluation")
            llama.eval(prompt[start : start + step])
        check("prompt evaluation")
        return cached

    def _reuse_prefix(self, llama: Any, target: list[int]) -> int:
        """Leave the KV cache holding the longest known prefix of ``target``; returns its length."""
        wanted = as_tokens(target)
        cached = common_prefix(llama.input_ids[: llama.n_tokens], wanted)
        states = self._states
        if states is not None and states.enabled:
            found = states.best(wanted, cached)
            if found is not None:
                entry, length = found
                ok = restore_state(llama, entry)
                states.restored(entry, length, ok)
                cached = length if ok else 0
        if cached and llama._ctx.kv_cache_seq_rm(-1, cached, -1):
            llama.n_tokens = cached
        else:
            cached = 0
            llama.reset()
        return cached

    def _save_state(self, llama: Any, conversation: str | None = None) -> None:
        """Keep the evaluated state of the conversation just answered (a consistent point)."""
        states = self._states
        if states is None or not states.enabled:
            return
        try:
            save_state(llama, states, conversation)
        except Exception:  # caching is an optimisation: never fail an answer for it
            logger.exception("could not save the prompt state")

    # ------------------------------------------------------------------ LangChain entry points

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        params = self._params(stop, kwargs)
        params.conversation = _conversation_of(run_manager)
        # In the caller's thread (as raw llama-cpp-python does): see _start_generation for why threads matter.
        for event in self._events(messages, params):
            chunk = self._to_chunk(event)
            if run_manager and isinstance(event, str):
                run_manager.on_llm_new_token(event, chunk=chunk)
            yield chunk

    def _start_generation(
        self, messages: list[BaseMessage], params: _Params, put: Callable[[str, Any], None]
    ) -> threading.Thread:
        """Generate in a new thread that ends with the generation; events go to ``put`` (async callers).

        Threads matter: llama.cpp computes with OpenMP, and OpenMP keeps a team of worker threads for
        every thread that ever computed, for as long as that thread lives. One idle team of a long-lived
        thread (a pool thread, or the main thread after a sync call) is enough for libgomp to count more
        threads than CPUs and switch its barriers from spinning to sleeping: measured on 2 cores,
        generation fell from 26 to 17 tok/s. So async generation and :meth:`prefill` compute in threads
        that end with them, and sync calls in the caller's own thread. Mixing sync calls from a
        long-lived thread with async ones in one process slows both (the server never does).
        """

        def work() -> None:
            try:
                for event in self._events(messages, params):
                    if params.cancel.is_set():
                        raise GenerationCancelledError("generation cancelled by the caller")
                    put("event", event)
            except BaseException as exc:
                put("error", exc)
            else:
                put("end", None)

        worker = threading.Thread(target=work, name="llama-generation", daemon=True)
        worker.start()
        return worker

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        params = self._params(stop, kwargs)
        params.conversation = _conversation_of(run_manager)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # loop closed: the consumer is gone
                params.cancel.set()

        self._start_generation(messages, params, put)
        try:
            while True:
                kind, value = await events.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise value
                chunk = self._to_chunk(value)
                if run_manager and isinstance(value, str):
                    await run_manager.on_llm_new_token(value, chunk=chunk)
                yield chunk
        finally:
            params.cancel.set()  # no-op when finished; stops the worker at the next token otherwise

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        stream = self._astream(messages, stop, run_manager, **kwargs)
        try:
            return await agenerate_from_stream(stream)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    def _to_chunk(self, event: str | _Done) -> ChatGenerationChunk:
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

    # convenience used by callers that want the prompt rendered for a plain input
    def count_input_tokens(self, value: LanguageModelInput) -> int:
        return len(self.prompt_tokens(self._convert_input(value).to_messages()))


class Utf8Decoder:
    """Bytes of token pieces in, text out; a character split across tokens comes out whole."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


def _conversation_of(run_manager: Any) -> str | None:
    """The memory thread id of the run (LangGraph puts ``thread_id`` into the run's metadata)."""
    metadata = getattr(run_manager, "metadata", None) or {}
    thread = metadata.get("thread_id")
    return str(thread) if thread is not None else None


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _check_gguf(path: Path) -> None:
    if not path.exists():
        raise ModelNotFoundError(
            f"model file not found: {path}. Set LLM_MODEL_PATH to a GGUF file or a bundle name"
            " (see `naila models list`), or run `naila models fetch qwen2.5-coder-0.5b-instruct`."
        )
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory, not a GGUF file")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if magic != b"GGUF":
        raise ModelLoadError(
            f"{path} is not a GGUF file (starts with {magic!r}, expected b'GGUF');"
            " llama.cpp needs a .gguf model such as Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"
        )
