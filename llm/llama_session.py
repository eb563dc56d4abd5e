"""One llama.cpp model and its context, used by one generation at a time (DESIGN.md decision 1).

:class:`LlamaSession` loads and unloads the model, turns chat messages (``{"role", "content"}`` dicts)
into prompt tokens with the chat template, reuses the longest known prompt prefix (the live context
or a saved state of a recent conversation, :mod:`llm.state_cache`), prefills idle conversations and
runs the token loop. Every reach into llama-cpp-python beyond its public API is in this module, each
with the reason. Which thread computes matters for speed: see :mod:`llm.generation`.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm.bundles import resolve_model_path
from llm.chat_template import ChatTemplate
from llm.errors import ContextOverflowError, ModelLoadError, QueueTimeoutError
from llm.gate import FairGate
from llm.generation import Done, GenerationParams, run_in_own_thread, stage_check, stream_answer
from llm.hardware import apply_cpu_runtime_defaults, safe_model_params
from llm.load_options import LoadOptions, check_gguf
from llm.state_cache import PromptStateCache, SavedState, as_tokens, common_prefix
from llm.tool_format import ToolCallFormat, tool_call_format

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["LlamaSession", "model_params_override", "open_raw_llama"]

# Before any import of llama_cpp below: libgomp takes its wait policy from the environment when it loads
# (llm.hardware.apply_cpu_runtime_defaults says why; importing llm.hardware already did this, idempotently).
apply_cpu_runtime_defaults()

logger = logging.getLogger(__name__)

Chat = dict[str, str]  # {"role": ..., "content": ...}
_SEQ = 0  # Llama (llama-cpp-python) evaluates everything in sequence 0


class LlamaSession:
    """A llama.cpp model and context; callers take turns through :attr:`gate` (first come, first served).

    :meth:`generate` holds the gate for the whole life of a generation; :meth:`prefill` gives way to
    anyone who queues. Load and unload are idempotent and thread-safe.
    """

    def __init__(self) -> None:
        self.gate = FairGate()
        self._load_lock = threading.Lock()
        self._llama: Llama | None = None
        self._template: ChatTemplate | None = None
        self._states: PromptStateCache | None = None
        self._options: LoadOptions | None = None
        self.model_name: str | None = None  # the GGUF's general.name, set by load (kept after unload)
        self.resolved_path: Path | None = None  # the GGUF file loaded
        self.load_time_ms: float | None = None

    @property
    def llama(self) -> Llama | None:
        """The loaded ``llama_cpp.Llama`` (None when not loaded)."""
        return self._llama

    @property
    def tool_format(self) -> ToolCallFormat:
        """How this model writes tool calls (its chat template's family; llm.tool_format)."""
        return tool_call_format(self._loaded_template())

    @property
    def template(self) -> ChatTemplate | None:  # None when not loaded
        return self._template

    @property
    def states(self) -> PromptStateCache | None:
        """The saved prompt states of this context (None before the first load)."""
        return self._states

    def load(self, options: LoadOptions) -> None:
        """Load the weights (idempotent). Raises ModelNotFoundError / ModelLoadError."""
        if self._llama is not None:
            return
        with self._load_lock:
            if self._llama is not None:
                return
            started = time.perf_counter()
            path = resolve_model_path(options.model_path, fetch=options.fetch_bundle)
            check_gguf(path)
            try:
                import llama_cpp  # noqa: F401  (a missing dependency is a load error, not a crash)
            except ImportError as exc:  # pragma: no cover - dependency problem
                raise ModelLoadError(f"llama-cpp-python is not installed: {exc}") from exc
            try:
                llama = open_raw_llama(path, **options.llama_kwargs())
            except Exception as exc:
                raise ModelLoadError(
                    f"llama.cpp could not load {path}: {exc}. The file may be corrupt, truncated or of an"
                    " architecture this llama-cpp-python build does not support."
                ) from exc
            try:
                template = _build_template(llama, options.chat_format)
            except Exception:
                llama.close()
                raise
            self._template = template
            self.model_name = str(llama.metadata.get("general.name") or path.stem)
            self.resolved_path = path
            self._states = PromptStateCache(options.state_cache_bytes)
            self._options = options
            self._llama = llama
            self.load_time_ms = (time.perf_counter() - started) * 1000
            logger.info("loaded %s (%s) in %.0f ms", self.model_name, path, self.load_time_ms)

    def unload(self) -> None:
        """Free the weights, the context and its saved states (waits for a running generation)."""
        ticket = self.gate.acquire(timeout=None)
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
            self.gate.release(ticket)

    def clear_prompt_cache(self) -> None:
        """Forget the saved states and the live context (waits for a running generation)."""
        ticket = self.gate.acquire(timeout=None)
        try:
            if self._states is not None:
                self._states.clear()
            if self._llama is not None:
                _reset(self._llama)
        finally:
            self.gate.release(ticket)

    def _loaded(self) -> Llama:
        if self._llama is None:
            raise ModelLoadError("the model is not loaded (it was unloaded, or load() was never called)")
        return self._llama

    def _loaded_template(self) -> ChatTemplate:
        if self._template is None:
            raise ModelLoadError("the model is not loaded (it was unloaded, or load() was never called)")
        return self._template

    def tokenize(self, text: str, special: bool) -> list[int]:
        """``text`` as token ids; ``special`` lets control-token text become control tokens."""
        return list(self._loaded().tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def prompt_tokens(
        self, chats: list[Chat], add_generation_prompt: bool = True, tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """Token ids the model evaluates for ``chats`` and ``tools`` (OpenAI-style tool dicts), control
        tokens only from the template's markup."""
        return self._loaded_template().tokenize(chats, self.tokenize, add_generation_prompt, tools=tools)

    def render_prompt(self, chats: list[Chat], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt as text, for logs and traces."""
        return self._loaded_template().render_text(chats, tools=tools)

    # ------------------------------------------------------------------ prefill

    def prefill(
        self,
        chats: list[Chat],
        *,
        should_stop: Callable[[], bool] | None = None,
        chunk_tokens: int = 16,
        conversation: str | None = None,
        next_role: str | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> int:
        """Evaluate ``chats`` (and the header of a ``next_role`` message) into a saved state, in a thread of
        its own; gives way to anyone who queues (see ``ChatLlamaCpp.prefill``). Returns the tokens evaluated.
        ``tools`` are rendered as a call with them bound renders them (they sit near the prompt's top)."""

        def work() -> int:
            try:
                ticket = self.gate.acquire(timeout=0.0)
            except QueueTimeoutError:
                return 0  # the model is busy: that call leaves its own state
            try:
                llama = self._llama
                states = self._states
                if llama is None or states is None or not states.enabled:
                    return 0
                target = self._prefill_target(chats, next_role, tools)
                if not target or len(target) >= llama.n_ctx():
                    return 0
                done = self._reuse_prefix(llama, target)
                evaluated = 0
                step = max(1, min(chunk_tokens, llama.n_batch))
                while done + evaluated < len(target):
                    if self.gate.queue_depth or (should_stop is not None and should_stop()):
                        break
                    batch = target[done + evaluated : done + evaluated + step]
                    llama.eval(batch)
                    evaluated += len(batch)
                if evaluated:
                    self._save_state(llama, conversation)
                return evaluated
            finally:
                self.gate.release(ticket)

        return run_in_own_thread(work)

    def _prefill_target(
        self, chats: list[Chat], next_role: str | None, tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        try:
            base: list[int] | None = self.prompt_tokens(chats, add_generation_prompt=False, tools=tools)
        except ValueError:  # Llama 3.1 puts tools in the first user message: ``chats`` may have none yet
            if next_role is None or not tools:
                raise
            base = None
        if next_role is None:
            return base or []
        # the header (and tools placed in it) is what two renderings with different next messages share
        one = self.prompt_tokens([*chats, {"role": next_role, "content": "a"}], False, tools)
        other = self.prompt_tokens([*chats, {"role": next_role, "content": "z"}], False, tools)
        shared = common_prefix(as_tokens(one), as_tokens(other))
        if base is None:
            return one[:shared]
        return one[:shared] if shared > len(base) and one[: len(base)] == base else base

    # ------------------------------------------------------------------ generation

    def generate(
        self, chats: list[Chat], params: GenerationParams, queue_timeout: float | None
    ) -> Iterator[str | Done]:
        """Text pieces as they are decoded, then one :class:`Done`. Holds the gate while alive and
        computes in the thread that iterates it (see :mod:`llm.generation` for which one that should be)."""
        ticket = self.gate.acquire(queue_timeout, params.cancel)
        try:
            yield from self._generate_locked(chats, params)
        finally:
            self.gate.release(ticket)

    def _generate_locked(self, chats: list[Chat], params: GenerationParams) -> Iterator[str | Done]:
        import llama_cpp

        llama = self._llama
        if llama is None:  # unloaded while we waited
            if self._options is None:
                raise ModelLoadError("the model was never loaded")
            self.load(self._options)
            llama = self._loaded()
        got_model = time.perf_counter()
        check = stage_check(params, got_model)
        prompt = self.prompt_tokens(chats, tools=params.tools)
        if params.log_prompt:
            logger.info("prompt (%d tokens):\n%s", len(prompt), self.render_prompt(chats, params.tools))
        n_ctx = llama.n_ctx()
        if len(prompt) >= n_ctx:
            raise ContextOverflowError(
                f"the prompt has {len(prompt)} tokens but the context holds {n_ctx};"
                " shorten the conversation or raise LLM_CONTEXT_SIZE"
            )
        cached = self._evaluate_prompt(llama, prompt, check)
        if params.seed is not None:
            llama.set_seed(int(params.seed))
        # Llama offers token_eos() only; end of generation is a set (eot, eom, eos) only the vocab knows.
        vocab = llama._model.vocab
        if params.grammar is not None:  # our own token loop: the grammar checks the sampled token only
            from llm.constrained import constrained_tokens

            tokens = constrained_tokens(llama, prompt, params)
        else:
            tokens = llama.generate(
                prompt,
                top_k=params.top_k,
                top_p=params.top_p,
                temp=params.temperature,
                repeat_penalty=params.repeat_penalty,
                reset=True,
            )
        yield from stream_answer(
            tokens,
            is_end=lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token)),
            piece=lambda token: llama.detokenize([token]),
            stops=params.stop,
            budget=min(params.max_tokens, n_ctx - len(prompt)),
            check=check,
            started=got_model,
            prompt_tokens=len(prompt),
            cached_tokens=cached,
        )
        # After the caller has the answer, still holding the model: the next call waits for a complete state.
        self._save_state(llama, params.conversation)

    def _evaluate_prompt(self, llama: Llama, prompt: list[int], check: Callable[[str], None]) -> int:
        """Evaluate the prompt's full batches ahead of ``Llama.generate``, reusing the longest prefix known.

        Whole ``n_batch`` batches go here, so a cancel or deadline stops a long prompt between batches; the
        last batch (with the last token, whose logits start the answer) is left to ``Llama.generate``: the
        batches raw llama-cpp-python evaluates. Splitting off the last token alone would cost one more
        pass over all the weights before the first token (docs/PERFORMANCE.md, part 1).
        """
        cached = self._reuse_prefix(llama, prompt[:-1])
        step = llama.n_batch
        ahead = ((len(prompt) - cached - 1) // step) * step  # whole batches, never the last token
        for start in range(cached, cached + ahead, step):
            check("prompt evaluation")
            llama.eval(prompt[start : start + step])
        check("prompt evaluation")
        return cached

    # ------------------------------------------------------------------ prefix reuse and saved states

    def _reuse_prefix(self, llama: Llama, target: list[int]) -> int:
        """Leave the KV cache holding the longest known prefix of ``target`` (the live context's or a
        saved state's); returns its length."""
        wanted = as_tokens(target)
        cached = common_prefix(llama.input_ids[: llama.n_tokens], wanted)  # Llama's record of its KV cache
        states = self._states
        if states is not None and states.enabled:
            found = states.best(wanted, cached)
            if found is not None:
                entry, length = found
                ok = _restore_state(llama, entry)
                states.restored(entry, length, ok)
                cached = length if ok else 0
        # Llama keeps only the prefix its own generate() finds: cutting the cache to ours needs the
        # context's seq_rm, and Llama's record of its tokens (no setter) must follow.
        if cached and llama._ctx.kv_cache_seq_rm(-1, cached, -1):
            llama.n_tokens = cached
        else:
            cached = 0
            _reset(llama)
        return cached

    def _save_state(self, llama: Llama, conversation: str | None = None) -> None:
        """Keep the evaluated state of the conversation just answered (a consistent point)."""
        states = self._states
        if states is not None and states.enabled:
            try:
                _save_state(llama, states, conversation)
            except Exception:  # caching is an optimisation: never fail an answer for it
                logger.exception("could not save the prompt state")


# ---------------------------------------------------------------------- llama.cpp sequence states
# Llama.save_state/load_state copy the whole context (every sequence, the logits) into a fresh buffer
# per call; the C API's per-sequence calls copy only sequence 0's KV cache, into our own buffer.


def _kv_holds(llama: Llama, n_tokens: int) -> bool:
    """Whether sequence 0 of the KV cache holds exactly positions 0..n_tokens-1 (no public check)."""
    from llama_cpp import llama_cpp as api

    mem = api.llama_get_memory(llama._ctx.ctx)
    if n_tokens == 0:
        return bool(api.llama_memory_seq_pos_max(mem, _SEQ) == -1)
    return bool(
        api.llama_memory_seq_pos_min(mem, _SEQ) == 0 and api.llama_memory_seq_pos_max(mem, _SEQ) == n_tokens - 1
    )


def _save_state(llama: Llama, cache: PromptStateCache, conversation: str | None = None) -> bool:
    """Snapshot the evaluated tokens of ``llama`` into ``cache`` (only when the KV cache is consistent)."""
    from llama_cpp import llama_cpp as api

    n = int(llama.n_tokens)
    if n == 0 or not cache.enabled:
        return False
    if not _kv_holds(llama, n):
        logger.warning("not saving the prompt state: the KV cache does not match the %d tokens evaluated", n)
        return False
    ctx = llama._ctx.ctx
    size = int(api.llama_state_seq_get_size(ctx, _SEQ))
    tokens = np.array(llama.input_ids[:n], dtype=np.int32)
    if size == 0 or not cache.reserve(tokens, size + tokens.nbytes):  # before allocating: never over budget
        return False
    data = np.empty(size, dtype=np.uint8)  # not zeroed: llama.cpp writes every byte
    written = int(api.llama_state_seq_get_data(ctx, data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), size, _SEQ))
    if written == 0 or written > size:
        logger.warning("llama.cpp could not copy the prompt state (%d of %d bytes)", written, size)
        return False
    return cache.put(tokens, data[:written] if written < size else data, conversation)


def _restore_state(llama: Llama, state: SavedState) -> bool:
    """Load ``state`` into sequence 0 and tell Llama which tokens it holds (it has no setter for that);
    on failure leave the sequence empty and ``llama`` reset (nothing half-restored survives)."""
    from llama_cpp import llama_cpp as api

    ctx = llama._ctx.ctx
    mem = api.llama_get_memory(ctx)
    api.llama_memory_seq_rm(mem, _SEQ, -1, -1)
    _reset(llama)
    data = state.data
    n = len(state.tokens)
    loaded = int(
        api.llama_state_seq_set_data(ctx, data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), data.nbytes, _SEQ)
    )
    if loaded != data.nbytes or not _kv_holds(llama, n):
        logger.warning("restoring a saved prompt state failed (%d of %d bytes); evaluating from scratch", loaded, n)
        api.llama_memory_seq_rm(mem, _SEQ, -1, -1)
        _reset(llama)
        return False
    llama.input_ids[:n] = state.tokens
    llama.n_tokens = n
    return True


def _reset(llama: Llama) -> None:  # forget the evaluated tokens: the next evaluation starts at position 0
    llama.reset()  # type: ignore[no-untyped-call]  # unannotated in llama-cpp-python


# ---------------------------------------------------------------------- loading


def open_raw_llama(path: str | os.PathLike[str], **llama_kwargs: Any) -> Llama:
    """``llama_cpp.Llama(model_path=path, **llama_kwargs)`` with the model parameters this machine needs
    (:func:`llm.hardware.safe_model_params`), as the session loads; benchmarks compare against it."""
    import llama_cpp

    overrides = safe_model_params()
    if overrides:
        logger.warning(
            "this llama-cpp-python build contains llama.cpp's AMX backend, which crashes on Q4_K"
            " models (llama.cpp #20824); loading without extra buffer types (slower). Rebuild without"
            " it: scripts/setup.sh does so on AMX CPUs"
        )
    with model_params_override(**overrides):
        return llama_cpp.Llama(model_path=str(path), **llama_kwargs)


_PARAMS_LOCK = threading.Lock()


@contextlib.contextmanager
def model_params_override(**fields: object) -> Iterator[None]:
    """Set fields of the ``llama_model_params`` that ``llama_cpp.Llama`` builds inside its constructor."""
    # Llama takes no argument for some fields (use_extra_bufts); it starts from llama_model_default_params().
    import llama_cpp.llama_cpp as lc

    with _PARAMS_LOCK:
        original = lc.llama_model_default_params

        def patched() -> Any:
            params = original()
            for name, value in fields.items():
                setattr(params, name, value)
            return params

        lc.llama_model_default_params = patched
        try:
            yield
        finally:
            lc.llama_model_default_params = original


def _build_template(llama: Llama, chat_format: str | None) -> ChatTemplate:
    # Only the model has the vocabulary's own token text (what templates expect as bos_token) and
    # llama.cpp's add-BOS decision (the GGUF flag or the vocabulary type's default).
    model = llama._model
    bos_id, eos_id = llama.token_bos(), llama.token_eos()
    return ChatTemplate.for_model(
        override=chat_format,
        gguf_template=llama.metadata.get("tokenizer.chat_template"),
        bos_token=str(model.token_get_text(bos_id)) if bos_id >= 0 else "",
        eos_token=str(model.token_get_text(eos_id)) if eos_id >= 0 else "",
        add_bos_id=bos_id if bos_id >= 0 and model.add_bos_token() else None,
    )
