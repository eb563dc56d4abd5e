"""A reader that leaves early (`naila ... | head -1`) is a normal end for the CLI (issue #12, defect 9)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_closed_stdout_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes a byte
    env = {**os.environ, "NAILA_DATA_DIR": str(tmp_path), "NAILA_MODELS_DIR": str(tmp_path / "models")}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "naila_graph.cli", "models", "list"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert "BrokenPipe" not in result.stderr and "Traceback" not in result.stderr
