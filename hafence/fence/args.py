"""The words of a fence.cfg line: ``key=value`` arguments, split, quoted and masked.

Shared by the fence.cfg parser (:mod:`hafence.fence.config`) and the chain's command view
(:mod:`hafence.fence.chain`), so neither has to import the other.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from hafence.secrets import MASK

Arg = tuple[str, str | None]
"""One ``key=value`` argument; the value is None for a bare flag."""

# Keys whose values are credentials when no driver schema is at hand (fence-agents:
# password/passwd, snmp_priv_passwd, community...). Their values never show in a repr.
_SECRET_KEY = re.compile(r"pass|secret|community|token|^key$|private|_kg$", re.IGNORECASE)
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_!%+,\-./:=@^]+$")


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def masked_args(args: Iterable[Arg]) -> list[Arg]:
    """Arguments with credential values replaced by the mask, for display."""
    return [(k, MASK if v is not None and is_secret_key(k) else v) for k, v in args]


def parse_args(text: str) -> list[Arg]:
    """Split an argument string like a POSIX shell into (key, value|None) pairs."""
    out: list[Arg] = []
    for word in shlex.split(text, comments=False, posix=True):
        key, eq, value = word.partition("=")
        out.append((key, value if eq else None))
    return out


def format_args(args: Iterable[Arg]) -> str:
    """``key=value`` words for fence.cfg, quoted so :func:`parse_args` reads them back."""
    words = []
    for key, value in args:
        words.append(key if value is None else f"{key}={shlex.quote(value)}")
    return " ".join(words)


def shell_quote(value: str) -> str:
    """Quote like Perl's String::ShellQuote (what Proxmox prints): bare if safe."""
    if value and _SAFE_WORD.match(value):
        return value
    quoted = "'" + value.replace("'", "'\\''") + "'"
    # String::ShellQuote drops the empty '' pairs that escaping leaves at either end.
    if len(quoted) > 2 and quoted.startswith("''"):
        quoted = quoted[2:]
    if len(quoted) > 2 and quoted.endswith("''") and not quoted.endswith("\\''"):
        quoted = quoted[:-2]
    return quoted
