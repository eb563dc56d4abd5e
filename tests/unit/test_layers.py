"""Layers point down (DESIGN.md decision 10): ``llm`` → ``prompts`` → ``nodes`` → ``naila_graph`` → ``evals``.

Every import statement of every module is read with ``ast`` — including imports inside functions and
under ``if TYPE_CHECKING`` — so a cycle cannot hide in a function body.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What each package may import of ours (everything else of ours is an upward import).
ALLOWED: dict[str, frozenset[str]] = {
    "llm": frozenset(),
    "prompts": frozenset({"llm"}),
    "nodes": frozenset({"llm", "prompts"}),
    "naila_graph": frozenset({"llm", "prompts", "nodes"}),
    "evals": frozenset({"llm", "prompts", "nodes", "naila_graph"}),
}
OURS = frozenset(ALLOWED)
# llm wraps llama-cpp-python, whose private reaches are its business (issue #11 §3); above it, reaching for
# another object's private attribute by name is a private name used across packages.
NO_PRIVATE_GETATTR = frozenset({"prompts", "nodes", "naila_graph", "evals"})


@dataclass(frozen=True)
class Import:
    """One imported module (``from m import a, b`` gives ``m`` with names ``a, b``)."""

    line: int
    module: str
    names: tuple[str, ...] = ()

    @property
    def package(self) -> str:
        return self.module.split(".")[0]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every import in ``source`` (module ``module``), relative ones resolved, ``import_module("x")`` too."""
    found: list[Import] = []
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source, filename=module)):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join([*anchor, target] if target else anchor)
            found.append(Import(node.lineno, target, tuple(alias.name for alias in node.names)))
        elif isinstance(node, ast.Call) and _called_name(node) in {"import_module", "__import__"}:
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append(Import(node.lineno, node.args[0].value))
    return found


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def private_getattrs(source: str) -> list[tuple[int, str]]:
    """``getattr(obj, "_x")`` / ``hasattr`` / ``setattr`` on an object other than ``self``/``cls``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and _called_name(node) in {"getattr", "hasattr", "setattr"}):
            continue
        if len(node.args) < 2 or not isinstance(node.args[1], ast.Constant):
            continue
        target, name = node.args[0], node.args[1].value
        if isinstance(name, str) and _is_private(name):
            if not (isinstance(target, ast.Name) and target.id in {"self", "cls"}):
                found.append((node.lineno, f"{ast.unparse(node.func)}({ast.unparse(target)}, {name!r})"))
    return found


def violations(package: str, path: Path, source: str, module: str) -> list[str]:
    """Upward imports and private names of another package of ours, as ``file:line: what``."""
    where = path.relative_to(ROOT) if path.is_absolute() else path
    out: list[str] = []
    for imp in imports_of(source, module, is_package=path.name == "__init__.py"):
        if imp.package not in OURS or imp.package == package:
            continue
        if imp.package not in ALLOWED[package]:
            out.append(f"{where}:{imp.line}: {package} imports {imp.module} (a layer above it)")
        private = [p for p in imp.module.split(".") if _is_private(p)] + [n for n in imp.names if _is_private(n)]
        if private:
            out.append(f"{where}:{imp.line}: private name {', '.join(private)} of {imp.module} used in {package}")
    if package in NO_PRIVATE_GETATTR:
        out += [f"{where}:{line}: private attribute by name: {call}" for line, call in private_getattrs(source)]
    return out


def package_violations(package: str) -> list[str]:
    out: list[str] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        out += violations(package, path, path.read_text(encoding="utf-8"), module_name(path))
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layer_imports_only_what_lies_below_it(package: str) -> None:
    found = package_violations(package)
    assert not found, "\n".join(found)


def test_every_package_of_ours_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == OURS


# ---------------------------------------------------------------------------------------------------
# The checker itself catches what it is for.
# ---------------------------------------------------------------------------------------------------


def _check(package: str, source: str, module: str | None = None) -> list[str]:
    return violations(package, Path(f"{package}/x.py"), source, module or f"{package}.x")


def test_an_import_inside_a_function_is_caught() -> None:
    source = "def f():\n    from naila_graph.settings import NailaSettings\n    return NailaSettings\n"
    assert _check("nodes", source) == ["nodes/x.py:2: nodes imports naila_graph.settings (a layer above it)"]


def test_an_import_under_type_checking_is_caught() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import evals.runner\n"
    assert _check("naila_graph", source) == ["naila_graph/x.py:3: naila_graph imports evals.runner (a layer above it)"]


def test_llm_may_not_import_prompts_but_prompts_may_import_llm() -> None:
    assert _check("llm", "import prompts.persona\n")
    assert _check("prompts", "from llm.errors import LLMError\n") == []


def test_relative_and_dynamic_imports_are_resolved() -> None:
    assert _check("llm", "from ..nodes import state\n", "llm.sub.x") == []  # llm.nodes, not the nodes layer
    assert _check("nodes", "import importlib\nimportlib.import_module('evals.cli')\n")


def test_private_names_across_packages_are_caught() -> None:
    assert _check("evals", "from llm.bundles import _download_part\n") == [
        "evals/x.py:1: private name _download_part of llm.bundles used in evals"
    ]
    assert _check("evals", "import llm._private\n")
    assert _check("evals", "x = getattr(model, '_resolved_path', None)\n")
    assert _check("evals", "x = getattr(self, '_cache', None)\n") == []
    assert _check("llm", "from llm.gate import _Waiter\n") == []  # inside its own package
    assert _check("nodes", "from llm.errors import LLMError\nfrom langgraph._internal import x\n") == []
