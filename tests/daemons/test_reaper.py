"""The harnesses' reaper finds a service that left its daemon's session."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.daemons.reaper import kill_tagged, tagged, tagged_env


def test_a_detached_grandchild_is_found_and_killed(tmp_path: Path) -> None:
    tag = str(tmp_path)
    ready = tmp_path / "ready"
    # a "daemon" that starts a "service" in a new session and is then killed itself
    daemon = subprocess.Popen(
        ["sh", "-c", f"setsid sleep 300 & echo $! > {ready}; exec sleep 300"],
        env=tagged_env(tag),
    )
    while not ready.exists() or not ready.read_text().strip():
        time.sleep(0.01)
    service = int(ready.read_text())
    daemon.kill()
    daemon.wait()
    other = subprocess.Popen(["sleep", "300"], env=tagged_env(tag + "-other"))
    try:
        assert tagged(tag) == [service]
        kill_tagged(tag)
        assert tagged(tag) == []  # neither alive nor a zombie
        assert other.poll() is None  # another cluster's process is left alone
    finally:
        other.kill()
        other.wait()
