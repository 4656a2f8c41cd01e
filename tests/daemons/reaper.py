"""Every process a test cluster started, found again by a tag in its environment.

A service process is started in a new session and outlives the LRM that started it (as
a guest would), and an LRM killed between its fork and its pid file leaves one that no
pid file names. The tag travels from the daemons to their services through the
environment, so the harness can reap them all at teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

TAG_ENV = "HAFENCE_TEST_CLUSTER"


def tagged_env(tag: str, **extra: str) -> dict[str, str]:
    """The environment for a cluster's daemons: this process's, plus the tag."""
    return {**os.environ, TAG_ENV: tag, **extra}


def tagged(tag: str) -> list[int]:
    """Live processes whose environment carries ``tag``."""
    want = f"{TAG_ENV}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if want not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:  # gone, or not ours to read
            continue
        if state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def kill_tagged(tag: str, within: float = 10.0) -> None:
    """SIGKILL every process carrying ``tag`` until none is left (one may fork while
    the others die). Raises if some survive ``within`` seconds."""
    deadline = time.monotonic() + within
    while pids := tagged(tag):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of test cluster {tag} survived SIGKILL: {pids}")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
