"""Secret values that cannot leak by accident.

A :class:`Secret` prints as ``******`` in ``str``, ``repr``, f-strings, logs, JSON
dumps and tracebacks; only :meth:`Secret.reveal` gives the value, so every place that
sends a password to a device is explicit and easy to audit.
"""

from __future__ import annotations

import os
from pathlib import Path

MASK = "******"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # pickling would write the clear text somewhere unexpected
        raise TypeError("Secret values cannot be pickled")


def secret_from_file(path: str | os.PathLike[str]) -> Secret:
    """Read a secret from a file: the first line, without its line ending."""
    text = Path(path).read_text(encoding="utf-8")
    return Secret(text.splitlines()[0] if text else "")


def secret_from_env(name: str) -> Secret:
    """Read a secret from an environment variable; KeyError names the variable."""
    try:
        return Secret(os.environ[name])
    except KeyError:
        raise KeyError(f"environment variable {name} is not set") from None


def mask(value: object) -> object:
    """Replace Secrets (also inside dicts/lists) with the mask, for display."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask(v) for v in value)
    return value
