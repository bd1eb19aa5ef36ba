"""The project's shape (synctalk/, services/, training/, kernels/, bench/; not the generated
synctalk/rpc/gen): no import cycles, and small modules.

Import rule, checked twice:
- import time: the imports a module runs when it is imported — its module body, including
  module-level `if`/`try` blocks and class bodies, but not function bodies (they run on first
  call) nor `if TYPE_CHECKING:` blocks — form no cycle. Such a cycle breaks or half-loads a
  module depending on which side is imported first.
- design: adding the function-local imports (deferred heavy dependencies, a CLI command
  loading its service) still forms no cycle, so a deferred import cannot hide two modules
  that need each other (the old avatar format <-> frames pair did that).
An edge goes to the module imported (`from a.b import c` to `a.b.c` when that is a module,
else to `a.b`); a package's `__init__` importing its own submodules is an edge like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import ROOT

PACKAGES = ("synctalk", "services", "training", "kernels", "bench")
GENERATED = ("synctalk/rpc/gen/",)
MAX_LINES = 400
MAX_SERVICE_DEFINITION_LINES = 150


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every hand-written module of the project."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(GENERATED) or "/static/" in rel:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements outside function bodies and `if TYPE_CHECKING:` blocks."""
    out: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return out


def _targets(name: str, path: Path, node: ast.Import | ast.ImportFrom,
             modules: dict[str, Path]) -> set[str]:
    """The project modules one import statement loads."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    base = node.module or ""
    if node.level:
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    found = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in modules:
            found.add(sub)
        elif base in modules:
            found.add(base)
    return found


def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    """Module -> the project modules it imports at import time (also in functions when
    `deferred`)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        nodes = ([n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
                 if deferred else _import_time_imports(tree))
        edges: set[str] = set()
        for node in nodes:
            edges |= _targets(name, path, node, modules)
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_function_local_and_type_checking_imports_do_not_count() -> None:
    tree = ast.parse("import x\nif TYPE_CHECKING:\n    import y\n"
                     "def f():\n    import z\nclass C:\n    import w\n")
    names = sorted(a.name for n in _import_time_imports(tree) for a in n.names)
    assert names == ["w", "x"]


def test_relative_imports_resolve_to_project_modules() -> None:
    modules = {"p": ROOT / "p/__init__.py", "p.a": ROOT / "p/a.py", "p.b": ROOT / "p/b.py"}
    node = ast.parse("from .b import x\nfrom . import a").body
    assert _targets("p.a", ROOT / "p/a.py", node[0], modules) == {"p.b"}  # type: ignore[arg-type]
    assert _targets("p", ROOT / "p/__init__.py", node[1], modules) == {"p.a"}  # type: ignore[arg-type]


def test_no_import_cycles_at_import_time() -> None:
    graph = import_graph()
    assert len(graph) > 100  # the walk found the project
    assert graph["synctalk.avatar.format"] >= {"synctalk.avatar.layout", "synctalk.avatar.frames"}
    assert cycles(graph) == []


def test_no_import_cycles_counting_deferred_imports() -> None:
    graph = import_graph(deferred=True)
    assert "synctalk.models.runner_factory" in graph["synctalk.render.pipeline"]
    assert cycles(graph) == []


def _test_modules() -> list[Path]:
    """The tests' own modules: held to the same size limit, kept out of the import graph."""
    return sorted((ROOT / "tests").rglob("*.py"))


def _long_modules() -> list[str]:
    return [f"{path.relative_to(ROOT).as_posix()} ({n} lines)"
            for path in [*_modules().values(), *_test_modules()]
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES]


def test_no_module_over_400_lines() -> None:
    assert len(_test_modules()) > 1  # the walk found the tests
    assert _long_modules() == []


def _long_definitions(folder: str) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_SERVICE_DEFINITION_LINES:
                    found.append(f"{path.relative_to(ROOT).as_posix()}::{node.name} ({n} lines)")
    return found


def test_no_function_or_class_in_services_over_150_lines() -> None:
    """A reader should take in one route, stage or servicer at a time."""
    assert _long_definitions("services") == []


def test_no_web_page_script_over_400_lines() -> None:
    """The page's JavaScript (all hand-written, no build step) obeys the same module limit."""
    scripts = sorted((ROOT / "services" / "edge" / "static").rglob("*.js"))
    assert len(scripts) > 1  # the walk found the page's modules
    long = [f"{p.relative_to(ROOT).as_posix()} ({n} lines)" for p in scripts
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert long == []
