"""hafence's entry points, read from the installed distributions without importing
:mod:`importlib.metadata`.

``importlib.metadata`` costs a one-shot command about as much as its own work: importing
it pulls in ``email``, ``zipfile``, ``csv`` and ``importlib.resources``, and
``entry_points()`` parses every distribution's ``entry_points.txt``. This reads the
same files the way ``importlib.metadata``'s path finder finds them (every
``NAME-VERSION.dist-info`` or ``.egg-info`` directory in each :data:`sys.path` directory,
the first distribution of a normalized name winning), parses only those that mention a
``hafence`` group, and leaves :mod:`importlib.metadata` to the rare caller that asks for
a distribution's name and version (:attr:`EntryPoint.dist`). Zip files on ``sys.path``
are not searched: a plugin is an installed distribution.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import importlib.metadata

GROUP_PREFIX = "hafence"
_INFO_SUFFIXES = (".dist-info", ".egg-info")


@dataclass(frozen=True)
class EntryPoint:
    """``name = value`` of ``group``, declared by the distribution at ``dist_path``."""

    name: str
    value: str
    group: str
    dist_path: str

    @property
    def module(self) -> str:
        return self.value.partition(":")[0].strip()

    def load(self) -> Any:
        """Import the module (and resolve ``:attr.sub``), as ``EntryPoint.load`` does."""
        obj = importlib.import_module(self.module)
        attrs = self.value.partition(":")[2].strip()
        for attr in attrs.split(".") if attrs else ():
            obj = getattr(obj, attr)
        return obj

    @property
    def dist(self) -> importlib.metadata.Distribution:
        import importlib.metadata

        return importlib.metadata.Distribution.at(self.dist_path)


def _normalize(name: str) -> str:
    # importlib.metadata's Prepared.normalize: "Acme.Fence" and "acme_fence" are one.
    return re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")


def _info_dirs(path: Collection[str]) -> Iterator[str]:
    """Each distribution's metadata directory, first of its name on ``path`` only."""
    seen: set[str] = set()
    for entry in path:
        try:
            children = os.listdir(entry or ".")
        except OSError:  # a missing directory, a zip file
            continue
        for child in children:
            if not child.lower().endswith(_INFO_SUFFIXES):
                continue
            name = _normalize(child.rpartition(".")[0].partition("-")[0])
            if name not in seen:
                seen.add(name)
                yield os.path.join(entry or ".", child)


def entry_points(path: Collection[str] | None = None) -> list[EntryPoint]:
    """Every entry point of a group named ``hafence`` or ``hafence.*`` on ``path``
    (default :data:`sys.path`), in path order."""
    found: list[EntryPoint] = []
    for info in _info_dirs(sys.path if path is None else path):
        try:
            with open(os.path.join(info, "entry_points.txt"), encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        if f"[{GROUP_PREFIX}" not in text:
            continue
        group = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                group = line[1:-1].strip()
            elif group is not None and (group == GROUP_PREFIX or group.startswith("hafence.")):
                name, eq, value = line.partition("=")
                if eq:
                    found.append(EntryPoint(name.strip(), value.strip(), group, info))
    return found
