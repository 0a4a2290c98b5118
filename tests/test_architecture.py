"""The import contract: the layering ARCHITECTURE.md draws, checked on the source.

``events ← _audit ← _engine ← {_chat ← _widget, _server, _evaluate}``, with the flat leaf
modules (errors, events, ids, paths, messages, …) below everything; no two modules import each
other, directly or round a longer loop; library code never imports ``mlxnb.testing``.
Every ``import`` statement counts, including those inside functions and ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlxnb"

LEAVES = frozenset(
    {
        "mlxnb.errors",
        "mlxnb.events",
        "mlxnb.scorers",
        "mlxnb._ids",
        "mlxnb._paths",
        "mlxnb._messages",
        "mlxnb._blocking",
        "mlxnb._describe",
        "mlxnb._tools",
        "mlxnb._tool_run",
        "mlxnb._version",
    }
)
"""Flat modules that depend on nothing of mlxnb's but each other."""

ALLOWED: Mapping[str, frozenset[str]] = {
    "leaf": frozenset({"leaf"}),
    "audit": frozenset({"leaf", "audit"}),
    "engine": frozenset({"leaf", "audit", "engine"}),
    "remote": frozenset({"leaf", "audit", "remote"}),
    "chat": frozenset({"leaf", "audit", "engine", "remote", "chat"}),
    "widget": frozenset({"leaf", "engine", "remote", "chat", "widget"}),
    "server": frozenset({"leaf", "engine", "remote", "server"}),
    "evaluate": frozenset({"leaf", "engine", "remote", "evaluate"}),
    "magic": frozenset({"leaf", "engine", "remote", "magic"}),
    "top": frozenset(
        {
            "leaf",
            "audit",
            "engine",
            "remote",
            "chat",
            "widget",
            "server",
            "evaluate",
            "magic",
            "top",
        }
    ),
    "testing": frozenset({"leaf", "audit", "engine", "remote", "chat", "testing", "top"}),
}
"""Which families each family may import: the dependency rule, one direction only."""


def family(module: str) -> str:
    """The layer a module belongs to."""
    if module in LEAVES:
        return "leaf"
    parts = module.split(".")
    if len(parts) == 1 or module == "mlxnb.__main__":
        return "top"
    head = parts[1]
    families = {
        "_images": "leaf",  # a leaf package: Pillow and mlxnb.errors only
        "_audit": "audit",
        "_engine": "engine",
        "_remote": "remote",
        "_chat": "chat",
        "_chat_turn": "chat",
        "_chat_tools": "chat",
        "_chat_history": "chat",
        "_chat_saved": "chat",
        "_widget": "widget",
        "_server": "server",
        "_evaluate": "evaluate",
        "_evaluate_rows": "evaluate",
        "_evaluate_choices": "evaluate",
        "_evaluate_replay": "evaluate",
        "_evaluate_judge": "evaluate",
        "_magic": "magic",
        "_magic_view": "magic",
        "testing": "testing",
    }
    if head not in families:
        raise AssertionError(f"{module} belongs to no family: add it to LEAVES or a subpackage")
    return families[head]


def module_name(path: Path) -> str:
    """``mlxnb/_engine/worker.py`` → ``mlxnb._engine.worker`` (packages by their ``__init__``)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """The mlxnb modules that ``module`` imports (a ``from pkg import sub`` counts as ``sub``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" for alias in node.names]
            names = [name if name in known else base for name in names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("mlxnb") and name != module:
                yield name


def import_graph() -> dict[str, set[str]]:
    """Who imports whom, inside mlxnb."""
    modules = source_modules()
    known = set(modules)
    return {name: set(imported(name, path, known)) for name, path in modules.items()}


def layering_violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Imports that go against the dependency rule."""
    return [
        f"{source} ({family(source)}) imports {target} ({family(target)})"
        for source, targets in sorted(graph.items())
        for target in sorted(targets)
        if family(target) not in ALLOWED[family(source)]
    ]


def fixture_imports(graph: Mapping[str, set[str]]) -> list[str]:
    """Library modules that import the test fixtures."""
    return [
        f"{source} imports {target}"
        for source, targets in sorted(graph.items())
        if family(source) != "testing"
        for target in sorted(targets)
        if family(target) == "testing"
    ]


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or round a loop (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_every_module_belongs_to_a_family(graph: dict[str, set[str]]) -> None:
    assert {family(module) for module in graph} == set(ALLOWED)


def test_imports_follow_the_dependency_rule(graph: dict[str, set[str]]) -> None:
    assert layering_violations(graph) == []


def test_no_two_modules_import_each_other(graph: dict[str, set[str]]) -> None:
    assert import_cycles(graph) == []


def test_library_code_never_imports_the_test_fixtures(graph: dict[str, set[str]]) -> None:
    assert fixture_imports(graph) == []


def test_the_graph_sees_real_imports(graph: dict[str, set[str]]) -> None:
    # Guards the walker itself: these edges exist in the code, through each import form.
    assert "mlxnb._engine.worker" in graph["mlxnb._engine.engine"]  # from a.b import C
    assert "mlxnb._audit.view" in graph["mlxnb._audit.log"]  # from pkg import submodule
    assert "mlxnb._engine" in graph["mlxnb._evaluate"]  # from package import Name
    assert "mlxnb._engine.fallback_model" in graph["mlxnb.testing"]


@pytest.mark.parametrize(
    ("edges", "problem"),
    [
        ({"mlxnb._audit.log": {"mlxnb._engine.engine"}, "mlxnb._engine.engine": set()}, "layer"),
        ({"mlxnb._server.app": {"mlxnb._widget.widget"}, "mlxnb._widget.widget": set()}, "layer"),
        ({"mlxnb._evaluate": {"mlxnb._chat"}, "mlxnb._chat": set()}, "layer"),
        ({"mlxnb.events": {"mlxnb._audit.record"}, "mlxnb._audit.record": set()}, "layer"),
        ({"mlxnb._audit.log": {"mlxnb._audit.view"}, "mlxnb._audit.view": {"mlxnb._audit.log"}},
         "cycle"),
        ({"mlxnb._ids": {"mlxnb._paths"}, "mlxnb._paths": {"mlxnb.errors"},
          "mlxnb.errors": {"mlxnb._ids"}}, "cycle"),
        ({"mlxnb._engine.models": {"mlxnb.testing"}, "mlxnb.testing": set()}, "testing"),
    ],
)  # fmt: skip
def test_the_checks_catch_what_they_are_for(edges: dict[str, set[str]], problem: str) -> None:
    found = {
        "layer": layering_violations(edges),
        "cycle": import_cycles(edges),
        "testing": fixture_imports(edges),
    }
    assert found[problem], f"the {problem} check missed {edges}"
