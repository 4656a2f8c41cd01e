"""Command templates and reply patterns of a line-based serial power switch.

Pure functions, no I/O: the driver builds a :class:`Dialect` from its options once,
so a bad escape or pattern is a :class:`ParamError` at configuration time, never a
surprise during a fence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hafence.errors import ParamError
from hafence.secrets import MASK, Secret

EOLS = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n", "none": b""}
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[rnt\\])")
_SIMPLE = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\"}


def unescape(field: str, text: str) -> bytes:
    """``\\r \\n \\t \\\\ \\xHH`` in a command become those bytes (binary relay boards)."""
    raw = text.encode("utf-8")
    stray = re.sub(rb"\\\\", b"", _ESCAPE.sub(b"", raw))
    if b"\\" in stray:
        raise ParamError(field, r"unknown escape (use \r \n \t \\ or \xHH)")
    return _ESCAPE.sub(lambda m: _SIMPLE.get(m[1]) or bytes([int(m[1][1:], 16)]), raw)


@dataclass(frozen=True)
class Pattern:
    """An expected reply: exact text (case-insensitive), or ``re:REGEX`` (full match)."""

    field: str
    text: str
    regex: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, field: str, text: str) -> Pattern:
        if text.startswith("re:"):
            try:
                return cls(field, text, re.compile(text[3:]))
            except re.error as exc:
                raise ParamError(field, f"bad regular expression: {exc}") from None
        return cls(field, text.strip())

    def matches(self, reply: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(reply) is not None
        return reply.casefold() == self.text.casefold()

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Command:
    """One command line to send: the bytes, and how it may be shown (secrets masked)."""

    data: bytes = field(repr=False)  # may hold a password in clear
    shown: str


def command(
    field: str, template: str, eol: bytes, *, plug: str | None, password: Secret | None
) -> Command:
    """Fill ``{plug}`` and ``{password}`` into a template and add the line ending."""
    shown = template
    text = template
    if "{plug}" in template:
        if plug is None:
            raise ParamError("plug", f"required: {field} contains {{plug}}")
        text = text.replace("{plug}", plug)
        shown = shown.replace("{plug}", plug)
    if "{password}" in template:
        if password is None:
            raise ParamError("password", f"required: {field} contains {{password}}")
        text = text.replace("{password}", password.reveal())
        shown = shown.replace("{password}", MASK)
    return Command(unescape(field, text) + eol, shown)


def show(data: bytes, secret: Secret | None = None) -> str:
    """Received bytes as readable text for an error message, never a password."""
    if secret is not None and secret.reveal():
        data = data.replace(secret.reveal().encode(), MASK.encode())
    return repr(data)[2:-1]  # printable ASCII as is, the rest as \r, \xfe...
