"""The primed persona's prompt state kept on disk, so a restarted server starts with it.

After a crash the first request would evaluate the persona (~200 tokens: seconds on a busy CPU) before
its answer (issue 12, defect 8). Priming saves the state it evaluated to a file; the next start of the
same model puts it back into the prompt-state cache, where the first request (or priming) restores it
like any saved state. The file is keyed by what makes a state valid: the llama-cpp-python version, the
model file (path, size, modification time), the load options that shape the KV cache, and the exact
tokens (so the persona text and the chat template are in it). A state that llama.cpp refuses is dropped
by the restore and evaluated from scratch, as for any saved state; a file that cannot be read is ignored.

Files live in the folder the caller names (the server: ``$NAILA_DATA_DIR/prompt-states/``, beside the
memory it belongs with); only the newest :data:`KEEP_FILES` are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm.errors import QueueTimeoutError
from llm.state_cache import as_tokens

if TYPE_CHECKING:
    from llm.llama_session import Chat, LlamaSession

logger = logging.getLogger("llm.disk_states")

KEEP_FILES = 8  # states of other models, personas or options: a few, not forever
_SHAPING = ("n_ctx", "n_batch", "n_gpu_layers", "use_mmap", "flash_attn", "kv_cache_type", "chat_format")


def _file_for(session: LlamaSession, target: list[int], folder: Path) -> Path | None:
    path, options = session.resolved_path, session._options
    if path is None or options is None:
        return None
    import llama_cpp

    stat = path.stat()
    shaping = {name: getattr(options, name) for name in _SHAPING}
    identity = [llama_cpp.__version__, str(path.resolve()), stat.st_size, stat.st_mtime_ns, shaping, target]
    digest = hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()[:32]
    return folder / f"{digest}.npz"


def _target(
    session: LlamaSession, chats: list[Chat], next_role: str | None, tools: list[dict[str, Any]] | None
) -> list[int] | None:
    llama, states = session.llama, session.states
    if llama is None or states is None or not states.enabled:
        return None
    target = session._prefill_target(chats, next_role, tools)
    return target if target and len(target) < llama.n_ctx() else None


def restore_from_disk(
    session: LlamaSession,
    chats: list[Chat],
    folder: Path,
    next_role: str | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> int:
    """Put the state saved on disk for what ``prefill(chats, next_role, tools)`` evaluates into the session's
    state cache; returns its token count, or 0 (no file, an unreadable one, the model busy, cache off)."""
    try:
        ticket = session.gate.acquire(timeout=0.0)
    except QueueTimeoutError:
        return 0  # a request has the model: it evaluates the persona itself
    try:
        target = _target(session, chats, next_role, tools)
        file = _file_for(session, target, folder) if target else None
        if target is None or file is None or session.states is None:
            return 0
        if session.states.exact(as_tokens(target)) is not None:
            return len(target)  # already restored (naila serve does it before the server starts)
        try:
            with np.load(file, allow_pickle=False) as saved:
                tokens, data = saved["tokens"], saved["data"]
        except FileNotFoundError:
            return 0
        except Exception as exc:  # a damaged file costs only the evaluation it would have saved
            logger.warning("ignoring the saved persona state %s: %s", file, exc)
            return 0
        if tokens.dtype != np.int32 or data.dtype != np.uint8 or tokens.tolist() != target:
            logger.warning("ignoring the saved persona state %s: it holds other tokens", file)
            return 0
        if not session.states.put(tokens, data):
            return 0
        with contextlib.suppress(OSError):
            os.utime(file)  # recently used: kept by the pruning
        return len(tokens)
    finally:
        session.gate.release(ticket)


def save_to_disk(
    session: LlamaSession,
    chats: list[Chat],
    folder: Path,
    next_role: str | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> Path | None:
    """Write the cached state of exactly what ``prefill(chats, next_role, tools)`` evaluates to its file (None
    when there is no such state, e.g. priming gave way before the end, or the file cannot be written)."""
    target = _target(session, chats, next_role, tools)
    if target is None or session.states is None:
        return None
    entry = session.states.exact(as_tokens(target))
    file = _file_for(session, target, folder)
    if entry is None or file is None:
        return None
    partial = file.with_name(f"{file.stem}.{os.getpid()}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as out:
            np.savez(out, tokens=entry.tokens, data=entry.data)
        os.replace(partial, file)
        _prune(file.parent)
    except OSError as exc:  # a read-only cache dir: the next start evaluates the persona again
        logger.warning("could not keep the persona state in %s: %s", file.parent, exc)
        with contextlib.suppress(OSError):
            partial.unlink()
        return None
    return file


def _prune(folder: Path) -> None:
    files = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in files[KEEP_FILES:]:
        with contextlib.suppress(OSError):
            old.unlink()
