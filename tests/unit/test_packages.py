"""NAILA's top-level packages (``llm``, ``nodes``, ``prompts``, ``evals``) must be NAILA's own code."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from importlib import metadata
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from naila_graph import packages
from naila_graph.packages import OWN_PACKAGES, ForeignPackageError, check_own_packages

CHECK = "from naila_graph.packages import check_own_packages; check_own_packages()"


def run_check(tmp_path: Path, first_on_path: Path) -> subprocess.CompletedProcess[str]:
    """The check in a fresh interpreter with ``first_on_path`` ahead of everything installed."""
    env = {**os.environ, "PYTHONPATH": str(first_on_path)}
    return subprocess.run(
        [sys.executable, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def test_this_installation_passes() -> None:
    check_own_packages()


def test_a_foreign_llm_package_first_on_the_path_stops_naila_with_a_clear_message(tmp_path: Path) -> None:
    foreign = tmp_path / "other-site"
    (foreign / "llm").mkdir(parents=True)
    (foreign / "llm" / "__init__.py").write_text("raise SystemExit('the foreign llm package was imported')\n")

    result = run_check(tmp_path, foreign)

    assert result.returncode != 0
    assert "ForeignPackageError" in result.stderr
    assert "'llm'" in result.stderr and str(foreign / "llm") in result.stderr
    assert "own virtual environment" in result.stderr
    assert "was imported" not in result.stderr  # found, never run


def test_a_directory_named_like_ours_without_init_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # e.g. a stray nodes/ folder in the working directory: it shadows an editable install's finder
    stray = ModuleSpec("nodes", None, is_package=True)
    stray.submodule_search_locations = [str(tmp_path / "nodes")]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: stray)
    with pytest.raises(ForeignPackageError, match=r"'nodes' resolves to .*/nodes, which is not NAILA's package"):
        check_own_packages(["nodes"])


def test_a_missing_package_is_named() -> None:
    with pytest.raises(ForeignPackageError, match="'naila_no_such_package' is not installed"):
        check_own_packages(["naila_no_such_package"])


def test_a_package_overwritten_after_installation_is_caught() -> None:
    root = Path(packages.__file__).resolve().parents[1]
    with pytest.raises(ForeignPackageError, match=r"'nodes' at .* was overwritten") as caught:
        packages._check_one("nodes", root, {"nodes": "not-the-recorded-hash"})
    assert caught.value.package == "nodes"


def test_hashes_are_compared_in_the_format_record_uses() -> None:
    dist = metadata.distribution("pytest")
    recorded = next(f for f in dist.files or [] if f.hash is not None and f.name == "__init__.py")
    assert recorded.hash is not None
    assert packages._sha256(Path(str(dist.locate_file(recorded)))) == recorded.hash.value


def test_the_packages_checked_are_the_layouts_top_level_packages() -> None:
    assert set(OWN_PACKAGES) == {"llm", "nodes", "prompts", "evals"}
