"""Secret values that cannot leak by accident, and the places they are read from.

A :class:`Secret` prints as ``******`` in ``str``, ``repr``, f-strings, logs, JSON
dumps and tracebacks; only :meth:`Secret.reveal` gives the value, so every place that
sends a password to a device is explicit and easy to audit.

A secret option ``X`` can come from a file (``X_file=PATH``: its first line), the
environment (``X_env=VARIABLE``) or a script (``X_script=COMMAND``: the first line it
prints, run without a shell and bounded in time). Each source refuses what cannot be a
password (missing, empty, a NUL or another control character, bytes that are not UTF-8)
with a :class:`~hafence.errors.SecretError` that says why and never shows the content.
"""

from __future__ import annotations

import os
import re
import selectors
import shlex
import signal
import subprocess
import time
from typing import Any

from hafence.cfgtext import bad_character, read_bytes
from hafence.errors import ConfigError, SecretError

MASK = "******"
SECRET_SOURCES = ("file", "env", "script")
MAX_SECRET_BYTES = 64 << 10
SCRIPT_TIMEOUT = 10.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def _first_line(data: bytes, where: str) -> Secret:
    """The first line of ``data`` as a Secret; SecretError if it cannot be a password."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{where} is not UTF-8 text") from None
    line = text.split("\n", 1)[0].removesuffix("\r")
    bad = bad_character(line)
    if bad is not None:
        raise SecretError(f"{where} holds {bad}")
    if not line:
        raise SecretError(f"{where} is empty")
    return Secret(line)


def _text_arg(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise SecretError(f"expected {what}, got a {type(value).__name__}")
    if not value.strip():
        raise SecretError(f"no {what} given")
    bad = bad_character(value)
    if bad is not None:
        raise SecretError(f"{what} contains {bad}")
    return value


def secret_from_file(path: str | os.PathLike[str]) -> Secret:
    """Read a secret from a file: the first line, without its line ending."""
    name = _text_arg(os.fspath(path) if isinstance(path, os.PathLike) else path, "file name")
    try:
        data = read_bytes(name, limit=MAX_SECRET_BYTES)
    except ConfigError as exc:
        raise SecretError(f"{name}: {exc.message}") from None
    return _first_line(data, f"file {name}")


def secret_from_env(name: str) -> Secret:
    """Read a secret from an environment variable."""
    name = _text_arg(name, "variable name")
    if not _ENV_NAME.match(name):
        raise SecretError(f"'{name}' is not an environment variable name")
    value = os.environ.get(name)
    if value is None:
        raise SecretError(f"environment variable {name} is not set")
    return _first_line(value.encode("utf-8", "surrogateescape"), f"environment variable {name}")


def secret_from_script(command: str, timeout: float = SCRIPT_TIMEOUT) -> Secret:
    """Run ``command`` (split like a shell, run without one) and take the first line it
    prints. Bounded by ``timeout``; a failing, silent or hanging script is an error."""
    command = _text_arg(command, "command")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise SecretError(f"cannot split the command: {exc}") from None
    if not argv:
        raise SecretError("no command given")
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # may echo what it read; never into our output
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SecretError(f"cannot run script {argv[0]}: {reason}") from None
    try:
        out = _read_bounded(proc, timeout, MAX_SECRET_BYTES + 1)
    except TimeoutError:
        _kill_group(proc)
        raise SecretError(f"script {argv[0]} gave no answer within {timeout:g}s") from None
    except BaseException:
        _kill_group(proc)
        raise
    if len(out) > MAX_SECRET_BYTES:
        _kill_group(proc)
        raise SecretError(f"script {argv[0]} printed more than {MAX_SECRET_BYTES} bytes")
    try:
        returncode = proc.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise SecretError(f"script {argv[0]} gave no answer within {timeout:g}s") from None
    if returncode != 0:
        raise SecretError(f"script {argv[0]} exited with status {returncode}")
    return _first_line(out, f"the output of script {argv[0]}")


def _read_bounded(proc: subprocess.Popen[bytes], timeout: float, limit: int) -> bytes:
    """The script's stdout up to EOF or ``limit`` bytes (a script that never stops
    printing must not fill our memory); TimeoutError after ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while size < limit:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    proc.stdout.close()
    return b"".join(chunks)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def secret_from_source(source: str, value: Any) -> Secret:
    """A secret from ``file``, ``env`` or ``script`` (see :data:`SECRET_SOURCES`)."""
    if source == "file":
        return secret_from_file(value)
    if source == "env":
        return secret_from_env(value)
    if source == "script":
        return secret_from_script(value)
    raise SecretError(f"unknown secret source '{source}'")


def mask(value: object) -> object:
    """Replace Secrets (also inside dicts/lists) with the mask, for display."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask(v) for v in value)
    return value
