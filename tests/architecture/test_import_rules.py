"""The import rules of docs/ARCHITECTURE.md, checked on every import.

Every ``import`` counts: top-level, deferred inside a function, and under
``if TYPE_CHECKING``. A deferred import that closes a circle works only until
somebody moves it to the top of its file, so it is a circle all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "envwrap"

#: the layers, from the bottom up; a module may import its own layer and those below
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "secret", "log", "values", "safe_files"),
    ("refs", "near_miss"),
    ("process", "backends"),
    ("telemetry",),
    ("config", "sources", "resolve", "environment", "render", "mask", "help", "completion",
     "startup"),
    ("quiet", "watch_files", "watch_leases", "rotation_observers"),
    ("watch", "cache", "rotation", "restart_limit", "revoke"),
    ("modes", "testing"),
    ("cli",),
    ("__main__",),
)
LEAVES = frozenset(LAYERS[0])
#: packages closed to the rest of envwrap: what each may import besides itself
BOUNDARIES = {
    "process": LEAVES,
    "backends": LEAVES | {"refs"},
}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_in(source: str, module: str, modules: set[str] | dict[str, Path],
               *, is_package: bool = False) -> set[str]:
    """The envwrap modules that ``source`` (the text of ``module``) imports."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from its package, up level - 1 steps
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(["envwrap", *parts, *([base] if base else [])])
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if name == "envwrap" or not name.startswith("envwrap."):
                continue
            target = name.removeprefix("envwrap.")
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    return imports_in(path.read_text(), module, MODULES, is_package=path.name == "__init__.py")


def circles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with two or more members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def layer_of(module: str) -> int:
    top = module.split(".", maxsplit=1)[0]
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/ARCHITECTURE.md")


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_import_circle() -> None:
    assert not circles_in(GRAPH), f"import circles: {circles_in(GRAPH)}"


def test_imports_only_point_down_the_layers() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


@pytest.mark.parametrize("package", sorted(BOUNDARIES))
def test_closed_packages_import_only_themselves_and_what_they_may(package: str) -> None:
    allowed = BOUNDARIES[package]
    outside = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in (package, *allowed)
    )
    assert not outside, f"{package}/ reaches outside its boundary:\n" + "\n".join(outside)


def test_no_module_is_longer_than_500_lines() -> None:
    long = {module: n for module, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > 500}
    assert not long, long


# -- the checker itself: each rule must be able to fail -----------------------

KNOWN = {"cli", "modes", "modes.run", "process.supervisor", "telemetry.audit", "rotation"}


def test_a_deferred_import_counts() -> None:
    source = "def f():\n    from envwrap.modes.run import run\n"
    assert imports_in(source, "rotation", KNOWN) == {"modes.run"}


def test_a_type_checking_import_counts() -> None:
    source = "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from envwrap.telemetry import audit\n"
    assert imports_in(source, "process.supervisor", KNOWN) == {"telemetry.audit"}


def test_a_relative_import_counts() -> None:
    assert imports_in("from ..telemetry import audit\n", "process.supervisor",
                      KNOWN) == {"telemetry.audit"}


def test_a_deferred_circle_is_a_circle() -> None:
    graph = {"rotation": {"modes.run"}, "modes.run": {"modes"}, "modes": {"rotation"}, "cli": set()}
    assert circles_in(graph) == [["modes", "modes.run", "rotation"]]
    assert circles_in({"a": {"b"}, "b": set()}) == []


def test_the_layer_rule_would_catch_process_importing_telemetry() -> None:
    assert layer_of("telemetry.audit") > layer_of("process.supervisor")
    assert "telemetry" not in BOUNDARIES["process"]
