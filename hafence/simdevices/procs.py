"""Stopping a peer that runs as its own process group (it may have children)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen[bytes], grace: float, kill_wait: float | None) -> None:
    """SIGTERM the group, wait ``grace`` s, then SIGKILL it and wait ``kill_wait`` s
    (None: until it is gone; a process that outlives a bounded wait is left to the OS)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
