"""Fence history: an append-only JSON-lines log of every fence attempt.

One record per attempt (who fenced, which node, when, which devices, the action, the
result, why it failed, how long it took). Each append is fsync'ed so the record
survives a crash right after a fence; the file is mode 0600 and bounded: past
``max_bytes`` it rotates to ``PATH.1`` (one older generation is kept and still queried).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1)


class FenceHistory:
    """Append-only, crash-safe, size-bounded fence history in one JSON-lines file."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, max_bytes: int = 1 << 20):
        self.path = Path(path) if path is not None else default_history_path()
        self.max_bytes = max_bytes

    @property
    def rotated_path(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    def append(self, record: FenceRecord) -> None:
        """Write one record durably. Several processes may append at once (flock)."""
        line = json.dumps(record.to_dict(), sort_keys=True, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.fchmod(fd, 0o600)
            if os.fstat(fd).st_size + len(line) > self.max_bytes and os.fstat(fd).st_size > 0:
                # Rotate under the lock; later writers reopen the new file by name.
                os.replace(self.path, self.rotated_path)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.fchmod(fd, 0o600)
            size = os.fstat(fd).st_size
            if size and _last_byte(self.path, size) != b"\n":
                line = "\n" + line  # seal a line torn by a crash so this one stays whole
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def _lines(self) -> Iterator[str]:
        for p in (self.rotated_path, self.path):
            try:
                with open(p, encoding="utf-8") as fh:
                    yield from fh
            except FileNotFoundError:
                continue

    def records(self, node: str | None = None, limit: int | None = None) -> list[FenceRecord]:
        """Records oldest first, optionally only those for ``node``, the last ``limit``.

        A torn last line (crash mid-write) is skipped, not fatal.
        """
        out: list[FenceRecord] = []
        for line in self._lines():
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            if node is not None and data.get("node") != node:
                continue
            out.append(FenceRecord.from_dict(data))
        return out[-limit:] if limit else out

    def last(self, node: str) -> FenceRecord | None:
        recs = self.records(node, limit=1)
        return recs[0] if recs else None
