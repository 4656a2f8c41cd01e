"""Embedded store specifics: atomic writes under a crash, file modes, virtual-time leases."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hafence.store import EmbeddedStore, default_dir, open_store
from hafence.store.atomic import write_atomic


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_crash_between_temp_write_and_replace_keeps_old_file(tmp_path: Path) -> None:
    """A process killed after writing the temp file but before os.replace: old file intact."""
    store = EmbeddedStore(tmp_path)
    store.write_text("resources.cfg", "vm: 100\n\tstate started\n")
    before = (tmp_path / "resources.cfg").read_bytes()
    script = textwrap.dedent(
        f"""
        import os
        from hafence.store import EmbeddedStore

        def die(src, dst):  # the temp file is written and fsynced; die before the rename
            assert open(src).read() == "vm: 100\\n\\tstate stopped\\n"
            os._exit(9)

        os.replace = die
        store = EmbeddedStore({str(tmp_path)!r})
        store.write_text("resources.cfg", "vm: 100\\n\\tstate stopped\\n")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 9, proc.stderr.decode()
    assert (tmp_path / "resources.cfg").read_bytes() == before
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1  # the crash left its temp file behind ...
    assert store.read_resources()["vm:100"]["state"] == "started"  # ... which readers ignore
    store.write_text("resources.cfg", "vm: 100\n\tstate stopped\n")
    assert store.read_resources()["vm:100"]["state"] == "stopped"


def test_failed_write_removes_temp_and_keeps_old(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "groups.cfg"
    target.write_text("old\n")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["groups.cfg"]


def test_files_are_0600_and_directory_0700(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ha")
    old = os.umask(0o022)
    try:
        store.write_text("resources.cfg", "")
        store.write_lrm_status("node1", {"state": "active"})
        store.queue_crm_command("stop vm:100 0")
        store.acquire_lease("ha_manager_lock", "node1", 10)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ha").stat().st_mode) == 0o700
    files = [p for p in (tmp_path / "ha").rglob("*") if p.is_file()]
    assert len(files) >= 4
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_leases_expire_on_the_given_clock(tmp_path: Path) -> None:
    clock = Clock()
    s = EmbeddedStore(tmp_path, clock=clock)
    assert s.acquire_lease("ha_agent_node1_lock", "node1", 10)
    clock.now += 9.9
    assert not s.acquire_lease("ha_agent_node1_lock", "node2", 10)
    assert s.renew_lease("ha_agent_node1_lock", "node1", 10)  # now valid until 1019.9
    clock.now += 9.9
    assert s.lease_owner("ha_agent_node1_lock") == "node1"
    clock.now += 0.1
    assert s.lease_owner("ha_agent_node1_lock") is None
    # expired: the old holder cannot silently renew (its watchdog may have fired) ...
    assert not s.renew_lease("ha_agent_node1_lock", "node1", 10)
    # ... and another node can take it
    assert s.acquire_lease("ha_agent_node1_lock", "node2", 10)
    assert not s.release_lease("ha_agent_node1_lock", "node1")
    assert s.lease_owner("ha_agent_node1_lock") == "node2"


def test_two_store_objects_share_leases_through_the_directory(tmp_path: Path) -> None:
    clock = Clock()
    a, b = EmbeddedStore(tmp_path, clock=clock), EmbeddedStore(tmp_path, clock=clock)
    assert a.acquire_lease("ha_manager_lock", "node1", 5)
    assert not b.acquire_lease("ha_manager_lock", "node2", 5)
    clock.now += 5
    assert b.acquire_lease("ha_manager_lock", "node2", 5)
    assert a.lease_owner("ha_manager_lock") == "node2"


def test_default_directory_from_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HAFENCE_HA_DIR", str(tmp_path / "x"))
    assert default_dir() == tmp_path / "x"
    assert EmbeddedStore().path == tmp_path / "x"
    assert open_store().path == tmp_path / "x"  # type: ignore[attr-defined]
    monkeypatch.delenv("HAFENCE_HA_DIR")
    assert default_dir() == Path("/etc/hafence/ha")


def test_entry_names_cannot_escape(tmp_path: Path) -> None:
    s = EmbeddedStore(tmp_path / "ha")
    for bad in ("../x", "a//b", "/etc/passwd", "."):
        with pytest.raises(ValueError):
            s.write_text(bad, "x")
    assert not (tmp_path / "x").exists()


# -- temp files of killed writers ------------------------------------------------------------
KILLED_WRITER = """
import os, signal, sys
from hafence.store import EmbeddedStore

def die(src, dst):  # the temp file is written and fsynced: kill -9 before the rename
    os.kill(os.getpid(), signal.SIGKILL)

os.replace = die
EmbeddedStore(sys.argv[1]).write_lrm_status("node1", {"state": "active"})
"""

PAUSED_WRITER = """
import os, signal, sys
from hafence.store import EmbeddedStore

def pause(src, dst):
    print("written", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)

os.replace = pause
EmbeddedStore(sys.argv[1]).write_text("resources.cfg", "")
"""


def test_stale_temp_files_of_dead_writers_are_removed_at_start(tmp_path: Path) -> None:
    d = tmp_path / "ha"
    EmbeddedStore(d).write_lrm_status("node0", {})
    live = subprocess.Popen([sys.executable, "-c", PAUSED_WRITER, str(d)], stdout=subprocess.PIPE)
    try:
        assert live.stdout is not None and live.stdout.readline() == b"written\n"
        proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(d)], timeout=60)
        assert proc.returncode == -9
        dead = [p.name for p in (d / "lrm_status").iterdir() if p.name.endswith(".tmp")]
        assert len(dead) == 1 and dead[0].startswith(".node1.")
        s = EmbeddedStore(d)  # a daemon or ha-manager starting
        assert [p.name for p in s.removed_temps] == dead
        assert not list((d / "lrm_status").glob(".*.tmp"))
        kept = [p.name for p in d.iterdir() if p.name.endswith(".tmp")]
        assert len(kept) == 1 and kept[0].startswith(".resources.cfg.")  # its writer lives
    finally:
        live.kill()
        live.wait()
    assert len(EmbeddedStore(d).removed_temps) == 1  # now its writer is gone too
    assert not [p for p in d.rglob("*.tmp")]


def test_config_leases_and_commands_are_fsynced_status_files_not(
    tmp_path: Path, monkeypatch
) -> None:
    """What must survive a power loss is on disk when the write returns (file and
    directory); the per-round status files are only renamed into place (docs/daemons.md)."""
    store = EmbeddedStore(tmp_path)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:  # the seam: the system call, after the real one
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", fsync)

    def written(write) -> list[str]:
        synced.clear()
        write()
        return [os.path.relpath(p, tmp_path) for p in synced]

    for where, write in (
        (".", lambda: store.write_text("resources.cfg", "vm: 100\n\tstate started\n")),
        (".", lambda: store.queue_crm_command("migrate vm:100 node2")),
        ("leases", lambda: store.acquire_lease("ha_manager_lock", "node1", 60)),
    ):
        names = written(write)
        temps = [n for n in names if os.path.basename(n).endswith(".tmp")]
        assert [os.path.dirname(n) or "." for n in temps] == [where], names  # the data
        assert where in names, names  # the directory: the rename itself
    assert written(lambda: store.write_manager_status({"master_node": "node1"})) == []
    assert written(lambda: store.write_lrm_status("node1", {"state": "active"})) == []
    assert store.read_manager_status() == {"master_node": "node1"}  # renamed into place
    assert store.read_lrm_status("node1") == {"state": "active"}
