"""The chat model's lifecycle for the front ends: build it from settings, load it (or fall back to
degraded mode, where the pattern responder answers), prime its prompt cache, unload it.

Any LangChain chat model works; what only our llama.cpp model has (weights to load, a prompt cache) is
used through :class:`llm.capabilities.LocalModel` (DESIGN.md decision 11).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from llm.capabilities import LocalModel
from llm.errors import LLMError
from naila_graph.telemetry import ModelStatus
from nodes.failures import failure_reason

logger = logging.getLogger("naila.server")

LOAD_PROGRESS_SECONDS = 5.0  # how often a slow model load is reported


def load_model(model: Any) -> tuple[str, LLMError] | None:
    """Load ``model``'s weights when it has any. None when the model is ready (other LangChain chat models
    are ready as they are); ``(degraded_reason, error)`` when the weights cannot be loaded, e.g.
    ``("model_not_found", ModelNotFoundError(...))``: the pattern responder answers then."""
    if not isinstance(model, LocalModel):
        return None
    try:
        model.load()
    except LLMError as exc:
        return failure_reason(exc), exc
    return None


def open_model(model_path: str | None = None) -> tuple[Any, str | None]:
    """The chat model of the ``LLM_*`` settings (``model_path`` overrides ``LLM_MODEL_PATH``), loaded; or
    ``(None, degraded_reason)`` when its weights cannot be loaded (the cause is said on stderr)."""
    from llm import LLMSettings, load_chat_model

    model = load_chat_model(LLMSettings(model_path=model_path) if model_path else LLMSettings())
    failed = load_model(model)
    if failed is None:
        return model, None
    reason, error = failed
    print(f"naila: degraded mode (pattern responder only): {error}", file=sys.stderr, flush=True)
    return None, reason


@contextlib.asynccontextmanager
async def loaded_model(model: Any, status: ModelStatus) -> AsyncIterator[Any]:
    """``model`` (None: the one of the ``LLM_*`` settings), loaded off the event loop, with ``status``
    kept up to date (degraded mode when its weights cannot be loaded); unloaded on the way out."""
    if model is None:
        from llm import load_chat_model

        model = load_chat_model()
    status.model = model
    if isinstance(model, LocalModel):
        logger.info("loading model %s ...", model.model_name)
    started = time.perf_counter()
    progress = asyncio.create_task(_report_progress(started))
    try:
        failed = await asyncio.to_thread(load_model, model)
    finally:
        progress.cancel()
    if failed is not None:
        status.degraded_reason, error = failed
        status.status = "error"
        logger.error(
            "model load failed (%s): %s -- DEGRADED mode, the pattern responder answers", status.degraded_reason, error
        )
    else:
        status.status = "loaded"
        if isinstance(model, LocalModel):
            waited_ms = (time.perf_counter() - started) * 1000
            # the model's own figure: its load may have begun before this wait (naila serve starts it early)
            status.load_time_ms = round(model.load_time_ms or waited_ms, 1)
            logger.info(
                "model %s loaded in %.0f ms (start-up waited %.0f ms for it)",
                model.model_name,
                status.load_time_ms,
                waited_ms,
            )
    try:
        yield model
    finally:
        if isinstance(model, LocalModel) and model.is_loaded:
            await asyncio.to_thread(model.unload)
            status.status = "unloaded"


async def _report_progress(started: float) -> None:
    while True:
        await asyncio.sleep(LOAD_PROGRESS_SECONDS)
        logger.info("still loading the model (%.0f s) ...", time.perf_counter() - started)


async def prime_prompt_cache(
    model: Any,
    persona_file: Path | None,
    degraded_reason: str | None,
    *,
    should_stop: Callable[[], bool],
    state_dir: Path | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> int:
    """Evaluate the persona (and the header of the user message after it) so the first request does not
    pay for it (DESIGN.md decision 2). Runs while the server is already online: it gives way to any
    request (``should_stop``), which then simply evaluates the persona itself. With ``state_dir`` the
    evaluated state is kept on disk there, and taken from there on the next start. Returns the tokens
    evaluated (or restored). ``tools``: those every turn's prompt renders (the generator's ``prompt_tools``).
    """
    if degraded_reason is not None or not isinstance(model, LocalModel):
        return 0
    from langchain_core.messages import HumanMessage, SystemMessage

    from prompts.persona import load_persona

    persona = SystemMessage(load_persona(persona_file))
    started = time.perf_counter()
    try:
        if model.state_cache_stats.budget_bytes > 0:
            restored = await _persona_state_on_disk(model, persona, state_dir, tools, save=False)
            if restored:
                logger.info(
                    "primed the prompt cache from disk: %d persona tokens in %.0f ms",
                    restored,
                    (time.perf_counter() - started) * 1000,
                )
                return restored
            evaluated = await model.aprefill([persona], should_stop=should_stop, next_role="human", tools=tools)
            await _persona_state_on_disk(model, persona, state_dir, tools, save=True)  # when priming ran to the end
        else:  # no saved states: the live context keeps what one short call evaluated
            await model.ainvoke([persona, HumanMessage("Hi")], max_tokens=1, tools=tools)  # type: ignore[attr-defined]
            evaluated = len(model.prompt_tokens([persona, HumanMessage("Hi")], tools=tools))
    except Exception as exc:  # priming is an optimisation; the first request will tell the real story
        logger.warning("could not prime the prompt cache: %s", exc)
        return 0
    logger.info(
        "primed the prompt cache: %d persona tokens in %.0f ms", evaluated, (time.perf_counter() - started) * 1000
    )
    return evaluated


async def _persona_state_on_disk(
    model: Any, persona: Any, state_dir: Path | None, tools: list[dict[str, Any]] | None, *, save: bool
) -> int:
    """Restore (or after priming, save) the persona's prompt state in ``state_dir`` (:mod:`llm.disk_states`):
    a restarted server then starts with it. Only our llama.cpp model has one; 0 for any other."""
    from llm.chat_model import ChatLlamaCpp

    if state_dir is None or not isinstance(model, ChatLlamaCpp):
        return 0
    try:
        if save:
            await asyncio.to_thread(model.save_prefix_to_disk, [persona], state_dir, tools=tools)
            return 0
        return await asyncio.to_thread(model.restore_prefix_from_disk, [persona], state_dir, tools=tools)
    except Exception as exc:  # an optimisation: the persona is evaluated as before
        logger.warning("the persona state on disk could not be used: %s", exc)
        return 0
