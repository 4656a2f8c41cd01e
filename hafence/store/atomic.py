"""Atomic file replacement: a reader sees the old file or the new one, never a torn one.

A writer killed between creating its temp file and renaming it leaves the temp file
behind. Temp names carry the writer's identity (``.NAME.<boot>-<pidns>-<pid>-<start>.
<random>.tmp``) so :func:`remove_stale_temps` removes exactly those whose writer is gone.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import time
from pathlib import Path

from hafence.store import proc

_TEMP = re.compile(
    r"^\..+\.(?P<boot>[0-9a-f]{8})-(?P<ns>\d+)-(?P<pid>\d+)-(?P<start>\d+)\.[^.]+\.tmp$"
)
LEGACY_TEMP_AGE = 3600.0  # seconds: a temp file without a writer id is stale after this


@functools.cache
def _writer_tag(pid: int) -> str:  # keyed on the pid: a forked child gets its own tag
    return f"{proc.boot_id()[:8]}-{proc.pid_namespace()}-{pid}-{proc.start_time(pid) or 0}"


def write_atomic(
    path: str | os.PathLike[str], data: str | bytes, mode: int = 0o600, *, durable: bool = True
) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory.

    The temp file is created with ``mode`` before any byte is written (so a secret never
    sits in a world-readable file), fsynced, then moved over ``path`` with ``os.replace``;
    the directory is fsynced so the rename survives a power loss. ``durable=False`` skips
    both fsyncs (still atomic for every reader: a file its writer rewrites every round,
    whose readers all run on this machine, see docs/daemons.md).
    """
    p = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tag = _writer_tag(os.getpid())
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.{tag}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if not durable:
        return
    dfd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _writer_gone(name: str, mtime: float) -> bool:
    m = _TEMP.match(name)
    if m is None:  # written before temp names carried the writer: judge by age
        return time.time() - mtime > LEGACY_TEMP_AGE
    if m["boot"] != proc.boot_id()[:8]:
        return True  # written before the last reboot (the store is on a local disk)
    if int(m["ns"]) != proc.pid_namespace():
        return False  # another container's writer: not ours to judge
    started = proc.start_time(int(m["pid"]))
    return started is None or started != int(m["start"])


def remove_stale_temps(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove ``.*.tmp`` files in ``directory`` whose writer is gone; the removed paths."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:  # missing, or not ours to read (a user's ha-manager status): not now
        return []
    for e in entries:
        if not (e.name.startswith(".") and e.name.endswith(".tmp")) or not e.is_file():
            continue
        try:
            if _writer_gone(e.name, e.stat().st_mtime):
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return removed
