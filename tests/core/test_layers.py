"""Layering, read from the source, for all of ``hafence/``: the core reaches plugins only
through hooks and the registry, and no two modules import each other, directly or
round a longer loop.

Every import statement counts, including those inside functions: a lazy import is still
a dependency, and ``from package import name`` depends on the package's ``__init__``
where ``name`` is defined there (not when it is a submodule: that is a dependency on the
submodule). Only imports under ``if TYPE_CHECKING:`` are left out of the cycle rule:
they never run, so they make no import cycle (they still count for the plugin rule).
"""

from __future__ import annotations

import ast
import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "hafence"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return found


def imports(
    path: Path, *, typing: bool = True, modules: set[str] | None = None
) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in ``path``; ``from a import b`` yields a and a.b,
    or only a.b when ``modules`` says a.b is a module. ``typing=False`` leaves out the
    imports under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), str(path))
    skip = set() if typing else _type_checking_only(tree)
    package = module_name(path)
    package = package if path.name == "__init__.py" else package.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names = [f"{base}.{alias.name}" for alias in node.names]
            if modules is None or any(n not in modules for n in names):
                yield node.lineno, base
            for name in names:
                yield node.lineno, name
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def plugin_packages() -> set[str]:
    """Top-level packages of the installed plugins and of every plugin in plugins/."""
    eps = importlib.metadata.entry_points(group="hafence")
    found = {ep.value.split(":")[0].split(".")[0] for ep in eps}
    found |= {p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()}
    found |= {
        p.parent.name for p in (ROOT / "plugins").glob("*/src/*/__init__.py")
    }  # src layouts (the example PDU)
    return found


def test_plugin_packages_are_known() -> None:
    assert {"hafence_watchdogs", "hafence_ipmi", "hafence_snmp"} <= plugin_packages()


def test_no_core_module_imports_a_plugin_package() -> None:
    plugins = plugin_packages()
    bad = [
        f"{path.relative_to(ROOT)}:{line}: imports {mod}"
        for path in sorted(CORE.rglob("*.py"))
        for line, mod in imports(path)
        if mod.split(".")[0] in plugins
    ]
    assert bad == [], "the core must reach plugins through the registry:\n" + "\n".join(bad)


def test_the_product_never_imports_the_test_peers() -> None:
    """Peers only tests start live in tests/peers; the shipped package and plugins never
    reach them (the lab's and the demo's simulated devices are hafence.simdevices)."""
    shipped = [*CORE.rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    bad = [
        f"{path.relative_to(ROOT)}:{line}: imports {mod}"
        for path in sorted(shipped)
        if "tests" not in path.relative_to(ROOT).parts
        for line, mod in imports(path)
        if mod.split(".")[0] == "tests"
    ]
    assert bad == [], "\n".join(bad)


def cycles(package: Path) -> list[list[str]]:
    """Every strongly connected group of more than one module in ``package`` (Tarjan)."""
    names = {module_name(p): p for p in package.rglob("*.py")}
    mods = set(names)
    edges = {
        m: sorted({i for _, i in imports(p, typing=False, modules=mods) if i in mods and i != m})
        for m, p in names.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(names):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It must catch what it claims to: a pair importing each other, one of them lazily;
    a module importing a name from its package's __init__, which imports it; and it must
    count neither a submodule imported by ``from package import`` as a dependency on the
    package, nor an import that only type checkers see."""
    pkg = tmp_path / "hafence" / "demo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from hafence.demo.d import D\nVALUE = 1\n")
    (pkg / "a.py").write_text("from hafence.demo import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("import hafence.demo.a\n")
    (pkg / "d.py").write_text("from hafence.demo import VALUE, e\nD = 1\n")
    (pkg / "e.py").write_text("from hafence.demo import f\nfrom typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from hafence.demo.d import D\n")  # fmt: skip
    (pkg / "f.py").write_text("from hafence.demo import c\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert sorted(cycles(pkg)) == [
        ["hafence.demo", "hafence.demo.d"],
        ["hafence.demo.a", "hafence.demo.b"],
    ]


def test_no_import_cycle_under_hafence() -> None:
    found = cycles(CORE)
    assert found == [], "modules that import each other (directly or round a loop):\n" + "\n".join(
        " <-> ".join(group) for group in found
    )
