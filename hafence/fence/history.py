"""Fence history: an append-only JSON-lines log of every fence attempt.

One record per attempt (who fenced, which node, when, which devices, the action, the
result, why it failed, how long it took). Each append is fsync'ed so the record
survives a crash right after a fence; the file is mode 0600 and bounded: past
``max_bytes`` it rotates to ``PATH.1`` (one older generation is kept and still queried).

Reading never fails because of one bad line: a line torn by a crash, bytes that are not
UTF-8, or a record whose fields have the wrong types is skipped and *reported*
(:meth:`FenceHistory.scan` returns the skipped lines as errors naming file and line;
:meth:`FenceHistory.records` logs them).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hafence.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "/var/lib/hafence"
HISTORY_FILE = "fence-history.jsonl"


def state_dir() -> Path:
    """``$HAFENCE_STATE_DIR``, else /var/lib/hafence."""
    return Path(os.environ.get("HAFENCE_STATE_DIR") or DEFAULT_STATE_DIR)


def default_history_path() -> Path:
    return state_dir() / HISTORY_FILE


@dataclass
class FenceRecord:
    """One fence attempt as stored. ``results`` are per-device ActionResult dicts."""

    actor: str  # the host (or tool) that ran the fence
    node: str  # target node ("" for a device acted on without a node)
    action: str  # off | on | reboot | status ...
    ok: bool
    devices: list[str] = field(default_factory=list)
    level: int | None = None  # 1-based level that succeeded (None: none did)
    attempt: int = 1
    error_kind: str | None = None
    message: str = ""
    duration: float = 0.0
    time: float = field(default_factory=time.time)  # epoch seconds, start of the attempt
    results: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FenceRecord:
        """A record from its stored form; ValueError says which field is wrong.

        Unknown keys are ignored (a newer hafence may add some).
        """
        for name in _REQUIRED:
            if name not in data:
                raise ValueError(f"{name}: missing")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name, value in known.items():
            problem = _FIELD_CHECKS[name](value)
            if problem:
                raise ValueError(f"{name}: {problem}")
        return cls(**known)


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) else "must be a string"


MAX_SECONDS = 253402300799  # 9999-12-31: any later time or duration is corrupt


def _number(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "must be a number"
    if isinstance(v, float) and not math.isfinite(v):
        return "must be a finite number"
    return None if 0 <= v <= MAX_SECONDS else f"must be 0..{MAX_SECONDS}"


def _count(v: Any, *, optional: bool = False) -> str | None:
    if optional and v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        return "must be a positive integer"
    return None


_REQUIRED = ("actor", "node", "action", "ok")
_FIELD_CHECKS: dict[str, Any] = {
    "actor": _text,
    "node": _text,
    "action": _text,
    "ok": lambda v: None if isinstance(v, bool) else "must be true or false",
    "devices": lambda v: (
        None
        if isinstance(v, list) and all(isinstance(d, str) for d in v)
        else "must be a list of strings"
    ),
    "level": lambda v: _count(v, optional=True),
    "attempt": _count,
    "error_kind": lambda v: None if v is None or isinstance(v, str) else "must be a string",
    "message": _text,
    "duration": _number,
    "time": _number,
    "results": lambda v: (
        None
        if isinstance(v, list) and all(isinstance(r, dict) for r in v)
        else "must be a list of objects"
    ),
}


@dataclass
class HistoryScan:
    """What reading the history found: the good records and the lines skipped."""

    records: list[FenceRecord]
    skipped: list[ConfigError]


def _open_for_append(path: Path) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    os.set_blocking(fd, True)
    return fd


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1)


class FenceHistory:
    """Append-only, crash-safe, size-bounded fence history in one JSON-lines file."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, max_bytes: int = 1 << 20):
        self.path = Path(path) if path is not None else default_history_path()
        if "\x00" in str(self.path) or not self.path.name:
            raise ConfigError("not a usable file name", file=repr(str(self.path)))
        self.max_bytes = max_bytes

    @property
    def rotated_path(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    def append(self, record: FenceRecord) -> None:
        """Write one record durably. Several processes may append at once (flock).

        Only ever into a regular file (OSError otherwise): a history path naming a device
        such as /dev/null must neither block nor get its mode changed to 0600.
        """
        line = json.dumps(record.to_dict(), sort_keys=True, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_for_append(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.fchmod(fd, 0o600)
            if os.fstat(fd).st_size + len(line) > self.max_bytes and os.fstat(fd).st_size > 0:
                # Rotate under the lock; later writers reopen the new file by name.
                os.replace(self.path, self.rotated_path)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                fd = _open_for_append(self.path)
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.fchmod(fd, 0o600)
            size = os.fstat(fd).st_size
            if size and _last_byte(self.path, size) != b"\n":
                line = "\n" + line  # seal a line torn by a crash so this one stays whole
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def _lines(self) -> Iterator[tuple[str, int, bytes | None]]:
        """``(file, line number, raw line)`` of both generations, oldest first.

        Raises ConfigError when a file exists but cannot be read at all (or is not a
        regular file: a device like /dev/zero would never end).
        """
        for p in (self.rotated_path, self.path):
            try:
                fh = open(p, "rb")  # bytes: each line is decoded on its own
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(p)) from None
            with fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise ConfigError("cannot read: not a regular file", file=str(p))
                yield from _numbered_lines(fh, str(p))

    def scan(self, node: str | None = None, limit: int | None = None) -> HistoryScan:
        """Records oldest first, optionally only those for ``node``, the last ``limit``;
        and every line skipped because it is torn or invalid (file, line, why)."""
        out: list[FenceRecord] = []
        skipped: list[ConfigError] = []
        for file, n, raw in self._lines():
            try:
                rec = _parse_line(raw)
            except ValueError as exc:
                skipped.append(ConfigError(f"skipped: {exc}", file=file, line=n))
                continue
            if rec is not None and (node is None or rec.node == node):
                out.append(rec)
        return HistoryScan(out[-limit:] if limit else out, skipped)

    def records(self, node: str | None = None, limit: int | None = None) -> list[FenceRecord]:
        """Records oldest first, optionally only those for ``node``, the last ``limit``.

        Torn or invalid lines are skipped and logged (see :meth:`scan`).
        """
        found = self.scan(node, limit)
        for problem in found.skipped:
            log.warning("fence history %s", problem)
        return found.records

    def last(self, node: str) -> FenceRecord | None:
        recs = self.records(node, limit=1)
        return recs[0] if recs else None


def _parse_line(raw: bytes | None) -> FenceRecord | None:
    """One stored line as a record (None for a blank line); ValueError says why not."""
    if raw is None:
        raise ValueError(f"longer than {MAX_LINE} bytes")
    if not raw.endswith(b"\n"):
        raise ValueError("incomplete last line (a write was cut short)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start + 1})") from None
    if not text.strip():
        return None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a JSON record ({exc.msg})") from None
    except RecursionError:
        raise ValueError("not a JSON record (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return FenceRecord.from_dict(data)


def _no_constant(name: str) -> Any:
    raise ValueError(f"not a JSON record ({name} is not a number)")


MAX_LINE = 1 << 20  # a record is a few hundred bytes; a longer "line" is corrupt


def _numbered_lines(fh: Any, file: str) -> Iterator[tuple[str, int, bytes | None]]:
    """Numbered lines; None for a line longer than MAX_LINE (skipped without reading it
    into memory whole, then reported like any other bad line)."""
    n = 0
    while True:
        try:
            raw = fh.readline(MAX_LINE)
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror or exc}", file=file) from None
        if not raw:
            return
        n += 1
        if len(raw) == MAX_LINE and not raw.endswith(b"\n"):
            while (rest := fh.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass  # skip to the end of the overlong line
            yield file, n, None
            continue
        yield file, n, raw
