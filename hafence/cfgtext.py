"""Config file text: read it bounded, decode it strictly, and name file and line when not.

Every hafence config parser takes its input through :func:`decode_config` (or
:func:`read_config` for a path), so a stray byte anywhere in a file, even in a comment,
is one clear :class:`~hafence.errors.ConfigError` naming file, line and column instead
of a ``UnicodeDecodeError`` from deep inside a daemon. Lines are split on ``\\n`` only
(``str.splitlines`` would also split on form feeds and U+2028, so line numbers would no
longer match what an editor shows).
"""

from __future__ import annotations

import os
import re
import stat

from hafence.errors import ConfigError

MAX_CONFIG_BYTES = 4 << 20
"""No hafence config is anywhere near this; a bigger "file" is a mistake (``/dev/zero``)."""

# C0 controls except tab and line feed (a CR is tolerated only before the LF), DEL, the
# C1 controls, and the Unicode line/paragraph separators: none belongs in a config file,
# and each one makes a value look different from what the file seems to say.
_BAD_CHAR = re.compile("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]|\r(?!\n)")
_BAD_IN_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _where(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def bad_character(value: str) -> str | None:
    """What is wrong with ``value`` as a one-line config value (a NUL, a line break or
    another control character, a line separator), or None."""
    m = _BAD_IN_VALUE.search(value)
    if m is None:
        return None
    return "a NUL byte" if m.group() == "\x00" else f"control character U+{ord(m.group()):04X}"


def check_text(text: str, file: str) -> str:
    """``text`` unchanged, or a ConfigError naming the line of a control character or of
    a code point that is not valid Unicode text (a lone surrogate)."""
    m = _BAD_CHAR.search(text)
    if m is not None:
        line, col = _where(text, m.start())
        what = "NUL byte" if m.group() == "\x00" else f"control character U+{ord(m.group()[0]):04X}"
        raise ConfigError(f"{what} at column {col}", file=file, line=line)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        line, col = _where(text, exc.start)
        raise ConfigError(f"not valid text at column {col}", file=file, line=line) from None
    return text


def decode_utf8(data: bytes, file: str) -> str:
    """``data`` as UTF-8; ConfigError names file, line and column of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at column {col})", file=file, line=line
        ) from None


def decode_config(data: bytes | str, file: str) -> str:
    """The UTF-8 text of a config file; ConfigError names file, line and column of the
    first byte that is not UTF-8, or of a control character."""
    return check_text(data if isinstance(data, str) else decode_utf8(data, file), file)


def config_lines(text: str) -> list[str]:
    """The lines of a config text as an editor numbers them (``\\n``, ``\\r\\n``)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def read_bytes(path: str | os.PathLike[str], *, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; ConfigError otherwise.

    A directory, a FIFO or a device (``/dev/zero``) would hang or exhaust memory; it is
    refused by name instead of being read.
    """
    file = os.fspath(path)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ConfigError(f"cannot read: {_reason(exc)}", file=str(file)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise ConfigError(f"cannot read: {kind}", file=str(file))
        if st.st_size > limit:
            raise ConfigError(f"too big ({st.st_size} bytes, limit {limit})", file=str(file))
        chunks = []
        size = 0
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # it grew while we read it
                raise ConfigError(f"too big (over {limit} bytes)", file=str(file))
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(f"cannot read: {_reason(exc)}", file=str(file)) from None
    finally:
        os.close(fd)


def read_config(path: str | os.PathLike[str], *, limit: int = MAX_CONFIG_BYTES) -> str:
    """:func:`read_bytes` then :func:`decode_config`: the checked text of a config file."""
    return decode_config(read_bytes(path, limit=limit), os.fspath(path))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
