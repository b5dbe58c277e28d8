"""The house keeps its shape: no import circle in the CLI, and the provider takes nothing of the CLI but its contract.

Imports are read from the source (ast), at module level and inside functions alike (the CLI imports lazily for its
start-up time, and a lazy import is a dependency all the same); only imports under `if TYPE_CHECKING:`, which never
run, are left out.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(path: Path) -> set[str]:
    """Every module `path` imports when it runs (absolute names; `from X import name` also yields X.name, which
    counts when X.name is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                found.add(source)
                found.update("%s.%s" % (source, alias.name) for alias in child.names)
            visit(child)

    visit(tree)
    return found


def _graph(package: str) -> dict[str, set[str]]:
    files = sorted((REPO / package).rglob("*.py"))
    names = {_module_name(f): f for f in files}
    return {name: {m for m in _runtime_imports(f) if m in names and m != name} for name, f in names.items()}


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = walk(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = walk(node)
            if found:
                return found
    return None


def test_the_walk_sees_lazy_imports_and_finds_a_circle() -> None:
    """The walk itself: a function-level import is an edge, and a circle through one is found."""
    graph = _graph("orchesjob")
    assert "orchesjob.legacy.workers" in graph["orchesjob.life"]  # imported inside a function only
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_among_the_cli_modules() -> None:
    circle = _circle(_graph("orchesjob"))
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_provider_imports_only_the_contract_of_the_cli() -> None:
    """What the CLI and the provider agree on lives in orchesjob/contract.py; nothing else of the CLI's internals is
    the provider's to import (it packs the CLI's files for hosts without reading them as modules)."""
    used: dict[str, set[str]] = {}
    for path in sorted((REPO / "orchesjob_provider").rglob("*.py")):
        cli = {
            m
            for m in _runtime_imports(path)
            if m == "orchesjob" or (m.startswith("orchesjob.") and not m.startswith("orchesjob_provider"))
        }
        wanted = {
            m for m in cli if m not in ("orchesjob", "orchesjob.contract") and not m.startswith("orchesjob.contract.")
        }
        if wanted:
            used[str(path.relative_to(REPO))] = wanted
    assert used == {}


def test_the_contract_is_what_the_cli_answers(tmp_path: Path) -> None:
    """The job object's fields in contract.py are exactly those of a real `status` answer, in its order; `version`
    answers the contract's numbers."""
    from orchesjob import contract

    env = {"PATH": "/usr/bin:/bin", "ORCHESJOB_HOME": str(tmp_path / "home")}
    run = [sys.executable, "-m", "orchesjob"]
    started = subprocess.run(
        [*run, "start", "--sync", "--run-key", "layout", "--", "true"], env=env, cwd=REPO, capture_output=True
    )
    assert started.returncode == 0, started.stdout
    answer = json.loads(
        subprocess.run([*run, "status", "--run-key", "layout"], env=env, cwd=REPO, capture_output=True).stdout
    )
    assert tuple(answer) == contract.JOB_FIELDS
    assert answer["status"] in contract.TERMINAL
    version = json.loads(subprocess.run([*run, "version"], env=env, cwd=REPO, capture_output=True).stdout)
    assert (version["version"], version["contract"]) == (contract.VERSION, contract.CONTRACT_VERSION)
