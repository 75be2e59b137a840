"""The package map of docs/architecture.md holds: imports run one way, no module is huge.

Layers, top to bottom: resolvers and schema (the GraphQL surface), gateway.api (HTTP and
GraphQL plumbing), gateway.callers (keys, sessions, authorization), gateway.billing (the
domain), gateway.storage (database, models, migrations, SQL sources). A module may import
its own layer and the layers below it, never above. Top-level gateway modules (settings,
errors) are shared leaves; gateway.api.app (which assembles the schema and the HTTP app),
gateway.cli and gateway.demo sit on top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGES = ("gateway", "schema", "resolvers")
# Lower number = lower layer. gateway.callers.auth (who is calling: the Caller value, keys,
# session tokens) sits below billing, which applies a caller's defaults; authorization
# (gateway.callers.authz) reads billing objects and so sits above it.
LAYERS = {
    "gateway.settings": 0,
    "gateway.secret_policy": 0,
    "gateway.errors": 0,
    "gateway.logs": 0,
    "gateway.startup": 0,
    "gateway.storage": 1,
    "gateway.callers.auth": 2,
    "gateway.billing": 3,
    "gateway.alerts": 3,  # alerts and webhooks sit beside billing: the same layer
    "gateway.webhooks": 3,
    "gateway.live": 3,  # live updates: feeds over billing, beside it
    "gateway.reservations": 3,  # a capability of the domain, beside billing
    "gateway.callers": 4,
    "gateway.api": 5,
    "schema": 6,
    "resolvers": 6,
    "gateway.api.app": 7,  # the composition root: builds the schema and the HTTP app
    "gateway.demo": 7,
    "gateway.cli": 7,
}
MAX_LINES = 400
GENERATED: set[str] = set()


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "versions" in path.parts:  # migration history: loaded by alembic, not imported
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """Project modules imported anywhere in a module (function bodies included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: set(_imports(name, path, modules)) for name, path in modules.items()}


def _layer(module: str) -> int | None:
    best = max(
        (prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")),
        key=len,
        default=None,
    )
    return None if best is None else LAYERS[best]


def test_no_import_cycle() -> None:
    graph = _graph()
    # Packages' __init__ re-exports are edges too; a cycle is any path back to the start.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_imports_run_from_the_api_down_to_storage() -> None:
    upward = []
    for module, targets in sorted(_graph().items()):
        own = _layer(module)
        if own is None or module.count(".") == 0:
            continue  # package roots (gateway, schema, resolvers) hold no code of a layer
        for target in sorted(targets):
            theirs = _layer(target)
            if theirs is not None and theirs > own:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_every_module_has_a_layer() -> None:
    missing = [m for m in _modules() if _layer(m) is None and m not in PACKAGES]
    assert missing == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_above_400_lines(name: str) -> None:
    if name in GENERATED:
        pytest.skip("generated")
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines"
