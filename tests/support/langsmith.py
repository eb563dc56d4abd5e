"""A local stand-in for the LangSmith API that records what the client sends (FACTS.md: tracing can be
checked offline). ``GET /info`` answers ``{}``; every other request is recorded and answered ``{}``.
"""

from __future__ import annotations

import email.parser
import email.policy
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class LangSmithRecorder:
    url: str = ""
    requests: list[Request] = field(default_factory=list)

    def run_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path.startswith("/runs")]

    def runs(self) -> dict[str, dict[str, Any]]:
        """Every traced run by id, with its create (``post``) and update (``patch``) parts merged."""
        merged: dict[str, dict[str, Any]] = {}
        for request in self.run_requests():
            if request.path != "/runs/multipart":
                raise AssertionError(f"unexpected run upload {request.method} {request.path}")
            if request.headers.get("content-encoding"):
                raise AssertionError(f"compressed upload ({request.headers['content-encoding']}) not supported here")
            message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
                b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + request.body
            )
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                assert isinstance(name, str)
                operation, run_id, *key = name.split(".", 2)
                if operation not in ("post", "patch"):
                    continue
                payload = json.loads(part.get_payload(decode=True) or b"null")
                run = merged.setdefault(run_id, {"id": run_id})
                if key:
                    run[key[0]] = payload
                else:
                    for k, v in payload.items():
                        if k == "extra" and isinstance(v, dict):
                            extra = run.setdefault("extra", {})
                            metadata = {**extra.get("metadata", {}), **v.get("metadata", {})}
                            extra.update(v)
                            extra["metadata"] = metadata
                        elif v is not None or k not in run:
                            run[k] = v
        return merged

    def named(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.runs().values() if r.get("name") == name]


def _handler(recorder: LangSmithRecorder) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if not (self.command == "GET" and self.path.startswith("/info")):
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorder.requests.append(Request(self.command, self.path, headers, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST = do_PATCH = do_PUT = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def langsmith_recorder() -> Iterator[LangSmithRecorder]:
    recorder = LangSmithRecorder()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    thread = threading.Thread(target=server.serve_forever, name="langsmith-recorder", daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


def reset_langsmith_caches() -> None:
    """LangSmith caches env reads and its client per process; tests that change LANGSMITH_* must reset them."""
    from langsmith import run_trees
    from langsmith import utils as ls_utils

    ls_utils.get_env_var.cache_clear()
    ls_utils.get_tracer_project.cache_clear()
    run_trees._CLIENT = None


@contextmanager
def tracing_to(recorder: LangSmithRecorder, monkeypatch: pytest.MonkeyPatch, *, enabled: bool = True) -> Iterator[None]:
    """LANGSMITH_* pointing at ``recorder`` (tracing on or off) for the duration of the block."""
    monkeypatch.setenv("LANGSMITH_TRACING", "true" if enabled else "false")
    monkeypatch.setenv("LANGSMITH_ENDPOINT", recorder.url)
    monkeypatch.setenv("LANGSMITH_API_KEY", "test-key")
    monkeypatch.setenv("LANGSMITH_PROJECT", "naila-tests")
    reset_langsmith_caches()
    try:
        yield
    finally:
        from langchain_core.tracers.langchain import wait_for_all_tracers

        wait_for_all_tracers()
        reset_langsmith_caches()
