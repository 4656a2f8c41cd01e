"""hafence.fence loads its parts on first use (PEP 562): the three lists that say what
it offers (the lazy map, the type checkers' imports, ``__all__``) must agree, and every
name must come from the module the map names."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import hafence.fence as fence

SOURCE = Path(fence.__file__).read_text()


def _type_checking_imports() -> dict[str, str]:
    """name -> module, from the ``if TYPE_CHECKING:`` block."""
    out: dict[str, str] = {}
    for node in ast.parse(SOURCE).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module
                for alias in imp.names:
                    out[alias.name] = imp.module.removeprefix("hafence.fence.")
    return out


def test_the_lazy_map_the_typing_imports_and_all_agree() -> None:
    where = fence._WHERE
    assert _type_checking_imports() == where
    assert sorted(fence.__all__) == sorted(where)


def test_every_name_comes_from_the_module_the_map_names() -> None:
    for name, module in fence._WHERE.items():
        value = getattr(fence, name)
        assert value is getattr(importlib.import_module(f"hafence.fence.{module}"), name)
