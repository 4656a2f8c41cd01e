"""Byte and token mutations of our own example files, driven by one ``random.Random``.

The same mutator serves the property tests (hypothesis hands it a ``Random`` it can
replay and shrink) and the fuzz campaign (``scripts/fuzz_parsers.py``, seeded). A
mutation is 1-4 of these operations on a seed file:

* lines: delete, duplicate, swap, move one, cut the file short at any byte (a torn write);
* bytes: flip a bit, insert bytes that are not UTF-8, a NUL, a control character or a
  Unicode line separator, delete a run of bytes;
* tokens: replace a value with an interesting one (``inf``, ``nan``, ``-1``, ``70000``,
  huge numbers, the empty string, quotes, ...), drop a value (a bare key), empty it,
  repeat a key on its line, add an unknown key, insert a line of a known key with an
  interesting value, replace any word with a word from the target's vocabulary.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

INTERESTING: tuple[str, ...] = (
    "inf",
    "-inf",
    "+inf",
    "nan",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e309",
    "-1e309",
    "1e-320",
    "-1",
    "-0",
    "0",
    "0.0",
    "-0.5",
    "1",
    "2",
    "10",
    "11",
    "64",
    "65",
    "1001",
    "65535",
    "65536",
    "70000",
    "-70000",
    "3601",
    "86401",
    "2147483648",
    "99999999999999999999",
    "9" * 400,
    "0x10",
    "0x",
    "1_0",
    "1.5",
    "5.",
    ".5",
    "1e3",
    "٣",
    "",
    " ",
    "true",
    "false",
    "yes",
    "off",
    "null",
    "[]",
    "{}",
    "[1, 2]",
    '"',
    "'",
    "\\",
    "#",
    ",",
    ":",
    "=",
    ";",
    "node1",
    "vm:100",
    "ct:0",
    "a" * 300,
    "\x00",
    "\x01",
    "\x7f",
    "\u2028",
    "\x85",
    "\t",
    "é",
    "/dev/zero",
    "/etc",
    "missing/file",  # relative: fuzzed commands run inside their work directory
)

BAD_BYTES: tuple[bytes, ...] = (
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc3\x28",
    b"\xe2\x28\xa1",
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xc0\xaf",  # overlong
    b"\x00",
    b"\x01",
    b"\x1b",
    b"\x0c",
    b"\x0b",
    b"\r",
    b"\x7f",
    b"\xc2\x85",
    b"\xe2\x80\xa8",
    b"\xef\xbb\xbf",  # a BOM
    b"\n",
    b"\t",
    b" ",
    b"\\",
    b'"',
    b"'",
    b"=",
    b"#",
    b"[",
    b"{",
)

UNKNOWN_KEYS = ("bogus", "bogus_key", "x", "Password", "port ", "nodes2", "timeout_file")


@dataclass(frozen=True)
class Syntax:
    """How a target's files write ``key value`` pairs, so token mutations hit values.

    ``pair`` finds a key (group ``k``) and its value (group ``v``); ``template`` builds
    one from a key and a value; ``json_values`` quotes string values as JSON.
    """

    pair: re.Pattern[str]
    template: str
    line_template: str
    json_values: bool = False
    vocabulary: tuple[str, ...] = field(default=())


FENCE = r"(?P<k>[A-Za-z0-9_]+)=(?P<v>\"[^\"\n]*\"|'[^'\n]*'|[^\s]*)"
SECTION = r"(?m)^[ \t]+(?P<k>\S+)[ \t]+(?P<v>[^\n]*)$"
JSON = r"\"(?P<k>[^\"\n]+)\"\s*:\s*(?P<v>\"[^\"\n]*\"|[^,}\]\s]+)"
TOML = r"(?m)^(?P<k>[A-Za-z0-9_.-]+)[ \t]*=[ \t]*(?P<v>[^\n]*)$"
ARGV = r"(?P<k>--?[A-Za-z][A-Za-z0-9_-]*)[ =](?P<v>\S+)"


def _value(rnd: random.Random, syntax: Syntax) -> str:
    value = rnd.choice(INTERESTING)
    if syntax.json_values and rnd.random() < 0.5:
        return json.dumps(value)
    return value


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _join(lines: Sequence[bytes]) -> bytes:
    return b"\n".join(lines)


def _text_op(fn: Callable[[str, random.Random, Syntax], str]) -> Callable[..., bytes]:
    """A token mutation works on text; bytes that do not decode stay as they are."""

    def op(data: bytes, rnd: random.Random, syntax: Syntax) -> bytes:
        text = data.decode("utf-8", "surrogateescape")
        return fn(text, rnd, syntax).encode("utf-8", "surrogateescape")

    return op


def _pick_pair(text: str, rnd: random.Random, syntax: Syntax) -> re.Match[str] | None:
    found = list(syntax.pair.finditer(text))
    return rnd.choice(found) if found else None


@_text_op
def replace_value(text: str, rnd: random.Random, syntax: Syntax) -> str:
    m = _pick_pair(text, rnd, syntax)
    if m is None:
        return text
    return text[: m.start("v")] + _value(rnd, syntax) + text[m.end("v") :]


@_text_op
def bare_key(text: str, rnd: random.Random, syntax: Syntax) -> str:
    m = _pick_pair(text, rnd, syntax)
    return text if m is None else text[: m.end("k")] + text[m.end("v") :]


@_text_op
def empty_value(text: str, rnd: random.Random, syntax: Syntax) -> str:
    m = _pick_pair(text, rnd, syntax)
    if m is None:
        return text
    empty = '""' if syntax.json_values and rnd.random() < 0.5 else ""
    return text[: m.start("v")] + empty + text[m.end("v") :]


@_text_op
def repeat_key(text: str, rnd: random.Random, syntax: Syntax) -> str:
    m = _pick_pair(text, rnd, syntax)
    if m is None:
        return text
    again = syntax.template.format(k=m.group("k"), v=_value(rnd, syntax))
    return text[: m.end()] + again + text[m.end() :]


@_text_op
def unknown_key(text: str, rnd: random.Random, syntax: Syntax) -> str:
    m = _pick_pair(text, rnd, syntax)
    key = rnd.choice(UNKNOWN_KEYS)
    pair = syntax.template.format(k=key, v=_value(rnd, syntax))
    if m is None:
        return text + pair
    return text[: m.end()] + pair + text[m.end() :]


@_text_op
def insert_line(text: str, rnd: random.Random, syntax: Syntax) -> str:
    lines = text.split("\n")
    keys = syntax.vocabulary or UNKNOWN_KEYS
    line = syntax.line_template.format(k=rnd.choice(keys), v=_value(rnd, syntax))
    lines.insert(rnd.randrange(len(lines) + 1), line)
    return "\n".join(lines)


_WORD = re.compile(r"[A-Za-z0-9_.:/-]+")


@_text_op
def replace_word(text: str, rnd: random.Random, syntax: Syntax) -> str:
    words = list(_WORD.finditer(text))
    if not words:
        return text
    m = rnd.choice(words)
    pool = syntax.vocabulary if syntax.vocabulary and rnd.random() < 0.6 else INTERESTING
    return text[: m.start()] + rnd.choice(pool) + text[m.end() :]


def delete_line(data: bytes, rnd: random.Random, syntax: Syntax) -> bytes:
    lines = _lines(data)
    del lines[rnd.randrange(len(lines))]
    return _join(lines)


def duplicate_line(data: bytes, rnd: random.Random, syntax: Syntax) -> bytes:
    lines = _lines(data)
    i = rnd.randrange(len(lines))
    lines.insert(rnd.randrange(len(lines) + 1), lines[i])
    return _join(lines)


def swap_lines(data: bytes, rnd: random.Random, syntax: Syntax) -> bytes:
    lines = _lines(data)
    i, j = rnd.randrange(len(lines)), rnd.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return _join(lines)


def move_line(data: bytes, rnd: random.Random, syntax: Syntax) -> bytes:
    lines = _lines(data)
    line = lines.pop(rnd.randrange(len(lines)))
    lines.insert(rnd.randrange(len(lines) + 1), line)
    return _join(lines)


def truncate(data: bytes, rnd: random.Random, syntax: Syntax) -> bytes:
    return data[: rnd.randrange(len(data) + 1)]


def flip_bit(data: bytes, rnd: random.Random, syntax: Syntax) -> bytes:
    if not data:
        return data
    i = rnd.randrange(len(data))
    return data[:i] + bytes([data[i] ^ (1 << rnd.randrange(8))]) + data[i + 1 :]


def insert_bytes(data: bytes, rnd: random.Random, syntax: Syntax) -> bytes:
    i = rnd.randrange(len(data) + 1)
    chunk = rnd.choice(BAD_BYTES) if rnd.random() < 0.8 else bytes([rnd.randrange(256)])
    return data[:i] + chunk + data[i:]


def delete_bytes(data: bytes, rnd: random.Random, syntax: Syntax) -> bytes:
    if not data:
        return data
    i = rnd.randrange(len(data))
    return data[:i] + data[i + rnd.randint(1, 8) :]


OPERATIONS: tuple[Callable[[bytes, random.Random, Syntax], bytes], ...] = (
    delete_line,
    duplicate_line,
    swap_lines,
    move_line,
    truncate,
    flip_bit,
    insert_bytes,
    delete_bytes,
    replace_value,
    replace_value,
    replace_value,
    bare_key,
    empty_value,
    repeat_key,
    unknown_key,
    insert_line,
    replace_word,
    replace_word,
)


def mutate(seed: bytes, rnd: random.Random, syntax: Syntax, max_ops: int = 4) -> bytes:
    """``seed`` changed by 1..``max_ops`` random operations."""
    data = seed
    for _ in range(rnd.choice((1, 1, 1, 2, 3, max_ops))):
        data = rnd.choice(OPERATIONS)(data, rnd, syntax)
    return data
