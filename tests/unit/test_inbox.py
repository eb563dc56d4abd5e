"""The server's durable request inbox (naila_graph/inbox.py) on a real SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from naila_graph import inbox as inbox_module
from naila_graph.inbox import Inbox, inbox_path


def test_rows_survive_the_process_and_come_back_unsettled_in_order(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from naila_graph.inbox import Inbox\n"
        "inbox = Inbox(Path(sys.argv[1])); inbox.open()\n"
        "a = inbox.add('naila/ai/orchestration/main/task', b'{\"a\": 1}', 'task-a')\n"
        "b = inbox.add('naila/ai/processing/stt/r1', b'{\"b\": 2}', 'stt-r1-1')\n"
        "c = inbox.add('naila/ai/orchestration/main/task', b'not json')\n"
        "inbox.settle(a)\n"
        "os.kill(os.getpid(), 9)  # no close, no commit at exit: what kill -9 leaves\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stderr
    with Inbox(path) as inbox:
        rows = inbox.unsettled()
        assert [(r.topic, r.payload, r.task_id) for r in rows] == [
            ("naila/ai/processing/stt/r1", b'{"b": 2}', "stt-r1-1"),
            ("naila/ai/orchestration/main/task", b"not json", None),
        ]
        assert rows[0].id < rows[1].id and abs(rows[0].received_at - time.time()) < 120
        inbox.settle(rows[0].id)
        inbox.settle(rows[0].id)  # settling twice changes nothing
        assert [r.payload for r in inbox.unsettled()] == [b"not json"]
        assert inbox.pending_count() == 1


def test_holds_recognises_the_same_message_only(tmp_path: Path) -> None:
    with Inbox(tmp_path / "i.sqlite") as inbox:
        entry = inbox.add("naila/ai/orchestration/main/task", b'{"task_id": "t1"}')
        assert inbox.holds("naila/ai/orchestration/main/task", b'{"task_id": "t1"}')
        assert not inbox.holds("naila/ai/orchestration/main/task", b'{"task_id": "t2"}')
        assert not inbox.holds("naila/ai/processing/stt/x", b'{"task_id": "t1"}')
        inbox.settle(entry)
        assert inbox.holds("naila/ai/orchestration/main/task", b'{"task_id": "t1"}')  # answered, still known


def test_settled_rows_are_forgotten_after_the_window_unsettled_ones_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Inbox(tmp_path / "i.sqlite") as inbox:
        settled = inbox.add("t", b"old answered")
        inbox.add("t", b"old waiting")
        inbox.settle(settled)
        later = time.time() + inbox_module.REMEMBER_SECONDS + 5
        monkeypatch.setattr(inbox_module.time, "time", lambda: later)
        inbox.prune()
        assert not inbox.holds("t", b"old answered")
        assert inbox.holds("t", b"old waiting")  # not settled: kept however old
        count = inbox.db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
        assert count == 1


def test_one_file_per_client_id_with_a_safe_name(tmp_path: Path) -> None:
    assert inbox_path(tmp_path, "naila-ai-server") == tmp_path / "inbox-naila-ai-server.sqlite"
    assert inbox_path(tmp_path, "../../etc/x y").parent == tmp_path
    assert inbox_path(tmp_path, "a") != inbox_path(tmp_path, "b")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders, so the refusal cannot happen")
def test_an_unwritable_data_dir_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(RuntimeError, match="NAILA_DATA_DIR must be a writable folder"):
        Inbox(locked / "inbox.sqlite").open()


def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RuntimeError, match=r"cannot open the request inbox .*inbox.sqlite"):
        Inbox(path).open()


def test_closed_inbox_says_so(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "i.sqlite")
    with pytest.raises(RuntimeError, match="not open"):
        inbox.add("t", b"x")
