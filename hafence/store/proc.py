"""Who is this process, and is a process recorded earlier still running?

A process is identified by its machine's boot (``/proc/sys/kernel/random/boot_id``), its
PID namespace, its PID and its start time (``/proc/<pid>/stat`` field 22, clock ticks
after boot). A PID alone is reused; a PID with its start time in the same boot and
namespace is not. Used to take over a dead holder's store lock and to clean the temp
files of dead writers.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path


@functools.cache
def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


@functools.cache
def machine_id() -> str:
    """This machine's systemd machine-id (stable across reboots), else its hostname."""
    for p in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(p).read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return "host:" + socket.gethostname()


def pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks after boot, None if it is not running."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = raw[raw.rindex(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall
    except (IndexError, ValueError):
        return None


def identity() -> dict[str, str | int]:
    """This process, as recorded in a lock or a temp file name."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "boot": boot_id(),
        "pidns": pid_namespace(),
        "pid": pid,
        "start": start_time(pid) or 0,
    }


def is_gone(ident: dict[str, object]) -> bool:
    """True only when ``ident`` was a process of this boot and namespace that has ended.

    A process of another machine, boot or namespace cannot be judged from here: False.
    """
    if ident.get("boot") != boot_id() or ident.get("pidns") != pid_namespace():
        return False
    pid = ident.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    started = start_time(pid)
    return started is None or started != ident.get("start")
