"""Layering of the watchdog package, read from the source: only entry points pick the fake
kernel. (The rules for all of hafence/, plugins reached through the registry and no
import cycles, are tests/core/test_layers.py.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hafence.watchdog.device import RealSyscalls, default_syscalls
from hafence.watchdog.kernel import FAKE_ENV
from tests.core.test_layers import CORE, ROOT, imports, module_name

# the modules allowed to import the fake kernel: the entry-point choice, and the helper
# that starts a mux process on a fake device for tests and labs
FAKE_USERS = {"hafence.watchdog.kernel", "hafence.watchdog.muxproc"}


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
