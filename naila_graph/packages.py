"""Our top-level packages must be ours: ``llm``, ``nodes``, ``prompts`` and ``evals`` are also names of
other PyPI distributions (``llm`` is a popular command-line tool), and in a shared environment one of
them can shadow or overwrite NAILA's.

:func:`check_own_packages` finds each package without importing it (``importlib.util.find_spec``) and
stops with :class:`ForeignPackageError` when one is not NAILA's.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import naila_graph

__all__ = ["OWN_PACKAGES", "ForeignPackageError", "check_own_packages"]

OWN_PACKAGES = ("llm", "nodes", "prompts", "evals")
_DISTRIBUTION = "naila-graph"
_ADVICE = (
    "Install NAILA in its own virtual environment: python3 -m venv .venv && .venv/bin/pip install -e ."
    " (scripts/setup.sh does this)."
)


class ForeignPackageError(RuntimeError):
    """A top-level package NAILA needs resolves to another distribution's code (or is missing)."""

    def __init__(self, package: str, location: str | None, detail: str) -> None:
        self.package = package
        self.location = location
        super().__init__(f"the Python package {package!r} {detail}. {_ADVICE}")


def check_own_packages(packages: Iterable[str] = OWN_PACKAGES) -> None:
    """Raise :class:`ForeignPackageError` unless every package in ``packages`` is NAILA's own code: found
    beside ``naila_graph`` and, when the installed distribution records file hashes, unchanged since
    NAILA installed it. No package is imported (a foreign one's code never runs)."""
    root = Path(naila_graph.__file__).resolve().parent.parent
    recorded = _recorded_init_hashes()
    for package in packages:
        _check_one(package, root, recorded)


def _check_one(package: str, root: Path, recorded: dict[str, str]) -> None:
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ForeignPackageError(package, None, "is not installed (NAILA's installation is incomplete)")
    locations = list(spec.submodule_search_locations or [])
    if spec.origin is None or spec.origin == "namespace" or not locations:
        where = locations[0] if locations else spec.origin
        raise ForeignPackageError(
            package, where, f"resolves to {where}, which is not NAILA's package{_owner_hint(package)}"
        )
    init = Path(spec.origin).resolve()
    if init.parent != (root / package).resolve():
        raise ForeignPackageError(
            package,
            str(init.parent),
            f"resolves to {init.parent}, not to NAILA's {root / package}{_owner_hint(package)}",
        )
    expected = recorded.get(package)
    if expected is not None and _sha256(init) != expected:
        raise ForeignPackageError(
            package,
            str(init.parent),
            f"at {init.parent} was overwritten after NAILA was installed{_owner_hint(package)}",
        )


def _recorded_init_hashes() -> dict[str, str]:
    """``package -> sha256`` of each top-level ``__init__.py`` in the installed distribution's RECORD
    (empty for an editable install, which records no package files, or when NAILA is not installed)."""
    try:
        files = metadata.distribution(_DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        return {}
    hashes: dict[str, str] = {}
    for file in files:
        parts = file.parts
        if len(parts) == 2 and parts[1] == "__init__.py" and file.hash is not None and file.hash.mode == "sha256":
            hashes[parts[0]] = file.hash.value
    return hashes


def _sha256(path: Path) -> str:
    """The file's hash as RECORD writes it: urlsafe base64 without padding."""
    digest = hashlib.sha256(path.read_bytes()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _owner_hint(package: str) -> str:
    """`` (installed by <dist>)`` naming the other distributions that provide ``package``, when known."""
    # Scans every installed distribution: only on the error path.
    owners = [d for d in metadata.packages_distributions().get(package, []) if d != _DISTRIBUTION]
    return f" (installed by the distribution {', '.join(sorted(set(owners)))})" if owners else ""
