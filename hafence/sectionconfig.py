"""Proxmox's section-config syntax, read generically (ocf.cfg, notify.cfg).

::

    TYPE: ID
    \tkey value
    \tkey value with spaces

A header is ``TYPE: ID`` at column 0; properties follow, indented, one ``key value`` a
line; a blank line ends a section; ``#`` lines are comments. This module checks the
syntax only (headers, stray or duplicate properties, duplicate sections) and returns
every section with the line of each property, so the caller can check meanings and
name file, line and field in its own errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from hafence.errors import ConfigError

_HEADER = re.compile(r"^(?P<type>[A-Za-z][A-Za-z0-9_-]*):\s*(?P<id>\S+)\s*$")
_PROP = re.compile(r"^[ \t]+(?P<key>\S+)(?:[ \t]+(?P<value>.*?))?[ \t]*$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")


@dataclass
class Section:
    type: str
    id: str
    line: int
    props: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # property -> its line

    def line_of(self, key: str | None) -> int:
        return self.lines.get(key or "", self.line)


def read_sections(
    text: str, file: str, types: Iterable[str], errors: list[ConfigError]
) -> list[Section]:
    """Sections of the given types; syntax errors are appended to ``errors``."""
    allowed = set(types)
    out: list[Section] = []
    seen: set[tuple[str, str]] = set()
    cur: Section | None = None

    def err(line: int, message: str, fld: str | None = None) -> None:
        errors.append(ConfigError(message, file=file, line=line, field=fld))

    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            cur = None
            continue
        if raw.lstrip().startswith("#"):
            continue
        if raw[0] not in " \t":
            cur = None
            m = _HEADER.match(raw)
            kinds = "|".join(sorted(allowed))
            if not m or m.group("type") not in allowed:
                err(lineno, f"invalid section header '{raw.strip()}' (expected '{kinds}: ID')")
            elif not _ID.match(m.group("id")):
                err(lineno, f"invalid name '{m.group('id')}'", "section")
            elif (m.group("type"), m.group("id")) in seen:
                err(lineno, f"duplicate section '{m.group('type')}: {m.group('id')}'", "section")
            else:
                seen.add((m.group("type"), m.group("id")))
                cur = Section(m.group("type"), m.group("id"), lineno)
                out.append(cur)
            continue
        if cur is None:
            err(lineno, "property outside of a valid section")
            continue
        m = _PROP.match(raw)
        assert m is not None  # an indented non-blank line always matches
        key, value = m.group("key"), m.group("value") or ""
        if key in cur.lines:
            err(lineno, f"duplicate property in section '{cur.type}: {cur.id}'", key)
            continue
        cur.lines[key] = lineno
        if not value:
            err(lineno, "missing value", key)
            continue
        cur.props[key] = value
    return out
