"""The `naila` command line, run as a user runs it (subprocess; tiny GGUF unless stated)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def naila(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "naila_graph.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=stdin if stdin is not None else "",
        timeout=120,
    )


@pytest.fixture
def tiny_env(tiny_model: str) -> dict[str, str]:
    return {"LLM_MODEL_PATH": tiny_model, "LLM_MAX_TOKENS": "16", "LLM_TEMPERATURE": "0", "LLM_CONTEXT_SIZE": "2048"}


def test_one_shot_prints_only_the_answer_on_stdout(tiny_env: dict[str, str]) -> None:
    r = naila("chat", "--verbose", "Tell me about stars", env=tiny_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert r.stdout.count("\n") == 1
    assert "source=llm" in r.stderr  # diagnostics go to stderr


def test_stdin_is_the_message_when_no_text_is_given(tiny_env: dict[str, str]) -> None:
    r = naila("chat", "--verbose", env=tiny_env, stdin="what time is it?\n")
    assert r.returncode == 0, r.stderr
    assert "source=action" in r.stderr


def test_memory_commands_list_show_and_clear(tiny_env: dict[str, str]) -> None:
    assert naila("chat", "--device", "desk7", "Hello there friend", env=tiny_env).returncode == 0
    listed = naila("memory", "list", env=tiny_env)
    assert "desk7" in listed.stdout
    shown = naila("memory", "show", "desk7", env=tiny_env)
    assert "user: Hello there friend" in shown.stdout
    assert naila("memory", "clear", "desk7", env=tiny_env).returncode == 0
    missing = naila("memory", "show", "desk7", env=tiny_env)
    assert missing.returncode == 1 and "no stored conversation" in missing.stderr


def test_new_forgets_the_conversation_first(tiny_env: dict[str, str]) -> None:
    naila("chat", "--device", "d2", "Tell me about stars", env=tiny_env)
    naila("chat", "--device", "d2", "--new", "Tell me about the moon", env=tiny_env)
    shown = naila("memory", "show", "d2", env=tiny_env).stdout
    assert "stars" not in shown and "moon" in shown


def test_missing_model_runs_degraded_and_says_so(tmp_path: Path) -> None:
    r = naila("chat", "Tell me about stars", env={"LLM_MODEL_PATH": str(tmp_path / "none.gguf")})
    assert r.returncode == 0
    assert r.stdout.strip()
    assert "degraded mode" in r.stderr


def test_bad_setting_is_a_clear_error_without_traceback(tiny_env: dict[str, str]) -> None:
    r = naila("chat", "hi", env={**tiny_env, "LLM_TEMPERATURE": "hot"})
    assert r.returncode == 1
    assert "LLM_TEMPERATURE='hot'" in r.stderr
    assert "Traceback" not in r.stderr


def test_usage_errors_exit_2() -> None:
    assert naila("frobnicate").returncode == 2
    assert naila("models", "fetch").returncode == 2


def test_empty_message_is_a_usage_error(tiny_env: dict[str, str]) -> None:
    r = naila("chat", "   ", env=tiny_env)
    assert r.returncode == 2 and "empty" in r.stderr


def test_models_path_does_not_download(tmp_path: Path) -> None:
    r = naila("models", "path", "qwen2.5-coder-1.5b-instruct", env={"NAILA_MODELS_DIR": str(tmp_path)})
    assert r.returncode == 1 and "naila models fetch" in r.stderr
    assert list(tmp_path.iterdir()) == []
    unknown = naila("models", "path", "gpt-17")
    assert unknown.returncode == 1 and "qwen2.5-coder-0.5b-instruct" in unknown.stderr


def test_config_show_masks_secrets() -> None:
    r = naila("config", "show", env={"MQTT_PASSWORD": "hunter2"})
    assert r.returncode == 0
    assert "hunter2" not in r.stdout and '"MQTT_PASSWORD": "********"' in r.stdout
    assert '"LLM_CONTEXT_SIZE": 4096' in r.stdout


def test_version() -> None:
    r = naila("--version")
    assert r.returncode == 0 and r.stdout.startswith("naila ")


class Terminal:
    """`naila chat` on a real pseudo-terminal; ``out`` collects everything it printed."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child: a real terminal on stdin/stdout
            os.environ.update(env)
            os.execv(sys.executable, [sys.executable, "-m", "naila_graph.cli", "chat", *args])
        self.out = b""

    def read_until(self, marker: bytes, count: int = 1, timeout: float = 60) -> bool:
        import select
        import time

        end = time.time() + timeout
        while self.out.count(marker) < count and time.time() < end:
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    self.out += os.read(self.fd, 4096)
                except OSError:
                    break
        return self.out.count(marker) >= count

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def exit_code(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def test_interactive_session_streams_and_survives_ctrl_d(tiny_env: dict[str, str]) -> None:
    term = Terminal(tiny_env)
    term.read_until(b"you> ")
    term.write(b"what time is it\n")
    term.read_until(b"naila> ")
    term.read_until(b"you> ", count=2)
    term.write(b"\x04")  # Ctrl-D
    code = term.exit_code()
    out = term.out
    assert b"naila> It's" in out or b"naila> Right now" in out or b"naila> My clock" in out
    assert code == 0


@pytest.mark.real_model
def test_ctrl_c_stops_the_answer_not_the_session(real_model: str) -> None:
    import time

    env = {"LLM_MODEL_PATH": real_model, "LLM_MAX_TOKENS": "400", "LLM_TEMPERATURE": "0"}
    term = Terminal(env, "--verbose")
    assert term.read_until(b"you> ")
    term.write(b"Please tell me a long, detailed story about a lighthouse keeper and her cat.\n")
    assert term.read_until(b"naila> ")
    before = len(term.out)
    end = time.time() + 120
    while len(term.out) < before + 40 and time.time() < end:  # the story is being streamed
        term.read_until(b"\x00", timeout=0.5)
    stopped_at = time.time()
    term.write(b"\x03")  # Ctrl-C
    assert term.read_until(b"[stopped]", timeout=15), term.out[-500:]
    assert time.time() - stopped_at < 10
    assert term.read_until(b"you> ", count=2, timeout=15)
    term.write(b"What's 12 times 7?\n")
    assert term.read_until(b"you> ", count=3, timeout=120), term.out[-500:]
    term.write(b"\x04")
    assert term.exit_code() == 0
    tail = term.out.split(b"What's 12 times 7?", 1)[1]
    assert b"84" in tail and b"source=llm" in tail  # the session and the model still work


def test_memory_list_and_show_agree_on_a_thread_without_messages(tmp_path: Path) -> None:
    from naila_graph.graph import build_graph, turn_config, turn_input
    from naila_graph.memory import open_checkpointer

    env = {"NAILA_DATA_DIR": str(tmp_path)}
    with open_checkpointer(f"sqlite:///{tmp_path / 'memory.sqlite'}") as saver:
        graph = build_graph(None, saver)  # the pattern responder: no model needed
        graph.invoke(turn_input("   ", device_id="blank"), turn_config("blank"))  # stored with no message
        graph.invoke(turn_input("hello", device_id="talker"), turn_config("talker"))
    listed = naila("memory", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "talker" in listed.stdout and "blank" not in listed.stdout
    shown = naila("memory", "show", "blank", env=env)
    assert shown.returncode == 1 and "no stored conversation 'blank'" in shown.stderr


def test_memory_commands_name_a_wrong_memory_url_and_hide_its_password() -> None:
    r = naila("memory", "list", env={"NAILA_MEMORY_URL": "postgresql://naila:s3cret@127.0.0.1:1/naila"})
    assert r.returncode == 1
    assert "NAILA_MEMORY_URL=postgresql://naila:***@127.0.0.1:1/naila" in r.stderr
    assert "Check that PostgreSQL is running" in r.stderr
    assert "s3cret" not in r.stderr and "Traceback" not in r.stderr
