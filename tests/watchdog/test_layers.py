"""Layering, read from the source: the core reaches plugins only through the registry, the
watchdog package has no import cycle, and only entry points pick the fake kernel.

Every import statement counts, including those inside functions: a lazy import is still
a dependency.
"""

from __future__ import annotations

import ast
import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence.watchdog.device import RealSyscalls, default_syscalls
from hafence.watchdog.kernel import FAKE_ENV

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "hafence"
# the modules allowed to import the fake kernel: the entry-point choice, and the helper
# that starts a mux process on a fake device for tests and labs
FAKE_USERS = {"hafence.watchdog.kernel", "hafence.watchdog.muxproc"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in ``path``; ``from a import b`` yields a and a.b."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path)
    package = package if path.name == "__init__.py" else package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
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


def cycles(package: Path) -> list[list[str]]:
    """Every strongly connected group of more than one module in ``package`` (Tarjan)."""
    names = {module_name(p): p for p in package.rglob("*.py")}
    edges = {
        m: sorted({i for _, i in imports(p) if i in names and i != m}) for m, p in names.items()
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
    """It must catch what it claims to: a pair importing each other, one of them lazily."""
    pkg = tmp_path / "hafence" / "demo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from hafence.demo import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("import hafence.demo.a\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert cycles(pkg) == [["hafence.demo.a", "hafence.demo.b"]]


def test_no_import_cycle_in_the_watchdog_package() -> None:
    assert cycles(CORE / "watchdog") == []


def test_only_entry_points_pick_the_fake_kernel() -> None:
    users = sorted(
        module_name(path)
        for path in CORE.rglob("*.py")
        if any(mod.startswith("hafence.watchdog.fake") for _, mod in imports(path))
    )
    assert set(users) <= FAKE_USERS, users
    readers = [f"{p.relative_to(ROOT)}:{line}" for p in CORE.rglob("*.py")
               for line in fake_env_reads(p)]  # fmt: skip
    assert readers == [], "only click options of entry points may read it"


def fake_env_reads(path: Path) -> list[int]:
    """Lines that read $HAFENCE_WATCHDOG_FAKE: os.environ[...], os.environ.get, os.getenv."""

    def names_it(node: ast.AST) -> bool:
        return (isinstance(node, ast.Constant) and node.value == FAKE_ENV) or (
            isinstance(node, ast.Name) and node.id == "FAKE_ENV"
        )

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Subscript) and names_it(node.slice):
            found.append(node.lineno)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) in ("get", "getenv")
            and node.args
            and names_it(node.args[0])
        ):
            found.append(node.lineno)
    return found


def test_the_env_read_finder_finds_reads(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "import os\nFAKE_ENV = 'x'\na = os.environ.get(FAKE_ENV)\n"
        f"b = os.getenv({FAKE_ENV!r})\nc = os.environ[FAKE_ENV]\nd = '{FAKE_ENV}'\n"
    )
    assert fake_env_reads(src) == [3, 4, 5]


def test_the_environment_alone_never_swaps_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAKE_ENV, "/nonexistent/watchdog.json")
    assert isinstance(default_syscalls(), RealSyscalls)
